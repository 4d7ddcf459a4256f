"""mtr in a few lines: per-hop loss and latency, refreshed after every cycle.

usage: python examples/mtr.py HOST [-c CYCLES] [-i INTERVAL] [-W TIMEOUT] [-m MAX_HOPS] [-n]

    python examples/mtr.py 192.0.2.1               # live table until Ctrl-C
    python examples/mtr.py 192.0.2.1 -c 10 -n > report.txt

On a terminal: a live Rich table, until Ctrl-C or CYCLES cycles. When stdout is not a terminal (a pipe, a
file): CYCLES cycles (default 10), then one plain table whose columns are as wide as their widest cell, so
addresses and host names are never cut.
"""

from __future__ import annotations

import argparse
import sys

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

import icmpx

# mtr's columns: the hop and its counts, then its round-trip times in milliseconds
HOP_COLUMNS = ("Hop", "Address", "Hostname", "Sent", "Recv", "Loss %")
COLUMNS = (*HOP_COLUMNS, "Last", "Avg", "Best", "Worst", "StDev", "Javg")
LEFT = {"Address", "Hostname"}  # text columns; numbers are right-aligned


def cells(hop: icmpx.MtrHop) -> list[str]:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    address = hop.addr or "???"  # nothing answered at this TTL yet
    if len(hop.addrs) > 1:  # a load-balanced hop: say how many others answered
        address += f" (+{len(hop.addrs) - 1})"
    figures = (hop.last_rtt, hop.avg_rtt, hop.min_rtt, hop.max_rtt, hop.stdev_rtt, hop.jitter)
    first = [str(hop.ttl), address, hop.hostname or "", str(hop.sent), str(hop.received)]
    return [*first, f"{hop.loss_pct:.1f}", *map(ms, figures)]


def title(report: icmpx.MtrReport) -> str:
    return f"mtr to {report.target} ({report.addr}), {report.cycle} cycles"


def rich_table(report: icmpx.MtrReport) -> Table:
    table = Table(title=title(report))
    for name in COLUMNS:
        if name in LEFT:  # on a narrow terminal, wrap addresses and names rather than cut them
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    for hop in report.hops:
        table.add_row(*cells(hop))
    return table


def plain_table(report: icmpx.MtrReport) -> str:
    rows = [list(COLUMNS), *(cells(hop) for hop in report.hops)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [title(report)]
    for r in rows:
        padded = (c.ljust(w) if n in LEFT else c.rjust(w) for c, w, n in zip(r, widths, COLUMNS, strict=True))
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


async def run(args: argparse.Namespace, live: bool) -> icmpx.MtrReport | None:
    cycles = args.cycles if args.cycles is not None or live else 10
    last: icmpx.MtrReport | None = None
    async with icmpx.AsyncClient(timeout=args.timeout) as client:
        reports = client.mtr(
            args.host,
            cycles=cycles,
            interval=args.interval,
            max_hops=args.max_hops,
            resolve_dns=not args.numeric,
        )
        if live:
            with Live(console=Console(), auto_refresh=False) as view:
                async for last in reports:
                    view.update(rich_table(last), refresh=True)
        else:
            async for report in reports:
                last = report
    return last


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("host", metavar="HOST", help="name or address to trace")
    parser.add_argument(
        "-c", "--cycles", type=int, help="cycles to run (default: until Ctrl-C, or 10 to a pipe)"
    )
    parser.add_argument(
        "-i", "--interval", type=float, default=1.0, help="seconds between cycles (default 1)"
    )
    parser.add_argument("-W", "--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    parser.add_argument("-m", "--max-hops", type=int, default=30, help="largest TTL (default 30)")
    parser.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of hops")
    args = parser.parse_args()
    live = sys.stdout.isatty()
    try:
        report = anyio.run(run, args, live)
    except (ValueError, icmpx.IcmpxError) as exc:
        print(f"mtr: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    if report is None:
        return 1
    if not live:
        print(plain_table(report))
    reached = any(hop.addr == report.addr and hop.received for hop in report.hops)
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
