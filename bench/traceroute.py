"""Traceroute through a chain of kernel routers with one silent hop: icmpx beside traceroute(8) and icmplib.

    sudo uv run python bench/traceroute.py [--routers 8] [--silent 3] [--runs 3] [--json]

Builds the namespace lab of tests/lab.py (client ── r1 ── … ── r8 ── target, router 3 drops its own
Time Exceeded messages, ICMP rate limits off), then traces the target from the client namespace, IPv4
and IPv6, ``--runs`` times each, round-robin; the table shows medians.  The lab is torn down at the
end, always.  Every packet stays inside these namespaces (198.18.0.0/15, 2001:db8::/32); no name is
ever looked up (-n, resolve_dns=False).

Rows (each a fresh process run with ``ip netns exec CLIENT``):
  icmpx                 ``AsyncClient(timeout=1.0).traceroute(target, probes=3, timeout=1,
                        resolve_dns=False)``: every TTL probed at once on one raw socket.
  traceroute -I         ``traceroute -I -n -q 3 -w 1 -m 30 TARGET`` (ICMP echo probes; -6 for IPv6).
  traceroute UDP        ``traceroute -n -q 3 -w 1 -m 30 TARGET`` (the default UDP probes).
  icmplib               ``icmplib.traceroute(target, count=3, timeout=1)`` (raw socket; 3.0.4 has no
                        ``privileged`` argument for traceroute, it is passed only where accepted):
                        one TTL after the other, one probe at a time.

"wall s" is the trace call alone for the Python libraries (timed inside their process) and the whole
process for traceroute(8); "process s" is the whole process for everyone.  "hops" counts TTLs with
an answer out of the TTLs up to the target; "path" says whether every answering TTL k showed router
k's address (the target's at the last TTL) and the silent router showed nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    REPO,
    fmt,
    icmplib_python,
    machine_info,
    median,
    module_version,
    require_root,
    run_timed,
    table,
)

# ----------------------------------------------------------------------------------- workers
# Run inside the client namespace; each prints one JSON line: call_s, reached, hops [[ttl, addr]].


def worker_icmpx(target: str) -> dict[str, Any]:
    import asyncio

    import icmpx

    async def main() -> dict[str, Any]:
        async with icmpx.AsyncClient(timeout=1.0) as client:
            start = time.perf_counter()
            result = await client.traceroute(target, probes=3, timeout=1, resolve_dns=False)
            call_s = time.perf_counter() - start
        return {
            "call_s": call_s,
            "reached": result.reached,
            "hops": [[hop.ttl, hop.addr] for hop in result.hops if hop.addr is not None],
            "probes_answered": sum(p.answered for hop in result.hops for p in hop.probes),
            "ttls_listed": len(result.hops),
        }

    return asyncio.run(main())


def worker_icmplib(target: str) -> dict[str, Any]:
    import inspect

    import icmplib  # type: ignore[import-not-found]

    kwargs: dict[str, Any] = {"count": 3, "timeout": 1}
    if "privileged" in inspect.signature(icmplib.traceroute).parameters:
        kwargs["privileged"] = True
    start = time.perf_counter()
    hops = icmplib.traceroute(target, **kwargs)
    call_s = time.perf_counter() - start
    return {
        "call_s": call_s,
        "reached": bool(hops) and hops[-1].address == target,
        "hops": [[hop.distance, hop.address] for hop in hops],
        "probes_answered": sum(hop.packets_received for hop in hops),
        "ttls_listed": hops[-1].distance if hops else 0,
    }


# ----------------------------------------------------------------------------------- traceroute(8)


def parse_traceroute(text: str, target: str) -> dict[str, Any]:
    """Hops (first address of each TTL line) of traceroute(8) -n output."""
    hops: list[list[Any]] = []
    answered = 0
    last_ttl = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        ttl = int(fields[0])
        last_ttl = ttl
        addrs = []
        for token in fields[1:]:
            try:
                addrs.append(str(ipaddress.ip_address(token)))
            except ValueError:
                continue
        answered += sum(token == "ms" for token in fields[1:])
        if addrs:
            hops.append([ttl, addrs[0]])
    reached = bool(hops) and hops[-1][1] == target and hops[-1][0] == last_ttl
    return {"reached": reached, "hops": hops, "probes_answered": answered, "ttls_listed": last_ttl}


# ----------------------------------------------------------------------------------- orchestration


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routers", type=int, default=8, help="routers between client and target (8)")
    parser.add_argument(
        "--silent", type=int, default=3, help="router whose Time Exceeded is dropped (3; 0: none)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and family; medians shown (3)")
    parser.add_argument("--json", action="store_true", help="print every run and the medians as JSON")
    parser.add_argument("--no-icmplib", action="store_true", help="skip icmplib (no throwaway venv)")
    parser.add_argument("--worker", choices=["icmpx", "icmplib"], help=argparse.SUPPRESS)
    parser.add_argument("target", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        fn = worker_icmpx if args.worker == "icmpx" else worker_icmplib
        json.dump(fn(args.target), sys.stdout)
        print()
        return

    require_root()
    sys.path.insert(0, str(REPO / "tests"))
    from lab import lab_available, lab_chain  # type: ignore[import-not-found]

    if reason := lab_available():
        sys.exit(f"cannot build the lab: {reason}")
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    info = machine_info()
    icmplib_py = None if args.no_icmplib else icmplib_python(allow_install=True, log=log)
    versions: dict[str, str | None] = {"icmpx": module_version(sys.executable, "icmpx")}
    _, tr = run_timed(["traceroute", "--version"], timeout=10)
    tr_text = (tr.stdout + tr.stderr).split("version")
    versions["traceroute"] = tr_text[1].split()[0].strip(",") if len(tr_text) > 1 else None
    if icmplib_py:
        versions["icmplib"] = module_version(icmplib_py, "icmplib")

    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    silent = (args.silent,) if args.silent else ()
    with lab_chain(args.routers, silent=silent) as lab:
        targets = {"IPv4": lab.target4, "IPv6": lab.target6}
        expected = {
            "IPv4": {k: lab.hop4(k) for k in range(1, args.routers + 2) if k != args.silent},
            "IPv6": {k: lab.hop6(k) for k in range(1, args.routers + 2) if k != args.silent},
        }

        def in_client(argv: list[str]) -> tuple[float, Any]:
            # Same path for everyone: `ip netns exec CLIENT argv`, timed from outside.
            return run_timed(["ip", "netns", "exec", lab.client, *argv], timeout=120)

        def python_tool(python: str, kind: str) -> Callable[[str, str], dict[str, Any]]:
            def run(family: str, target: str) -> dict[str, Any]:
                wall, proc = in_client([python, __file__, "--worker", kind, target])
                lines = proc.stdout.strip().splitlines()
                if proc.returncode != 0 or not lines:
                    failed = f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
                    return {"failed": failed, "process_s": wall}
                out: dict[str, Any] = json.loads(lines[-1])
                out["process_s"] = wall
                return out

            return run

        def system_tool(*flags: str) -> Callable[[str, str], dict[str, Any]]:
            def run(family: str, target: str) -> dict[str, Any]:
                fam = ["-6"] if family == "IPv6" else ["-4"]
                argv = ["traceroute", *fam, *flags, "-n", "-q", "3", "-w", "1", "-m", "30", target]
                wall, proc = in_client(argv)
                out = parse_traceroute(proc.stdout, target)
                out |= {"call_s": wall, "process_s": wall}
                if proc.returncode != 0:
                    out["failed"] = f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
                return out

            return run

        tools: dict[str, Callable[[str, str], dict[str, Any]]] = {
            "icmpx": python_tool(sys.executable, "icmpx"),
            "traceroute -I": system_tool("-I"),
            "traceroute UDP": system_tool(),
        }
        if icmplib_py:
            tools[f"icmplib {versions['icmplib']}"] = python_tool(icmplib_py, "icmplib")

        # One untimed run of each (IPv4): fills the bytecode and page caches for every tool alike.
        for run in tools.values():
            run("IPv4", lab.target4)

        for i in range(args.runs):
            for family, target in targets.items():
                for name, run in tools.items():
                    result = run(family, target)
                    hops = {ttl: addr for ttl, addr in result.get("hops", [])}
                    result["path_ok"] = hops == expected[family]
                    runs.setdefault((name, family), []).append(result)
                    status = result.get("failed") or (
                        f"{len(hops)} hops answered, reached={result['reached']}, path_ok={result['path_ok']}"
                    )
                    log(
                        f"run {i + 1}/{args.runs} {family} {name}: "
                        f"{result.get('call_s', float('nan')):.3f} s, {status}"
                    )

    n_ttls = args.routers + 1
    rows = []
    summary: dict[str, dict[str, Any]] = {}
    order = list(tools)
    for (name, family), results in sorted(runs.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))):
        good = [r for r in results if "failed" not in r]
        if not good:
            rows.append([name, family, "failed", "-", "-", "-", "-", "-", "-"])
            summary[f"{name} {family}"] = {"failed": results[0]["failed"]}
            continue
        walls = [r["call_s"] for r in good]
        m: dict[str, Any] = {
            "call_s": median(walls),
            "call_s_all": walls,
            "process_s": median([r["process_s"] for r in good]),
            "hops_answered": median([len(r["hops"]) for r in good]),
            "probes_answered": median([r["probes_answered"] for r in good]),
            "reached": f"{sum(r['reached'] for r in good)}/{len(results)}",
            "path_ok": f"{sum(r['path_ok'] for r in good)}/{len(results)}",
        }
        summary[f"{name} {family}"] = m
        rows.append(
            [
                name,
                family,
                fmt(m["call_s"]),
                f"{min(walls):.3f}-{max(walls):.3f}",
                fmt(m["process_s"]),
                f"{m['hops_answered']:g}/{n_ttls}",
                f"{m['probes_answered']:g}",
                m["reached"],
                m["path_ok"],
            ]
        )

    if args.json:
        print(
            json.dumps(
                {
                    "machine": info,
                    "versions": versions,
                    "lab": {"routers": args.routers, "silent": args.silent},
                    "median": summary,
                    "runs": {f"{n} {f}": r for (n, f), r in runs.items()},
                },
                indent=2,
            )
        )
        return
    print()
    print(
        f"traceroute through {args.routers} routers, "
        f"{f'router {args.silent} silent' if args.silent else 'no silent router'}, 3 probes per TTL, "
        f"1 s timeout; median of {args.runs} runs ({info['date']}, {info['cpus']} CPUs, "
        f"kernel {info['kernel']}, load {info['loadavg_1m_at_start']})"
    )
    headers = ["tool", "family", "wall s", "range s", "process s", "hops", "probes", "reached", "path"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
