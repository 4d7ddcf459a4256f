"""The ``icmpx`` command line: a front end over the public API only.

Exit status: 0 every target answered; 1 some target did not answer; 2 a name did not resolve (wins over 1);
3 bad arguments; 4 no permission for ICMP sockets, or another system error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

import anyio

import icmpx

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_UNRESOLVED = 2
EXIT_USAGE = 3
EXIT_SYSTEM = 4


class _Parser(argparse.ArgumentParser):
    """argparse, but bad arguments exit with status 3 as documented (argparse's own is 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 3)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive: {text!r}")
    return value


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}: {value}")
        return value

    return parse


def _add_family(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-4", dest="family", action="store_const", const=4, help="use IPv4 only")
    group.add_argument("-6", dest="family", action="store_const", const=6, help="use IPv6 only")


def _add_common(parser: argparse.ArgumentParser, *, timeout_default: float = 2.0) -> None:
    parser.add_argument(
        "-W",
        "--timeout",
        type=_positive_float,
        default=timeout_default,
        metavar="TIMEOUT",
        help=f"seconds to wait for each answer (default {timeout_default:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument(
        "--privileged",
        choices=("auto", "raw", "dgram"),
        default="auto",
        help="socket kind: raw (needs CAP_NET_RAW), dgram (unprivileged ping socket), auto (default)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="icmpx",
        description="ICMP diagnostics: ping, traceroute, multiping and mtr from one shared socket.",
        epilog="Exit status: 0 all targets answered, 1 some did not, 2 a name did not resolve, "
        "3 bad arguments, 4 no permission for ICMP sockets or another system error.",
    )
    parser.add_argument("--version", action="version", version=f"icmpx {icmpx.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    ping = commands.add_parser("ping", help="send echo requests to one host, like ping(8)")
    ping.add_argument("host", metavar="HOST")
    ping.add_argument("-c", "--count", type=_int_range(1), default=4, help="echoes to send (default 4)")
    ping.add_argument(
        "-i", "--interval", type=_non_negative_float, default=1.0, help="seconds between echoes (default 1)"
    )
    ping.add_argument("-t", "--ttl", type=_int_range(1, 255), default=64, help="TTL / hop limit (default 64)")
    ping.add_argument(
        "-s", "--size", type=_int_range(0, 65527), default=56, help="payload bytes (default 56)"
    )
    ping.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of responders")
    _add_family(ping)
    _add_common(ping)
    ping.set_defaults(run=cmd_ping)

    trace = commands.add_parser("traceroute", help="trace the path to a host, every TTL at once")
    trace.add_argument("host", metavar="HOST")
    trace.add_argument(
        "-m", "--max-hops", type=_int_range(1, 255), default=30, help="largest TTL (default 30)"
    )
    trace.add_argument("-f", "--first-hop", type=_int_range(1, 255), default=1, help="first TTL (default 1)")
    trace.add_argument(
        "-q", "--probes", type=_int_range(1, 100), default=3, help="probes per hop (default 3)"
    )
    trace.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of hops")
    trace.add_argument("--no-paris", action="store_true", help="let the checksum vary between probes")
    _add_family(trace)
    _add_common(trace)
    trace.set_defaults(run=cmd_traceroute)

    sweep = commands.add_parser(
        "multiping",
        help="ping many hosts at once, like fping",
        description="Ping every HOST (and every line of FILE) COUNT times from one socket. Rows come out "
        "in input order; a name that does not resolve gets a row with its error.",
    )
    sweep.add_argument("hosts", metavar="HOST", nargs="*")
    sweep.add_argument("-f", "--file", metavar="FILE", help="read hosts from FILE, one per line ('-': stdin)")
    sweep.add_argument("-c", "--count", type=_int_range(1), default=1, help="echoes per host (default 1)")
    sweep.add_argument(
        "-i",
        "--interval",
        type=_non_negative_float,
        default=1.0,
        help="seconds between echoes to the same host (default 1; fping's -p)",
    )
    sweep.add_argument(
        "--rate",
        type=_non_negative_float,
        default=icmpx.DEFAULT_SWEEP_RATE,
        metavar="PPS",
        help=f"packets per second for the whole sweep (default {icmpx.DEFAULT_SWEEP_RATE:g}; "
        "0 = as fast as possible)",
    )
    sweep.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    _add_family(sweep)
    _add_common(sweep)
    sweep.set_defaults(run=cmd_multiping)

    live = commands.add_parser(
        "mtr",
        help="per-hop statistics, cycle after cycle, like mtr",
        description="On a terminal: a live table until interrupted (or COUNT cycles). With --report, --json "
        "or when stdout is not a terminal: 10 cycles (or COUNT), then one table.",
    )
    live.add_argument("host", metavar="HOST")
    live.add_argument(
        "-c", "--cycles", type=_int_range(1), default=None, metavar="CYCLES", help="cycles to run"
    )
    live.add_argument(
        "-i", "--interval", type=_positive_float, default=1.0, help="seconds between cycles (default 1)"
    )
    live.add_argument(
        "-m", "--max-hops", type=_int_range(1, 255), default=30, help="largest TTL (default 30)"
    )
    live.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of hops")
    live.add_argument("--report", action="store_true", help="print one table at the end (mtr --report)")
    _add_family(live)
    _add_common(live)
    live.set_defaults(run=cmd_mtr)

    # Listed for --help; main() hands `icmpx exporter ...` to icmpx.exporter, which parses the rest.
    commands.add_parser(
        "exporter", help="Prometheus exporter: probe targets continuously (icmpx exporter --help)"
    )
    return parser


def _privileged(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "raw": True, "dgram": False}[args.privileged]


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------------------------------------- ping


def ping_json(target: str, addr: str | None, results: Sequence[icmpx.EchoResult]) -> dict[str, Any]:
    stats = icmpx.PingStats.from_results(results, target=target)
    return {
        "target": target,
        "addr": addr,
        "results": [
            {
                "seq": position,
                "rtt_ms": r.rtt,
                "error": r.error,
                "from": r.responder,
                "ttl": r.reply.received_packet.ip_header.ttl if r.reply is not None else None,
            }
            for position, r in enumerate(results, 1)
        ],
        "stats": {
            "sent": stats.sent,
            "received": stats.received,
            "loss_pct": stats.loss_pct,
            "min_ms": stats.min_rtt,
            "avg_ms": stats.avg_rtt,
            "max_ms": stats.max_rtt,
            "stdev_ms": stats.stdev_rtt,
            "jitter_ms": stats.jitter,
        },
    }


async def _ping(args: argparse.Namespace, out: TextIO, results: list[icmpx.EchoResult]) -> int:
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args), ttl=args.ttl) as client:
        target = await client.resolve(args.host, family=args.family)
        await client.socket_kind(6 if target.v6 else 4)  # fail on permissions before printing anything
        if not args.json:
            print(f"PING {args.host} ({target.addr}) {args.size} data bytes", file=out, flush=True)
        series = client.iter_ping(
            target.addr, count=args.count, interval=args.interval, payload_size=args.size
        )
        async for result in series:
            results.append(result)
            if not args.json:
                print(await _ping_line(client, args, len(results), result), file=out, flush=True)
    if args.json:
        out.write(json.dumps(ping_json(args.host, target.addr, results)) + "\n")
    else:
        _ping_summary(args.host, results, out)
    return EXIT_OK if any(r.ok for r in results) else EXIT_NO_ANSWER


