"""The engine: one ICMP socket per address family, one reader task per socket; the coordinator.

Theory of operation
-------------------
Every call (``ping``, ``traceroute``, ``multiping``, ...) hands the engine probes to send and a *sink* that
collects their outcomes. The engine:

1. opens a family's socket on first use (`_families`: in the caller's thread; the wait, once per process,
   until the kernel stamps packets on arrival runs in a worker thread, never on the event loop), with one
   `Channel`: the socket, the family's `Classifier` and a read strategy picked once (`_reader`);
2. allocates each probe an (identifier, random sequence) key from the family's `PendingTable`, builds the
   echo request (cookie + a random token per probe in the payload), records the monotonic send time and a
   deadline, and sends it with ``sendmsg`` on the shared socket (the TTL rides in a control message, so
   concurrent traceroutes never race on a socket option). Unpaced sweeps hand whole runs to `BatchSender`
   (``sendmmsg`` from a worker thread, kernel send times back on the error queue: `_sending`);
3. runs one *reader* task per socket: wait until readable, then let the channel's reader read until the
   socket is dry. Each packet is classified (`_classify`: pure, no I/O) and the verdict settled here, in
   `settle`: counted in one place (`Tally`), a match delivered to its probe's sink with an RTT from the
   kernel's receive timestamp, a late answer delivered as a timeout;
4. runs one *timer* task that sleeps until the earliest deadline and delivers timeouts.

Foreign, forged, late, duplicate, malformed, bad-checksum and refused packets are dropped and counted
(`EngineStats`); nothing a packet contains can raise into a caller. Closing aborts every sink with
`ClientClosedError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import _mmsg
from . import _socket as S
from ._classify import Decision, Tally, Verdict
from ._exceptions import ClientClosedError
from ._families import Extra, Families, Family
from ._matching import TIMEOUT, IdentSlot, Outcome, Probe, Sink
from ._models import EngineStats, Target
from ._options import ProbeOptions, SendOptions
from ._pacing import Pacer
from ._reader import Channel
from ._sending import SEND_BATCH, BatchSender, SendTimes
from ._wire import (
    COOKIE_SIZE,
    ICMP4_ECHO_REQUEST,
    ICMP6_ECHO_REQUEST,
    SIGNATURE_SIZE,
    EchoTemplate,
    balance_checksum,
    sent_sum,
)

__all__ = ["Engine"]

_READ_BATCH = 2048
_SEND_YIELD_EVERY = 256
_NOTICE_RETRIES = 8  # sends retried after reading the error queue, when the send reported a queued error
_NO_CMSGS: list[tuple[int, int, bytes]] = []
_SIGNATURE_END = 8 + SIGNATURE_SIZE
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
        accept_weak: bool = True,
    ) -> None:
        self._cookie = os.urandom(COOKIE_SIZE)
        self._closed = False
        self._families = Families(
            privileged=privileged,
            source=source,
            ttl=ttl,
            accept_weak=accept_weak,
            receiver=self,
            start_reader=lambda channel: spawn(self._read_forever, channel),
            is_closed=lambda: self._closed,
        )
        self.tally = Tally()
        self._timer_scope: anyio.CancelScope | None = None
        self._timer_wake_at: int | None = None
        self._pacer = Pacer(rate) if rate else None
        self._unyielded = 0
        self._templates: dict[tuple[bool, int], EchoTemplate] = {}
        self.bufsize = 2048
        """Receive buffer per packet: replies echo the payload, errors quote up to ~600 bytes beyond it."""
        self._watched: set[Abortable] = set()
        self._sender = BatchSender(S.tx_stamp_request(), self.tally)
        self._times = SendTimes(
            lambda v6: fam.table if (fam := self._families.get(v6)) is not None else None,
            self._cookie,
            lambda v6: ICMP6_ECHO_REQUEST if v6 else ICMP4_ECHO_REQUEST,
        )

    # ------------------------------------------------------------------------------------------ public

    def stats(self) -> EngineStats:
        t = self.tally
        channels = [ch for fam in self._families.values() for ch in fam.channels]
        send_only = [x.icmp for fam in self._families.values() for x in fam.extras.values() if not x.channel]
        return EngineStats(
            sent=t.sent,
            replies=t.replies,
            errors=t.errors,
            timeouts=t.timeouts,
            send_errors=t.send_errors,
            foreign=t.foreign,
            forged=t.forged,
            late=t.late,
            duplicates=t.duplicates,
            malformed=t.malformed,
            notices=t.notices,
            pending=sum(len(fam.table) for fam in self._families.values()),
            sockets=len(channels) + len(send_only),
            socket_kinds=tuple(icmp.kind for icmp in [*(ch.icmp for ch in channels), *send_only]),
            bad_checksum=t.bad_checksum,
            weak=t.weak,
            refused=t.refused,
            kernel_drops=sum(S.kernel_drops(ch.sock) for ch in channels),
        )

    async def socket_kind(self, v6: bool) -> str:
        """Open the family's socket if need be; ``"raw"`` or ``"dgram"``."""
        return (await self.open(v6)).channels[0].icmp.kind

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
        options: SendOptions | None = None,
    ) -> Probe:
        """Send one echo request; its outcome reaches ``sink.deliver`` exactly once (unless discarded).

        ``checksum`` keeps the ICMP checksum at that value (Paris traceroute), payload size permitting.
        ``options`` (from `send_options`, for the target's family) ride on the packet. Paced by the
        client's rate; waits while the kernel's send buffer is full.
        """
        if self._closed:
            raise ClientClosedError("the client is closed")
        if target.v6 not in self._families:
            await self.open(target.v6)
        if options is not None and options.extra is not None:
            await self.open_extra(target.v6, options.extra)
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
            probe = self.send_nowait(target, ttl, payload_size, timeout_ns, sink, tag, checksum, options)
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
        options: SendOptions | None = None,
    ) -> Probe | None:
        """Send now, without pacing; ``None`` when the kernel's buffer is full (nothing was registered:
        wait a little and call again). The family's socket (and ``options``' extra socket, if it needs
        one) must be open (`open`, `open_extra`). Callers must yield to the loop now and then so the
        reader can drain replies."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        fam = self._family(target.v6)
        table = fam.table
        if options is None:
            slot, seq = table.allocate()
            channel: Channel = slot.channel
            sock = channel.sock
            cmsgs = _NO_CMSGS if ttl == channel.icmp.default_ttl else [S.ttl_cmsg(fam.v6, ttl)]
        else:
            picked = self._optioned(fam, options)
            if picked is None:
                return None  # the extra socket's identifier is full: like a full buffer, wait
            slot, seq, channel, sock = picked
            cmsgs = [S.ttl_cmsg(fam.v6, ttl), *options.cmsgs]
        token = table.random.token()
        template = self._templates.get((fam.v6, payload_size)) or self._template(fam.v6, payload_size)
        packet = template.build(slot.ident, seq, token, self._cookie)
        if checksum is not None:
            packet = balance_checksum(packet, v6=fam.v6, target=checksum)
        probe = Probe(
            target.addr, slot.ident, seq, ttl, payload_size, packet[8:_SIGNATURE_END], sink, tag, channel
        )
        probe.packed = _packed(target)
        probe.csum = sent_sum(packet, v6=True) if fam.v6 else (packet[2] << 8) | packet[3]
        if options is not None:
            probe.options = options.asked
        notices = 0
        while True:
            probe.sent_ns = time.monotonic_ns()
            try:
                if cmsgs:
                    sock.sendmsg([packet], cmsgs, 0, target.sockaddr)
                else:
                    sock.sendto(packet, target.sockaddr)
                break
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    return None
                if exc.errno in _NOTICE_ERRNOS and notices < _NOTICE_RETRIES:
                    # Most likely an ICMP error queued for an earlier probe, reported on this send
                    # (Linux >= 6.1): read the queue, try again. Errors keep arriving while we do (a flood,
                    # forged or not, must not fail our sends), so a few times; a local failure (no route)
                    # persists past them.
                    notices += 1
                    self.tally.notices += 1
                    channel.reader.drain_errors(_clock_offset())
                    continue
                self.tally.send_errors += 1
                probe.done = True
                sink.deliver(probe, Outcome(None, _SEND_ERRNO_NAMES.get(exc.errno or 0, "send-failed")))
                return probe
        probe.deadline_ns = deadline = probe.sent_ns + timeout_ns
        self.tally.sent += 1
        table.add(probe, timeout_ns)
        self._wake_timer(deadline)  # once per earlier deadline: later sends have later deadlines
        return probe

    @staticmethod
    def _optioned(fam: Family, options: SendOptions) -> tuple[IdentSlot, int, Channel, socket.socket] | None:
        """Key, reading channel and sending socket of a probe with options."""
        if options.extra is None:
            slot, seq = fam.table.allocate()
            return slot, seq, slot.channel, slot.channel.sock
        extra = fam.extras[options.extra]
        if extra.slot is None:
            # A raw extra socket only sends: the family's raw socket reads the answers.
            slot, seq = fam.table.allocate()
            return slot, seq, slot.channel, extra.icmp.sock
        drawn = fam.table.allocate_in(extra.slot)
        if drawn is None:
            return None
        assert extra.channel is not None
        return extra.slot, drawn, extra.channel, extra.icmp.sock

    def send_many(
        self,
        targets: list[Target],
        tags: list[Any],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
        options: SendOptions | None = None,
    ) -> int:
        """Send one probe to each target (tagged by ``tags``) in one loop, unpaced. Returns how many were
        dealt with: fewer than asked when the kernel's buffer filled (call again later with the rest)."""
        sent = 0
        first_deadline = 0
        for target, tag in zip(targets, tags, strict=True):
            probe = self.send_nowait(target, ttl, payload_size, timeout_ns, sink, tag, None, options)
            if probe is None:
                break
            if not first_deadline and probe.deadline_ns:
                first_deadline = probe.deadline_ns
            sent += 1
        return sent

    async def send_batch(
        self,
        targets: list[Target],
        tags: list[Any],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
        options: SendOptions | None = None,
    ) -> int:
        """Send one probe to each of the first targets (tagged by ``tags``), unpaced; returns how many were
        dealt with (sent, or failed with their sink told): call again with the rest. The sweep's hot path.

        Where it can, a run goes in one ``sendmmsg`` from a worker thread (`BatchSender`); otherwise (and
        always with ``options``, which the batch does not carry) one ``sendmsg`` each, through `send_many`.
        Forget the probes with `discard_sink`.
        """
        if self._closed:
            raise ClientClosedError("the client is closed")
        fam = await self.open(targets[0].v6)
        channel = fam.channels[0]
        template = self._templates.get((fam.v6, payload_size)) or self._template(fam.v6, payload_size)
        prepared = None
        if options is None:
            prepared = self._sender.prepare(
                channel, fam.table, template, targets, tags, ttl, payload_size, timeout_ns, sink
            )
        elif options.extra is not None:
            await self.open_extra(fam.v6, options.extra)
        if prepared is None:
            count = min(len(targets), SEND_BATCH)
            if options is not None:
                # Options are for one family: the leading run of targets of that family.
                count = next((i for i, t in enumerate(targets[:count]) if t.v6 is not fam.v6), count)
            else:
                for v6 in {target.v6 for target in targets[:count]}:
                    await self.open(v6)  # the run may hold both families
            done = self.send_many(targets[:count], tags[:count], ttl, payload_size, timeout_ns, sink, options)
            if done:
                await anyio.lowlevel.checkpoint()  # let the reader drain replies between batches
            else:
                await anyio.sleep(0.0005)  # the kernel's send buffer is full: let it drain
            return done
        batch, probes = prepared
        self._wake_timer(probes[0].deadline_ns)
        try:
            return await self._sender.transmit(
                batch,
                probes,
                channel,
                forget=self._forget,
                drain_errors=lambda: channel.reader.drain_errors(_clock_offset()),
                drain=lambda: channel.reader.drain(_clock_offset(), _READ_BATCH),
                is_closed=lambda: self._closed,
                notice_errnos=_NOTICE_ERRNOS,
                notice_retries=_NOTICE_RETRIES,
                errno_names=_SEND_ERRNO_NAMES,
            )
        finally:
            self._sender.release(batch, payload_size)

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

    def _template(self, v6: bool, payload_size: int) -> EchoTemplate:
        template = EchoTemplate(v6=v6, cookie=self._cookie, size=payload_size)
        if len(self._templates) < 64:
            self._templates[(v6, payload_size)] = template
        # Replies echo the payload; errors quote up to ~600 bytes beyond it.
        self.bufsize = max(self.bufsize, payload_size + 600)
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
        self._sender.done(sink)

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
        """Close every socket; one with a batch in the worker thread when that is back (the worker stops at
        its next chunk), so its descriptor's number is never reused under the worker."""
        self._closed = True
        for fam in self._families.values():
            for ch in fam.channels:
                self._sender.close(ch)
            for extra in fam.extras.values():
                if extra.channel is None:
                    extra.icmp.close()  # send-only: never in a batch

    async def run_timer(self) -> None:
        """The timer task: deliver timeouts at each deadline (started by the client)."""
        while True:
            now = time.monotonic_ns()
            earliest: int | None = None
            for fam in list(self._families.values()):
                nxt = fam.table.next_deadline()
                if nxt is not None and nxt <= now:
                    # Read what already arrived before declaring anything lost.
                    offset = _clock_offset()
                    for ch in fam.channels:
                        ch.reader.drain(offset, _READ_BATCH)
                    for probe in fam.table.expire(now):
                        self.tally.timeouts += 1
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

    # ------------------------------------------------------------------------------------ receiving

    def settle(self, decision: Decision, channel: Channel) -> None:
        """Act on a classified packet: the one place verdicts are counted and matches delivered."""
        verdict, probe, answer = decision
        tally = self.tally
        if probe is None or answer is None:
            tally.count(verdict)
            return
        if probe.stamped:
            # Read its send time first (queued before this answer), unless that is what we are doing.
            probe.channel.reader.drain_errors(_clock_offset())
            if probe.done:
                tally.count(Verdict.DUPLICATE)  # answered meanwhile, from the error queue
                return
            if probe.stamped:
                self._sender.missing_stamps += 1
                probe.stamped = False
        tally.count(verdict)
        table = channel.classifier.table
        if verdict is Verdict.LATE:
            # Arrived after its deadline (the timer had not run yet): a timeout, as the caller asked.
            table.finish(probe, answered=False)
            tally.timeouts += 1
            probe.sink.deliver(probe, TIMEOUT)
            return
        table.finish(probe, answered=True)
        rtt_ns = answer.rx_ns - probe.sent_ns
        probe.sink.deliver(probe, answer.outcome(rtt_ns / 1e6 if rtt_ns > 0 else 0.0))

    def send_time(
        self, channel: Channel, data: bytes | bytearray, start: int, end: int, stamp_ns: int
    ) -> None:
        self._times.one(channel, data, start, end, stamp_ns)

    def stamp_entries(self, channel: Channel, batch: _mmsg.MessageBatch, n: int, offset: int) -> list[int]:
        return self._times.entries(channel, batch, n, offset)

    async def _read_forever(self, channel: Channel) -> None:
        sock, reader = channel.sock, channel.reader
        while True:
            await anyio.wait_readable(sock)
            while reader.drain(_clock_offset(), _READ_BATCH) >= _READ_BATCH:
                await anyio.lowlevel.checkpoint()

    # --------------------------------------------------------------------------------------- sockets

    async def send_options(self, options: ProbeOptions | None, v6: bool) -> SendOptions | None:
        """``options`` tied to the family's socket (opened if need be), any extra socket they need opened:
        ``ValueError`` for what this socket cannot do, before anything is sent. None for no options."""
        if options is None:
            return None
        fam = await self.open(v6)
        icmp = fam.channels[0].icmp
        built = SendOptions.build(options, v6=v6, raw=icmp.raw, kind="raw" if icmp.raw else "ping (dgram)")
        if options.tos is not None and not fam.tos:
            # The reply's TOS costs a control message per packet: reported from the first call that sets one.
            fam.tos = True
            for channel in fam.channels:
                S.receive_tos(channel.icmp)
        if built.extra is not None:
            await self.open_extra(v6, built.extra)
        return built

    def _family(self, v6: bool) -> Family:
        return self._families.require(v6)

    async def open(self, v6: bool) -> Family:
        """The family's socket and reader, opened on first use (see `Families.open`)."""
        return await self._families.open(v6)

    async def open_extra(self, v6: bool, which: tuple[int | None, str | None]) -> Extra:
        """The family's extra socket ``which`` (see `Families.open_extra`)."""
        return await self._families.open_extra(v6, which)


def _clock_offset() -> int:
    """Real time minus monotonic time: converts the kernel's receive times to the monotonic clock."""
    return time.time_ns() - time.monotonic_ns()


def _packed(target: Target) -> bytes | None:
    """The target's address as ``inet_pton`` writes it; None for a scoped literal."""
    try:
        return socket.inet_pton(socket.AF_INET6 if target.v6 else socket.AF_INET, target.addr)
    except (OSError, ValueError):
        return None
