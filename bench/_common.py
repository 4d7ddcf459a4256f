"""Shared helpers for the benchmarks in bench/: statistics, tables, subprocess workers, icmplib.

Standard library only: the scripts also run as workers under a throwaway interpreter (for icmplib)
that does not have icmpx or its dependencies installed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ICMPLIB_VENV = Path(os.environ.get("ICMPX_BENCH_ICMPLIB_VENV", "/tmp/benchenv"))
NETNS_ETC = Path("/etc/netns")
PYCACHE = Path("/tmp/icmpx-bench-pycache")


def worker_env() -> dict[str, str]:
    """The environment for timed processes: bytecode caching on, in a cache of our own.

    With PYTHONDONTWRITEBYTECODE=1 (set in some sandboxes and CI images) and no __pycache__ beside
    the sources, every import compiles from source: ~0.1 s more per process for anyio alone, which
    no installed package pays.  The cache goes under /tmp (PYTHONPYCACHEPREFIX), never into src/.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


# ----------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable as plain text); columns of numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    numeric = [i > 0 and all(r[i][:1].isdigit() or r[i] == "-" for r in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(out) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def machine_info() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "date": date.today().isoformat(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(load[0], 2),
    }


# ----------------------------------------------------------------------------------- processes


def run_timed(
    argv: Sequence[str], *, timeout: float = 300, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``argv`` to completion; (wall seconds of the whole process, result)."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=worker_env() if env is None else env,
        check=False,
    )
    return time.perf_counter() - start, proc


def run_worker(argv: Sequence[str], *, timeout: float = 300) -> dict[str, Any]:
    """Run a worker that prints one JSON object on its last stdout line; adds ``process_s``."""
    wall, proc = run_timed(argv, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_s"] = wall
    if proc.stderr.strip():
        result["stderr"] = proc.stderr.strip()[-2000:]
    return result


def emit(result: dict[str, Any]) -> None:
    """A worker's answer: one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (raw sockets, network namespaces): sudo uv run python ...")


# ----------------------------------------------------------------------------------- icmplib


def icmplib_python(*, allow_install: bool, log: Callable[[str], None]) -> str | None:
    """An interpreter that can import icmplib, or None.

    The current interpreter if it has icmplib, else the throwaway venv ``/tmp/benchenv``
    (``ICMPX_BENCH_ICMPLIB_VENV``); with ``allow_install`` that venv is created with uv when missing.
    icmplib is never added to the project's own environment.
    """
    if _can_import(sys.executable, "icmplib"):
        return sys.executable
    python = ICMPLIB_VENV / "bin" / "python"
    if python.exists() and _can_import(str(python), "icmplib"):
        return str(python)
    uv = shutil.which("uv")
    if not allow_install or uv is None:
        log(
            "icmplib: skipped (not importable; create it with "
            f"`uv venv {ICMPLIB_VENV} && uv pip install --python {ICMPLIB_VENV} icmplib`)"
        )
        return None
    log(f"icmplib: installing into the throwaway venv {ICMPLIB_VENV} (not the project's)")
    if not python.exists():
        subprocess.run([uv, "venv", "-q", str(ICMPLIB_VENV)], check=False, capture_output=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "icmplib"], check=False, capture_output=True
    )
    if python.exists() and _can_import(str(python), "icmplib"):
        return str(python)
    log("icmplib: skipped (installation into the throwaway venv failed)")
    return None


def _can_import(python: str, module: str) -> bool:
    proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
    return proc.returncode == 0


def module_version(python: str, module: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


# ----------------------------------------------------------------------------------- namespace


@contextmanager
def throwaway_netns(sysctls: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh network namespace with only ``lo`` (up), deleted on exit, always.

    ``sysctls`` ("net/ipv4/ping_group_range": "0 2147483647") are written inside it only, never in the
    root namespace.  It gets /etc/netns/NAME/resolv.conf pointing at 127.0.0.1 so no lookup leaves.
    """
    name = f"icmpx-bench-{secrets.token_hex(4)}"
    etc = NETNS_ETC / name
    created = False
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        created = True
        NETNS_ETC.mkdir(parents=True, exist_ok=True)
        etc.mkdir()
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        for key, value in (sysctls or {}).items():
            script = 'printf "%s\\n" "$2" > "/proc/sys/$1"'
            subprocess.run(
                ["ip", "netns", "exec", name, "sh", "-c", script, "sh", key, value],
                check=True,
                capture_output=True,
            )
        yield name
    finally:
        if created:
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)