async def _ping_line(
    client: icmpx.AsyncClient, args: argparse.Namespace, position: int, result: icmpx.EchoResult
) -> str:
    if result.reply is None:
        return f"no answer for icmp_seq={position} ({result.error})"
    packet = result.reply.received_packet
    src = packet.ip_header.src_addr
    who = src
    if not args.numeric:
        name = await client.reverse_dns(src)
        if name:
            who = f"{name} ({src})"
    if result.error is None:
        ttl = f" ttl={packet.ip_header.ttl}" if packet.ip_header.ttl is not None else ""
        return f"{packet.size} bytes from {who}: icmp_seq={position}{ttl} time={result.reply.rtt:.3f} ms"
    return f"From {who} icmp_seq={position} {result.error} (type {packet.icmp_type}, code {packet.icmp_code})"


def _ping_summary(host: str, results: Sequence[icmpx.EchoResult], out: TextIO) -> None:
    stats = icmpx.PingStats.from_results(results, target=host)
    print(f"\n--- {host} ping statistics ---", file=out)
    print(
        f"{stats.sent} packets transmitted, {stats.received} received, {stats.loss_pct:g}% packet loss",
        file=out,
    )
    if stats.received:
        print(
            "rtt min/avg/max/stdev/jitter = "
            f"{_fmt_ms(stats.min_rtt)}/{_fmt_ms(stats.avg_rtt)}/{_fmt_ms(stats.max_rtt)}/"
            f"{_fmt_ms(stats.stdev_rtt)}/{_fmt_ms(stats.jitter)} ms",
            file=out,
        )


