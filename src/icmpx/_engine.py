"""The engine: one ICMP socket per address family, one reader task per socket.

Theory of operation
-------------------
Every call (``ping``, ``traceroute``, ``multiping``, ...) hands the engine probes to send and a *sink* that
collects their outcomes. The engine:

1. allocates each probe an (identifier, sequence) key from the family's `PendingTable`, builds the echo
   request (cookie + per-probe token in the payload), records the monotonic send time and a deadline, and
   sends it with ``sendmsg`` on the family's shared socket (the TTL rides in a control message, so
   concurrent traceroutes never race on a socket option). Unpaced sweeps instead register a batch of
   probes and hand it to the kernel in one ``sendmmsg`` from a worker thread (`send_batch`), each packet
   asking for its kernel send time, which comes back on the error queue and replaces the hand-over time;
2. runs one *reader* task per socket: wait until readable, then read (``recvmmsg`` batches, or ``recvmsg``)
   until the socket is dry, send times from the error queue first. Each packet is matched on its key (for
   errors: on the key of the datagram they quote) and checked against the probe's destination and payload
   signature; a match is delivered to the probe's sink with an RTT computed from the kernel's receive
   timestamp (``SO_TIMESTAMPING``), so a busy event loop does not inflate it. Ping sockets also drain their
   error queue (``MSG_ERRQUEUE``), where the kernel puts the Time Exceeded and Unreachable messages with
   the router as "offender";
3. runs one *timer* task that sleeps until the earliest deadline and delivers timeouts.

Foreign, forged, late, duplicate and malformed packets are dropped and counted (`EngineStats`); nothing a
packet contains can raise into a caller. Closing aborts every sink with `ClientClosedError`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import _mmsg
from . import _socket as S
from ._exceptions import ClientClosedError, MalformedPacket
from ._matching import TIMEOUT, IdentSlot, Outcome, PendingTable, Probe, Sink
from ._models import EngineStats, MplsLabel, Target
from ._pacing import Pacer
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

__all__ = ["Engine"]

_TIMESPEC = struct.Struct("@ll")
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_NATIVE_INT = struct.Struct("@i")
_ANCILLARY = 512
_READ_BATCH = 2048
_SEND_BATCH = 2048  # echo requests per sendmmsg call at most (see Engine.send_batch)
# What one sent probe may hold in the receive buffer until read: its send time and its reply (sk_buff
# truesize, about 1 KiB each on loopback). A batch must fit, or the kernel drops stamps and replies.
_QUEUED_PER_PROBE = 4096
_ERROR_BATCH = 256  # error-queue entries per recvmmsg call
_RECV_BATCH = 256  # packets per recvmmsg call
_SEND_YIELD_EVERY = 256
_NO_CMSGS: list[tuple[int, int, bytes]] = []
_SOL_SOCKET = socket.SOL_SOCKET
_SCM_TIMESTAMPNS = S.SCM_TIMESTAMPNS
_SCM_TIMESTAMPING = S.SCM_TIMESTAMPING
# A send-time entry of the error queue, as the kernel lays it out: SCM_TIMESTAMPING (cmsg length, level,
# type, the software timespec, two unused ones), then IP(V6)_RECVERR whose ee_origin is read (at 84).
_ERROR_CONTROL = 256
_STAMP_ENTRY = struct.Struct(f"@{_mmsg.CMSG_HEADER.size}sll52xB{_ERROR_CONTROL - 85}x")
# The cmsg header that entry starts with (compared as bytes: one test instead of three).
_STAMP_CMSG = _mmsg.CMSG_HEADER.pack(
    socket.CMSG_LEN(3 * _TIMESPEC.size), socket.SOL_SOCKET, S.SCM_TIMESTAMPING
)
# What SO_TIMESTAMPNS puts first on a received packet: one timespec.
_STAMPNS_CMSG = _mmsg.CMSG_HEADER.pack(socket.CMSG_LEN(_TIMESPEC.size), socket.SOL_SOCKET, S.SCM_TIMESTAMPNS)
_ORIGIN_STAMP = S.SO_EE_ORIGIN_TIMESTAMPING
_STAMPED_SIZE = 8 + SIGNATURE_SIZE  # a sent echo request: header and signature


@functools.lru_cache(maxsize=16)
def _stamped_layout(at: int, bufsize: int) -> struct.Struct:
    """Key (identifier and sequence, read as one 32-bit number) and signature of the echo request at ``at``
    in each ``bufsize`` slot."""
    return struct.Struct(f"!{at + 4}xI{SIGNATURE_SIZE}s{bufsize - at - _STAMPED_SIZE}x")


_new_outcome = tuple.__new__  # skips the NamedTuple's Python-level __new__ on the hot path
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

    __slots__ = ("errors", "icmp", "inbox", "sock", "stamp_at", "stamping", "v6")

    def __init__(self, icmp: S.IcmpSocket) -> None:
        self.icmp = icmp
        self.sock = icmp.sock
        self.v6 = icmp.v6
        # Set once a batch asked for send times: from then on the reader reads the error queue first.
        self.stamping = False
        self.stamp_at = 0  # where the echo header starts in a send-time entry (after the link header)
        self.errors: _mmsg.MessageBatch | None = None
        self.inbox: _Inbox | None = None


class _Inbox:
    """A channel's `_mmsg.MessageBatch` and the layouts its fast path reads in one pass
    (`struct.iter_unpack`): the first control message (the receive time), the echo header and signature,
    the source address. Few fields per entry, each tuple is built for every packet: identifier and sequence
    are read as one number (the table's key), a control message's header as bytes compared with
    `stamp_head`, what the socket's receive-time option puts first."""

    __slots__ = ("_controls", "_data", "_headers", "_names", "_sources", "messages", "raw_v4", "stamp_head")

    def __init__(self, messages: _mmsg.MessageBatch, channel: _Channel) -> None:
        self.messages = messages
        self.raw_v4 = channel.icmp.raw and not channel.v6
        size, bufsize = messages.control_size, messages.bufsize
        head = _mmsg.CMSG_HEADER.size
        self._controls = struct.Struct(f"@{head}sll{size - head - _TIMESPEC.size}x")
        # SO_TIMESTAMPING (three timespecs, the software one first) or SO_TIMESTAMPNS (one)
        self.stamp_head = _STAMP_CMSG if channel.icmp.tx_stamps else _STAMPNS_CMSG
        if self.raw_v4:
            # version/IHL, TTL, then the ICMP type (code and checksum skipped), key and signature
            self._headers = struct.Struct(f"!B7xB11xB3xI{SIGNATURE_SIZE}s{bufsize - 40}x")
        else:
            self._headers = struct.Struct(f"!B3xI{SIGNATURE_SIZE}s{bufsize - 8 - SIGNATURE_SIZE}x")
        if channel.v6:
            self._sources = struct.Struct(f"=8x16s{_mmsg.NAME_SIZE - 24}x")
        else:
            self._sources = struct.Struct(f"=4x4s{_mmsg.NAME_SIZE - 8}x")
        self._data = memoryview(messages.data)
        self._names = memoryview(messages.names)

    def controls(self, n: int) -> Iterator[tuple[bytes, int, int]]:
        return self._controls.iter_unpack(memoryview(self.messages.control)[: n * self.messages.control_size])

    def headers(self, n: int) -> Iterator[tuple[Any, ...]]:
        return self._headers.iter_unpack(self._data[: n * self.messages.bufsize])

    def sources(self, n: int) -> Iterator[tuple[bytes]]:
        return self._sources.iter_unpack(self._names[: n * _mmsg.NAME_SIZE])


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
        # Batches through sendmmsg with kernel send times; turned off for good if the kernel refuses.
        self._batching = _mmsg.AVAILABLE
        self._reading_errors = False
        self._missing_stamps = 0  # answers whose send time never came (see _transmit)
        self._free_batches: dict[tuple[bool, int], list[_mmsg.SendBatch]] = {}
        self._stamp_request = S.tx_stamp_request()
        # Batches go to the kernel one at a time, from a worker thread of their own token: the user's
        # to_thread calls never wait for ours, nor ours for theirs.
        self._send_thread = anyio.CapacityLimiter(1)

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
        probe.packed = _packed(target)
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
        self._wake_timer(deadline)  # once per earlier deadline: later sends have later deadlines
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
                probe.packed = _packed(target)
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
            self._wake_timer(first_deadline)  # the batch's earliest deadline is its first probe's
        return sent

    async def send_batch(
        self,
        targets: list[Target],
        tags: list[Any],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
    ) -> int:
        """Send one probe to each of the first targets (tagged by ``tags``), unpaced; returns how many were
        dealt with (sent, or failed with their sink told): call again with the rest. The sweep's hot path.

        Where it can, up to `_SEND_BATCH` requests go in one ``sendmmsg`` from a worker thread, each asking
        the kernel for its send time: the kernel's per-packet work (for loopback the whole echo exchange)
        runs on another core while the reader reads the replies, and RTTs are still measured from the
        kernel's send time to its receive time. Otherwise (no sendmmsg, another TTL than the socket's, a
        payload too short for cookie and token, a scoped address) one ``sendto`` each, through `send_many`.
        Forget the probes with `discard_sink`.
        """
        if self._closed:
            raise ClientClosedError("the client is closed")
        prepared = self._prepare_batch(targets, tags, ttl, payload_size, timeout_ns, sink)
        if prepared is None:
            done = self.send_many(
                targets[:_SEND_BATCH], tags[:_SEND_BATCH], ttl, payload_size, timeout_ns, sink
            )
            if done:
                await anyio.lowlevel.checkpoint()  # let the reader drain replies between batches
            else:
                await anyio.sleep(0.0005)  # the kernel's send buffer is full: let it drain
            return done
        batch, probes, channel = prepared
        try:
            return await self._transmit(batch, probes, channel)
        finally:
            self._free_batches.setdefault((batch.v6, payload_size), []).append(batch)

    def _prepare_batch(
        self,
        targets: list[Target],
        tags: list[Any],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
    ) -> tuple[_mmsg.SendBatch, list[Probe], _Channel] | None:
        """Build and register the probes of one `send_batch` call; None when the batch path does not
        apply to the first target."""
        if not self._batching:
            return None
        v6 = targets[0].v6
        fam = self._families.get(v6) or self._family(v6)
        icmp = fam.channels[0].icmp
        if not icmp.tx_stamps or ttl != icmp.default_ttl:
            return None
        template = self._templates.get((v6, payload_size)) or self._template(
            v6, payload_size, fam.channels[0]
        )
        if not template.writable:
            return None
        pool = self._free_batches.get((v6, payload_size))
        if pool:
            batch = pool.pop()
        else:
            batch = _mmsg.SendBatch(_SEND_BATCH, template.blank, v6=v6, control=self._stamp_request)
        family = socket.AF_INET6 if v6 else socket.AF_INET
        inet_pton = socket.inet_pton
        # Unprivileged sockets may get a small buffer (net.core.rmem_max): smaller batches then.
        fits = max(16, icmp.receive_buffer // _QUEUED_PER_PROBE)
        # The run this batch takes: targets of this family whose address inet_pton accepts (a scoped IPv6
        # literal, say, is left to the general path).
        addresses: list[bytes] = []
        add_address = addresses.append
        for target in itertools.islice(targets, min(_SEND_BATCH, fits)):
            if target.v6 is not v6:
                break
            try:
                add_address(inet_pton(family, target.addr))
            except (OSError, ValueError):
                break
        if not addresses:
            self._free_batches.setdefault((v6, payload_size), []).append(batch)
            return None
        table = fam.table
        slot, seqs = table.allocate_run(len(addresses))  # may be fewer when the identifier fills up
        del addresses[len(seqs) :]
        channel: _Channel = slot.channel
        ident = slot.ident
        signatures = template.write_run(batch.packets, batch.stride, ident, seqs, self._token)
        self._token = (self._token + len(seqs)) & 0xFFFFFFFF
        now = time.monotonic_ns()
        deadline = now + timeout_ns
        probes = [
            Probe(
                target.addr,
                ident,
                seq,
                ttl,
                payload_size,
                signature,
                sink,
                tag,
                channel,
                now,
                deadline,
                True,
                packed,
            )
            for target, tag, seq, signature, packed in zip(
                targets, tags, seqs, signatures, addresses, strict=False
            )
        ]
        if v6:
            batch.put_addresses(
                addresses, [t.sockaddr[3] if len(t.sockaddr) > 3 else 0 for t in targets[: len(probes)]]
            )
        else:
            batch.put_addresses(addresses)
        table.add_run(slot, probes, timeout_ns)  # registered before they are sent: replies come at once
        self._wake_timer(deadline)
        return batch, probes, channel

    async def _transmit(self, batch: _mmsg.SendBatch, probes: list[Probe], channel: _Channel) -> int:
        """Hand a prepared batch to the kernel from a worker thread; deal with what it refuses."""
        if not channel.stamping:
            channel.stamping = True
        fd = channel.sock.fileno()
        count = len(probes)
        start = 0
        retried = -1
        missing = self._missing_stamps
        while start < count:
            sent, err = await anyio.to_thread.run_sync(
                batch.transmit, fd, start, count, limiter=self._send_thread
            )
            self._counters.sent += sent
            start += sent
            if self._closed:
                raise ClientClosedError("the client is closed")
            if start >= count or not err:
                continue
            probe = probes[start]
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                await anyio.sleep(0.0005)  # the send buffer is full: let the kernel drain it
                continue
            if err == errno.EINVAL and start == 0:
                # This kernel will not stamp per packet: forget the batch's probes (none went out) and let
                # the caller send them one at a time.
                self._batching = False
                for unsent in probes:
                    self._forget(unsent)
                return 0
            if err in _NOTICE_ERRNOS and retried != start:
                # Most likely an ICMP error queued for an earlier probe, reported on this send: read it,
                # then try once more.
                retried = start
                self._counters.notices += 1
                self._drain_errors(channel, time.time_ns() - time.monotonic_ns())
                continue
            start += 1
            if not probe.done:
                self._counters.send_errors += 1
                self._forget(probe)
                probe.sink.deliver(probe, Outcome(None, _SEND_ERRNO_NAMES.get(err, "send-failed")))
        # Read the stamps (and whatever came back meanwhile) now, so the next batch starts from a dry socket.
        self._drain(channel, time.time_ns() - time.monotonic_ns(), _READ_BATCH)
        unstamped = [probe for probe in probes if probe.stamped and not probe.done]
        if unstamped or self._missing_stamps > missing:
            # The stamps of the packets that left are all queued by the time sendmmsg returns, before any
            # answer: some did not come, so this path does not stamp. Those probes keep the hand-over time
            # as their send time; from now on, one send at a time.
            self._batching = False
            for probe in unstamped:
                probe.stamped = False
        return count

    def _forget(self, probe: Probe) -> None:
        fam = self._families.get(probe.channel.v6)
        if fam is not None:
            fam.table.finish(probe, answered=False)
        probe.done = True

    def _wake_timer(self, deadline: int) -> None:
        """Wake the timer if it sleeps past ``deadline``."""
        wake_at = self._timer_wake_at
        if self._timer_scope is not None and (wake_at is None or deadline < wake_at):
            self._timer_wake_at = deadline
            self._timer_scope.cancel()

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
        """Read up to about ``budget`` packets without blocking; returns how many were read.

        Send times (error queue) first when batches asked for them, then the packets, then a ping socket's
        error queue. ``offset`` converts the kernel's receive times (real time) to the monotonic clock.
        """
        fam = self._families.get(channel.v6)
        if fam is None:
            return 0
        if channel.stamping:
            self._drain_errors(channel, offset)  # send times first: they were queued before any reply
        if _mmsg.AVAILABLE:
            count = self._drain_batches(fam, channel, offset, budget)
        else:
            count = self._drain_messages(fam, channel, offset, budget)
        if not channel.icmp.raw:
            self._drain_errors(channel, offset)
        if count:
            fam.table.prune()
        return count

    def _drain_messages(self, fam: _Family, channel: _Channel, offset: int, budget: int) -> int:
        """`_drain` one ``recvmsg`` at a time (where ``recvmmsg`` cannot be had)."""
        recvmsg = channel.sock.recvmsg
        counters = self._counters
        header_at = -1 if channel.icmp.raw and not channel.v6 else 0
        count = 0
        while count < budget:
            try:
                data, ancdata, _flags, addr = recvmsg(self._bufsize, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # A queued ICMP error reported through errno (sk_err): a notice to read the error queue.
                counters.notices += 1
                if not channel.icmp.raw:
                    self._drain_errors(channel, offset)
                continue
            count += 1
            self._on_message(fam, data, ancdata, addr, offset, header_at)
        return count

    def _drain_batches(self, fam: _Family, channel: _Channel, offset: int, budget: int) -> int:
        """`_drain` through ``recvmmsg``, many packets per system call.

        The common case, an echo reply that matches a pending probe in time, is handled inline: the
        per-packet hot path of every sweep. Everything else goes through `_on_message`.
        """
        batch = channel.inbox
        if batch is None or batch.messages.bufsize < self._bufsize:
            batch = channel.inbox = _Inbox(_mmsg.MessageBatch(_RECV_BATCH, self._bufsize, 128), channel)
        messages = batch.messages
        fd = channel.sock.fileno()
        table = fam.table
        pending_get = table.get
        finish_answered = table.finish_answered
        counters = self._counters
        raw_v4 = batch.raw_v4
        stamp_head = batch.stamp_head
        header_at = -1 if raw_v4 else 0
        echo_reply = fam.echo_reply
        monotonic_ns = time.monotonic_ns
        ntop = socket.inet_ntop
        family = socket.AF_INET6 if channel.v6 else socket.AF_INET
        signature_end = 20 + SIGNATURE_SIZE if raw_v4 else SIGNATURE_SIZE
        last_sink: Any = None
        deliver_rtt: Any = None
        # Answered probes are marked done at once and leave the table after each read (in one call).
        answered: list[Probe] = []
        answer = answered.append
        count = 0
        while count < budget:
            try:
                n = messages.receive(fd)
            except OSError:
                # A queued ICMP error reported through errno (sk_err): a notice to read the error queue.
                counters.notices += 1
                if not channel.icmp.raw:
                    self._drain_errors(channel, offset)
                continue
            if not n:
                break
            count += n
            for k, ((length,), (head, sec, nsec), fields, (src,)) in enumerate(
                zip(messages.lengths(n), batch.controls(n), batch.headers(n), batch.sources(n), strict=False)
            ):
                try:
                    rx_ns = (
                        sec * 1_000_000_000 + nsec - offset if head == stamp_head and sec else monotonic_ns()
                    )
                    if raw_v4:
                        version_ihl, reply_ttl, icmp_type, key, signature = fields
                        fast = version_ihl == 0x45
                    else:
                        icmp_type, key, signature = fields
                        fast = True
                        reply_ttl = None
                    if fast and icmp_type == echo_reply and length >= signature_end:
                        probe = pending_get(key)
                        if (
                            probe is not None
                            and not probe.done
                            and rx_ns <= probe.deadline_ns
                            and signature == probe.signature
                            and src == probe.packed
                        ):
                            if probe.stamped:
                                # Its send time was queued before this reply (sendmmsg raced this read).
                                self._drain_errors(channel, offset)
                                if probe.done:
                                    continue
                                if probe.stamped:
                                    self._missing_stamps += 1
                                    probe.stamped = False
                            probe.done = True
                            answer(probe)
                            rtt_ns = rx_ns - probe.sent_ns
                            rtt_ms = rtt_ns / 1e6 if rtt_ns > 0 else 0.0
                            sink = probe.sink
                            if sink is not last_sink:
                                last_sink, deliver_rtt = sink, getattr(sink, "deliver_rtt", None)
                            if deliver_rtt is not None:
                                deliver_rtt(probe, rtt_ms)
                            elif raw_v4:
                                at = k * messages.bufsize
                                outcome = _new_outcome(
                                    Outcome,
                                    (
                                        rtt_ms,
                                        None,
                                        ntop(family, src),
                                        bytes(messages.data[at + 16 : at + 20]),
                                        reply_ttl,
                                        icmp_type,
                                        messages.data[at + 21],  # the ICMP code
                                        length - 20,
                                        (),
                                    ),
                                )
                                sink.deliver(probe, outcome)
                            else:
                                # Ping sockets and IPv6: the reply TTL is in the control data.
                                self._complete_from(fam, probe, messages, k, rx_ns, rtt_ms)
                            continue
                    # Everything else (errors, strangers, late or forged replies) takes the careful path,
                    # which must find the table up to date.
                    if answered:
                        counters.replies += len(answered)
                        finish_answered(answered)
                        answered.clear()
                    data, ancdata, _flags, addr = messages.message(k)
                    self._on_message(fam, data, ancdata, addr, offset, header_at)
                except Exception:
                    # Whatever a packet holds, it never raises into the reader: it is counted and dropped.
                    counters.malformed += 1
            if answered:
                counters.replies += len(answered)
                finish_answered(answered)
                answered.clear()
            if n < messages.capacity:
                break
        return count

    def _complete_from(
        self, fam: _Family, probe: Probe, messages: _mmsg.MessageBatch, k: int, rx_ns: int, rtt_ms: float
    ) -> None:
        """Deliver a matched echo reply (already taken from the table) with everything in its Outcome."""
        data, ancdata, _flags, addr = messages.message(k)
        reply_ttl = None
        for _level, kind, cdata in ancdata:
            if kind == S.IP_TTL or kind == S.IPV6_HOPLIMIT:
                reply_ttl = _NATIVE_INT.unpack_from(cdata)[0]
        src = addr[0] if addr else probe.addr
        icmp_type, icmp_code = data[0], data[1]
        probe.sink.deliver(
            probe, Outcome(rtt_ms, None, src, None, reply_ttl, icmp_type, icmp_code, len(data))
        )

    def _on_message(
        self,
        fam: _Family,
        data: bytes,
        ancdata: list[tuple[int, int, bytes]],
        addr: Any,
        offset: int,
        header_at: int,
    ) -> None:
        """One packet as ``recvmsg`` returns it; ``header_at`` -1 means an IPv4 header comes first."""
        counters = self._counters
        try:
            rx_ns = 0
            reply_ttl = None
            for level, kind, cdata in ancdata:
                if level == _SOL_SOCKET and kind in (_SCM_TIMESTAMPING, _SCM_TIMESTAMPNS):
                    sec, nsec = _TIMESPEC.unpack_from(cdata)  # SO_TIMESTAMPING: the first (software) one
                    if sec:
                        rx_ns = sec * 1_000_000_000 + nsec - offset
                elif kind == S.IP_TTL or kind == S.IPV6_HOPLIMIT:
                    reply_ttl = _NATIVE_INT.unpack_from(cdata)[0]
            if not rx_ns:
                rx_ns = time.monotonic_ns()
            at = header_at
            if at < 0:  # raw IPv4: the IP header comes first
                if len(data) < 20:
                    counters.malformed += 1
                    return
                at = (data[0] & 0x0F) * 4
                reply_ttl = data[8]
            if len(data) < at + 8:
                counters.malformed += 1
                return
            self._on_packet(fam, data, at, header_at < 0, addr, rx_ns, reply_ttl)
        except Exception:
            # Whatever a packet holds, it never raises into the reader: it is counted and dropped.
            counters.malformed += 1

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
        """Read the socket's error queue: kernel send times of batch-sent probes and, on ping sockets, ICMP
        errors about our probes (the router as offender)."""
        fam = self._families.get(channel.v6)
        if fam is None or self._reading_errors:
            return
        self._reading_errors = True  # a stamp must not trigger a nested read into the same buffers
        try:
            if _mmsg.AVAILABLE:
                self._drain_error_batches(fam, channel, offset)
            else:
                self._drain_error_messages(fam, channel, offset)
        finally:
            self._reading_errors = False

    def _drain_error_batches(self, fam: _Family, channel: _Channel, offset: int) -> None:
        batch = channel.errors
        if batch is None or batch.bufsize < self._bufsize:
            capacity = _ERROR_BATCH if self._bufsize <= 4096 else 16
            batch = channel.errors = _mmsg.MessageBatch(capacity, self._bufsize, _ERROR_CONTROL)
        fd = channel.sock.fileno()
        counters = self._counters
        data, bufsize = batch.data, batch.bufsize
        controls, packets = memoryview(batch.control), memoryview(batch.data)
        pending_get = fam.table.get
        while True:
            try:
                n = batch.receive(fd, errors=True)
            except OSError:
                counters.notices += 1
                return
            # Send times come in the layout the kernel gives them (see _STAMP_ENTRY); each sent echo's
            # header where the last one's was (after the link header: learnt by `_on_stamp`).
            at = channel.stamp_at
            layout = _stamped_layout(at, bufsize)
            entries = zip(
                batch.lengths(n),
                _STAMP_ENTRY.iter_unpack(controls[: n * _ERROR_CONTROL]),
                layout.iter_unpack(packets[: n * bufsize]),
                strict=False,
            )
            for k, ((length,), (head, sec, nsec, origin), (key, signature)) in enumerate(entries):
                try:
                    if head == _STAMP_CMSG and origin == _ORIGIN_STAMP:
                        if length >= at + _STAMPED_SIZE:
                            probe = pending_get(key)
                            if probe is not None and signature == probe.signature:
                                if probe.stamped:
                                    probe.sent_ns = sec * 1_000_000_000 + nsec - offset
                                    probe.stamped = False
                                continue
                        base = k * bufsize
                        stamp = sec * 1_000_000_000 + nsec - offset
                        self._on_stamp(fam, channel, data, base, base + length, stamp)
                        continue
                    message, ancdata, _flags, addr = batch.message(k)
                    self._on_queued_error(fam, channel, message, ancdata, addr, offset)
                except Exception:
                    counters.malformed += 1
            if n < batch.capacity:
                return

    def _on_stamp(
        self, fam: _Family, channel: _Channel, data: bytes | bytearray, start: int, end: int, stamp_ns: int
    ) -> None:
        """A kernel send time: ``data[start:end]`` is the packet as it left (link header first), ``stamp_ns``
        its time on the monotonic clock. It replaces the batch's hand-over time as the probe's send time."""
        at = data.find(self._cookie, start, end)  # the payload; the echo header is just before it
        if at < start + 8 or at + SIGNATURE_SIZE > end:
            return
        icmp_type, _code, _cs, ident, seq = ECHO_HEADER.unpack_from(data, at - 8)
        if icmp_type != fam.echo_request:
            return
        channel.stamp_at = at - 8 - start  # where the next stamps' echo headers will be
        probe = fam.table.get((ident << 16) | seq)
        if probe is not None and probe.stamped and data[at : at + SIGNATURE_SIZE] == probe.signature:
            probe.sent_ns = stamp_ns
            probe.stamped = False

    def _drain_error_messages(self, fam: _Family, channel: _Channel, offset: int) -> None:
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
                self._on_queued_error(fam, channel, data, ancdata, addr, offset)
            except Exception:
                self._counters.malformed += 1

    def _on_queued_error(
        self,
        fam: _Family,
        channel: _Channel,
        data: bytes,
        ancdata: list[tuple[int, int, bytes]],
        addr: Any,
        offset: int,
    ) -> None:
        counters = self._counters
        rx_ns = 0
        extended: bytes | None = None
        for level, kind, cdata in ancdata:
            if level == _SOL_SOCKET and kind in (_SCM_TIMESTAMPING, _SCM_TIMESTAMPNS):
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                if sec:
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
        if origin == S.SO_EE_ORIGIN_TIMESTAMPING:
            if rx_ns:
                self._on_stamp(fam, channel, data, 0, len(data), rx_ns)
            return
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
        if probe.done:
            return  # answered in this very read (the reader takes it out of the table after it)
        if probe.stamped:
            # Read its send time first (queued before this answer), unless that is what we are doing.
            if not self._reading_errors:
                self._drain_errors(probe.channel, time.time_ns() - time.monotonic_ns())
                if probe.done:
                    return
            if probe.stamped:
                self._missing_stamps += 1
                probe.stamped = False
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


def _packed(target: Target) -> bytes | None:
    """The target's address as ``inet_pton`` writes it; None for a scoped literal."""
    try:
        return socket.inet_pton(socket.AF_INET6 if target.v6 else socket.AF_INET, target.addr)
    except (OSError, ValueError):
        return None


def _align(length: int) -> int:
    """CMSG_ALIGN: where the next control message starts."""
    return (length + _CMSG_ALIGNMENT - 1) & ~(_CMSG_ALIGNMENT - 1)


_CMSG_ALIGNMENT = struct.calcsize("@N")


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
