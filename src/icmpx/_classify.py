"""The receive decision: is this packet an answer to one of our probes, which one, and can we prove it?

Pure (sans-IO), as h11 keeps its state machine: bytes, control data already read and the pending table
come in; a `Verdict`, the probe and what answered go out. No socket, no clock, no event loop: the reader
(`_reader`) does the reading and the engine acts on the verdict, counting it in one place (`Tally`).

The checks, in order, for a datagram (the socket's kind decides where its ICMP header starts):

1. malformed: shorter than an ICMP header, or an IPv4 header that does not parse;
2. bad checksum: raw IPv4 only (the kernel checks ICMPv6 and ping sockets, never raw ICMPv4);
3. an echo reply: our identifier (else foreign), a pending probe under its key (else a late or duplicate
   answer the table remembers, or forged), the probe's whole signature (cookie and random token) in its
   payload (else forged, or late if it is the signature of the key's previous probe), from the probe's
   destination (else foreign), before the deadline (else late, and the probe times out);
4. an ICMP error: the quoted datagram must be the first fragment of one of our echo requests (else foreign),
   pending, to the same destination, and quote the probe's whole signature. A quote too short for that
   (RFC 792 asks routers for only the IP header and 8 bytes) is matched on identifier, sequence and the
   quoted checksum, which covers the random token: a *weak* match, kept (flagged) or refused by the client.

`BatchDecoder` is the fast path beside it: the common case of a sweep (an echo reply that matches a pending
probe in time) read straight out of a ``recvmmsg`` batch's buffers with ``struct.iter_unpack``, ten times
cheaper per packet. Everything it does not take goes to `Classifier.packet`, and a property test holds that
the two reach the same verdicts on the same packets.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import Any, NamedTuple

from ._exceptions import MalformedPacket
from ._matching import Outcome, PendingTable, Probe
from ._models import MplsLabel
from ._wire import (
    ECHO_HEADER,
    ICMP4_ECHO_REPLY,
    ICMP4_ECHO_REQUEST,
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    SIGNATURE_SIZE,
    checksum_ok,
    error_name,
    format_ipv4,
    format_ipv6,
    parse_icmp,
    quoted_checksum_ok,
)

__all__ = ["Answer", "BatchDecoder", "Classifier", "Decision", "Tally", "Verdict", "read_controls"]

_V4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
_V6_ERROR_TYPES = frozenset({1, 2, 3, 4})
_TIMESPEC = struct.Struct("@ll")
_NATIVE_INT = struct.Struct("@i")
_EXTENDED_ERR = struct.Struct("=IBBBBII")
# Control message (level, type) pairs the reader asks for (Linux values; this module imports no socket).
_SOL_SOCKET = 1
_SCM_TIMESTAMPNS = 35
_SCM_TIMESTAMPING = 37
_IP_TTL = (0, 2)
_IPV6_HOPLIMIT = (41, 52)
_RECVERR = ((0, 11), (41, 25))
_IP_TOS = (0, 1)
_IPV6_TCLASS = (41, 67)
ORIGIN_ICMP = 2
ORIGIN_ICMP6 = 3
ORIGIN_TIMESTAMPING = 4
_AF_INET = 2
_AF_INET6 = 10


class Verdict(IntEnum):
    """What a packet read from an ICMP socket turned out to be; each is counted (see `Tally`)."""

    REPLY = 0
    """An echo reply proven to answer a pending probe."""
    ERROR = 1
    """An ICMP error whose quote carries a pending probe's whole signature."""
    WEAK = 2
    """An ICMP error quoting too little for the signature, matched on identifier, sequence and checksum."""
    FOREIGN = 3
    """Someone else's: another identifier, destination or source, not an echo, a non-first fragment."""
    FORGED = 4
    """Our identifier, but no pending probe or signature matches: spoofed, guessed or corrupted."""
    LATE = 5
    """An answer after its probe's deadline (the probe times out, as the caller asked)."""
    DUPLICATE = 6
    """A second answer to a probe already answered."""
    MALFORMED = 7
    """Too short or unparsable."""
    BAD_CHECKSUM = 8
    """An ICMPv4 message whose checksum fails (raw sockets: the kernel does not check it)."""
    REFUSED = 9
    """A weak match the client refuses (``accept_weak=False``), or one it cannot verify."""


