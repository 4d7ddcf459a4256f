"""One echo to each of N distinct loopback targets in one run: icmpx beside fping, icmplib and gufo_ping.

    sudo uv run python bench/multiping.py [--sizes 1000,10000,100000] [--runs 3] [--json]

Targets are 127.a.b.c addresses (127/8 answers on every address), written to a file every tool reads.
Each tool runs ``--runs`` times (round-robin across tools, so drift of the machine hits all alike); the
table shows the median of each column.

Rows:
  fping                 ``fping -c1 -q -i 0 -f FILE``. RTTs from its per-target summary lines on stderr
                        (``min/avg/max`` of one echo, i.e. the RTT, to the microsecond). fping refuses
                        more than 65,535 targets ("not enough sequence numbers"): shown as "refuses".
  icmplib               ``async_multiping(targets, count=1, timeout=1, privileged=True)`` with its default
                        ``concurrent_tasks=50`` (a socket per task), in a fresh interpreter.
  gufo_ping             ``Ping(timeout=1)`` and ``asyncio.gather(ping.ping(t) for t in targets)`` with
                        its default socket buffers; "32 MB buffers" sets ``send/recv_buffer_size``.
  icmpx in-process      ``await client.multiping(targets, rate=None, timeout=1)`` in a fresh interpreter,
                        the client open and its socket warmed by one probe first.
  icmpx CLI -q          the whole ``python -m icmpx multiping -f FILE --rate 0 -q`` process.
  icmpx CLI --json      the same with ``--json`` instead of ``-q`` (one JSON document: yields the RTTs).

Columns: "wall s", "CPU s" (user + system) and "peak RSS MB" (both from wait4, through GNU time) are the
whole child process, interpreter start and imports included. "call s" and "call CPU s" are the sweep
alone, timed inside the process (for the CLI, the elapsed time it reports: client open to last row).
"answered" counts targets with a reply; RTT percentiles (nearest rank) are over the answered targets, in ms.

Python processes run the interpreter directly (never through ``uv run`` or a version-manager shim) with
a bytecode cache under /tmp. icmplib and gufo_ping are never installed into the project: they run under
the throwaway venv ``/tmp/mpbench`` (``ICMPX_BENCH_MP_VENV``), created with uv when missing unless
``--no-install``. Only loopback is pinged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import REPO, fmt, machine_info, median, module_version, percentile, table, worker_env

PEER_VENV = Path(os.environ.get("ICMPX_BENCH_MP_VENV", "/tmp/mpbench"))
PEER_PACKAGES = ("icmplib", "gufo_ping")
FPING = shutil.which("fping") or "/usr/bin/fping"
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
FPING_MAX = 65_535
TIMEOUT_S = 1.0
RUN_LIMIT_S = 600.0  # a run that takes longer is killed and reported as "timeout"
BIG_BUFFER = 32 * 1024 * 1024


def targets_for(n: int) -> list[str]:
    """``n`` distinct loopback addresses, none ending in .0 or .255."""
    return [f"127.{1 + i // 62_500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(n)]


# ----------------------------------------------------------------------------------- workers
# Each runs in a fresh process and prints one JSON line: call_s, call_cpu_s, answered, rtts (ms).


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _result(
    call_s: float | None, call_cpu_s: float | None, rtts_ms: Sequence[float], **extra: Any
) -> dict[str, Any]:
    return {
        "call_s": call_s,
        "call_cpu_s": call_cpu_s,
        "answered": len(rtts_ms),
        "rtt_p50": percentile(rtts_ms, 50),
        "rtt_p99": percentile(rtts_ms, 99),
        **extra,
    }


def worker_icmpx(path: str) -> dict[str, Any]:
    import anyio

    import icmpx

    targets = Path(path).read_text().split()

    async def main() -> dict[str, Any]:
        async with icmpx.AsyncClient(timeout=TIMEOUT_S) as client:
            warm = await client.probe("127.0.0.1")
            assert warm.ok, warm
            cpu, start = _cpu(), time.perf_counter()
            rows = await client.multiping(targets, rate=None)
            call_s, call_cpu_s = time.perf_counter() - start, _cpu() - cpu
            stats = client.stats
        rtts = [r.avg_rtt for r in rows if r.received and r.avg_rtt is not None]
        return _result(call_s, call_cpu_s, rtts, engine={"sent": stats.sent - 1, "dropped": stats.dropped})

    return anyio.run(main)


def worker_icmplib(path: str) -> dict[str, Any]:
    import asyncio

    from icmplib import async_multiping  # type: ignore[import-not-found]

    targets = Path(path).read_text().split()

    async def main() -> dict[str, Any]:
        cpu, start = _cpu(), time.perf_counter()
        hosts = await async_multiping(targets, count=1, timeout=TIMEOUT_S, privileged=True)
        call_s, call_cpu_s = time.perf_counter() - start, _cpu() - cpu
        return _result(call_s, call_cpu_s, [h.avg_rtt for h in hosts if h.is_alive])

    return asyncio.run(main())


def worker_gufo(path: str, buffer: int | None) -> dict[str, Any]:
    import asyncio

    from gufo.ping import Ping  # type: ignore[import-not-found]

    targets = Path(path).read_text().split()

    async def main() -> dict[str, Any]:
        ping = Ping(timeout=TIMEOUT_S, send_buffer_size=buffer, recv_buffer_size=buffer)
        cpu, start = _cpu(), time.perf_counter()
        rtts = await asyncio.gather(*(ping.ping(t) for t in targets))
        call_s, call_cpu_s = time.perf_counter() - start, _cpu() - cpu
        return _result(call_s, call_cpu_s, [r * 1000 for r in rtts if r is not None])

    return asyncio.run(main())


# ----------------------------------------------------------------------------------- measuring


class Refused(Exception):
    """The tool declined the job (fping beyond 65,535 targets)."""


def measure(argv: Sequence[str], *, limit: float = RUN_LIMIT_S) -> dict[str, Any]:
    """Run ``argv`` to completion: its wall time, CPU (user + system) and peak RSS, and its output.

    CPU and peak RSS come from wait4 on the child, through GNU time when it is there: a child forked
    (or vforked) straight from this Python process inherits its RSS high-water mark across exec, so a
    small tool like fping would show this orchestrator's ~20 MB. /usr/bin/time is a small C program.
    """
    with tempfile.TemporaryDirectory(prefix="icmpx-bench-run-") as tmp:
        usage_file = Path(tmp) / "usage"
        wrapped = list(argv)
        if GNU_TIME is not None:
            wrapped = [GNU_TIME, "-f", "%U %S %M", "-o", str(usage_file), *argv]
        with open(Path(tmp) / "out", "w+") as out, open(Path(tmp) / "err", "w+") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                wrapped, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=worker_env(), text=True
            )
            killer = threading.Timer(limit, proc.kill)
            killer.start()
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        cpu, rss_kib = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        if GNU_TIME is not None and usage_file.exists():
            fields = usage_file.read_text().split()
            if len(fields) >= 3 and not fields[0].startswith("Command"):
                cpu, rss_kib = float(fields[-3]) + float(fields[-2]), int(fields[-1])
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "rss_mb": rss_kib / 1024,  # KiB on Linux
            "returncode": proc.returncode,
            "timed_out": wall >= limit,
            "stdout": stdout,
            "stderr": stderr,
        }


def _checked(run: dict[str, Any], argv: Sequence[str], ok: Sequence[int] = (0,)) -> None:
    if run["timed_out"]:
        raise TimeoutError(f"{argv[0]} took more than {RUN_LIMIT_S:.0f} s")
    if run["returncode"] not in ok:
        raise RuntimeError(f"{' '.join(argv)} exited {run['returncode']}:\n{run['stdout']}\n{run['stderr']}")


def _process_fields(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in ("wall_s", "cpu_s", "rss_mb")}


def run_worker(python: str, kind: str, path: str) -> dict[str, Any]:
    argv = [python, __file__, "--worker", kind, "--file", path]
    run = measure(argv)
    _checked(run, argv)
    return _process_fields(run) | json.loads(run["stdout"].strip().splitlines()[-1])


_FPING_LINE = re.compile(
    r"^(\S+)\s*: xmt/rcv/%loss = (\d+)/(\d+)/\d+%(?:, min/avg/max = [\d.]+/([\d.]+)/)?", re.M
)


def run_fping(path: str, n: int) -> dict[str, Any]:
    argv = [FPING, "-c1", "-q", "-i", "0", "-f", path]
    run = measure(argv)
    if "not enough sequence numbers" in run["stderr"] or (n > FPING_MAX and run["returncode"] != 0):
        raise Refused(run["stderr"].strip().splitlines()[-1] if run["stderr"].strip() else "refused")
    _checked(run, argv, ok=(0, 1))
    rtts = [float(m.group(4)) for m in _FPING_LINE.finditer(run["stderr"]) if m.group(4) is not None]
    return _process_fields(run) | _result(None, None, rtts)


_SUMMARY = re.compile(r"(\d+) targets, (\d+) alive.*?, ([\d.]+) s\s*$")


def run_icmpx_cli(path: str, mode: str) -> dict[str, Any]:
    argv = [icmpx_python(), "-m", "icmpx", "multiping", "-f", path, "--rate", "0", mode]
    run = measure(argv)
    _checked(run, argv, ok=(0, 1))
    if mode == "-q":
        found = _SUMMARY.search(run["stdout"])
        if found is None:
            raise RuntimeError(f"unexpected output: {run['stdout'][-500:]}")
        answered, call_s = int(found.group(2)), float(found.group(3))
        return _process_fields(run) | {
            "call_s": call_s,
            "call_cpu_s": None,
            "answered": answered,
            "rtt_p50": None,
            "rtt_p99": None,
        }
    doc = json.loads(run["stdout"])
    rtts = [h["avg_ms"] for h in doc["hosts"] if h["received"]]
    return _process_fields(run) | _result(doc["elapsed_s"], None, rtts)


# ----------------------------------------------------------------------------------- interpreters


def icmpx_python() -> str:
    """The project's venv interpreter itself (not `uv run`, not a shim)."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def peer_python(*, allow_install: bool, log: Callable[[str], None]) -> str | None:
    """The throwaway venv's interpreter with icmplib and gufo_ping, created with uv when allowed."""
    python = PEER_VENV / "bin" / "python"

    def usable() -> bool:
        if not python.exists():
            return False
        code = "import icmplib, gufo.ping"
        return subprocess.run([str(python), "-c", code], capture_output=True, check=False).returncode == 0

    if usable():
        return str(python)
    uv = shutil.which("uv")
    if not allow_install or uv is None:
        log(
            f"icmplib, gufo_ping: skipped (create {PEER_VENV} with `uv venv {PEER_VENV} && "
            f"uv pip install --python {PEER_VENV} {' '.join(PEER_PACKAGES)}`)"
        )
        return None
    log(f"installing {', '.join(PEER_PACKAGES)} into the throwaway venv {PEER_VENV} (not the project's)")
    if not python.exists():
        subprocess.run([uv, "venv", "-q", str(PEER_VENV)], check=False, capture_output=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), *PEER_PACKAGES],
        check=False,
        capture_output=True,
    )
    if usable():
        return str(python)
    log("icmplib, gufo_ping: skipped (installation into the throwaway venv failed)")
    return None


