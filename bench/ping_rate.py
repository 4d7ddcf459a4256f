"""Echo rate of one ping series to 127.0.0.1: icmpx beside iputils ping -f and icmplib.

    sudo uv run python bench/ping_rate.py [--count 10000] [--runs 3] [--json]

Every tool pings 127.0.0.1 ``--count`` times with no interval between echoes, ``--runs`` times
(round-robin, so slow drift of the machine hits every tool alike); the table shows medians.

Rows:
  iputils ping -f      ``ping -n -f -q -c N 127.0.0.1`` (flood: the next echo goes out when a reply
                       comes back, or after 10 ms); wall time of the whole process.
  icmplib              ``icmplib.ping(..., interval=0, privileged=True)`` in a fresh interpreter
                       (one at a time: send, wait for the reply, send the next).
  icmpx raw            ``AsyncClient(timeout=1.0).ping(..., interval=0)`` as root (raw socket) in a
                       fresh interpreter: every echo is sent at once, replies matched as they come.
  icmpx raw, netns     the same inside a throwaway network namespace (only its own loopback traffic).
  icmpx ping socket    ``AsyncClient(privileged=False)``: the unprivileged ICMP socket, inside a
                       throwaway namespace whose ``net.ipv4.ping_group_range`` admits root's group
                       (the root namespace's sysctl is never changed).

"wall s" is the ping call alone for the Python libraries (timed inside their process, client and
socket already open) and the whole process for iputils, which can only be timed from outside;
"process s" is the whole process for everyone (interpreter start and imports included).
RTT percentiles are nearest-rank over the answered echoes of the run; iputils prints only
min/avg/max, so its p50/p99 are "-".

Only loopback is pinged.  icmplib is never installed into the project: it is used from the current
interpreter if importable, else from the throwaway venv /tmp/benchenv (created with uv when missing;
``--no-icmplib`` skips it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from _common import (
    fmt,
    icmplib_python,
    machine_info,
    median,
    module_version,
    percentile,
    require_root,
    run_timed,
    run_worker,
    table,
    throwaway_netns,
)

TARGET = "127.0.0.1"
PING = "/usr/bin/ping"
OPEN_PING_GROUP_RANGE = {"net/ipv4/ping_group_range": "0 2147483647"}


# ----------------------------------------------------------------------------------- workers
# Each runs in its own process and prints one JSON line: call_s, sent, answered, rtts summary.


def _summary(call_s: float, sent: int, rtts: list[float]) -> dict[str, Any]:
    return {
        "call_s": call_s,
        "sent": sent,
        "answered": len(rtts),
        "rtt_p50": percentile(rtts, 50),
        "rtt_p99": percentile(rtts, 99),
        "rtt_avg": sum(rtts) / len(rtts) if rtts else None,
        "rtt_max": max(rtts) if rtts else None,
    }


def _plain(obj: Any) -> Any:
    """A dataclass snapshot (EngineStats) as a JSON-able dict, whatever its slots."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return repr(obj)