MATCHED = frozenset({Verdict.REPLY, Verdict.ERROR, Verdict.WEAK})


class Answer(NamedTuple):
    """What answered a probe, as the classifier read it; the engine turns it into an `Outcome` once the
    probe's send time is final (``rx_ns`` is the kernel's receive time on the monotonic clock)."""

    rx_ns: int
    error: str | None
    src: str | None
    dst: bytes | None
    ttl: int | None
    icmp_type: int
    icmp_code: int
    size: int
    mpls: tuple[MplsLabel, ...] = ()
    weak: bool = False
    mtu: int | None = None
    tos: int | None = None

    def outcome(self, rtt_ms: float) -> Outcome:
        return Outcome(rtt_ms, *self[1:])


Decision = tuple[Verdict, Probe | None, Answer | None]
"""A verdict, the probe it concerns (for a match, or a late answer to a pending probe) and what answered."""


class Tally:
    """Every counter of `EngineStats` that packets and sends move; the one place verdicts are counted."""

    __slots__ = (
        "bad_checksum",
        "duplicates",
        "errors",
        "foreign",
        "forged",
        "late",
        "malformed",
        "notices",
        "refused",
        "replies",
        "send_errors",
        "sent",
        "timeouts",
        "weak",
    )

    def __init__(self) -> None:
        self.sent = self.replies = self.errors = self.weak = self.timeouts = self.send_errors = 0
        self.foreign = self.forged = self.late = self.duplicates = self.malformed = self.notices = 0
        self.bad_checksum = self.refused = 0

    def count(self, verdict: Verdict) -> None:
        """Count one packet's verdict (a late answer to a pending probe also times that probe out)."""
        for name in _COUNTED_IN[verdict]:
            setattr(self, name, getattr(self, name) + 1)


_COUNTED_IN: dict[Verdict, tuple[str, ...]] = {
    Verdict.REPLY: ("replies",),
    Verdict.ERROR: ("errors",),
    Verdict.WEAK: ("errors", "weak"),
    Verdict.FOREIGN: ("foreign",),
    Verdict.FORGED: ("forged",),
    Verdict.LATE: ("late",),
    Verdict.DUPLICATE: ("duplicates",),
    Verdict.MALFORMED: ("malformed",),
    Verdict.BAD_CHECKSUM: ("bad_checksum",),
    Verdict.REFUSED: ("refused",),
}
"""The `Tally` counters each verdict moves."""


def read_controls(
    ancdata: Iterable[tuple[int, int, bytes]], offset: int
) -> tuple[int, int | None, bytes | None, int | None]:
    """``(rx_ns, reply_ttl, extended_error, reply_tos)`` from a datagram's control messages: the kernel's
    receive time converted to the monotonic clock by ``offset`` (0 when there is none), the reply's TTL / hop
    limit, a ``sock_extended_err`` with what follows it (error-queue entries), and the reply's TOS byte /
    traffic class (``IP_RECVTOS`` / ``IPV6_RECVTCLASS``)."""
    rx_ns = 0
    ttl: int | None = None
    extended: bytes | None = None
    tos: int | None = None
    for level, kind, cdata in ancdata:
        if level == _SOL_SOCKET and kind in (_SCM_TIMESTAMPING, _SCM_TIMESTAMPNS):
            if len(cdata) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(cdata)  # SO_TIMESTAMPING: the first (software) one
                if sec:
                    rx_ns = sec * 1_000_000_000 + nsec - offset
        elif (level, kind) in (_IP_TTL, _IPV6_HOPLIMIT):
            if len(cdata) >= _NATIVE_INT.size:
                ttl = _NATIVE_INT.unpack_from(cdata)[0]
        elif (level, kind) in _RECVERR:
            extended = cdata
        elif (level, kind) == _IP_TOS and cdata:
            tos = cdata[0]  # one byte
        elif (level, kind) == _IPV6_TCLASS and len(cdata) >= _NATIVE_INT.size:
            tos = _NATIVE_INT.unpack_from(cdata)[0]
    return rx_ns, ttl, extended, tos