def cmd_ping(args: argparse.Namespace) -> int:
    results: list[icmpx.EchoResult] = []
    try:
        return anyio.run(_ping, args, sys.stdout, results)
    except KeyboardInterrupt:
        if not args.json:
            _ping_summary(args.host, results, sys.stdout)
        return EXIT_OK if any(r.ok for r in results) else EXIT_NO_ANSWER


# ------------------------------------------------------------------------------------------- traceroute


def traceroute_json(result: icmpx.TracerouteResult) -> dict[str, Any]:
    return {
        "target": result.target,
        "addr": result.addr,
        "reached": result.reached,
        "hops": [
            {
                "ttl": hop.ttl,
                "addr": hop.addr,
                "addrs": hop.addrs,
                "hostname": hop.hostname,
                "rtts_ms": [None if math.isinf(p.rtt) else p.rtt for p in hop.probes],
            }
            for hop in result.hops
        ],
    }


def _trace_line(hop: icmpx.Hop, names: dict[str, str | None]) -> str:
    parts = [f"{hop.ttl:2d} "]
    shown: str | None = None
    for probe in hop.probes:
        if probe.addr is None:
            parts.append(" *")
            continue
        if probe.addr != shown:
            name = names.get(probe.addr)
            parts.append(f" {name} ({probe.addr})" if name else f" {probe.addr}")
            shown = probe.addr
        mark = _ERROR_MARKS.get(probe.error or "", f" !{probe.error}" if probe.error else "")
        parts.append(f"  {probe.rtt:.3f} ms{mark}")
    return "".join(parts)


# traceroute(8)'s annotations for errors that end a path.
_ERROR_MARKS = {
    "time-exceeded": "",
    "host-unreachable": " !H",
    "net-unreachable": " !N",
    "protocol-unreachable": " !P",
    "port-unreachable": "",
    "admin-prohibited": " !X",
    "fragmentation-needed": " !F",
}


async def _traceroute(args: argparse.Namespace, out: TextIO) -> int:
    if args.first_hop > args.max_hops:
        raise UsageError(f"first hop {args.first_hop} is beyond max hops {args.max_hops}")
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        target = await client.resolve(args.host, family=args.family)
        await client.socket_kind(6 if target.v6 else 4)  # fail on permissions before printing anything
        if not args.json:
            print(
                f"traceroute to {args.host} ({target.addr}), {args.max_hops} hops max, 56 byte packets",
                file=out,
                flush=True,
            )
        result = await client.traceroute(
            target.addr,
            max_hops=args.max_hops,
            first_hop=args.first_hop,
            probes=args.probes,
            resolve_dns=not args.numeric,
            paris=not args.no_paris,
        )
        names: dict[str, str | None] = {}
        if not args.numeric:
            for addr in {p.addr for hop in result.hops for p in hop.probes if p.addr is not None}:
                names[addr] = await client.reverse_dns(addr)  # cached by the trace itself
    result = icmpx.TracerouteResult(
        target=args.host, addr=result.addr, reached=result.reached, hops=result.hops
    )
    if args.json:
        out.write(json.dumps(traceroute_json(result)) + "\n")
    else:
        for hop in result.hops:
            print(_trace_line(hop, names), file=out)
    return EXIT_OK if result.reached else EXIT_NO_ANSWER


def cmd_traceroute(args: argparse.Namespace) -> int:
    return anyio.run(_traceroute, args, sys.stdout)


# -------------------------------------------------------------------------------------------- multiping


