"""The ``icmpx`` command line: a front end over the public API only.

Exit status: 0 every target answered; 1 some target did not answer; 2 a name did not resolve (wins over 1);
3 bad arguments; 4 no permission for ICMP sockets, or another system error. Ctrl-C ends a command with what
it has collected, printed as usual (text or JSON), and the status it would have had had it ended there; a
closed stdout (``| head``) ends it quietly with status 0.

Each command is one ``_add_*`` function listed in `COMMANDS`: it adds its subparser and sets ``run``.
Whatever a command alone needs (rich, json, an operation) is imported where it is used: start-up time
(bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import socket
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

# Payload limits per family: the largest datagram less the IP header (IPv4 only) and the ICMP header.
MAX_PAYLOAD_V4 = 65535 - 20 - 8
MAX_PAYLOAD_V6 = 65535 - 8
NAME_WIDTH = 40  # multiping pads names to the longest, up to this: a long name does not widen every row


class _Parser(argparse.ArgumentParser):
    """argparse, but bad arguments exit with status 3 as documented (argparse's own is 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 3, with the command's usage)."""


# ------------------------------------------------------------------------------------- argument types


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: out of range: 0 < value")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: out of range: 0 <= value")
    return value


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low} <= value <= {high}" if high is not None else f"{low} <= value"
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: out of range: {bounds}")
        return value

    return parse


_NEGATIVE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``-c -1`` as ``-c=-1``: argparse reads a lone ``-1`` as an option (``-4`` and ``-6`` exist), which
    would hide the range error ("out of range: 1 <= value") behind "expected one argument"."""
    takes_value = {
        option
        for sub in _subparsers(parser)
        for action in sub._actions
        if action.option_strings and action.nargs != 0
        for option in action.option_strings
    }
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in takes_value and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{word}={argv[i + 1]}" if word.startswith("--") else word + argv[i + 1])
            i += 2
            continue
        if word == "--":
            out.extend(argv[i:])
            break
        out.append(word)
        i += 1
    return out


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [
        sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
    ]


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


def _tos(text: str) -> int:
    """``-Q``: a number 0–255, decimal or 0x hex (as ping(8) takes it)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid TOS {text!r}: a number 0-255 (0xb8 for DSCP EF)") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"invalid TOS {text!r}: out of range 0-255")
    return value


def _mark(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mark {text!r}: a number 0-4294967295") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"invalid mark {text!r}: out of range 0-4294967295")
    return value


def _add_probe_options(parser: argparse.ArgumentParser, *, dont_fragment: bool = True) -> None:
    """ping(8)'s per-packet options: -I, -Q, -M (where it applies), --mark."""
    parser.add_argument(
        "-I",
        dest="via",
        metavar="ADDR|IFACE",
        help="send from this source address, or out of this interface",
    )
    parser.add_argument("-Q", dest="tos", type=_tos, metavar="TOS", help="TOS / traffic class, 0-255")
    if dont_fragment:
        parser.add_argument(
            "-M",
            dest="pmtudisc",
            choices=("do", "dont", "want"),
            help="do: never fragment (DF), dont: allow fragmenting, want: the kernel's default",
        )
    parser.add_argument("--mark", type=_mark, metavar="N", help="firewall mark (SO_MARK), raw sockets only")


def _probe_options(args: argparse.Namespace, target: icmpx.Target | None = None) -> dict[str, Any]:
    """The per-probe keywords of the library from -I / -Q / -M / --mark (none when not given); a source
    address of the other family than ``target``'s is refused here, before anything is printed."""
    import ipaddress

    options: dict[str, Any] = {}
    if args.via is not None:
        try:
            source = ipaddress.ip_address(args.via)
        except ValueError:
            options["interface"] = args.via
        else:
            if target is not None and (source.version == 6) != target.v6:
                family = "IPv6" if target.v6 else "IPv4"
                raise UsageError(f"source address {args.via} cannot send to {family} destinations")
            options["source"] = args.via
    if args.tos is not None:
        options["tos"] = args.tos
    if getattr(args, "pmtudisc", None) is not None:
        options["dont_fragment"] = args.pmtudisc
    if args.mark is not None:
        options["mark"] = args.mark
    return options