def offender(sockaddr: bytes) -> str | None:
    """The router's address that follows ``sock_extended_err`` (a sockaddr_in or sockaddr_in6)."""
    if len(sockaddr) < 8:
        return None
    family = int.from_bytes(sockaddr[:2], sys.byteorder)
    if family == _AF_INET:
        return format_ipv4(sockaddr[4:8])
    if family == _AF_INET6 and len(sockaddr) >= 24:
        return format_ipv6(sockaddr[8:24])
    return None


def _next_hop_mtu(v6: bool, icmp_type: int, code: int, info: int) -> int | None:
    """The MTU a Fragmentation Needed (RFC 1191) or Packet Too Big (RFC 8201) message reports."""
    if (icmp_type == 2) if v6 else (icmp_type == 3 and code == 4):
        return info or None  # 0: a pre-RFC 1191 router that does not say
    return None


class Classifier:
    """Decides what one packet of a family's socket is. See the module docstring for the checks."""

    __slots__ = (
        "accept_weak",
        "echo_reply",
        "echo_request",
        "error_types",
        "has_ip_header",
        "table",
        "v6",
    )

    def __init__(self, table: PendingTable, *, v6: bool, raw: bool, accept_weak: bool = True) -> None:
        self.table = table
        self.v6 = v6
        self.has_ip_header = raw and not v6
        """Raw IPv4 reads start at the IP header; and only there must we check the ICMP checksum."""
        self.accept_weak = accept_weak
        self.echo_reply = ICMP6_ECHO_REPLY if v6 else ICMP4_ECHO_REPLY
        self.echo_request = ICMP6_ECHO_REQUEST if v6 else ICMP4_ECHO_REQUEST
        self.error_types = _V6_ERROR_TYPES if v6 else _V4_ERROR_TYPES

    # ------------------------------------------------------------------------------------- datagrams

    def packet(
        self, data: bytes, src: str | None, rx_ns: int, reply_ttl: int | None, reply_tos: int | None = None
    ) -> Decision:
        """A datagram as the socket returned it, with its source address, receive time, reply TTL and TOS."""
        start = 0
        dst: bytes | None = None
        if self.has_ip_header:
            if len(data) < 20 or data[0] >> 4 != 4 or data[0] & 0x0F < 5:
                return Verdict.MALFORMED, None, None
            start = (data[0] & 0x0F) * 4
            reply_ttl = data[8]
            reply_tos = data[1]
            dst = data[16:20]
        if len(data) < start + 8 or src is None:
            return Verdict.MALFORMED, None, None
        if self.has_ip_header and not checksum_ok(memoryview(data)[start:]):
            return Verdict.BAD_CHECKSUM, None, None
        icmp_type, icmp_code, _cs, ident, seq = ECHO_HEADER.unpack_from(data, start)
        if icmp_type == self.echo_reply:
            return self._reply(data, start, ident, seq, src, dst, rx_ns, reply_ttl, icmp_code, reply_tos)
        if icmp_type in self.error_types:
            return self._error(data, start, src, dst, rx_ns, reply_ttl, reply_tos)
        return Verdict.FOREIGN, None, None

    def _reply(
        self,
        data: bytes,
        start: int,
        ident: int,
        seq: int,
        src: str,
        dst: bytes | None,
        rx_ns: int,
        reply_ttl: int | None,
        icmp_code: int,
        reply_tos: int | None = None,
    ) -> Decision:
        table = self.table
        if not table.owns(ident):
            return Verdict.FOREIGN, None, None
        key = (ident << 16) | seq
        probe = table.get(key)
        payload = data[start + 8 : start + 8 + SIGNATURE_SIZE]
        if probe is None or probe.done:
            return self._unmatched(key, payload), None, None
        if data[start + 8 : start + 8 + len(probe.signature)] != probe.signature:
            return self._unmatched(key, payload, pending=True), None, None
        if src != probe.addr and src.partition("%")[0] != probe.addr.partition("%")[0]:
            return Verdict.FOREIGN, None, None
        size = len(data) - start
        answer = Answer(
            rx_ns, None, src, dst, reply_ttl, self.echo_reply, icmp_code, size, (), False, None, reply_tos
        )
        if rx_ns > probe.deadline_ns:
            return Verdict.LATE, probe, answer
        return Verdict.REPLY, probe, answer

    def _error(
        self,
        data: bytes,
        start: int,
        src: str,
        dst: bytes | None,
        rx_ns: int,
        reply_ttl: int | None,
        reply_tos: int | None = None,
    ) -> Decision:
        try:
            message = parse_icmp(data[start:], v6=self.v6)
        except MalformedPacket:
            return Verdict.MALFORMED, None, None
        quoted = message.quoted
        if quoted is None:
            return Verdict.MALFORMED, None, None  # an error whose quoted datagram cannot be read
        if quoted.ident is None or quoted.seq is None or quoted.icmp_type is None:
            return Verdict.FOREIGN, None, None  # it quotes no echo header (another protocol, a fragment)
        answer = Answer(
            rx_ns,
            message.error,
            src,
            dst,
            reply_ttl,
            message.type,
            message.code,
            message.size,
            message.mpls,
            False,
            _next_hop_mtu(self.v6, message.type, message.code, message.info),
            reply_tos,
        )
        v6 = self.v6

        def checksum_matches(probe: Probe) -> bool | None:
            if probe.csum < 0:
                return None
            return quoted_checksum_ok(quoted, probe.csum, v6=v6, length=8 + probe.payload_size)

        return self._quote(
            quoted.icmp_type, quoted.ident, quoted.seq, quoted.payload, quoted.dst, checksum_matches, answer
        )

    # ---------------------------------------------------------------------------------- error queue

    def queued(self, data: bytes, extended: bytes, addr: tuple[Any, ...] | None, rx_ns: int) -> Decision:
        """A ping socket's error-queue entry of ICMP origin: ``data`` is our echo request as the router
        quoted it (from its ICMP header on), ``extended`` the ``sock_extended_err`` and the router's address,
        ``addr`` the quoted destination."""
        if len(extended) < _EXTENDED_ERR.size or len(data) < 8 or addr is None:
            return Verdict.MALFORMED, None, None
        _errno, _origin, ee_type, ee_code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(extended)
        icmp_type, _code, quoted_cs, ident, seq = ECHO_HEADER.unpack_from(data)
        answer = Answer(
            rx_ns,
            error_name(self.v6, ee_type, ee_code),
            offender(extended[_EXTENDED_ERR.size :]),
            None,
            None,
            ee_type,
            ee_code,
            len(data),
            (),
            False,
            _next_hop_mtu(self.v6, ee_type, ee_code, _info),
        )
        v6 = self.v6

        def checksum_matches(probe: Probe) -> bool | None:
            # ICMPv6 checksums cover our source address, which the error queue does not report: a short
            # ICMPv6 quote on a ping socket cannot be verified.
            if v6 or probe.csum < 0:
                return None
            return bool(quoted_cs == probe.csum)

        return self._quote(icmp_type, ident, seq, data[8:], str(addr[0]), checksum_matches, answer)

    # --------------------------------------------------------------------------------------- shared

    def _quote(
        self,
        icmp_type: int,
        ident: int,
        seq: int,
        payload: bytes,
        quoted_dst: str,
        checksum_matches: Callable[[Probe], bool | None],
        answer: Answer,
    ) -> Decision:
        """An ICMP error quoting an echo request: which probe, and how well proven."""
        table = self.table
        if icmp_type != self.echo_request or not table.owns(ident):
            return Verdict.FOREIGN, None, None
        key = (ident << 16) | seq
        probe = table.get(key)
        if probe is None or probe.done:
            return self._unmatched(key, payload[:SIGNATURE_SIZE]), None, None
        if quoted_dst != probe.addr and quoted_dst.partition("%")[0] != probe.addr.partition("%")[0]:
            return Verdict.FOREIGN, None, None
        signature = probe.signature
        if len(payload) >= len(signature):
            if payload[: len(signature)] != signature:
                return self._unmatched(key, payload[:SIGNATURE_SIZE], pending=True), None, None
            if answer.rx_ns > probe.deadline_ns:
                return Verdict.LATE, probe, answer
            return Verdict.ERROR, probe, answer
        # A short quote (RFC 792's IP header + 8 bytes, or a cut signature): what it shows of the signature,
        # and the checksum, which covers the whole random token.
        if payload != signature[: len(payload)]:
            return Verdict.FORGED, None, None
        verified = checksum_matches(probe)
        if verified is False:
            return Verdict.FORGED, None, None
        if verified is None or not self.accept_weak:
            return Verdict.REFUSED, None, None
        if answer.rx_ns > probe.deadline_ns:
            return Verdict.LATE, probe, answer
        return Verdict.WEAK, probe, answer._replace(weak=True)

    def _unmatched(self, key: int, signature: bytes, *, pending: bool = False) -> Verdict:
        """A packet with our identifier that answers no pending probe (or not the pending one under its key):
        a late or duplicate answer to the key's previous probe, which the table remembers, or forged."""
        if len(signature) < SIGNATURE_SIZE and pending:
            return Verdict.FORGED
        verdict = self.table.recall(key, signature)
        if verdict == "duplicate":
            return Verdict.DUPLICATE
        if verdict == "late":
            return Verdict.LATE
        return Verdict.FORGED


