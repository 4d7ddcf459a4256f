"""Result types: frozen, slotted dataclasses with keyword-only fields. RTTs are in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, NamedTuple

from ._stats import RttAccumulator, loss_pct

__all__ = [
    "DEFAULT_SWEEP_RATE",
    "EchoReply",
    "EchoRequest",
    "EchoResult",
    "EngineStats",
    "ErrorKind",
    "Hop",
    "HopProbe",
    "IPHeader",
    "MplsLabel",
    "MtrHop",
    "MtrReport",
    "PingStats",
    "ReceivedPacket",
    "Target",
    "TracerouteResult",
]


DEFAULT_SWEEP_RATE = 1000.0
"""Default pace of a sweep (``multiping``) in packets per second: gentle on real networks and their ICMP
rate limits, still 60,000 targets a minute. Pass ``rate=None`` (or 0) for an unpaced sweep."""


class ErrorKind(StrEnum):
    """Why a probe got no echo reply: the value of `EchoResult.error` and `HopProbe.error`.

    A ``str`` subclass, so ``result.error == "timeout"`` keeps working, while ``ErrorKind.TIMEOUT`` lets a
    type checker and an IDE catch a misspelt name. ICMP messages without a name of their own (an unassigned
    code, say) still compare equal to their kebab-case text (``"unreachable-code-9"``); the raw type and
    code stay on ``reply.received_packet``.
    """

    TIMEOUT = "timeout"
    """Nothing came back within the timeout."""
    SEND_FAILED = "send-failed"
    """The kernel refused to send the probe for a reason without an ICMP name."""
    TIME_EXCEEDED = "time-exceeded"
    """A router dropped the probe when its TTL / hop limit ran out (what traceroute looks for)."""
    REASSEMBLY_TIME_EXCEEDED = "reassembly-time-exceeded"
    NET_UNREACHABLE = "net-unreachable"
    HOST_UNREACHABLE = "host-unreachable"
    PROTOCOL_UNREACHABLE = "protocol-unreachable"
    PORT_UNREACHABLE = "port-unreachable"
    FRAGMENTATION_NEEDED = "fragmentation-needed"
    SOURCE_ROUTE_FAILED = "source-route-failed"
    NET_UNKNOWN = "net-unknown"
    HOST_UNKNOWN = "host-unknown"
    SOURCE_HOST_ISOLATED = "source-host-isolated"
    NET_PROHIBITED = "net-prohibited"
    HOST_PROHIBITED = "host-prohibited"
    NET_UNREACHABLE_FOR_TOS = "net-unreachable-for-tos"
    HOST_UNREACHABLE_FOR_TOS = "host-unreachable-for-tos"
    ADMIN_PROHIBITED = "admin-prohibited"
    """A firewall refused the probe (ICMPv4 code 13, ICMPv6 code 1)."""
    HOST_PRECEDENCE_VIOLATION = "host-precedence-violation"
    PRECEDENCE_CUTOFF = "precedence-cutoff"
    BEYOND_SCOPE = "beyond-scope"
    SOURCE_POLICY_FAILED = "source-policy-failed"
    REJECT_ROUTE = "reject-route"
    SOURCE_ROUTE_ERROR = "source-route-error"
    HEADERS_TOO_LONG = "headers-too-long"
    PACKET_TOO_BIG = "packet-too-big"
    PARAMETER_PROBLEM = "parameter-problem"
    SOURCE_QUENCH = "source-quench"
    REDIRECT = "redirect"

    @classmethod
    def _missing_(cls, value: object) -> ErrorKind | None:
        # A message without a member of its own ("unreachable-code-9", "icmp-type-42-code-0"): a value
        # of this type all the same, equal to its text, so every `error` is an ErrorKind.
        if not isinstance(value, str) or not value:
            return None
        kind = str.__new__(cls, value)
        kind._name_ = value.upper().replace("-", "_")
        kind._value_ = value
        return kind


def error_kind(name: str | None) -> ErrorKind | None:
    """The `ErrorKind` for an error name (``None`` stays ``None``)."""
    if name is None:
        return None
    kind = _KINDS.get(name)
    return kind if kind is not None else ErrorKind(name)


_KINDS: dict[str, ErrorKind] = {kind.value: kind for kind in ErrorKind}


@dataclass(frozen=True, slots=True, kw_only=True)
class MplsLabel:
    """One entry of an RFC 4950 MPLS label stack quoted by a router in its ICMP error.

    Routers inside an MPLS network may append the label stack the probe carried when it expired
    (RFC 4884 extension, RFC 4950 object). Raw sockets see it; ping sockets do not (the kernel's error
    queue keeps no extensions), so there the stack is always empty.
    """

    label: int
    """The 20-bit label value."""
    tc: int
    """The 3-bit traffic class (formerly "EXP") field."""
    bottom: bool
    """True for the bottom-of-stack entry (the S bit)."""
    ttl: int
    """The label's own TTL when the router quoted it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IPHeader:
    """What is known of the IP header of a received packet.

    Only a raw IPv4 socket reads the whole header; on IPv6 and on ping sockets the kernel reports the
    source address and the TTL / hop limit, and ``dst_addr`` stays ``None``.
    """

    src_addr: str
    """Who sent the packet: the target for an echo reply, the router for an ICMP error."""
    dst_addr: str | None
    """The packet's destination (this host), where the IP header was read (raw IPv4), else ``None``."""
    ttl: int | None
    """The reply's TTL (IPv4) or hop limit (IPv6) where the kernel reports it, else ``None``."""
    tos: int | None = None
    """The received packet's TOS byte (IPv4) or traffic class (IPv6). Raw IPv4 sockets read it from the
    header, always; elsewhere the kernel reports it (``IP_RECVTOS`` / ``IPV6_RECVTCLASS``, one more control
    message per packet) once a call on the client has asked for ``tos``; else, and for ICMP errors on ping
    sockets, ``None``. An echo reply carries the TOS of its request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedPacket:
    """A packet that answered a probe: an echo reply or an ICMP error quoting the probe.

    The raw ``icmp_type`` and ``icmp_code`` stay here whatever name `EchoResult.error` gives them.
    """

    ip_header: IPHeader
    """Source, destination and TTL of the received packet."""
    icmp_type: int
    """ICMP type: 0 / 129 for an echo reply, 11 / 3 for Time Exceeded, 3 / 1 for Unreachable (v4 / v6)."""
    icmp_code: int
    """ICMP code (for instance 1, host unreachable, with type 3)."""
    ident: int
    """Echo identifier of the probe answered (for an error, the one of the quoted echo request)."""
    seq: int
    """Echo sequence number of the probe answered."""
    size: int
    """Size in bytes of the ICMP message (header and payload)."""
    mpls: tuple[MplsLabel, ...] = ()
    """RFC 4950 label stack the router quoted, outermost first (empty if none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoRequest:
    """The echo request that was sent: destination, wire identifier and sequence, TTL, payload size."""

    addr: str
    """Destination address, written as the kernel writes it (``"::1"``, ``"127.0.0.1"``)."""
    ident: int
    """Echo identifier on the wire; on a ping socket the kernel chose it (the socket's port)."""
    seq: int
    """Echo sequence number on the wire (not the position in a series: that is ``position``)."""
    ttl: int
    """TTL (IPv4) or hop limit (IPv6) the request was sent with."""
    payload_size: int
    """Bytes of payload after the 8-byte ICMP header."""
    position: int = 1
    """1-based position of this echo in its series (``ping``'s icmp_seq as people read it: 1, 2, 3…)."""
    source: str | None = None
    """The source address asked for (``source=``), ``None`` when the kernel chose it."""
    interface: str | None = None
    """The interface asked for (``interface=``), ``None`` when the routing table chose it."""
    tos: int | None = None
    """The TOS byte (IPv4) or traffic class (IPv6) asked for (``tos=``), ``None``: the socket's (0)."""
    dont_fragment: str | None = None
    """``"do"``, ``"dont"`` or ``"want"`` as asked (``dont_fragment=``); ``"probe"`` for `path_mtu`'s probes
    (DF set, the kernel's cached path MTU ignored); ``None``: the kernel's default."""
    mark: int | None = None
    """The firewall mark asked for (``mark=``), ``None`` for none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoReply:
    """What answered: round-trip time in milliseconds and the received packet.

    Present for echo replies and for ICMP errors alike; `EchoResult.error` tells which.
    """

    rtt: float
    """Milliseconds from the send to the kernel's receive timestamp of the answer."""
    received_packet: ReceivedPacket
    """The echo reply or ICMP error that answered."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoResult:
    """The outcome of one probe.

    ``error`` is ``None`` for an echo reply, `ErrorKind.TIMEOUT` (``"timeout"``) when nothing came back,
    otherwise the ICMP error's `ErrorKind` (``"time-exceeded"``, ``"host-unreachable"``, …); the raw type
    and code stay on ``reply.received_packet``. When the kernel refused the send itself (no route, for
    instance), ``error`` names the failure and ``reply`` is ``None``.

    Test success with ``ok``: an ICMP error (a router's admin-prohibited, say) also has a ``reply``.
    """

    request: EchoRequest
    """The echo request that was sent."""
    reply: EchoReply | None
    """What answered (echo reply or ICMP error), ``None`` when nothing did."""
    error: ErrorKind | None
    """``None`` for an echo reply, else why not: ``"timeout"`` or the ICMP error's `ErrorKind`."""
    weak: bool = False
    """True for an ICMP error matched on a short quote (identifier, sequence and checksum: the router
    quoted too little of the probe for its whole signature). See `AsyncClient`'s ``accept_weak``."""

    @property
    def ok(self) -> bool:
        """True when an echo reply came back (not an ICMP error, not a timeout)."""
        return self.error is None

    @property
    def position(self) -> int:
        """1-based position of this echo in its series (``request.seq`` is the wire sequence)."""
        return self.request.position

    @property
    def rtt(self) -> float | None:
        """Round-trip time in milliseconds of whatever answered (reply or ICMP error), else None."""
        return self.reply.rtt if self.reply is not None else None

    @property
    def responder(self) -> str | None:
        """Address that answered: the target for a reply, the router for an ICMP error."""
        return self.reply.received_packet.ip_header.src_addr if self.reply is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class HopProbe:
    """One probe at one TTL of a traceroute: ``rtt`` is ``float("inf")`` when nothing answered."""

    rtt: float
    """Round-trip time in milliseconds, ``float("inf")`` on timeout."""
    addr: str | None
    """Who answered (a router, or the destination), ``None`` on timeout."""
    error: ErrorKind | None
    """``"time-exceeded"`` from a router, ``None`` for the destination's echo reply, ``"timeout"``, or
    another ICMP error name (``"host-unreachable"``, ...)."""
    mpls: tuple[MplsLabel, ...] = ()
    """RFC 4950 label stack the router quoted, outermost first (empty if none)."""
    weak: bool = False
    """True when the router's error was matched on a short quote (see `EchoResult.weak`)."""

    @property
    def answered(self) -> bool:
        """True when something answered this probe."""
        return self.addr is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """One TTL of a traceroute.

    ``addr`` is the most frequent responder, ``addrs`` every responder (several on load-balanced paths),
    ``hostname`` the reverse DNS name of ``addr`` when asked for and found.
    """

    ttl: int
    """The TTL (hop limit) of this hop's probes: 1 for the first router."""
    addr: str | None
    """The most frequent responder, ``None`` for a silent hop."""
    addrs: tuple[str, ...] = ()
    """Every responder, in order of first answer (several on load-balanced paths)."""
    hostname: str | None = None
    """Reverse DNS name of ``addr`` when asked for (``resolve_dns``) and found."""
    probes: tuple[HopProbe, ...] = ()
    """One entry per probe sent at this TTL, in sending order."""

    @property
    def rtts(self) -> tuple[float, ...]:
        """RTT of each probe, ``inf`` for the ones that timed out."""
        return tuple(p.rtt for p in self.probes)


@dataclass(frozen=True, slots=True, kw_only=True)
class TracerouteResult:
    """A whole trace: one `Hop` per TTL from ``first_hop`` up to the destination (or ``max_hops``).

    Silent hops are included (``addr=None``); hops past the destination are not.
    """

    target: str
    """The host as it was asked for (name or address)."""
    addr: str
    """The address that was traced."""
    reached: bool
    """True when the destination itself answered with an echo reply."""
    hops: tuple[Hop, ...] = ()
    """One `Hop` per TTL, lowest first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PingStats:
    """Summary of the echoes sent to one target. RTT figures are ``None`` when nothing came back.

    ``error`` says why the target was not pinged at all (for instance its name did not resolve).
    """

    target: str
    """The host as it was given (name or address)."""
    addr: str | None
    """The address that was pinged, ``None`` when the name did not resolve."""
    sent: int
    """Echo requests sent (0 when the target was not pinged)."""
    received: int
    """Echo replies received in time (ICMP errors do not count)."""
    loss_pct: float
    """Lost echoes in percent, 0–100 (100.0 for a target that was not pinged)."""
    min_rtt: float | None = None
    """Lowest RTT in milliseconds."""
    avg_rtt: float | None = None
    """Mean RTT in milliseconds."""
    max_rtt: float | None = None
    """Highest RTT in milliseconds."""
    stdev_rtt: float | None = None
    """Sample standard deviation of the RTTs in milliseconds (0.0 for a single reply)."""
    jitter: float | None = None
    """Mean absolute difference of consecutive RTTs in milliseconds (mtr's Javg; 0.0 for one reply)."""
    error: str | None = None
    """Why the target was not pinged at all (for instance its name did not resolve), else ``None``."""

    @property
    def is_alive(self) -> bool:
        """True when at least one echo reply came back."""
        return self.received > 0

    @classmethod
    def _row(
        cls,
        target: str,
        addr: str | None,
        sent: int,
        received: int,
        loss_pct: float,
        min_rtt: float | None,
        avg_rtt: float | None,
        max_rtt: float | None,
        stdev_rtt: float | None,
        jitter: float | None,
    ) -> PingStats:
        # One row per target of a sweep: see PingStatsRow.
        row = PingStatsRow(
            target, addr, sent, received, loss_pct, min_rtt, avg_rtt, max_rtt, stdev_rtt, jitter
        )
        row.__class__ = cls  # type: ignore[assignment]
        return row  # type: ignore[return-value]

    @classmethod
    def from_accumulator(
        cls,
        *,
        target: str,
        addr: str | None,
        sent: int,
        acc: RttAccumulator,
        error: str | None = None,
    ) -> PingStats:
        return cls(
            target=target,
            addr=addr,
            sent=sent,
            received=acc.count,
            loss_pct=loss_pct(sent, acc.count),
            min_rtt=acc.best,
            avg_rtt=acc.mean,
            max_rtt=acc.worst,
            stdev_rtt=acc.stdev,
            jitter=acc.jitter,
            error=error,
        )

    @classmethod
    def from_results(cls, results: Sequence[EchoResult], *, target: str | None = None) -> PingStats:
        """Summarise a ``ping()`` result list (echo replies count as received, in sequence order).

        Args:
            results: The list `AsyncClient.ping` (or `Client.ping`) returned.
            target: The name to put in ``target``; by default the address pinged.

        Returns:
            The statistics ``icmpx ping`` prints at the end, as a `PingStats`.
        """
        addr = results[0].request.addr if results else None
        acc = RttAccumulator(r.reply.rtt for r in results if r.error is None and r.reply is not None)
        return cls.from_accumulator(
            target=target if target is not None else (addr or ""),
            addr=addr,
            sent=len(results),
            acc=acc,
        )

    @classmethod
    def unresolved(cls, target: str, error: str) -> PingStats:
        return cls(target=target, addr=None, sent=0, received=0, loss_pct=100.0, error=error)


class PingStatsRow:
    """A `PingStats` under construction: the same slots, written by a plain ``__init__``.

    A sweep builds one row per target (100,000 of them). The frozen dataclass's generated ``__init__`` goes
    through ``object.__setattr__`` for each field; this class stores its slots directly, and the finished
    object then becomes a `PingStats` by ``__class__`` assignment, which Python allows between classes of
    identical layout. About twice as fast; the same object as ``PingStats(...)`` makes (a test compares
    them). Use: ``row = PingStatsRow(...); row.__class__ = PingStats``.
    """

    __slots__ = PingStats.__slots__

    def __init__(
        self,
        target: str,
        addr: str | None,
        sent: int,
        received: int,
        loss_pct: float,
        min_rtt: float | None,
        avg_rtt: float | None,
        max_rtt: float | None,
        stdev_rtt: float | None,
        jitter: float | None,
    ) -> None:
        self.target = target
        self.addr = addr
        self.sent = sent
        self.received = received
        self.loss_pct = loss_pct
        self.min_rtt = min_rtt
        self.avg_rtt = avg_rtt
        self.max_rtt = max_rtt
        self.stdev_rtt = stdev_rtt
        self.jitter = jitter
        self.error: str | None = None


assert [f.name for f in fields(PingStats)] == list(PingStatsRow.__slots__), "PingStatsRow follows PingStats"


class EchoRequestRow:
    """An `EchoRequest` under construction, as `PingStatsRow` is a `PingStats` one: every result of
    ``ping``, ``probe`` and ``iter_ping`` builds one, and the frozen dataclass's ``__init__`` sets each of
    its eleven fields through ``object.__setattr__`` (about 1 µs; this, 0.2 µs). Use:
    ``row = EchoRequestRow(...); row.__class__ = EchoRequest``."""

    __slots__ = EchoRequest.__slots__

    def __init__(
        self,
        addr: str,
        ident: int,
        seq: int,
        ttl: int,
        payload_size: int,
        position: int,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: str | None = None,
        mark: int | None = None,
    ) -> None:
        self.addr = addr
        self.ident = ident
        self.seq = seq
        self.ttl = ttl
        self.payload_size = payload_size
        self.position = position
        self.source = source
        self.interface = interface
        self.tos = tos
        self.dont_fragment = dont_fragment
        self.mark = mark


assert [f.name for f in fields(EchoRequest)] == list(EchoRequestRow.__slots__), "EchoRequestRow follows it"


@dataclass(frozen=True, slots=True, kw_only=True)
class MtrHop:
    """mtr's columns for one TTL; RTT figures in milliseconds, ``None`` until the hop has answered."""

    ttl: int
    """The TTL (hop limit) of this hop's probes: 1 for the first router."""
    addr: str | None
    """The most frequent responder so far, ``None`` while the hop is silent."""
    addrs: tuple[str, ...]
    """Every responder so far, most frequent first (several on load-balanced paths)."""
    hostname: str | None
    """Reverse DNS name of ``addr`` when asked for (``resolve_dns``) and found."""
    sent: int
    """Probes whose outcome is known (answered or timed out): mtr's Snt."""
    received: int
    """Probes answered."""
    loss_pct: float
    """Lost probes in percent, 0–100: mtr's Loss%."""
    last_rtt: float | None
    """RTT of the latest answered probe: mtr's Last."""
    min_rtt: float | None
    """Lowest RTT: mtr's Best."""
    avg_rtt: float | None
    """Mean RTT: mtr's Avg."""
    max_rtt: float | None
    """Highest RTT: mtr's Wrst."""
    stdev_rtt: float | None
    """Sample standard deviation of the RTTs: mtr's StDev."""
    jitter: float | None
    """Mean absolute difference of consecutive RTTs: mtr's Javg, the same measure as `PingStats.jitter`."""

    # mtr's column names, the field names before 0.2: aliases of the fields above.
    @property
    def last(self) -> float | None:
        """Alias of ``last_rtt`` (mtr's Last)."""
        return self.last_rtt

    @property
    def best(self) -> float | None:
        """Alias of ``min_rtt`` (mtr's Best)."""
        return self.min_rtt

    @property
    def avg(self) -> float | None:
        """Alias of ``avg_rtt`` (mtr's Avg)."""
        return self.avg_rtt

    @property
    def worst(self) -> float | None:
        """Alias of ``max_rtt`` (mtr's Wrst)."""
        return self.max_rtt

    @property
    def stdev(self) -> float | None:
        """Alias of ``stdev_rtt`` (mtr's StDev)."""
        return self.stdev_rtt

    @property
    def javg(self) -> float | None:
        """Alias of ``jitter`` (mtr's Javg)."""
        return self.jitter


@dataclass(frozen=True, slots=True, kw_only=True)
class MtrReport:
    """The state of an mtr run after ``cycle`` completed cycles.

    As in mtr, ``hops`` ends at the lowest TTL at which the destination has answered so far (or at the
    highest hop that answered, while it has not).
    """

    target: str
    """The host as it was asked for (name or address)."""
    addr: str
    """The address that is traced."""
    cycle: int
    """Cycles completed so far: 1 in the first report."""
    hops: tuple[MtrHop, ...]
    """One `MtrHop` per TTL, lowest first."""


class Target(NamedTuple):
    """A resolved destination: the name asked for, its address and the socket address to send to.

    `AsyncClient.resolve` returns one; pass ``target.addr`` to the operations to skip resolving again.
    """

    host: str
    """The name or literal as it was given."""
    addr: str
    """The address, written as the kernel writes it (``inet_ntop``)."""
    v6: bool
    """True for an IPv6 address."""
    sockaddr: tuple[Any, ...]
    """The socket address the echo requests are sent to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineStats:
    """Counters of everything the client's sockets sent and read (a snapshot).

    Read it from `AsyncClient.stats` (or `Client.stats`). Counters start at zero when the client opens and
    only grow; ``pending``, ``sockets`` and ``socket_kinds`` describe the moment of the snapshot.
    """

    sent: int
    """Echo requests the kernel accepted."""
    replies: int
    """Echo replies matched to a probe."""
    errors: int
    """ICMP errors (time exceeded, unreachable, …) matched to a probe."""
    timeouts: int
    """Probes that got no answer within their timeout."""
    send_errors: int
    """Echo requests the kernel refused to send (their results carry the error)."""
    foreign: int
    """Packets for someone else (another program's identifier, another destination)."""
    forged: int
    """Our identifier and sequence but the wrong cookie/token: spoofed, or a stale reuse."""
    late: int
    """Answers to probes that had already timed out."""
    duplicates: int
    """Second answers to probes already answered."""
    malformed: int
    """Packets that could not be parsed."""
    notices: int
    """Error notices reported through errno by the kernel (ping sockets), handled, not failures."""
    pending: int
    """Probes in flight: sent, neither answered nor timed out."""
    sockets: int
    """ICMP sockets open: one per family in use, and on ping sockets one more per 65,536 probes in flight;
    one more for each IPv4 ``dont_fragment`` mode used, for `path_mtu`'s probes, and on IPv6 ping sockets
    for each per-probe ``source`` (see the per-probe options guide)."""
    socket_kinds: tuple[str, ...]
    """``"raw"`` or ``"dgram"`` for each open socket, e.g. ``("raw",)``."""
    bad_checksum: int = 0
    """ICMPv4 packets whose checksum failed (raw sockets; the kernel checks the others itself)."""
    weak: int = 0
    """ICMP errors matched on a short quote (identifier, sequence and checksum, not the whole signature);
    also counted in ``errors``; their results say ``weak=True``."""
    refused: int = 0
    """Short-quote ICMP errors not accepted: the client refuses weak matches (``accept_weak=False``), or the
    quote could not be verified (ICMPv6 on a ping socket)."""
    kernel_drops: int = 0
    """Packets the kernel dropped because a socket's receive buffer was full (``SO_RXQ_OVFL``'s count):
    loss inside this host, not on the network."""

    @property
    def dropped(self) -> int:
        """Packets read but not delivered: foreign, forged, late, duplicates, malformed, bad checksum and
        refused together."""
        return (
            self.foreign
            + self.forged
            + self.late
            + self.duplicates
            + self.malformed
            + self.bad_checksum
            + self.refused
        )
