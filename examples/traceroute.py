"""Trace the path to a host like traceroute(8), every TTL probed at once on one shared socket.

usage: python examples/traceroute.py HOST [-m MAX_HOPS] [-q PROBES] [-W TIMEOUT] [-n]

    python examples/traceroute.py 192.0.2.1 -m 20
    python examples/traceroute.py 2001:db8::1 -q 1 -n

Prints one line per TTL: the responder (with its reverse DNS name unless -n), each probe's round-trip
time, ``*`` for a probe nothing answered, and traceroute's ``!H``/``!N``/``!X`` marks for unreachables.
"""

from __future__ import annotations

import argparse
import sys

import anyio

import icmpx

# traceroute(8)'s annotations for the ICMP errors that end a path.
MARKS = {"host-unreachable": " !H", "net-unreachable": " !N", "admin-prohibited": " !X"}


async def hop_line(client: icmpx.AsyncClient, hop: icmpx.Hop, numeric: bool) -> str:
    parts = [f"{hop.ttl:2d} "]
    shown: str | None = None
    for probe in hop.probes:
        if probe.addr is None:
            parts.append(" *")
            continue
        if probe.addr != shown:  # a load-balanced hop may answer from several addresses
            name = None if numeric else await client.reverse_dns(probe.addr)  # cached by the client
            parts.append(f" {name} ({probe.addr})" if name else f" {probe.addr}")
            shown = probe.addr
        parts.append(f"  {probe.rtt:.3f} ms{MARKS.get(probe.error or '', '')}")
    return "".join(parts)


async def trace(host: str, max_hops: int, probes: int, timeout: float, numeric: bool) -> bool:
    async with icmpx.AsyncClient(timeout=timeout) as client:
        target = await client.resolve(host)
        print(f"traceroute to {host} ({target.addr}), {max_hops} hops max", flush=True)
        result = await client.traceroute(
            target.addr, max_hops=max_hops, probes=probes, resolve_dns=not numeric
        )
        for hop in result.hops:
            print(await hop_line(client, hop, numeric))
    return result.reached


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("host", metavar="HOST", help="name or address to trace")
    parser.add_argument("-m", "--max-hops", type=int, default=30, help="largest TTL (default 30)")
    parser.add_argument("-q", "--probes", type=int, default=3, help="probes per hop (default 3)")
    parser.add_argument("-W", "--timeout", type=float, default=2.0, help="seconds to wait for answers")
    parser.add_argument("-n", "--numeric", action="store_true", help="print addresses only (no reverse DNS)")
    args = parser.parse_args()
    try:
        reached = anyio.run(trace, args.host, args.max_hops, args.probes, args.timeout, args.numeric)
    except (ValueError, icmpx.IcmpxError) as exc:
        print(f"traceroute: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
