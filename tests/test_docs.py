"""The documentation runs: every ```python block in docs/**/*.md and README.md is a program, executed here.

Each block is collected as one test, named by ``file:line`` of its opening fence, and run as it is in a
fresh subprocess of the venv's interpreter (``sys.executable``), from the repository root, with a 60 s
timeout; it must exit 0. Blocks are complete programs: code that awaits wraps itself in
``anyio.run(main)`` (or ``asyncio.run``), so a reader can copy any block and run it.

Every block these tests run sends packets to loopback only (127.0.0.0/8, ::1) and looks up no name.

Blocks that must not run (they name public hosts such as example.com or documentation addresses such as
192.0.2.1, or need a package the project does not install) are written with the *no-run marker*, an
attribute list whose first class is the language and which has the class ``no-run``::

    ```{.python .no-run}
    client.ping("example.com")
    ```

They render as highlighted Python, and are not collected at all: no test, hence no skip (under
``ICMPX_REQUIRE_LAB=1`` a skip fails the run). Shell, JSON and text blocks (```sh, ```json, ```text) are
never collected either. Keep no-run blocks few; ``test_most_blocks_run`` holds that.

``uv run ruff format`` formats the Python blocks of Markdown files like any module (CI checks it), so
write them as you would write code in src/.

The other tests here keep the docs honest about the code: every public name has a docstring and a place
in the API reference, and the API pages' ``::: icmpx.NAME`` directives name only public names.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import icmpx

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TIMEOUT = 60

NO_RUN = "no-run"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    info: str  # what follows the fence: "python", "{.python .no-run}", 'python title="x"', ""
    code: str

    @property
    def language(self) -> str:
        info = self.info.strip()
        if info.startswith("{"):
            classes = [word[1:] for word in info.strip("{}").split() if word.startswith(".")]
            return classes[0] if classes else ""
        return info.split()[0] if info else ""

    @property
    def runs(self) -> bool:
        info = self.info.strip()
        marked = info.startswith("{") and f".{NO_RUN}" in info.strip("{}").split()
        return self.language in ("python", "py") and not marked

    @property
    def name(self) -> str:
        return f"{_shown(self.path)}:{self.line}"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, also those indented inside lists and admonitions."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks, info = opening["indent"], opening["ticks"], opening["info"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing is not None and closing["ticks"].startswith(ticks) and not closing["info"].strip():
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            raise AssertionError(f"{_shown(path)}:{i + 1}: fence never closed")
        blocks.append(Block(path, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def markdown_files() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


ALL_BLOCKS = [block for path in markdown_files() for block in fenced_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.runs]


def test_docs_exist() -> None:
    assert (ROOT / "mkdocs.yml").is_file()
    assert len(list(DOCS.rglob("*.md"))) >= 10


def test_most_blocks_run() -> None:
    """No-run blocks are for public targets and absent packages only: a few, never the rule."""
    python_like = [b for b in ALL_BLOCKS if b.language in ("python", "py")]
    held_back = [b.name for b in python_like if not b.runs]
    assert len(PYTHON_BLOCKS) >= 30, "the docs lost their runnable examples"
    assert len(held_back) * 5 <= len(python_like), f"too many no-run blocks: {held_back}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.name for block in PYTHON_BLOCKS])
def test_python_block_runs(block: Block) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", block.code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.name}: still running after {TIMEOUT} s\n{exc.stdout or ''}{exc.stderr or ''}")
    assert proc.returncode == 0, (
        f"{block.name} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


_TARGET_LITERALS = re.compile(
    r"""["'](?P<addr>\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*::[0-9a-fA-F:]*|[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){7})["']"""
)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.name for block in PYTHON_BLOCKS])
def test_python_block_targets_loopback_only(block: Block) -> None:
    """A cheap guard on top of review: every address literal a runnable block names is loopback (or an
    unspecified bind address), and it names no host that would need DNS."""
    import ipaddress

    for match in _TARGET_LITERALS.finditer(block.code):
        try:
            addr = ipaddress.ip_address(match["addr"])
        except ValueError:
            continue
        assert addr.is_loopback or addr.is_unspecified, f"{block.name} names {addr}: mark it no-run"
    for word in ("example.com", "example.org", "example.net", ".invalid", "localhost"):
        assert word not in block.code, f"{block.name} names {word!r}: use a literal, or mark it no-run"


def test_fence_parser(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "```python",
            "print(1)",
            "```",
            "- item",
            "",
            "    ```python",
            "    if True:",
            "        print(2)",
            "    ```",
            "```{.python .no-run}",
            "x",
            "```",
            "````markdown",
            "```python",
            "inner",
            "```",
            "````",
            '```python title="t.py"',
            "print(3)",
            "```",
        ]
    )
    path = tmp_path / "case.md"
    path.write_text(text + "\n", encoding="utf-8")
    blocks = fenced_blocks(path)
    assert [(b.line, b.language, b.runs) for b in blocks] == [
        (1, "python", True),
        (6, "python", True),
        (10, "python", False),
        (13, "markdown", False),
        (18, "python", True),
    ]
    assert blocks[1].code == "if True:\n    print(2)\n"


# ------------------------------------------------------------------------------------------ reference


def _reference_directives() -> list[str]:
    names = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        names += re.findall(r"^::: (\S+)\s*$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return names


def test_reference_covers_every_public_name() -> None:
    documented = _reference_directives()
    assert len(documented) == len(set(documented)), "a name is documented twice"
    public = {f"icmpx.{name}" for name in icmpx.__all__ if name != "__version__"}
    assert public <= set(documented), f"missing from docs/reference/: {sorted(public - set(documented))}"
    assert set(documented) <= public, f"not public: {sorted(set(documented) - public)}"


def _public_methods(cls: type) -> list[str]:
    return [
        name
        for name, member in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    ]


_DOCUMENTABLE = sorted(
    name for name in icmpx.__all__ if inspect.isclass(obj := getattr(icmpx, name)) or inspect.isfunction(obj)
)


@pytest.mark.parametrize("name", _DOCUMENTABLE)
def test_public_name_has_a_docstring(name: str) -> None:
    """Classes and functions (constants get theirs from the source, which the reference renders)."""
    obj = getattr(icmpx, name)
    doc = inspect.getdoc(obj)
    assert doc, f"icmpx.{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"icmpx.{name}: no summary line"


@pytest.mark.parametrize("cls", [icmpx.AsyncClient, icmpx.Client], ids=lambda cls: cls.__name__)
def test_client_methods_have_docstrings(cls: type) -> None:
    methods = _public_methods(cls)
    assert {"probe", "ping", "traceroute", "multiping", "mtr"} <= set(methods)
    missing = [name for name in methods if not inspect.getdoc(getattr(cls, name))]
    assert not missing, f"{cls.__name__} methods without a docstring: {missing}"
