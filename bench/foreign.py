"""What other programs' ICMP costs an idle icmpx client: with and without the kernel filter.

A raw ICMP socket receives a copy of every ICMP packet of its family on the host. icmpx attaches a classic
BPF program to its raw sockets (as iputils ping does) so that echo replies carrying another identifier
never reach Python; errors still pass. This script measures the client's CPU per foreign echo reply with
the filter (as shipped) and without it (the filter call replaced by a no-op: the "before").

Everything goes to 127.0.0.1 inside a throwaway network namespace (so no other program's ICMP is counted),
deleted afterwards. Needs root (raw sockets, ``ip netns``).

    sudo .venv/bin/python bench/foreign.py            # --count 200000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

INJECTOR = r"""
import socket, struct, sys
count = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
packets = []
for seq in range(256):
    body = struct.pack("!BBHHH", 0, 0, 0, 0xFFFF, seq) + bytes(56)
    packets.append(body[:2] + struct.pack("!H", checksum(body)) + body[4:])
for k in range(count):
    sock.sendto(packets[k & 255], ("127.0.0.1", 0))
"""


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def worker(filtered: bool, count: int) -> dict[str, Any]:
    import anyio

    import icmpx
    from icmpx import _socket

    if not filtered:
        _socket.filter_idents = lambda *args, **kwargs: None  # type: ignore[assignment]

    async def main() -> dict[str, Any]:
        async with icmpx.AsyncClient(timeout=1.0) as client:
            assert await client.socket_kind(4) == "raw"
            cpu = _cpu()
            injector = await anyio.run_process([sys.executable, "-c", INJECTOR, str(count)], check=True)
            del injector
            # Let the reader take in what is still queued: until the counter stops moving.
            seen = -1
            while client.stats.foreign != seen:
                seen = client.stats.foreign
                await anyio.sleep(0.05)
            used = _cpu() - cpu
            stats = client.stats
        return {
            "cpu_s": used,
            "foreign_counted": stats.foreign,
            "kernel_drops": getattr(stats, "kernel_drops", None),
        }

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200_000, help="foreign echo replies injected per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; medians shown (3)")
    parser.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "on", args.count)))
        return
    if os.geteuid() != 0:
        sys.exit("bench/foreign.py needs root (raw sockets)")
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    namespace = f"foreign-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        for _ in range(args.runs):
            for variant in results:
                command = [sys.executable, __file__, "--worker", variant, "--count", str(args.count)]
                out = subprocess.run(
                    ["ip", "netns", "exec", namespace, *command], capture_output=True, text=True, check=True
                )
                results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
    when = time.strftime("%F")
    print(f"{args.count:,} foreign echo replies to 127.0.0.1, private namespace, {args.runs} runs ({when})")
    print("| kernel filter | client CPU s | µs per foreign packet | reached Python (counted foreign) |")
    print("|---|--:|--:|--:|")
    for variant, label in (("off", "none (before)"), ("on", "BPF ident filter (now)")):
        cpu = statistics.median(r["cpu_s"] for r in results[variant])
        counted = statistics.median(r["foreign_counted"] for r in results[variant])
        print(f"| {label} | {cpu:.3f} | {cpu / args.count * 1e6:.2f} | {counted:,.0f} |")


if __name__ == "__main__":
    main()
