"""Result types: frozen, slotted dataclasses with keyword-only fields. RTTs are in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._stats import RttAccumulator, loss_pct

__all__ = [
    "EchoReply",
    "EchoRequest",
    "EchoResult",
    "Hop",
    "HopProbe",
    "IPHeader",
    "MplsLabel",
    "MtrHop",
    "MtrReport",
    "PingStats",
    "ReceivedPacket",
    "TracerouteResult",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MplsLabel:
    """One entry of an RFC 4950 MPLS label stack quoted by a router in its ICMP error."""

    label: int
    tc: int
    bottom: bool
    ttl: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IPHeader:
    """What is known of the IP header of a received packet.

    ``ttl`` is the reply's TTL (IPv4) or hop limit (IPv6) where the kernel reports it, else ``None``.
    """

    src_addr: str
    dst_addr: str | None
    ttl: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedPacket:
    """A packet that answered a probe: an echo reply or an ICMP error quoting the probe."""

    ip_header: IPHeader
    icmp_type: int
    icmp_code: int
    ident: int
    seq: int
    size: int
    """Size in bytes of the ICMP message (header and payload)."""
    mpls: tuple[MplsLabel, ...] = ()
    """RFC 4950 label stack the router quoted, outermost first (empty if none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoRequest:
    """The echo request that was sent: destination, wire identifier and sequence, TTL, payload size."""

    addr: str
    ident: int
    seq: int
    ttl: int
    payload_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoReply:
    """What answered: round-trip time in milliseconds and the received packet."""

    rtt: float
    received_packet: ReceivedPacket


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoResult:
    """The outcome of one probe.

    ``error`` is ``None`` for an echo reply, ``"timeout"`` when nothing came back, otherwise the ICMP
    error's stable kebab-case name (``"time-exceeded"``, ``"host-unreachable"``, …); the raw type and code
    stay on ``reply.received_packet``.
    """

    request: EchoRequest
    reply: EchoReply | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when an echo reply came back."""
        return self.error is None

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
    addr: str | None
    error: str | None
    mpls: tuple[MplsLabel, ...] = ()

    @property
    def answered(self) -> bool:
        return self.addr is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """One TTL of a traceroute.

    ``addr`` is the most frequent responder, ``addrs`` every responder (several on load-balanced paths),
    ``hostname`` the reverse DNS name of ``addr`` when asked for and found.
    """

    ttl: int
    addr: str | None
    addrs: list[str] = field(default_factory=list)
    hostname: str | None = None
    probes: list[HopProbe] = field(default_factory=list)

    @property
    def rtts(self) -> list[float]:
        """RTT of each probe, ``inf`` for the ones that timed out."""
        return [p.rtt for p in self.probes]


@dataclass(frozen=True, slots=True, kw_only=True)
class TracerouteResult:
    """A whole trace: one `Hop` per TTL from ``first_hop`` up to the destination (or ``max_hops``)."""

    target: str
    addr: str
    reached: bool
    hops: list[Hop] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class PingStats:
    """Summary of the echoes sent to one target. RTT figures are ``None`` when nothing came back.

    ``error`` says why the target was not pinged at all (for instance its name did not resolve).
    """

    target: str
    addr: str | None
    sent: int
    received: int
    loss_pct: float
    min_rtt: float | None = None
    avg_rtt: float | None = None
    max_rtt: float | None = None
    stdev_rtt: float | None = None
    jitter: float | None = None
    error: str | None = None

    @property
    def is_alive(self) -> bool:
        return self.received > 0

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
        """Summarise a ``ping()`` result list (echo replies count as received, in sequence order)."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class MtrHop:
    """mtr's columns for one TTL; RTT figures in milliseconds, ``None`` until the hop has answered."""

    ttl: int
    addr: str | None
    addrs: list[str]
    hostname: str | None
    sent: int
    received: int
    loss_pct: float
    last: float | None
    avg: float | None
    best: float | None
    worst: float | None
    stdev: float | None
    javg: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MtrReport:
    """The state of an mtr run after ``cycle`` completed cycles."""

    target: str
    addr: str
    cycle: int
    hops: list[MtrHop]


def finite(values: Iterable[float]) -> list[float]:
    """The values that are not ``inf`` (answered probes)."""
    return [v for v in values if not math.isinf(v)]
