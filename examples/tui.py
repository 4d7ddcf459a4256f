"""A live mtr in a Textual terminal app: the per-hop table is refreshed after every cycle.

usage: python examples/tui.py HOST [-i INTERVAL] [-W TIMEOUT] [-m MAX_HOPS] [-n]

    python examples/tui.py 192.0.2.1 -i 0.5

The header shows the target and the cycle; press q to quit. icmpx runs on Textual's own asyncio loop, in a
worker that Textual cancels on exit (which closes the client and its socket).
"""

from __future__ import annotations

import argparse
import sys
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header

import icmpx

# mtr's columns: the hop and its counts, then its round-trip times in milliseconds
HOP_COLUMNS = ("Hop", "Address", "Hostname", "Sent", "Recv", "Loss %")
COLUMNS = (*HOP_COLUMNS, "Last", "Avg", "Best", "Worst", "StDev", "Javg")


def cells(hop: icmpx.MtrHop) -> list[str | Text]:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    figures = (hop.last_rtt, hop.avg_rtt, hop.min_rtt, hop.max_rtt, hop.stdev_rtt, hop.jitter)
    numbers = [str(hop.sent), str(hop.received), f"{hop.loss_pct:.1f}", *map(ms, figures)]
    return [str(hop.ttl), hop.addr or "???", hop.hostname or "", *(Text(n, justify="right") for n in numbers)]


class MtrApp(App[None]):
    """mtr to ``host``: one DataTable row per TTL, keyed by the TTL."""

    TITLE = "icmpx mtr"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

    def __init__(
        self,
        host: str,
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
        max_hops: int = 30,
        resolve_dns: bool = True,
    ) -> None:
        super().__init__()
        self.host = host
        self.interval = interval
        self.timeout = timeout
        self.max_hops = max_hops
        self.resolve_dns = resolve_dns
        self.report: icmpx.MtrReport | None = None  # the latest one, for whoever wants to read it

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        self.sub_title = f"{self.host}: starting"
        self.run_worker(self.follow(), exclusive=True)

    async def follow(self) -> None:
        try:
            async with icmpx.AsyncClient(timeout=self.timeout) as client:
                reports = client.mtr(
                    self.host, interval=self.interval, max_hops=self.max_hops, resolve_dns=self.resolve_dns
                )
                async for report in reports:
                    self.show(report)
        except (ValueError, icmpx.IcmpxError) as exc:
            self.exit(return_code=2, message=f"mtr: {exc}")

    def show(self, report: icmpx.MtrReport) -> None:
        self.report = report
        self.sub_title = f"{report.target} ({report.addr}) \N{EM DASH} cycle {report.cycle}"
        table = self.query_one(DataTable)
        keys = {str(hop.ttl) for hop in report.hops}
        for row in [key for key in table.rows if key.value not in keys]:
            table.remove_row(row)  # the destination answered at a lower TTL than before
        for hop in report.hops:
            values = cells(hop)
            key = str(hop.ttl)
            if key in table.rows:
                for name, value in zip(COLUMNS, values, strict=True):
                    table.update_cell(key, name, value, update_width=True)
            else:
                table.add_row(*values, key=key)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("host", metavar="HOST", help="name or address to trace")
    parser.add_argument(
        "-i", "--interval", type=float, default=1.0, help="seconds between cycles (default 1)"
    )
    parser.add_argument("-W", "--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    parser.add_argument("-m", "--max-hops", type=int, default=30, help="largest TTL (default 30)")
    parser.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of hops")
    args = parser.parse_args()
    app = MtrApp(
        args.host,
        interval=args.interval,
        timeout=args.timeout,
        max_hops=args.max_hops,
        resolve_dns=not args.numeric,
    )
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