def _command(
    commands: Any, name: str, run: Callable[[argparse.Namespace], int], **kwargs: Any
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(name, **kwargs)
    sub.set_defaults(run=run, parser=sub, json_failure=None)
    return sub


# -------------------------------------------------------------------------------------------- helpers


def _privileged(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "raw": True, "dgram": False}[args.privileged]


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> float | None:
    """A figure for a JSON document: milliseconds to the microsecond (no float noise), ``null`` for none."""
    return None if value is None or math.isinf(value) else round(value, 3)


def _printable(text: str) -> str:
    """Text from a file or the command line as it may be shown: control characters escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _dump(doc: dict[str, Any], out: TextIO) -> None:
    import json

    out.write(json.dumps(doc) + "\n")
    out.flush()


def _check_zone(host: str) -> None:
    """An IPv6 literal's zone (``fe80::1%eth0``) must name an interface of this host."""
    addr, percent, zone = host.partition("%")
    if not percent or ":" not in addr:
        return
    try:
        if zone.isdigit():
            socket.if_indextoname(int(zone))
        else:
            socket.if_nametoindex(zone)
    except (OSError, ValueError):
        raise UsageError(f"unknown interface {_printable(zone)!r} in {_printable(host)}") from None


def _zone(target: icmpx.Target) -> str:
    """``"%eth0"`` for a target with a zone (a scoped link-local address) that its address does not show
    already, else ``""``."""
    if not target.v6 or "%" in target.addr:
        return ""
    sockaddr = target.sockaddr
    scope: int | str = sockaddr[3] if len(sockaddr) == 4 else str(sockaddr[0]).partition("%")[2]
    if not scope:
        return ""
    try:
        return "%" + socket.if_indextoname(int(scope))
    except (OSError, ValueError):
        return f"%{scope}"


def _scoped(addr: str | None, zone: str) -> str | None:
    """A link-local address shown with the zone it was reached through, as ping(8) does."""
    if addr is None or not zone or "%" in addr or not addr.lower().startswith("fe80:"):
        return addr
    return addr + zone


async def _open(client: icmpx.AsyncClient, args: argparse.Namespace) -> icmpx.Target:
    """Resolve the target, then open its socket: a bad name or a missing permission fails before
    anything is printed."""
    _check_zone(args.host)
    target = await client.resolve(args.host, family=args.family)
    await client.open_socket(6 if target.v6 else 4)
    return target


def _run(func: Callable[..., Any], *args: Any) -> bool:
    """Run ``func(*args)`` in an event loop; True when Ctrl-C ended it (whatever it collected is kept by
    the caller), False when it ran to its end. Errors come out as themselves, not as exception groups."""
    try:
        anyio.run(func, *args)
    except KeyboardInterrupt:
        return True
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from group
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return True
        raise
    return False


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


# ------------------------------------------------------------------------------------------------- ping


def _add_ping(commands: Any) -> None:
    ping = _command(commands, "ping", cmd_ping, help="send echo requests to one host, like ping(8)")
    ping.add_argument("host", metavar="HOST")
    ping.add_argument("-c", "--count", type=_int_range(1), default=4, help="echoes to send (default 4)")
    ping.add_argument(
        "-i", "--interval", type=_non_negative_float, default=1.0, help="seconds between echoes (default 1)"
    )
    ping.add_argument("-t", "--ttl", type=_int_range(1, 255), default=64, help="TTL / hop limit (default 64)")
    ping.add_argument(
        "-s",
        "--size",
        type=_int_range(0, MAX_PAYLOAD_V6),
        default=56,
        help=f"payload bytes (default 56; at most {MAX_PAYLOAD_V4} over IPv4, {MAX_PAYLOAD_V6} over IPv6)",
    )
    ping.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of responders")
    ping.add_argument("-q", "--quiet", action="store_true", help="print only the first and summary lines")
    _add_probe_options(ping)
    _add_family(ping)
    _add_common(ping)
    ping.set_defaults(json_failure=ping_failure_json)


def ping_json(target: str, addr: str | None, results: Sequence[icmpx.EchoResult]) -> dict[str, Any]:
    stats = icmpx.PingStats.from_results(results, target=target)
    return {
        "target": target,
        "addr": addr,
        "results": [
            {
                "seq": r.position,
                "rtt_ms": _ms(r.rtt),
                "error": r.error,
                "from": r.responder,
                "ttl": r.reply.received_packet.ip_header.ttl if r.reply is not None else None,
                "weak": r.weak,
            }
            for r in results
        ],
        "stats": {
            "sent": stats.sent,
            "received": stats.received,
            "loss_pct": round(stats.loss_pct, 3),
            "min_ms": _ms(stats.min_rtt),
            "avg_ms": _ms(stats.avg_rtt),
            "max_ms": _ms(stats.max_rtt),
            "stdev_ms": _ms(stats.stdev_rtt),
            "jitter_ms": _ms(stats.jitter),
        },
    }


def ping_failure_json(host: str, error: str) -> dict[str, Any]:
    """The document ``ping --json`` writes when the host was not pinged at all: ``error`` says why."""
    doc = ping_json(host, None, [])
    doc["stats"]["loss_pct"] = 100.0  # as a multiping row of a target that was not pinged
    return {**doc, "error": error}


async def _ping(
    args: argparse.Namespace, out: TextIO, results: list[icmpx.EchoResult], shown: list[str]
) -> None:
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args), ttl=args.ttl) as client:
        target = await _open(client, args)
        limit = MAX_PAYLOAD_V6 if target.v6 else MAX_PAYLOAD_V4
        if args.size > limit:
            family = "IPv6" if target.v6 else "IPv4"
            raise UsageError(f"payload size {args.size} is too large for {family} (at most {limit})")
        zone = _zone(target)
        series = client.iter_ping(  # bad options fail here, before the first line
            args.host if zone else target.addr,
            count=args.count,
            interval=args.interval,
            payload_size=args.size,
            **_probe_options(args, target),
        )
        shown.append(f"{target.addr}{zone}")
        if not args.json:
            print(f"PING {_printable(args.host)} ({shown[0]}) {args.size} data bytes", file=out, flush=True)
        async for result in series:
            results.append(result)
            if not args.json and not args.quiet:
                print(await _ping_line(client, args, result, zone), file=out, flush=True)


