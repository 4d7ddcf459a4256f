"""Ping many hosts at once like fping, all from one ICMP socket: one row per host.

usage: python examples/multiping.py HOST... | -f FILE [-c COUNT] [-i INTERVAL] [-W TIMEOUT] [--stream]

    python examples/multiping.py 192.0.2.1 192.0.2.2 198.51.100.7 -c 3
    python examples/multiping.py -f hosts.txt --stream     # one host per line, '#' starts a comment

Rows come out in input order once the sweep is over; with --stream each row is printed as soon as that
host is done (completion order), as a monitor would want. Exit status 0 when every host answered.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import anyio

import icmpx


def read_hosts(names: Iterable[str], path: str | None) -> list[str]:
    hosts = list(names)
    if path is not None:
        with open(path, encoding="utf-8") as lines:
            hosts += [host for line in lines if (host := line.split("#", 1)[0].strip())]
    return hosts


def row(stats: icmpx.PingStats, width: int) -> str:
    name = stats.target.ljust(width)
    if stats.error is not None:  # never pinged: e.g. the name did not resolve
        return f"{name} : {stats.error}"
    line = f"{name} : xmt/rcv/%loss = {stats.sent}/{stats.received}/{stats.loss_pct:.0f}%"
    if stats.received:
        line += f", min/avg/max = {stats.min_rtt:.3f}/{stats.avg_rtt:.3f}/{stats.max_rtt:.3f} ms"
    return line


async def sweep(hosts: list[str], count: int, interval: float, timeout: float, stream: bool) -> bool:
    width = max(len(host) for host in hosts)
    every: list[icmpx.PingStats] = []
    async with icmpx.AsyncClient(timeout=timeout) as client:
        if stream:
            async for stats in client.iter_multiping(hosts, count=count, interval=interval):
                print(row(stats, width), flush=True)
                every.append(stats)
        else:
            every = await client.multiping(hosts, count=count, interval=interval)
            for stats in every:
                print(row(stats, width))
    alive = sum(1 for stats in every if stats.is_alive)
    print(f"{len(every)} hosts, {alive} alive, {len(every) - alive} not answering")
    return alive == len(every)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("hosts", metavar="HOST", nargs="*", help="names or addresses to ping")
    parser.add_argument("-f", "--file", metavar="FILE", help="read more hosts from FILE, one per line")
    parser.add_argument("-c", "--count", type=int, default=1, help="echoes per host (default 1)")
    parser.add_argument(
        "-i", "--interval", type=float, default=1.0, help="seconds between echoes to one host (default 1)"
    )
    parser.add_argument("-W", "--timeout", type=float, default=2.0, help="seconds to wait for each reply")
    parser.add_argument("--stream", action="store_true", help="print each host as soon as it is done")
    args = parser.parse_args()
    try:
        hosts = read_hosts(args.hosts, args.file)
    except OSError as exc:
        parser.error(f"cannot read {args.file}: {exc.strerror}")
    if not hosts:
        parser.error("name at least one HOST, or give -f FILE")
    try:
        all_alive = anyio.run(sweep, hosts, args.count, args.interval, args.timeout, args.stream)
    except (ValueError, icmpx.IcmpxError) as exc:
        print(f"multiping: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if all_alive else 1


if __name__ == "__main__":
    sys.exit(main())