def worker_icmpx(count: int, privileged: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    import asyncio

    import icmpx

    phases = {"import_s": time.perf_counter() - t0}

    async def main() -> dict[str, Any]:
        t1 = time.perf_counter()
        client = icmpx.AsyncClient(timeout=1.0, privileged=privileged)
        async with client:
            # The socket opens on first use, inside the timed call (as icmplib's does).
            start = time.perf_counter()
            phases["open_s"] = start - t1
            results = await client.ping(TARGET, count=count, interval=0)
            call_s = time.perf_counter() - start
            stats = client.stats
            t2 = time.perf_counter()
        phases["close_s"] = time.perf_counter() - t2
        rtts = [r.rtt for r in results if r.ok and r.rtt is not None]
        out = _summary(call_s, len(results), rtts)
        out["errors"] = sorted({r.error for r in results if not r.ok and r.error})
        out["engine_stats"] = _plain(stats)
        return out

    out = asyncio.run(main())
    out |= phases
    out["in_process_s"] = time.perf_counter() - t0
    return out


def worker_icmplib(count: int) -> dict[str, Any]:
    import icmplib  # type: ignore[import-not-found]

    start = time.perf_counter()
    host = icmplib.ping(TARGET, count=count, interval=0, privileged=True)
    call_s = time.perf_counter() - start
    out = _summary(call_s, host.packets_sent, list(host.rtts))
    out["answered"] = host.packets_received
    return out


# ----------------------------------------------------------------------------------- iputils

_TX = re.compile(r"(\d+) packets transmitted, (\d+) received")
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def run_iputils(count: int) -> dict[str, Any]:
    wall, proc = run_timed([PING, "-n", "-f", "-q", "-c", str(count), TARGET], timeout=120)
    tx = _TX.search(proc.stdout)
    if tx is None:
        raise RuntimeError(f"ping failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
    rtt = _RTT.search(proc.stdout)
    return {
        "call_s": wall,
        "process_s": wall,
        "sent": int(tx.group(1)),
        "answered": int(tx.group(2)),
        "rtt_p50": None,
        "rtt_p99": None,
        "rtt_avg": float(rtt.group(2)) if rtt else None,
        "rtt_max": float(rtt.group(3)) if rtt else None,
    }


# ----------------------------------------------------------------------------------- orchestration


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="echoes per run (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; the table shows medians (3)")
    parser.add_argument("--json", action="store_true", help="print every run and the medians as JSON")
    parser.add_argument("--no-icmplib", action="store_true", help="skip icmplib (no throwaway venv)")
    parser.add_argument("--worker", choices=["icmpx-raw", "icmpx-dgram", "icmplib"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "icmplib":
        json.dump(worker_icmplib(args.count), sys.stdout)
        print()
        return
    if args.worker:
        json.dump(worker_icmpx(args.count, privileged=args.worker == "icmpx-raw"), sys.stdout)
        print()
        return

    require_root()
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    info = machine_info()
    icmplib_py = None if args.no_icmplib else icmplib_python(allow_install=True, log=log)
    versions = {"iputils": _iputils_version(), "icmpx": module_version(sys.executable, "icmpx")}
    if icmplib_py:
        versions["icmplib"] = module_version(icmplib_py, "icmplib")

    def worker(python: str, kind: str, prefix: Sequence[str] = ()) -> Callable[[int], dict[str, Any]]:
        return lambda n: run_worker([*prefix, python, __file__, "--count", str(n), "--worker", kind])

    with throwaway_netns(OPEN_PING_GROUP_RANGE) as ns:
        netns = ["ip", "netns", "exec", ns]
        tools: dict[str, Callable[[int], dict[str, Any]]] = {
            f"iputils ping -f ({versions['iputils']})": run_iputils,
        }
        if icmplib_py:
            tools[f"icmplib {versions['icmplib']} (raw)"] = worker(icmplib_py, "icmplib")
        tools["icmpx raw"] = worker(sys.executable, "icmpx-raw")
        tools["icmpx raw, netns"] = worker(sys.executable, "icmpx-raw", netns)
        tools["icmpx ping socket, netns"] = worker(sys.executable, "icmpx-dgram", netns)

        # One untimed short run of each: fills the bytecode cache and the page cache, so no tool
        # pays a first-run cost the others do not.
        for run in tools.values():
            run(100)

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in tools}
        for i in range(args.runs):
            for name, run in tools.items():
                result = run(args.count)
                runs[name].append(result)
                extra = ""
                if "import_s" in result:
                    extra = (
                        f" (process {result['process_s']:.3f} s: import {result['import_s']:.3f},"
                        f" open {result['open_s']:.3f}, close {result['close_s']:.3f})"
                    )
                if "engine_stats" in result:
                    foreign = result["engine_stats"].get("foreign")
                    extra += f" foreign packets read: {foreign}"
                if result.get("errors"):
                    extra += f" errors: {result['errors']}"
                log(
                    f"run {i + 1}/{args.runs} {name}: {result['call_s']:.3f} s, "
                    f"{result['answered']}/{result['sent']} answered{extra}"
                )

    rows = []
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        m: dict[str, Any] = {
            key: median([r.get(key) for r in results])
            for key, value in results[0].items()
            if isinstance(value, int | float) or value is None
        }
        walls = [r["call_s"] for r in results]
        m["call_s_all"] = walls
        m["pings_per_s"] = median([r["sent"] / r["call_s"] for r in results])
        summary[name] = m
        rows.append(
            [
                name,
                fmt(m["call_s"]),
                f"{min(walls):.3f}-{max(walls):.3f}",
                fmt(m["process_s"]),
                f"{m['pings_per_s']:,.0f}",
                f"{int(m['answered']):,}/{int(m['sent']):,}",
                fmt(m["rtt_p50"]),
                fmt(m["rtt_p99"]),
                fmt(m["rtt_avg"]),
            ]
        )

    if args.json:
        print(
            json.dumps(
                {"machine": info, "versions": versions, "count": args.count, "median": summary, "runs": runs},
                indent=2,
            )
        )
        return
    print()
    print(
        f"ping {TARGET}, {args.count:,} echoes, no interval; median of {args.runs} runs "
        f"({info['date']}, {info['cpus']} CPUs, kernel {info['kernel']}, Python {info['python']}, "
        f"load {info['loadavg_1m_at_start']})"
    )
    headers = ["tool", "wall s", "range s", "process s", "pings/s", "answered", "p50 ms", "p99 ms", "avg ms"]
    print(table(headers, rows))


def _iputils_version() -> str:
    _, proc = run_timed([PING, "-V"], timeout=10)
    found = re.search(r"iputils[ -]?(\S+)", proc.stdout)
    return found.group(1) if found else "?"


if __name__ == "__main__":
    main()