def _read_hosts(args: argparse.Namespace) -> list[str]:
    hosts = list(args.hosts)
    if args.file is not None:
        try:
            stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
        with stream:
            for line in stream:
                host = line.split("#", 1)[0].strip()
                if host:
                    hosts.append(host)
    if not hosts:
        raise UsageError("no hosts given (name them, or use -f FILE / -f -)")
    return hosts


def multiping_json(rows: Sequence[icmpx.PingStats], elapsed: float) -> dict[str, Any]:
    return {
        "hosts": [
            {
                "target": r.target,
                "addr": r.addr,
                "sent": r.sent,
                "received": r.received,
                "loss_pct": r.loss_pct,
                "min_ms": r.min_rtt,
                "avg_ms": r.avg_rtt,
                "max_ms": r.max_rtt,
                "stdev_ms": r.stdev_rtt,
                "jitter_ms": r.jitter,
                "error": r.error,
            }
            for r in rows
        ],
        "elapsed_s": elapsed,
    }


def _multiping_line(row: icmpx.PingStats, width: int) -> str:
    name = row.target.ljust(width)
    if row.error is not None:
        return f"{name} : {row.error}"
    line = f"{name} : xmt/rcv/%loss = {row.sent}/{row.received}/{row.loss_pct:.0f}%"
    if row.received:
        line += f", min/avg/max = {_fmt_ms(row.min_rtt)}/{_fmt_ms(row.avg_rtt)}/{_fmt_ms(row.max_rtt)}"
    return line