async def _ping_line(
    client: icmpx.AsyncClient, args: argparse.Namespace, result: icmpx.EchoResult, zone: str
) -> str:
    if result.reply is None:
        return f"no answer for icmp_seq={result.position} ({result.error})"
    packet = result.reply.received_packet
    src = packet.ip_header.src_addr
    who = _scoped(src, zone) or src
    if not args.numeric:
        name = await client.reverse_dns(src)
        if name:
            who = f"{name} ({who})"
    if result.ok:
        ttl = f" ttl={packet.ip_header.ttl}" if packet.ip_header.ttl is not None else ""
        return (
            f"{packet.size} bytes from {who}: icmp_seq={result.position}{ttl} time={result.reply.rtt:.3f} ms"
        )
    return (
        f"From {who} icmp_seq={result.position} {result.error} "
        f"(type {packet.icmp_type}, code {packet.icmp_code})"
    )


def _ping_summary(host: str, results: Sequence[icmpx.EchoResult], out: TextIO) -> None:
    stats = icmpx.PingStats.from_results(results, target=host)
    print(f"\n--- {_printable(host)} ping statistics ---", file=out)
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
    out.flush()


def cmd_ping(args: argparse.Namespace) -> int:
    results: list[icmpx.EchoResult] = []
    shown: list[str] = []  # the address as printed, once resolved
    out = sys.stdout
    _run(_ping, args, out, results, shown)
    if not shown:  # interrupted while resolving: nothing was sent
        return EXIT_NO_ANSWER
    if args.json:
        _dump(ping_json(args.host, shown[0], results), out)
    else:
        _ping_summary(args.host, results, out)
    return EXIT_OK if any(r.ok for r in results) else EXIT_NO_ANSWER