# ------------------------------------------------------------------------------------------ fast path


class BatchDecoder:
    """The reader's fast path over one ``recvmmsg`` batch: its buffers read in one pass per field group
    (`struct.iter_unpack`): the first control message (the receive time), the echo header and signature, the
    source address. Few fields per entry, each tuple built for every packet: identifier and sequence read as
    one number (the table's key), a control message's header as bytes compared with ``stamp_head``, what
    the socket's receive-time option puts first.

    ``data``, ``control`` and ``names`` are the batch's buffers (``capacity`` slots of ``bufsize``,
    ``control_size`` and ``name_size`` bytes); ``cmsg_header`` is the size of a ``struct cmsghdr``.
    """

    __slots__ = (
        "_control",
        "_controls",
        "_data",
        "_headers",
        "_names",
        "_sources",
        "bufsize",
        "classifier",
        "control_size",
        "name_size",
        "raw_v4",
        "stamp_head",
        "v6",
    )

    def __init__(
        self,
        classifier: Classifier,
        *,
        data: bytearray,
        control: bytearray,
        names: bytearray,
        bufsize: int,
        control_size: int,
        name_size: int,
        cmsg_header: int,
        stamp_head: bytes,
    ) -> None:
        self.classifier = classifier
        self.v6 = classifier.v6
        self.raw_v4 = classifier.has_ip_header
        self.bufsize, self.control_size, self.name_size = bufsize, control_size, name_size
        self.stamp_head = stamp_head
        self._controls = struct.Struct(f"@{cmsg_header}sll{control_size - cmsg_header - _TIMESPEC.size}x")
        if self.raw_v4:
            # version/IHL, TTL, then the ICMP type (code and checksum skipped), key and signature
            self._headers = struct.Struct(f"!B7xB11xB3xI{SIGNATURE_SIZE}s{bufsize - 40}x")
        else:
            self._headers = struct.Struct(f"!B3xI{SIGNATURE_SIZE}s{bufsize - 8 - SIGNATURE_SIZE}x")
        if self.v6:
            self._sources = struct.Struct(f"=8x16s{name_size - 24}x")
        else:
            self._sources = struct.Struct(f"=4x4s{name_size - 8}x")
        self._data = memoryview(data)
        self._control = memoryview(control)
        self._names = memoryview(names)

    def take(
        self,
        lengths: Iterator[tuple[int]],
        n: int,
        offset: int,
        now_ns: int,
        general: Callable[[int], None],
        full_outcome: Callable[[Probe, int, float, int], None],
        tally: Tally,
    ) -> None:
        """Deliver the matched echo replies among the first ``n`` entries; hand every other entry, in order,
        to ``general(k)`` (which runs `Classifier.packet` on it). ``offset`` converts kernel receive times to
        the monotonic clock, ``now_ns`` stands in where a packet has none. ``full_outcome(probe, k, rtt_ms,
        length)`` delivers a reply to a sink that wants more than its RTT (from the entry's buffers)."""
        table = self.classifier.table
        pending_get = table.get
        raw_v4 = self.raw_v4
        stamp_head = self.stamp_head
        echo_reply = self.classifier.echo_reply
        data = self._data
        bufsize = self.bufsize
        # An echo reply: the echo header and the signature at least (after the IP header on raw IPv4).
        need = 20 + 8 + SIGNATURE_SIZE if raw_v4 else 8 + SIGNATURE_SIZE
        last_sink: Any = None
        deliver_rtt: Any = None
        # Answered probes are marked done at once and leave the table in one call before anything else runs.
        answered: list[Probe] = []
        answer = answered.append
        entries = zip(
            lengths,
            self._controls.iter_unpack(self._control[: n * self.control_size]),
            self._headers.iter_unpack(data[: n * bufsize]),
            self._sources.iter_unpack(self._names[: n * self.name_size]),
            strict=False,
        )
        for k, ((length,), (head, sec, nsec), fields, (src,)) in enumerate(entries):
            rx_ns = sec * 1_000_000_000 + nsec - offset if head == stamp_head and sec else now_ns
            if raw_v4:
                version_ihl, _ttl, icmp_type, key, signature = fields
                fast = version_ihl == 0x45
            else:
                icmp_type, key, signature = fields
                fast = True
            if fast and icmp_type == echo_reply and length >= need and length <= bufsize:
                probe = pending_get(key)
                if (
                    probe is not None
                    and not probe.done
                    and not probe.stamped
                    and rx_ns <= probe.deadline_ns
                    and signature == probe.signature
                    and src == probe.packed
                    and (not raw_v4 or checksum_ok(data[k * bufsize + 20 : k * bufsize + length]))
                ):
                    probe.done = True
                    answer(probe)
                    rtt_ns = rx_ns - probe.sent_ns
                    rtt_ms = rtt_ns / 1e6 if rtt_ns > 0 else 0.0
                    sink = probe.sink
                    if sink is not last_sink:
                        last_sink, deliver_rtt = sink, getattr(sink, "deliver_rtt", None)
                    if deliver_rtt is not None:
                        deliver_rtt(probe, rtt_ms)
                    else:
                        full_outcome(probe, k, rtt_ms, length)
                    continue
            # Everything else (errors, strangers, late, forged or stamped replies) takes the careful path,
            # which must find the table up to date.
            if answered:
                tally.replies += len(answered)
                table.finish_answered(answered)
                answered.clear()
            general(k)
        if answered:
            tally.replies += len(answered)
            table.finish_answered(answered)
