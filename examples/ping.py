"""Ping one host like ping(8): one line per echo as it arrives, then a summary.

usage: python examples/ping.py HOST [-c COUNT] [-i INTERVAL] [-W TIMEOUT]

    python examples/ping.py 192.0.2.1 -c 5 -i 0.5
    python examples/ping.py ::1 -c 3

Needs CAP_NET_RAW (root) or a ping_group_range that admits your group; see icmpx.RawSocketPermissionError.
"""

from __future__ import annotations

import argparse
import sys

import anyio

import icmpx


def echo_line(result: icmpx.EchoResult) -> str:
    """One line per echo, as ping(8) prints it (``result.position`` is the 1-based icmp_seq)."""
    position = result.position
    reply = result.reply
    if reply is None:
        return f"no answer for icmp_seq={position} ({result.error})"
    packet = reply.received_packet
    src = packet.ip_header.src_addr
    if not result.ok:  # an ICMP error from a router (unreachable, time exceeded, ...)
        return f"From {src} icmp_seq={position} {result.error}"
    ttl = f" ttl={packet.ip_header.ttl}" if packet.ip_header.ttl is not None else ""
    return f"{packet.size} bytes from {src}: icmp_seq={position}{ttl} time={reply.rtt:.3f} ms"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary(host: str, results: list[icmpx.EchoResult]) -> str:
    stats = icmpx.PingStats.from_results(results, target=host)
    lines = [
        f"--- {host} ping statistics ---",
        f"{stats.sent} packets transmitted, {stats.received} received, {stats.loss_pct:g}% packet loss",
    ]
    if stats.received:
        figures = (stats.min_rtt, stats.avg_rtt, stats.max_rtt, stats.stdev_rtt)
        lines.append("rtt min/avg/max/stdev = " + "/".join(ms(v) for v in figures) + " ms")
    return "\n".join(lines)


async def ping(
    host: str, count: int, interval: float, timeout: float, results: list[icmpx.EchoResult]
) -> None:
    async with icmpx.AsyncClient(timeout=timeout) as client:
        target = await client.resolve(host)
        print(f"PING {host} ({target.addr})", flush=True)
        async for result in client.iter_ping(target.addr, count=count, interval=interval):
            results.append(result)
            print(echo_line(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("host", metavar="HOST", help="name or address to ping")
    parser.add_argument("-c", "--count", type=int, default=4, help="echoes to send (default 4)")
    parser.add_argument(
        "-i", "--interval", type=float, default=1.0, help="seconds between echoes (default 1)"
    )
    parser.add_argument("-W", "--timeout", type=float, default=2.0, help="seconds to wait for each reply")
    args = parser.parse_args()
    if args.count < 1:  # iter_ping would only say so once iterated, after the PING line
        parser.error("count must be at least 1")

    results: list[icmpx.EchoResult] = []
    try:
        anyio.run(ping, args.host, args.count, args.interval, args.timeout, results)
    except KeyboardInterrupt:
        pass  # Ctrl-C: still print the summary of what was sent
    except (ValueError, icmpx.IcmpxError) as exc:
        print(f"ping: {exc}", file=sys.stderr)
        return 2
    print()
    print(summary(args.host, results))
    return 0 if any(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