# ------------------------------------------------------------------------------------------- traceroute


def _add_traceroute(commands: Any) -> None:
    trace = _command(
        commands, "traceroute", cmd_traceroute, help="trace the path to a host, every TTL at once"
    )
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
    _add_probe_options(trace)
    _add_family(trace)
    _add_common(trace)
    trace.set_defaults(json_failure=traceroute_failure_json)


def traceroute_json(result: icmpx.TracerouteResult) -> dict[str, Any]:
    return {
        "target": result.target,
        "addr": result.addr,
        "reached": result.reached,
        "hops": [
            {
                "ttl": hop.ttl,
                "addr": hop.addr,
                "addrs": list(hop.addrs),
                "hostname": hop.hostname,
                "rtts_ms": [_ms(p.rtt) for p in hop.probes],
                "weak": [p.weak for p in hop.probes],
            }
            for hop in result.hops
        ],
    }


def traceroute_failure_json(host: str, error: str) -> dict[str, Any]:
    return {"target": host, "addr": None, "reached": False, "hops": [], "error": error}


def _trace_line(hop: icmpx.Hop, names: dict[str, str | None], zone: str = "") -> str:
    parts = [f"{hop.ttl:2d} "]
    shown: str | None = None
    for probe in hop.probes:
        if probe.addr is None:
            parts.append(" *")
            continue
        if probe.addr != shown:
            addr = _scoped(probe.addr, zone)
            name = names.get(probe.addr)
            parts.append(f" {_printable(name)} ({addr})" if name else f" {addr}")
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


async def _traceroute(
    args: argparse.Namespace, out: TextIO, hops: list[icmpx.Hop], shown: list[icmpx.Target]
) -> None:
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        target = await _open(client, args)
        zone = _zone(target)
        trace = client.iter_traceroute(  # bad options fail here, before the first line
            args.host if zone else target.addr,
            max_hops=args.max_hops,
            first_hop=args.first_hop,
            probes=args.probes,
            resolve_dns=not args.numeric,
            paris=not args.no_paris,
            **_probe_options(args, target),
        )
        shown.append(target)
        if not args.json:
            print(
                f"traceroute to {_printable(args.host)} ({target.addr}{zone}), {args.max_hops} hops max, "
                "56 byte packets",
                file=out,
                flush=True,
            )
        async for hop in trace:
            hops.append(hop)
            if not args.json:
                names: dict[str, str | None] = {}
                if not args.numeric:  # every responder of the hop, named (the trace's lookups are cached)
                    names = {addr: await client.reverse_dns(addr) for addr in hop.addrs}
                print(_trace_line(hop, names, zone), file=out, flush=True)


def cmd_traceroute(args: argparse.Namespace) -> int:
    if args.first_hop > args.max_hops:
        raise UsageError(f"first hop {args.first_hop} is beyond max hops {args.max_hops}")
    hops: list[icmpx.Hop] = []
    shown: list[icmpx.Target] = []
    _run(_traceroute, args, sys.stdout, hops, shown)
    if not shown:
        return EXIT_NO_ANSWER
    target = shown[0]
    # Reached: the destination's echo reply ends the path (Ctrl-C may have come before it).
    reached = bool(hops) and any(p.error is None for p in hops[-1].probes if p.addr == target.addr)
    if args.json:
        result = icmpx.TracerouteResult(target=args.host, addr=target.addr, reached=reached, hops=tuple(hops))
        _dump(traceroute_json(result), sys.stdout)
    return EXIT_OK if reached else EXIT_NO_ANSWER


# -------------------------------------------------------------------------------------------- multiping


