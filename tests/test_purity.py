"""The pure layers (_wire, _matching, _stats, _models) do no I/O and keep no clock.

Checked statically with ``ast`` (``sys.modules`` would tell what some earlier test imported, not
what these modules need): none of them imports a forbidden module, directly or through a relative
(or ``icmpx.``) import of another icmpx module, which is then checked the same way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "icmpx"
PURE = ["_wire", "_stats", "_models", "_matching", "_classify"]

FORBIDDEN = frozenset(
    {"socket", "anyio", "asyncio", "trio", "time", "select", "selectors", "os", "threading"}
    # The C modules underneath, and the ways around a static check.
    | {"_socket", "_asyncio", "_thread", "posix", "importlib"}
)


def _module_file(package: Path, dotted: str) -> Path | None:
    """The file of icmpx module ``dotted`` (relative to the package), or None if it has none."""
    if not dotted:
        return package / "__init__.py"
    base = package.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, package: Path) -> tuple[set[str], set[str], list[str]]:
    """(external top-level modules, icmpx-internal dotted modules, dynamic import calls)."""
    external: set[str] = set()
    internal: set[str] = set()
    dynamic: list[str] = []
    prefix = package.name + "."
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package.name or alias.name.startswith(prefix):
                    internal.add(alias.name.removeprefix(package.name).lstrip("."))
                else:
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and not (module == package.name or module.startswith(prefix)):
                external.add(module.split(".")[0])
                continue
            # Relative imports: the pure modules sit at the package top, so level 1 is icmpx.
            base = module.removeprefix(package.name).lstrip(".") if node.level == 0 else module
            for alias in node.names:
                # ``from . import _x`` imports the submodule _x; ``from ._x import name`` (or
                # ``from . import name`` of a non-module) takes a name from a module's namespace.
                submodule = f"{base}.{alias.name}".lstrip(".")
                internal.add(submodule if _module_file(package, submodule) else base)
        elif isinstance(node, ast.Name) and node.id == "__import__":
            dynamic.append(f"line {node.lineno}: __import__")
    return external, internal, dynamic


def violations(package: Path, start: str) -> list[str]:
    """Forbidden imports reachable from icmpx module ``start``, each with the import chain."""
    found: list[str] = []
    seen: set[Path] = set()
    queue: list[tuple[str, list[str]]] = [(start, [start])]
    while queue:
        name, chain = queue.pop()
        path = _module_file(package, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        external, internal, dynamic = _imports(ast.parse(path.read_text(), str(path)), package)
        route = " -> ".join(chain)
        found += [f"{route} imports {mod}" for mod in sorted(external & FORBIDDEN)]
        found += [f"{route}: {call}" for call in dynamic]
        # A name taken from the package itself (``from . import name``, ``import icmpx``) means a
        # dependency on __init__, the public facade: it is followed like any other module.
        queue += [(mod, [*chain, mod or "__init__"]) for mod in sorted(internal)]
    return found


EXISTING = [name for name in PURE if (PACKAGE / f"{name}.py").is_file()]


def test_the_core_pure_modules_exist() -> None:
    assert {"_wire", "_stats"} <= set(EXISTING)


@pytest.mark.parametrize("module", EXISTING)
def test_module_is_pure(module: str) -> None:
    assert violations(PACKAGE, module) == []


# The checker itself, on a throwaway package, so a broken checker cannot pass vacuously.


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "icmpx"
    package.mkdir()
    for name, source in {"__init__.py": "", **files}.items():
        (package / name).write_text(source)
    return package


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import os.path",
        "from time import monotonic",
        "import anyio as _anyio",
        "def f():\n    import asyncio\n",
        "from selectors import DefaultSelector",
        "import threading, struct",
        "x = __import__('trio')",
        "import importlib",
    ],
)
def test_checker_catches_direct_imports(tmp_path: Path, source: str) -> None:
    package = _package(tmp_path, {"_pure.py": source})
    assert violations(package, "_pure")


@pytest.mark.parametrize(
    "source",
    [
        "from ._io import thing",
        "from . import _io",
        "from icmpx._io import thing",
        "import icmpx._io",
        "from ._helper import thing",  # _helper is clean but imports _io
    ],
)
def test_checker_follows_internal_imports(tmp_path: Path, source: str) -> None:
    package = _package(
        tmp_path,
        {
            "_pure.py": source,
            "_io.py": "import time\n",
            "_helper.py": "from ._io import x\n",
        },
    )
    found = violations(package, "_pure")
    assert found
    assert any("_io imports time" in line for line in found)


def test_checker_accepts_clean_modules(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "_pure.py": "import struct\nfrom ._other import x\nfrom . import _other\n",
            "_other.py": "import math\nfrom dataclasses import dataclass\n",
        },
    )
    assert violations(package, "_pure") == []


def test_checker_follows_package_init(tmp_path: Path) -> None:
    """``from . import name`` where name is not a module runs (and so checks) __init__."""
    package = _package(tmp_path, {"_pure.py": "from . import something\n"})
    (package / "__init__.py").write_text("import socket\nsomething = 1\n")
    assert violations(package, "_pure")