async def _multiping(
    args: argparse.Namespace, hosts: list[str], out: TextIO
) -> tuple[list[icmpx.PingStats], float]:
    progress = not args.json and sys.stderr.isatty() and len(hosts) * args.count >= 1000
    started = anyio.current_time()
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        options: dict[str, Any] = {
            "count": args.count,
            "interval": args.interval,
            "rate": args.rate or None,
            "family": args.family,
        }
        if not progress:
            rows = await client.multiping(hosts, **options)
        else:
            # Stream to show progress; rows are put back in input order at the end.
            by_host: dict[str, list[icmpx.PingStats]] = {}
            done = 0
            async for row in client.iter_multiping(hosts, **options):
                by_host.setdefault(row.target, []).append(row)
                done += 1
                if done % 500 == 0 or done == len(hosts):
                    print(f"\r{done}/{len(hosts)} hosts done", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            rows = [by_host[host].pop(0) for host in hosts]
    return rows, anyio.current_time() - started


def cmd_multiping(args: argparse.Namespace) -> int:
    hosts = _read_hosts(args)
    out = sys.stdout
    rows, elapsed = anyio.run(_multiping, args, hosts, out)
    if args.json:
        out.write(json.dumps(multiping_json(rows, elapsed)) + "\n")
    else:
        if not args.quiet:
            width = max(len(r.target) for r in rows)
            out.write("".join(_multiping_line(r, width) + "\n" for r in rows))
        alive = sum(1 for r in rows if r.received)
        unresolved = sum(1 for r in rows if r.error is not None)
        print(
            f"{len(rows)} targets, {alive} alive, {len(rows) - alive - unresolved} unreachable, "
            f"{unresolved} unresolved, {elapsed:.3f} s",
            file=out,
        )
    if any(r.error is not None for r in rows):
        return EXIT_UNRESOLVED
    return EXIT_OK if all(r.received for r in rows) else EXIT_NO_ANSWER


# -------------------------------------------------------------------------------------------------- mtr

MTR_COLUMNS = (
    "Hop",
    "Address",
    "Hostname",
    "Loss%",
    "Sent",
    "Recv",
    "Last",
    "Avg",
    "Best",
    "Worst",
    "StDev",
    "Javg",
)


def mtr_json(report: icmpx.MtrReport) -> dict[str, Any]:
    return {
        "target": report.target,
        "addr": report.addr,
        "cycles": report.cycle,
        "hops": [
            {
                "ttl": h.ttl,
                "addr": h.addr,
                "addrs": h.addrs,
                "hostname": h.hostname,
                "sent": h.sent,
                "received": h.received,
                "loss_pct": h.loss_pct,
                "last_ms": h.last,
                "avg_ms": h.avg,
                "best_ms": h.best,
                "worst_ms": h.worst,
                "stdev_ms": h.stdev,
                "javg_ms": h.javg,
            }
            for h in report.hops
        ],
    }


def _mtr_cells(hop: icmpx.MtrHop) -> list[str]:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    address = hop.addr or "???"
    if len(hop.addrs) > 1:
        address += f" (+{len(hop.addrs) - 1})"
    return [
        str(hop.ttl),
        address,
        hop.hostname or "",
        f"{hop.loss_pct:.1f}",
        str(hop.sent),
        str(hop.received),
        ms(hop.last),
        ms(hop.avg),
        ms(hop.best),
        ms(hop.worst),
        ms(hop.stdev),
        ms(hop.javg),
    ]


def mtr_text(report: icmpx.MtrReport) -> str:
    """The report as a plain text table, every column as wide as its widest cell (never truncated)."""
    rows = [list(MTR_COLUMNS)] + [_mtr_cells(h) for h in report.hops]
    widths = [max(len(row[i]) for row in rows) for i in range(len(MTR_COLUMNS))]
    left = {1, 2}
    lines = [f"mtr to {report.target} ({report.addr}), {report.cycle} cycles"]
    for row in rows:
        cells = [
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _mtr_table(report: icmpx.MtrReport) -> Any:
    from rich.table import Table  # imported only for the live view: it costs start-up time

    table = Table(title=f"mtr to {report.target} ({report.addr}) \u2014 cycle {report.cycle}", expand=False)
    for i, name in enumerate(MTR_COLUMNS):
        if i in (1, 2):  # addresses and names wrap on a narrow terminal, never lose characters
            table.add_column(name, justify="left", overflow="fold")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    for hop in report.hops:
        table.add_row(*_mtr_cells(hop))
    return table


def _mtr_exit(last: icmpx.MtrReport | None) -> int:
    """0 when the destination answered at least once (as mtr), else 1."""
    if last is not None and any(h.addr == last.addr and h.received for h in last.hops):
        return EXIT_OK
    return EXIT_NO_ANSWER


async def _mtr(args: argparse.Namespace, out: TextIO, live_view: bool, seen: list[icmpx.MtrReport]) -> int:
    cycles = args.cycles if args.cycles is not None else (None if live_view else 10)
    last: icmpx.MtrReport | None = None
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        target = await client.resolve(args.host, family=args.family)
        await client.socket_kind(6 if target.v6 else 4)  # fail on permissions before drawing anything
        reports = client.mtr(
            args.host,
            cycles=cycles,
            interval=args.interval,
            max_hops=args.max_hops,
            resolve_dns=not args.numeric,
            family=args.family,
        )
        if live_view:
            from rich.console import Console
            from rich.live import Live

            with Live(console=Console(file=out), auto_refresh=False) as live:
                try:
                    async for last in reports:
                        seen[:] = [last]
                        live.update(_mtr_table(last), refresh=True)
                finally:
                    await reports.aclose()
        else:
            async for report in reports:
                last = report
    if last is None:
        return EXIT_NO_ANSWER
    if args.json:
        out.write(json.dumps(mtr_json(last)) + "\n")
    elif not live_view:
        out.write(mtr_text(last))
    return _mtr_exit(last)


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_mtr(args: argparse.Namespace) -> int:
    live_view = not args.report and not args.json and sys.stdout.isatty() and _rich_available()
    seen: list[icmpx.MtrReport] = []
    try:
        return anyio.run(_mtr, args, sys.stdout, live_view, seen)
    except KeyboardInterrupt:
        return _mtr_exit(seen[-1] if seen else None)


# ------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["exporter"]:
        # The exporter parses its own arguments (icmpx/exporter); imported only when asked for.
        from .exporter import main as exporter_main

        return exporter_main(words[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except UsageError as exc:
        print(f"icmpx: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"icmpx: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except icmpx.NameResolutionError as exc:
        print(f"icmpx: {exc}", file=sys.stderr)
        return EXIT_UNRESOLVED
    except icmpx.RawSocketPermissionError as exc:
        print(exc, file=sys.stderr)  # the message starts with "icmpx needs ..." and says what to run
        return EXIT_SYSTEM
    except (icmpx.IcmpxError, OSError) as exc:
        print(f"icmpx: {exc}", file=sys.stderr)
        return EXIT_SYSTEM
    except BrokenPipeError:
        return EXIT_OK
    return code


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()