def _add_multiping(commands: Any) -> None:
    sweep = _command(
        commands,
        "multiping",
        cmd_multiping,
        help="ping many hosts at once, like fping",
        description="Ping every HOST (and every word of FILE, or of stdin when no HOST is named and stdin "
        "is not a terminal) COUNT times from one socket. Rows come out in input order; a name that does "
        "not resolve gets a row with its error.",
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
    sweep.add_argument(
        "-n", "--numeric", action="store_true", help="no reverse DNS (multiping never looks names up)"
    )
    _add_probe_options(sweep)
    _add_family(sweep)
    _add_common(sweep)


def _words(lines: Any) -> list[str]:
    """Hosts from a file: every word of every line (several per line allowed), ``#`` starts a comment."""
    return [word for line in lines for word in line.split("#", 1)[0].split()]


def _read_hosts(args: argparse.Namespace) -> list[str]:
    hosts = list(args.hosts)
    source = args.file
    if source is None and not hosts and not sys.stdin.isatty():
        source = "-"  # fping reads its targets from stdin when none are named
    if source is not None:
        try:
            stream = sys.stdin if source == "-" else open(source, encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
        with stream:
            hosts.extend(_words(stream))
    if not hosts:
        raise UsageError("no hosts given (name them, use -f FILE, or pipe them to stdin)")
    return hosts


def _unresolved(row: icmpx.PingStats) -> bool:
    """Not pinged because its name did not resolve (a send the kernel refused has an address)."""
    return row.addr is None and row.error is not None and row.error != INTERRUPTED


def multiping_json(rows: Sequence[icmpx.PingStats], elapsed: float, kernel_drops: int = 0) -> dict[str, Any]:
    return {
        "hosts": [
            {
                "target": r.target,
                "addr": r.addr,
                "sent": r.sent,
                "received": r.received,
                "loss_pct": round(r.loss_pct, 3),
                "min_ms": _ms(r.min_rtt),
                "avg_ms": _ms(r.avg_rtt),
                "max_ms": _ms(r.max_rtt),
                "stdev_ms": _ms(r.stdev_rtt),
                "jitter_ms": _ms(r.jitter),
                "error": r.error,
            }
            for r in rows
        ],
        "elapsed_s": round(elapsed, 6),
        "kernel_drops": kernel_drops,
    }


def _multiping_line(row: icmpx.PingStats, width: int) -> str:
    name = _printable(row.target).ljust(width)
    if row.error is not None:
        return f"{name} : {row.error}"
    line = f"{name} : xmt/rcv/%loss = {row.sent}/{row.received}/{row.loss_pct:.0f}%"
    if row.received:
        line += f", min/avg/max = {_fmt_ms(row.min_rtt)}/{_fmt_ms(row.avg_rtt)}/{_fmt_ms(row.max_rtt)}"
    return line


INTERRUPTED = "interrupted before its echoes were answered"


async def _multiping(
    args: argparse.Namespace,
    hosts: list[str],
    done: dict[str, list[icmpx.PingStats]],
    clock: list[float],
    drops: list[int],
) -> None:
    progress = not args.json and sys.stderr.isatty() and len(hosts) * args.count >= 1000
    clock.append(anyio.current_time())
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        rows = client.iter_multiping(
            hosts,
            count=args.count,
            interval=args.interval,
            rate=args.rate or None,
            family=args.family,
            **_probe_options(args),
        )
        count = 0
        try:
            async for row in rows:
                done.setdefault(row.target, []).append(row)
                count += 1
                if progress and (count % 500 == 0 or count == len(hosts)):
                    print(f"\r{count}/{len(hosts)} hosts done", end="", file=sys.stderr, flush=True)
        finally:
            clock.append(anyio.current_time())
            drops.append(client.stats.kernel_drops)
            if progress:
                print(file=sys.stderr)


def cmd_multiping(args: argparse.Namespace) -> int:
    hosts = _read_hosts(args)
    out = sys.stdout
    done: dict[str, list[icmpx.PingStats]] = {}  # rows in completion order, per target
    clock: list[float] = []
    drops: list[int] = []
    _run(_multiping, args, hosts, done, clock, drops)
    kernel_drops = drops[-1] if drops else 0
    if kernel_drops:
        # Loss inside this host, not on the network: say so, beside the rows.
        print(
            f"icmpx: {kernel_drops} packets were dropped by this host's kernel (socket receive buffer full): "
            "part of the loss below happened here, not on the network; lower --rate",
            file=sys.stderr,
        )
    # Input order; a target Ctrl-C caught before its row was complete says so.
    rows = [
        done[host].pop(0)
        if done.get(host)
        else icmpx.PingStats(target=host, addr=None, sent=0, received=0, loss_pct=100.0, error=INTERRUPTED)
        for host in hosts
    ]
    elapsed = clock[-1] - clock[0] if len(clock) > 1 else 0.0
    if args.json:
        _dump(multiping_json(rows, elapsed, kernel_drops), out)
    else:
        if not args.quiet:
            width = min(max(len(_printable(r.target)) for r in rows), NAME_WIDTH)
            out.write("".join(_multiping_line(r, width) + "\n" for r in rows))
        alive = sum(1 for r in rows if r.received)
        unresolved = sum(1 for r in rows if _unresolved(r))
        print(
            f"{len(rows)} targets, {alive} alive, {len(rows) - alive - unresolved} unreachable, "
            f"{unresolved} unresolved, {elapsed:.3f} s",
            file=out,
        )
    if any(_unresolved(r) for r in rows):
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


def _add_mtr(commands: Any) -> None:
    live = _command(
        commands,
        "mtr",
        cmd_mtr,
        help="per-hop statistics, cycle after cycle, like mtr",
        description="On a terminal: a live table until interrupted (or COUNT cycles); the live view needs "
        "the 'cli' extra (pip install 'icmpx[cli]'). With --report, --json or when stdout is not a "
        "terminal: 10 cycles (or COUNT), then one table.",
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
    _add_probe_options(live)
    _add_family(live)
    _add_common(live)
    live.set_defaults(json_failure=mtr_failure_json)


def mtr_json(report: icmpx.MtrReport) -> dict[str, Any]:
    return {
        "target": report.target,
        "addr": report.addr,
        "cycles": report.cycle,
        "hops": [
            {
                "ttl": h.ttl,
                "addr": h.addr,
                "addrs": list(h.addrs),
                "hostname": h.hostname,
                "sent": h.sent,
                "received": h.received,
                "loss_pct": round(h.loss_pct, 3),
                "last_ms": _ms(h.last_rtt),
                "avg_ms": _ms(h.avg_rtt),
                "best_ms": _ms(h.min_rtt),
                "worst_ms": _ms(h.max_rtt),
                "stdev_ms": _ms(h.stdev_rtt),
                "javg_ms": _ms(h.jitter),
            }
            for h in report.hops
        ],
    }


def mtr_failure_json(host: str, error: str) -> dict[str, Any]:
    return {"target": host, "addr": None, "cycles": 0, "hops": [], "error": error}


def _mtr_cells(hop: icmpx.MtrHop) -> list[str]:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    address = hop.addr or "???"
    if len(hop.addrs) > 1:
        address += f" (+{len(hop.addrs) - 1})"
    return [
        str(hop.ttl),
        address,
        _printable(hop.hostname or ""),
        f"{hop.loss_pct:.1f}",
        str(hop.sent),
        str(hop.received),
        ms(hop.last_rtt),
        ms(hop.avg_rtt),
        ms(hop.min_rtt),
        ms(hop.max_rtt),
        ms(hop.stdev_rtt),
        ms(hop.jitter),
    ]


def mtr_text(report: icmpx.MtrReport) -> str:
    """The report as a plain text table, every column as wide as its widest cell (never truncated)."""
    rows = [list(MTR_COLUMNS)] + [_mtr_cells(h) for h in report.hops]
    widths = [max(len(row[i]) for row in rows) for i in range(len(MTR_COLUMNS))]
    left = {1, 2}
    lines = [f"mtr to {_printable(report.target)} ({report.addr}), {report.cycle} cycles"]
    for row in rows:
        cells = [
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _mtr_table(report: icmpx.MtrReport) -> Any:
    from rich.table import Table  # imported only for the live view: it costs start-up time

    title = f"mtr to {_printable(report.target)} ({report.addr}) \u2014 cycle {report.cycle}"
    table = Table(title=title, expand=False)
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


async def _mtr(args: argparse.Namespace, out: TextIO, live_view: bool, seen: list[icmpx.MtrReport]) -> None:
    cycles = args.cycles if args.cycles is not None else (None if live_view else 10)
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        await _open(client, args)  # a bad name or a missing permission fails before drawing anything
        reports = client.mtr(
            args.host,
            cycles=cycles,
            interval=args.interval,
            max_hops=args.max_hops,
            resolve_dns=not args.numeric,
            family=args.family,
            **_probe_options(args),
        )
        if live_view:
            from rich.console import Console
            from rich.live import Live

            with Live(console=Console(file=out), auto_refresh=False) as live:
                try:
                    async for report in reports:
                        seen[:] = [report]
                        live.update(_mtr_table(report), refresh=True)
                finally:
                    await reports.aclose()
        else:
            async for report in reports:
                seen[:] = [report]


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_mtr(args: argparse.Namespace) -> int:
    terminal = not args.report and not args.json and sys.stdout.isatty()
    live_view = terminal and _rich_available()
    if terminal and not live_view:
        print(
            "icmpx: the live view needs the 'cli' extra (pip install 'icmpx[cli]'); "
            f"printing a report after {args.cycles or 10} cycles instead",
            file=sys.stderr,
            flush=True,
        )
    seen: list[icmpx.MtrReport] = []
    _run(_mtr, args, sys.stdout, live_view, seen)
    last = seen[-1] if seen else None
    if last is not None and not live_view:
        if args.json:
            _dump(mtr_json(last), sys.stdout)
        else:
            sys.stdout.write(mtr_text(last))
    return _mtr_exit(last)


# ------------------------------------------------------------------------------------------------- pmtu


def _add_pmtu(commands: Any) -> None:
    pmtu = _command(
        commands,
        "pmtu",
        cmd_pmtu,
        help="find the path MTU to a host and the hop where it drops, like tracepath",
        description="Probes of many sizes at once with DF set (the kernel's cached path MTU ignored): "
        "Fragmentation Needed / Packet Too Big give the next-hop MTU, and where a router drops large "
        "packets silently the sizes are bisected. Then probes one byte too large at every TTL name the "
        "router before the narrow link.",
    )
    pmtu.add_argument("host", metavar="HOST")
    pmtu.add_argument(
        "-m", "--max-hops", type=_int_range(1, 255), default=30, help="largest TTL searched (default 30)"
    )
    pmtu.add_argument("-n", "--numeric", action="store_true", help="no reverse DNS of the hop")
    _add_probe_options(pmtu, dont_fragment=False)
    _add_family(pmtu)
    _add_common(pmtu, timeout_default=1.0)
    pmtu.set_defaults(json_failure=pmtu_failure_json)


def pmtu_json(result: icmpx.PathMtu, hostname: str | None) -> dict[str, Any]:
    return {
        "target": result.target,
        "addr": result.addr,
        "mtu": result.mtu,
        "hop": result.hop,
        "hop_addr": result.hop_addr,
        "hop_hostname": hostname,
        "reported": result.reported,
        "probes": result.probes,
    }


def pmtu_failure_json(host: str, error: str) -> dict[str, Any]:
    return {"target": host, "addr": None, "mtu": None, "hop": None, "hop_addr": None, "error": error}


def pmtu_text(result: icmpx.PathMtu, hostname: str | None, host: str, zone: str = "") -> str:
    head = f"path MTU to {_printable(host)} ({result.addr}{zone}): "
    if result.mtu is None:
        return head + "no answer (not even to the smallest probe)\n"
    line = head + f"{result.mtu} bytes"
    if result.hop is not None:
        who = _scoped(result.hop_addr, zone) or "?"
        if hostname:
            who = f"{_printable(hostname)} ({who})"
        how = "reported by it" if result.reported else "it drops larger packets silently"
        line += f", drops after hop {result.hop}: {who} ({how})"
    else:
        line += " (the first link's: nothing narrower on the way)"
    return line + "\n"


async def _pmtu(args: argparse.Namespace, found: list[tuple[icmpx.PathMtu, str | None, str]]) -> None:
    async with icmpx.AsyncClient(timeout=args.timeout, privileged=_privileged(args)) as client:
        target = await _open(client, args)
        zone = _zone(target)
        result = await client.path_mtu(
            args.host if zone else target.addr, max_hops=args.max_hops, **_probe_options(args, target)
        )
        name = None
        if result.hop_addr is not None and not args.numeric:
            name = await client.reverse_dns(result.hop_addr)
        found.append((result, name, zone))


def cmd_pmtu(args: argparse.Namespace) -> int:
    found: list[tuple[icmpx.PathMtu, str | None, str]] = []
    _run(_pmtu, args, found)
    if not found:
        return EXIT_NO_ANSWER
    result, name, zone = found[0]
    if args.json:
        _dump(pmtu_json(result, name), sys.stdout)
    else:
        sys.stdout.write(pmtu_text(result, name, args.host, zone))
    return EXIT_OK if result.mtu is not None else EXIT_NO_ANSWER


# ------------------------------------------------------------------------------------------------- main


def _add_exporter(commands: Any) -> None:
    # Listed for --help; main() hands `icmpx exporter ...` to icmpx.exporter, which parses the rest.
    commands.add_parser(
        "exporter", help="Prometheus exporter: probe targets continuously (icmpx exporter --help)"
    )


COMMANDS: dict[str, Callable[[Any], None]] = {
    "ping": _add_ping,
    "traceroute": _add_traceroute,
    "multiping": _add_multiping,
    "mtr": _add_mtr,
    "pmtu": _add_pmtu,
    "exporter": _add_exporter,
}
"""One function per subcommand, by name; each adds its subparser (with ``_command``) and its options."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that subcommand is built (what a run needs: start-up time)."""
    parser = _Parser(
        prog="icmpx",
        description="ICMP diagnostics: ping, traceroute, multiping and mtr from one shared socket.",
        epilog="Exit status: 0 all targets answered, 1 some did not, 2 a name did not resolve, "
        "3 bad arguments, 4 no permission for ICMP sockets or another system error. Ctrl-C prints "
        "what was collected and exits with the status it has so far.",
    )
    parser.add_argument("--version", action="version", version=f"icmpx {icmpx.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name, add in COMMANDS.items():
        if command is None or name == command:
            add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["exporter"]:
        # The exporter parses its own arguments (icmpx/exporter); imported only when asked for.
        from .exporter import main as exporter_main

        return exporter_main(words[1:])
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(_attach_negative_values(parser, words))
    try:
        try:
            code: int = args.run(args)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's own flush at exit quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (UsageError, ValueError) as exc:
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except icmpx.NameResolutionError as exc:
        print(f"icmpx: {exc}", file=sys.stderr)
        if args.json and args.json_failure is not None:
            _dump(args.json_failure(args.host, str(exc)), sys.stdout)
        return EXIT_UNRESOLVED
    except icmpx.RawSocketPermissionError as exc:
        print(exc, file=sys.stderr)  # the message starts with "icmpx needs ..." and says what to run
        return EXIT_SYSTEM
    except (icmpx.IcmpxError, OSError) as exc:
        print(f"icmpx: {exc}", file=sys.stderr)
        return EXIT_SYSTEM
    return code


def run() -> NoReturn:
    """The ``icmpx`` command: `main`, then a quick exit.

    Once the output is written, the process leaves without the interpreter's teardown (module cleanup,
    a last garbage collection, waiting for idle worker threads), which costs more on this machine than a
    whole one-echo ping on loopback (bench/README.md). Nothing is left to do at that point: the sockets
    are closed, and the kernel reclaims the rest.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away; a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