def fping_version() -> str | None:
    try:
        proc = subprocess.run([FPING, "-v"], capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return None
    found = re.search(r"Version (\S+)", proc.stdout + proc.stderr)
    return found.group(1) if found else "?"


# ----------------------------------------------------------------------------------- orchestration

COLUMNS = ("wall_s", "cpu_s", "call_s", "call_cpu_s", "rss_mb", "answered", "rtt_p50", "rtt_p99")
HEADERS = [
    "tool",
    "targets",
    "wall s",
    "CPU s",
    "call s",
    "call CPU s",
    "peak RSS MB",
    "answered",
    "RTT p50 ms",
    "RTT p99 ms",
]


def _median_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in COLUMNS:
        values = [r.get(key) for r in results]
        out[key] = median([v for v in values if isinstance(v, int | float)])
    return out


def _cells(name: str, n: int, m: dict[str, Any] | None, note: str | None) -> list[str]:
    if m is None:
        return [name, f"{n:,}", note or "-", *["-"] * (len(HEADERS) - 3)]
    answered = "-" if m["answered"] is None else f"{round(m['answered']):,}"
    return [
        name,
        f"{n:,}",
        fmt(m["wall_s"]),
        fmt(m["cpu_s"]),
        fmt(m["call_s"]),
        fmt(m["call_cpu_s"]),
        fmt(m["rss_mb"], 1),
        answered,
        fmt(m["rtt_p50"]),
        fmt(m["rtt_p99"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="comma-separated target counts (default 1000,10000,100000)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and size; medians shown (3)")
    parser.add_argument("--json", action="store_true", help="print every run and the medians as JSON")
    parser.add_argument("--no-install", action="store_true", help="do not create the throwaway peer venv")
    parser.add_argument("--worker", choices=["icmpx", "icmplib", "gufo", "gufo-32mb"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        workers: dict[str, Callable[[str], dict[str, Any]]] = {
            "icmpx": worker_icmpx,
            "icmplib": worker_icmplib,
            "gufo": lambda p: worker_gufo(p, None),
            "gufo-32mb": lambda p: worker_gufo(p, BIG_BUFFER),
        }
        print(json.dumps(workers[args.worker](args.file)))
        return

    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (raw sockets): sudo uv run python bench/multiping.py")
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: not a list of integers: {args.sizes!r}")
    if not sizes or min(sizes) < 1 or args.runs < 1:
        parser.error("--sizes needs positive counts and --runs at least 1")

    log: Callable[[str], None] = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    info = machine_info()
    peers = peer_python(allow_install=not args.no_install, log=log)
    versions: dict[str, str | None] = {
        "fping": fping_version(),
        "icmpx": module_version(icmpx_python(), "icmpx"),
    }
    tools: dict[str, Callable[[str, int], dict[str, Any]]] = {}
    if versions["fping"] is not None:
        tools[f"fping {versions['fping']}"] = run_fping
    else:
        log("fping: skipped (not installed: apt-get install fping)")
    if peers is not None:
        versions["icmplib"] = module_version(peers, "icmplib")
        versions["gufo_ping"] = module_version(peers, "gufo_ping")
        tools[f"icmplib {versions['icmplib']}"] = lambda p, n: run_worker(peers, "icmplib", p)
        tools[f"gufo_ping {versions['gufo_ping']}"] = lambda p, n: run_worker(peers, "gufo", p)
        tools[f"gufo_ping {versions['gufo_ping']}, 32 MB buffers"] = lambda p, n: run_worker(
            peers, "gufo-32mb", p
        )
    tools["icmpx in-process"] = lambda p, n: run_worker(icmpx_python(), "icmpx", p)
    tools["icmpx CLI -q"] = lambda p, n: run_icmpx_cli(p, "-q")
    tools["icmpx CLI --json"] = lambda p, n: run_icmpx_cli(p, "--json")

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    notes: dict[str, dict[str, str]] = {}
    medians: dict[str, dict[str, dict[str, Any] | None]] = {}
    with tempfile.TemporaryDirectory(prefix="icmpx-bench-mp-") as tmp:
        # One untimed short run of each tool: fills the bytecode and page caches for everyone alike.
        warm = Path(tmp) / "warm.txt"
        warm.write_text("\n".join(targets_for(100)) + "\n")
        for name, run in tools.items():
            try:
                run(str(warm), 100)
            except Exception as exc:
                log(f"warm-up of {name} failed: {exc}")
        for n in sizes:
            path = Path(tmp) / f"targets-{n}.txt"
            path.write_text("\n".join(targets_for(n)) + "\n")
            key = str(n)
            runs[key], notes[key], medians[key] = {name: [] for name in tools}, {}, {}
            for i in range(args.runs):
                for name, run in tools.items():
                    if name in notes[key]:
                        continue  # refused or failed once: not again
                    try:
                        result = run(str(path), n)
                    except Refused as exc:
                        notes[key][name] = "refuses"
                        log(f"{n:,} targets, {name}: refuses ({exc})")
                        continue
                    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
                        notes[key][name] = "timeout" if isinstance(exc, TimeoutError) else "failed"
                        log(f"{n:,} targets, {name}: {notes[key][name]}: {str(exc)[:500]}")
                        continue
                    runs[key][name].append(result)
                    log(
                        f"run {i + 1}/{args.runs}, {n:,} targets, {name}: wall {result['wall_s']:.3f} s, "
                        f"call {fmt(result.get('call_s'))} s, {result['answered']:,} answered"
                    )
            for name in tools:
                medians[key][name] = _median_row(runs[key][name]) if runs[key][name] else None

    if args.json:
        doc = {
            "machine": info,
            "versions": versions,
            "runs_per_tool": args.runs,
            "median": medians,
            "notes": notes,
            "runs": runs,
        }
        print(json.dumps(doc, indent=2))
        return
    rows = [_cells(name, n, medians[str(n)][name], notes[str(n)].get(name)) for n in sizes for name in tools]
    print()
    print(
        f"multiping: 1 echo to each of N distinct loopback targets; median of {args.runs} runs "
        f"({info['date']}, {info['cpus']} CPUs, kernel {info['kernel']}, Python {info['python']}, "
        f"load {info['loadavg_1m_at_start']})"
    )
    print(table(HEADERS, rows))


if __name__ == "__main__":
    main()
