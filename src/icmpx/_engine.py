"""The engine: one ICMP socket per address family, one reader task per socket.

Theory of operation
-------------------
Every call (``ping``, ``traceroute``, ``multiping``, ...) hands the engine probes to send and a *sink* that
collects their outcomes. The engine:

1. allocates each probe an (identifier, sequence) key from the family's `PendingTable`, builds the echo
   request (cookie + per-probe token in the payload), records the monotonic send time and a deadline, and
   sends it with ``sendmsg`` on the family's shared socket (the TTL rides in a control message, so
   concurrent traceroutes never race on a socket option);
2. runs one *reader* task per socket: wait until readable, then ``recvmsg`` in a loop until the socket is
   dry. Each packet is matched on its key (for errors: on the key of the datagram they quote) and checked
   against the probe's destination and payload signature; a match is delivered to the probe's sink with an
   RTT computed from the kernel's receive timestamp (``SO_TIMESTAMPNS``), so a busy event loop does not
   inflate it. Ping sockets also drain their error queue (``MSG_ERRQUEUE``), where the kernel puts the
   Time Exceeded and Unreachable messages with the router as "offender";
3. runs one *timer* task that sleeps until the earliest deadline and delivers timeouts.

Foreign, forged, late, duplicate and malformed packets are dropped and counted (`EngineStats`); nothing a
packet contains can raise into a caller. Closing aborts every sink with `ClientClosedError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.lowlevel

from . import _socket as S
from ._exceptions import ClientClosedError, MalformedPacket
from ._matching import TIMEOUT, IdentSlot, Outcome, PendingTable, Probe, Sink
from ._models import MplsLabel
from ._wire import (
    COOKIE_SIZE,
    ECHO_HEADER,
    ICMP4_ECHO_REPLY,
    ICMP4_ECHO_REQUEST,
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    SIGNATURE_SIZE,
    EchoTemplate,
    balance_checksum,
    error_name,
    format_ipv4,
    format_ipv6,
    parse_icmp,
)

__all__ = ["Engine", "EngineStats", "Pacer", "Target"]

_TIMESPEC = struct.Struct("@ll")
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_NATIVE_INT = struct.Struct("@i")
_ANCILLARY = 512
_READ_BATCH = 2048
_SEND_YIELD_EVERY = 256
_NO_CMSGS: list[tuple[int, int, bytes]] = []
_SIGNATURE_END = 8 + SIGNATURE_SIZE
_V4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
_V6_ERROR_TYPES = frozenset({1, 2, 3, 4})
# errno values a send or receive reports for an ICMP error already queued: notices, not failures.
_NOTICE_ERRNOS = frozenset(
    {
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ECONNREFUSED,
        errno.EHOSTDOWN,
        errno.EPROTO,
        errno.ETIMEDOUT,
        errno.EMSGSIZE,
        errno.ENONET,
        errno.EACCES,
        errno.EPERM,
    }
)
_SEND_ERRNO_NAMES = {
    errno.ENETUNREACH: "net-unreachable",
    errno.EHOSTUNREACH: "host-unreachable",
    errno.EHOSTDOWN: "host-unreachable",
    errno.ECONNREFUSED: "port-unreachable",
    errno.EACCES: "admin-prohibited",
    errno.EPERM: "admin-prohibited",
    errno.EMSGSIZE: "packet-too-big",
}


class Abortable(Protocol):
    """A call that must be woken when the client closes."""

    def abort(self, exc: BaseException) -> None: ...


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
    """ICMP sockets open: one per family in use, and on ping sockets one more per 65,536 probes in flight."""
    socket_kinds: tuple[str, ...]
    """``"raw"`` or ``"dgram"`` for each open socket, e.g. ``("raw",)``."""

    @property
    def dropped(self) -> int:
        """Packets read but not delivered: foreign, forged, late, duplicates and malformed together."""
        return self.foreign + self.forged + self.late + self.duplicates + self.malformed


class _Counters:
    __slots__ = (
        "duplicates",
        "errors",
        "foreign",
        "forged",
        "late",
        "malformed",
        "notices",
        "replies",
        "send_errors",
        "sent",
        "timeouts",
    )

    def __init__(self) -> None:
        self.sent = self.replies = self.errors = self.timeouts = self.send_errors = 0
        self.foreign = self.forged = self.late = self.duplicates = self.malformed = self.notices = 0


class _Channel:
    """One open socket and its reader."""

    __slots__ = ("icmp", "sock", "v6")

    def __init__(self, icmp: S.IcmpSocket) -> None:
        self.icmp = icmp
        self.sock = icmp.sock
        self.v6 = icmp.v6


class _Family:
    __slots__ = ("channels", "echo_reply", "echo_request", "error_types", "table", "v6")

    def __init__(self, v6: bool) -> None:
        self.v6 = v6
        self.channels: list[_Channel] = []
        self.table: PendingTable
        self.echo_reply = ICMP6_ECHO_REPLY if v6 else ICMP4_ECHO_REPLY
        self.echo_request = ICMP6_ECHO_REQUEST if v6 else ICMP4_ECHO_REQUEST
        self.error_types = _V6_ERROR_TYPES if v6 else _V4_ERROR_TYPES


class Engine:
    """Owns the sockets, the pending tables, the reader tasks and the timer. See the module docstring."""

    def __init__(
        self,
        *,
        privileged: bool | None,
        source: str | None,
        ttl: int,
        rate: float | None,
        spawn: Callable[..., object],
    ) -> None:
        self._privileged = privileged
        self._source = source
        self._default_ttl = ttl
        self._spawn = spawn
        self._cookie = os.urandom(COOKIE_SIZE)
        self._token = random.getrandbits(32)
        self._families: dict[bool, _Family] = {}
        self._counters = _Counters()
        self._closed = False
        self._timer_scope: anyio.CancelScope | None = None
        self._timer_wake_at: int | None = None
        self._pacer = Pacer(rate) if rate else None
        self._unyielded = 0
        self._templates: dict[tuple[bool, int], EchoTemplate] = {}
        self._bufsize = 2048
        self._watched: set[Abortable] = set()

    # ------------------------------------------------------------------------------------------ public

    def stats(self) -> EngineStats:
        c = self._counters
        channels = [ch for fam in self._families.values() for ch in fam.channels]
        return EngineStats(
            sent=c.sent,
            replies=c.replies,
            errors=c.errors,
            timeouts=c.timeouts,
            send_errors=c.send_errors,
            foreign=c.foreign,
            forged=c.forged,
            late=c.late,
            duplicates=c.duplicates,
            malformed=c.malformed,
            notices=c.notices,
            pending=sum(len(fam.table) for fam in self._families.values()),
            sockets=len(channels),
            socket_kinds=tuple(ch.icmp.kind for ch in channels),
        )

    def socket_kind(self, v6: bool) -> str:
        return self._family(v6).channels[0].icmp.kind

    async def send(
        self,
        target: Target,
        *,
        ttl: int,
        payload_size: int,
        timeout: float,
        sink: Sink,
        tag: Any = None,
        checksum: int | None = None,
    ) -> Probe:
        """Send one echo request; its outcome reaches ``sink.deliver`` exactly once (unless discarded).

        ``checksum`` keeps the ICMP checksum at that value (Paris traceroute), payload size permitting.
        Paced by the client's rate; waits while the kernel's send buffer is full.
        """
        if self._closed:
            raise ClientClosedError("the client is closed")
        # Every await comes before the probe exists: a caller cancelled here leaves nothing behind.
        if self._pacer is not None:
            await self._pacer.wait()
        self._unyielded += 1
        if self._unyielded >= _SEND_YIELD_EVERY:
            # Let the reader drain replies during a long burst of sends.
            self._unyielded = 0
            await anyio.lowlevel.checkpoint()
        timeout_ns = int(timeout * 1e9)
        while True:
            if self._closed:
                raise ClientClosedError("the client is closed")
            probe = self.send_nowait(target, ttl, payload_size, timeout_ns, sink, tag, checksum)
            if probe is not None:
                return probe
            await anyio.sleep(0.0005)  # the send buffer is full: let the kernel drain it

    def send_nowait(
        self,
        target: Target,
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
        tag: Any = None,
        checksum: int | None = None,
    ) -> Probe | None:
        """Send now, without pacing; ``None`` when the kernel's buffer is full (nothing was registered:
        wait a little and call again). The hot path of sweeps; callers must yield to the loop now and
        then so the reader can drain replies."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        fam = self._families.get(target.v6) or self._family(target.v6)
        table = fam.table
        slot, seq = table.allocate()
        channel: _Channel = slot.channel
        self._token = token = (self._token + 1) & 0xFFFFFFFF
        template = self._templates.get((fam.v6, payload_size))
        if template is None:
            template = self._template(fam.v6, payload_size, channel)
        packet = template.build(slot.ident, seq, token, self._cookie)
        if checksum is not None:
            packet = balance_checksum(packet, v6=fam.v6, target=checksum)
        probe = Probe(
            target.addr, slot.ident, seq, ttl, payload_size, packet[8:_SIGNATURE_END], sink, tag, channel
        )
        cmsgs = _NO_CMSGS if ttl == channel.icmp.default_ttl else [S.ttl_cmsg(fam.v6, ttl)]
        retried = False
        while True:
            probe.sent_ns = time.monotonic_ns()
            try:
                if cmsgs:
                    channel.sock.sendmsg([packet], cmsgs, 0, target.sockaddr)
                else:
                    channel.sock.sendto(packet, target.sockaddr)
                break
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    return None
                if exc.errno in _NOTICE_ERRNOS and not retried:
                    # Most likely an ICMP error queued for an earlier probe, reported on this send
                    # (Linux >= 6.1). Read it, then try once more.
                    retried = True
                    self._counters.notices += 1
                    self._drain_errors(channel, time.time_ns() - time.monotonic_ns())
                    continue
                self._counters.send_errors += 1
                probe.done = True
                sink.deliver(probe, Outcome(None, _send_error_name(exc)))
                return probe
        probe.deadline_ns = deadline = probe.sent_ns + timeout_ns
        self._counters.sent += 1
        table.add(probe, timeout_ns)
        if self._timer_scope is not None and (self._timer_wake_at is None or deadline < self._timer_wake_at):
            # Wake the timer for an earlier deadline, once: later sends have later deadlines.
            self._timer_wake_at = deadline
            self._timer_scope.cancel()
        return probe

    def send_many(
        self,
        targets: list[Target],
        tags: list[Any],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
    ) -> int:
        """Send one probe to each target (tagged by ``tags``) in one tight loop, unpaced. Returns how many
        were sent: fewer than asked when the kernel's buffer filled (call again later with the rest). The
        sweep's hot path; `send_nowait` handles every unusual case. Forget them with `discard_sink`."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        sent = 0
        cookie = self._cookie
        counters = self._counters
        monotonic_ns = time.monotonic_ns
        family_v6: bool | None = None
        first_deadline = 0
        allocate = add = None
        template: EchoTemplate | None = None
        for target, tag in zip(targets, tags, strict=True):
            if target.v6 is not family_v6:
                # Look the family's machinery up once per run of same-family targets, not per packet.
                family_v6 = target.v6
                fam = self._families.get(family_v6) or self._family(family_v6)
                allocate, add = fam.table.allocate, fam.table.add
                template = self._templates.get((family_v6, payload_size))
                if template is None or ttl != fam.channels[0].icmp.default_ttl:
                    template = None  # the general path builds it (and the TTL control message)
            assert allocate is not None
            assert add is not None
            if template is None:
                probe = self.send_nowait(target, ttl, payload_size, timeout_ns, sink, tag)
                if probe is None:
                    return sent
                template = self._templates.get((family_v6, payload_size))
                if ttl != probe.channel.icmp.default_ttl:
                    template = None
            else:
                slot, seq = allocate()
                channel: _Channel = slot.channel
                self._token = token = (self._token + 1) & 0xFFFFFFFF
                packet = template.build(slot.ident, seq, token, cookie)
                probe = Probe(
                    target.addr,
                    slot.ident,
                    seq,
                    ttl,
                    payload_size,
                    packet[8:_SIGNATURE_END],
                    sink,
                    tag,
                    channel,
                )
                probe.sent_ns = now = monotonic_ns()
                try:
                    channel.sock.sendto(packet, target.sockaddr)
                except OSError:
                    # Full buffer, a queued error notice, a local failure: the general path decides.
                    probe = self.send_nowait(target, ttl, payload_size, timeout_ns, sink, tag)
                    if probe is None:
                        return sent
                else:
                    probe.deadline_ns = now + timeout_ns
                    counters.sent += 1
                    add(probe, timeout_ns)
            if not first_deadline:
                first_deadline = probe.deadline_ns
            sent += 1
        if first_deadline:
            # The batch's earliest deadline is its first probe's: wake the timer if it sleeps past it.
            wake_at = self._timer_wake_at
            if self._timer_scope is not None and (wake_at is None or first_deadline < wake_at):
                self._timer_wake_at = first_deadline
                self._timer_scope.cancel()
        return sent

    def _template(self, v6: bool, payload_size: int, channel: _Channel) -> EchoTemplate:
        template = EchoTemplate(v6=v6, cookie=self._cookie, size=payload_size)
        if len(self._templates) < 64:
            self._templates[(v6, payload_size)] = template
        # Replies echo the payload; errors quote up to ~600 bytes beyond it.
        self._bufsize = max(self._bufsize, payload_size + 600)
        return template

    @property
    def paced(self) -> bool:
        """True when the client caps its packet rate (every send must then go through `send`)."""
        return self._pacer is not None

    @contextlib.contextmanager
    def watch(self, call: Abortable) -> Iterator[None]:
        """Make sure ``call.abort`` hears of closing even while it has no probe in flight (between the
        rounds of a sweep, the echoes of a slow ping, the cycles of mtr)."""
        self._watched.add(call)
        try:
            yield
        finally:
            self._watched.discard(call)

    def discard_sink(self, sink: Sink) -> None:
        """Forget every pending probe of ``sink`` (a call that went away); O(pending probes)."""
        for fam in self._families.values():
            for probe in fam.table:
                if probe.sink is sink:
                    fam.table.finish(probe, answered=False)

    def discard(self, probes: list[Probe]) -> None:
        """Forget probes whose caller went away (cancelled): no outcome will be delivered."""
        for probe in probes:
            if not probe.done:
                fam = self._families.get(probe.channel.v6) if probe.channel is not None else None
                if fam is not None:
                    fam.table.finish(probe, answered=False)
                probe.done = True

    def abort(self, exc: BaseException) -> None:
        """Close: every pending probe's sink is woken with ``exc``; no further sends are accepted."""
        self._closed = True
        calls: dict[int, Abortable] = {id(call): call for call in self._watched}
        for fam in self._families.values():
            for probe in fam.table.drain():
                calls[id(probe.sink)] = probe.sink
        for call in calls.values():
            call.abort(exc)

    def close_sockets(self) -> None:
        for fam in self._families.values():
            for ch in fam.channels:
                ch.icmp.close()

    async def run_timer(self) -> None:
        """The timer task: deliver timeouts at each deadline (started by the client)."""
        while True:
            now = time.monotonic_ns()
            earliest: int | None = None
            for fam in list(self._families.values()):
                nxt = fam.table.next_deadline()
                if nxt is not None and nxt <= now:
                    # Read what already arrived before declaring anything lost.
                    offset = time.time_ns() - time.monotonic_ns()
                    for ch in fam.channels:
                        self._drain(ch, offset, _READ_BATCH)
                    for probe in fam.table.expire(now):
                        self._counters.timeouts += 1
                        probe.sink.deliver(probe, TIMEOUT)
                    nxt = fam.table.next_deadline()
                if nxt is not None and (earliest is None or nxt < earliest):
                    earliest = nxt
            self._timer_wake_at = earliest
            with anyio.CancelScope() as scope:
                self._timer_scope = scope
                if earliest is None:
                    await anyio.sleep_forever()
                else:
                    await anyio.sleep(max(earliest - time.monotonic_ns(), 0) / 1e9)
            self._timer_scope = None

    # --------------------------------------------------------------------------------------- sockets

    def _family(self, v6: bool) -> _Family:
        fam = self._families.get(v6)
        if fam is not None:
            return fam
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._source is not None and (":" in self._source) != v6:
            raise ValueError(
                f"the client's source address {self._source} cannot send to IPv{6 if v6 else 4} destinations"
            )
        icmp = S.open_icmp_socket(
            v6=v6, privileged=self._privileged, source=self._source, ttl=self._default_ttl
        )
        fam = _Family(v6)
        first = self._start_channel(icmp)
        if icmp.raw:
            ident = random.randrange(1, 0x10000)
            fam.table = PendingTable(lambda: self._new_raw_ident(fam))
            fam.table.add_slot(IdentSlot(ident, first, random.randrange(0x10000)))
        else:
            assert icmp.ident is not None
            fam.table = PendingTable(lambda: self._new_dgram_ident(fam))
            fam.table.add_slot(IdentSlot(icmp.ident, first, random.randrange(0x10000)))
        fam.channels.append(first)
        self._families[v6] = fam
        return fam

    def _start_channel(self, icmp: S.IcmpSocket) -> _Channel:
        channel = _Channel(icmp)
        self._spawn(self._reader, channel)
        return channel

    def _new_raw_ident(self, fam: _Family) -> IdentSlot:
        used = set(fam.table.idents)
        ident = random.randrange(1, 0x10000)
        while ident in used:
            ident = random.randrange(1, 0x10000)
        return IdentSlot(ident, fam.channels[0], random.randrange(0x10000))

    def _new_dgram_ident(self, fam: _Family) -> IdentSlot:
        # A ping socket's identifier belongs to the kernel: more identifiers means more sockets.
        icmp = S.open_icmp_socket(v6=fam.v6, privileged=False, source=self._source, ttl=self._default_ttl)
        channel = self._start_channel(icmp)
        fam.channels.append(channel)
        assert icmp.ident is not None
        return IdentSlot(icmp.ident, channel, random.randrange(0x10000))

    # ---------------------------------------------------------------------------------------- reader

    async def _reader(self, channel: _Channel) -> None:
        sock = channel.sock
        while True:
            await anyio.wait_readable(sock)
            offset = time.time_ns() - time.monotonic_ns()
            while self._drain(channel, offset, _READ_BATCH) >= _READ_BATCH:
                await anyio.lowlevel.checkpoint()
                offset = time.time_ns() - time.monotonic_ns()

    def _drain(self, channel: _Channel, offset: int, budget: int) -> int:
        """Read up to ``budget`` packets without blocking; returns how many were read.

        The common case, an echo reply that matches a pending probe in time, is handled inline (this loop
        is the per-packet hot path of every sweep); everything else goes through `_on_packet`.
        """
        sock = channel.sock
        recvmsg = sock.recvmsg
        raw = channel.icmp.raw
        fam = self._families.get(channel.v6)
        if fam is None:
            return 0
        table = fam.table
        pending_get = table.get
        finish = table.finish
        counters = self._counters
        start = -1 if raw and not channel.v6 else 0  # -1: read IHL from each packet
        echo_reply = fam.echo_reply
        unpack_header = ECHO_HEADER.unpack_from
        unpack_time = _TIMESPEC.unpack_from
        unpack_int = _NATIVE_INT.unpack_from
        bufsize = self._bufsize
        count = 0
        while count < budget:
            try:
                data, ancdata, _flags, addr = recvmsg(bufsize, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # A queued ICMP error reported through errno (sk_err): a notice to read the error queue.
                counters.notices += 1
                if not raw:
                    self._drain_errors(channel, offset)
                continue
            count += 1
            try:
                rx_ns = 0
                reply_ttl = None
                for level, kind, cdata in ancdata:
                    if kind == S.SCM_TIMESTAMPNS and level == socket.SOL_SOCKET:
                        sec, nsec = unpack_time(cdata)
                        rx_ns = sec * 1_000_000_000 + nsec - offset
                    elif kind == S.IP_TTL or kind == S.IPV6_HOPLIMIT:
                        reply_ttl = unpack_int(cdata)[0]
                if not rx_ns:
                    rx_ns = time.monotonic_ns()
                at = start
                if at < 0:  # raw IPv4: the IP header comes first
                    if len(data) < 20:
                        counters.malformed += 1
                        continue
                    at = (data[0] & 0x0F) * 4
                    reply_ttl = data[8]
                if len(data) < at + 8:
                    counters.malformed += 1
                    continue
                icmp_type, icmp_code, _cs, ident, seq = unpack_header(data, at)
                if icmp_type == echo_reply:
                    probe = pending_get((ident << 16) | seq)
                    if (
                        probe is not None
                        and rx_ns <= probe.deadline_ns
                        and data[at + 8 : at + _SIGNATURE_END] == probe.signature
                        and addr[0] == probe.addr
                    ):
                        finish(probe, answered=True)
                        counters.replies += 1
                        rtt_ns = rx_ns - probe.sent_ns
                        probe.sink.deliver(
                            probe,
                            Outcome(
                                rtt_ns / 1e6 if rtt_ns > 0 else 0.0,
                                None,
                                addr[0],
                                data[16:20] if start < 0 else None,
                                reply_ttl,
                                icmp_type,
                                icmp_code,
                                len(data) - at,
                            ),
                        )
                        continue
                # Everything else (errors, strangers, late or forged replies) takes the careful path.
                self._on_packet(fam, data, at, start < 0, addr, rx_ns, reply_ttl)
            except Exception:
                # Whatever a packet holds, it never raises into the reader: it is counted and dropped.
                counters.malformed += 1
        if not raw:
            self._drain_errors(channel, offset)
        if count:
            table.prune()
        return count

    def _on_packet(
        self,
        fam: _Family,
        data: bytes,
        start: int,
        has_ip_header: bool,
        addr: Any,
        rx_ns: int,
        reply_ttl: int | None,
    ) -> None:
        """A packet the reader's fast path did not take; ``start`` is where its ICMP header begins (at
        least 8 bytes are there), the receive time and reply TTL already read from the control data."""
        counters = self._counters
        src = addr[0]
        dst = data[16:20] if has_ip_header else None  # formatted only if someone builds an EchoResult
        icmp_type, icmp_code, _cs, ident, seq = ECHO_HEADER.unpack_from(data, start)
        table = fam.table
        if icmp_type == fam.echo_reply:
            if not table.owns(ident):
                counters.foreign += 1
                return
            key = (ident << 16) | seq
            signature = data[start + 8 : start + 8 + SIGNATURE_SIZE]
            probe = table.get(key)
            if probe is None:
                self._count_unmatched(table, key, signature)
                return
            if signature != probe.signature or src.partition("%")[0] != probe.addr:
                if signature == probe.signature:
                    counters.foreign += 1
                else:
                    counters.forged += 1
                return
            self._complete(
                table, probe, rx_ns, None, src, dst, reply_ttl, icmp_type, icmp_code, len(data) - start
            )
            return
        if icmp_type in fam.error_types:
            self._on_raw_error(fam, data, start, src, dst, reply_ttl, rx_ns)
            return
        counters.foreign += 1

    def _on_raw_error(
        self,
        fam: _Family,
        data: bytes,
        start: int,
        src: str,
        dst: bytes | None,
        reply_ttl: int | None,
        rx_ns: int,
    ) -> None:
        counters = self._counters
        try:
            message = parse_icmp(data[start:], v6=fam.v6)
        except MalformedPacket:
            counters.malformed += 1
            return
        quoted = message.quoted
        if quoted is None:
            counters.malformed += 1  # an error whose quoted datagram cannot be read
            return
        if quoted.ident is None or quoted.seq is None:
            counters.foreign += 1  # it quotes something that is not an echo request
            return
        if quoted.icmp_type != fam.echo_request or not fam.table.owns(quoted.ident):
            counters.foreign += 1
            return
        key = (quoted.ident << 16) | quoted.seq
        signature = quoted.payload[:SIGNATURE_SIZE]
        probe = fam.table.get(key)
        if probe is None:
            self._count_unmatched(fam.table, key, signature)
            return
        if quoted.dst != probe.addr:
            counters.foreign += 1
            return
        if signature != probe.signature[: len(signature)]:
            counters.forged += 1
            return
        self._complete(
            fam.table,
            probe,
            rx_ns,
            message.error,
            src,
            dst,
            reply_ttl,
            message.type,
            message.code,
            message.size,
            message.mpls,
        )

    def _drain_errors(self, channel: _Channel, offset: int) -> None:
        """Read a ping socket's error queue: ICMP errors about our probes, the router as offender."""
        fam = self._families.get(channel.v6)
        if fam is None:
            return
        sock = channel.sock
        while True:
            try:
                data, ancdata, _flags, addr = sock.recvmsg(self._bufsize, _ANCILLARY, S.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._counters.notices += 1
                return
            try:
                self._on_queued_error(fam, data, ancdata, addr, offset)
            except Exception:
                self._counters.malformed += 1

    def _on_queued_error(
        self,
        fam: _Family,
        data: bytes,
        ancdata: list[tuple[int, int, bytes]],
        addr: Any,
        offset: int,
    ) -> None:
        counters = self._counters
        rx_ns = 0
        extended: bytes | None = None
        for level, kind, cdata in ancdata:
            if kind == S.SCM_TIMESTAMPNS and level == socket.SOL_SOCKET:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                rx_ns = sec * 1_000_000_000 + nsec - offset
            elif (level, kind) in (
                (socket.IPPROTO_IP, S.IP_RECVERR),
                (socket.IPPROTO_IPV6, S.IPV6_RECVERR),
            ):
                extended = cdata
        if not rx_ns:
            rx_ns = time.monotonic_ns()
        if extended is None or len(extended) < _EXTENDED_ERR.size or len(data) < 8:
            counters.malformed += 1
            return
        _ee_errno, origin, ee_type, ee_code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(extended)
        if origin not in (S.SO_EE_ORIGIN_ICMP, S.SO_EE_ORIGIN_ICMP6):
            counters.notices += 1  # a local error (e.g. message too long): no router involved
            return
        offender = _offender(extended[_EXTENDED_ERR.size :])
        icmp_type, _code, _cs, ident, seq = ECHO_HEADER.unpack_from(data)
        if icmp_type != fam.echo_request or not fam.table.owns(ident):
            counters.foreign += 1
            return
        key = (ident << 16) | seq
        signature = data[8 : 8 + SIGNATURE_SIZE]
        probe = fam.table.get(key)
        if probe is None:
            self._count_unmatched(fam.table, key, signature)
            return
        if addr is not None and addr[0].partition("%")[0] != probe.addr:
            counters.foreign += 1
            return
        if signature != probe.signature[: len(signature)]:
            counters.forged += 1
            return
        error = error_name(fam.v6, ee_type, ee_code)
        self._complete(fam.table, probe, rx_ns, error, offender, None, None, ee_type, ee_code, len(data))

    def _complete(
        self,
        table: PendingTable,
        probe: Probe,
        rx_ns: int,
        error: str | None,
        src: str | None,
        dst: bytes | None,
        ttl: int | None,
        icmp_type: int,
        icmp_code: int,
        size: int,
        mpls: tuple[MplsLabel, ...] = (),
    ) -> None:
        """Deliver a matched answer, its RTT taken from the kernel's receive time."""
        if rx_ns > probe.deadline_ns:
            # Arrived after its deadline (the timer had not run yet): a timeout, as the caller asked.
            table.finish(probe, answered=False)
            self._counters.late += 1
            self._counters.timeouts += 1
            probe.sink.deliver(probe, TIMEOUT)
            return
        table.finish(probe, answered=True)
        if error is None:
            self._counters.replies += 1
        else:
            self._counters.errors += 1
        rtt_ns = rx_ns - probe.sent_ns
        rtt_ms = rtt_ns / 1e6 if rtt_ns > 0 else 0.0
        probe.sink.deliver(probe, Outcome(rtt_ms, error, src, dst, ttl, icmp_type, icmp_code, size, mpls))

    def _count_unmatched(self, table: PendingTable, key: int, signature: bytes) -> None:
        verdict = table.recall(key, signature)
        if verdict == "duplicate":
            self._counters.duplicates += 1
        elif verdict == "late":
            self._counters.late += 1
        else:
            self._counters.forged += 1


def _offender(sockaddr: bytes) -> str | None:
    """The router's address that follows ``sock_extended_err`` (a sockaddr_in or sockaddr_in6)."""
    if len(sockaddr) < 8:
        return None
    family = int.from_bytes(sockaddr[:2], sys.byteorder)
    if family == socket.AF_INET:
        return format_ipv4(sockaddr[4:8])
    if family == socket.AF_INET6 and len(sockaddr) >= 24:
        return format_ipv6(sockaddr[8:24])
    return None


def _send_error_name(exc: OSError) -> str:
    return _SEND_ERRNO_NAMES.get(exc.errno or 0, "send-failed")


class Pacer:
    """A token bucket shared by every send of the client: at most ``rate`` packets a second.

    Each send reserves the next slot, so concurrent senders are paced together; a short burst (a tenth of a
    second's worth) may go out at once after an idle spell.
    """

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._burst = max(1.0, rate * 0.1) * self._interval
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(self._next, now - self._burst)
        self._next = slot + self._interval
        if slot > now:
            await anyio.sleep(slot - now)
