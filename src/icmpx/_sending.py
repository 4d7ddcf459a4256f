"""Batch sending for unpaced sweeps, and the kernel send times that come back for it.

A sweep with no rate hands the engine many targets at once. `BatchSender` registers a run of probes in the
pending table, writes their packets into one `_mmsg.SendBatch` and gives them to the kernel with
``sendmmsg`` from a worker thread (the GIL released for the whole call, so the kernel's per-packet work runs
on another core while the event loop reads replies). Each packet asks for its send time
(``SO_TIMESTAMPING`` ``TX_SCHED``); the kernel queues it on the socket's error queue, which the reader reads
before the packets, and `SendTimes` puts it on the probe: RTTs stay kernel-to-kernel.

Safety: a socket is not closed while a batch is in the worker's hands: closing the client stops the worker
at its next chunk and the socket is closed when the batch is back, so the worker can never write into
whatever would reuse the descriptor's number.

Memory follows what is in flight: a batch has room for the targets asked (rounded up, at most
`SEND_BATCH` and a few MiB), and the batches kept for reuse are let go when no sweep is sending.
"""

from __future__ import annotations

import errno
import functools
import itertools
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from . import _mmsg
from ._classify import Tally
from ._exceptions import ClientClosedError
from ._matching import Outcome, PendingTable, Probe, Sink
from ._models import Target
from ._reader import Channel
from ._wire import ECHO_HEADER, SIGNATURE_SIZE, EchoTemplate

__all__ = ["SEND_BATCH", "BatchSender", "SendTimes"]

SEND_BATCH = 2048  # echo requests per sendmmsg call at most
_CHUNK = 256  # the worker checks for closing between chunks of this many
_BATCH_BYTES = 4 * 1024 * 1024  # packet bytes per batch at most (large payloads get fewer slots)
# What one sent probe may hold in the receive buffer until read: its send time and its reply (sk_buff
# truesize, about 1 KiB each on loopback). A batch must fit, or the kernel drops stamps and replies.
_QUEUED_PER_PROBE = 4096
_ERROR_CONTROL = 256
_TIMESPEC = struct.Struct("@ll")
_STAMPED_SIZE = 8 + SIGNATURE_SIZE  # a sent echo request: header and signature
_ORIGIN_STAMP = 4
# A send-time entry of the error queue, as the kernel lays it out: SCM_TIMESTAMPING (cmsg length, level,
# type, the software timespec, two unused ones), then IP(V6)_RECVERR whose ee_origin is read (at 84).
_STAMP_ENTRY = struct.Struct(f"@{_mmsg.CMSG_HEADER.size}sll52xB{_ERROR_CONTROL - 85}x")
_STAMP_CMSG = _mmsg.CMSG_HEADER.pack(socket.CMSG_LEN(3 * _TIMESPEC.size), socket.SOL_SOCKET, 37)


@functools.lru_cache(maxsize=16)
def _stamped_layout(at: int, bufsize: int) -> struct.Struct:
    """Key (identifier and sequence, read as one 32-bit number) and signature of the echo request at ``at``
    in each ``bufsize`` slot."""
    return struct.Struct(f"!{at + 4}xI{SIGNATURE_SIZE}s{bufsize - at - _STAMPED_SIZE}x")


class SendTimes:
    """Puts the kernel's send times (error-queue entries) on the probes they belong to."""

    def __init__(
        self,
        tables: Callable[[bool], PendingTable | None],
        cookie: bytes,
        echo_request: Callable[[bool], int],
    ) -> None:
        self._tables = tables
        self._cookie = cookie
        self._echo_request = echo_request

    def entries(self, channel: Channel, batch: _mmsg.MessageBatch, n: int, offset: int) -> list[int]:
        """Apply the send times among the first ``n`` entries of an error-queue batch; the indices of the
        other entries (ICMP errors, local errors) for the reader to handle."""
        table = self._tables(channel.v6)
        others: list[int] = []
        if table is None:
            return []
        pending_get = table.get
        bufsize = batch.bufsize
        at = channel.stamp_at  # each sent echo's header where the last one's was (after the link header)
        entries = zip(
            batch.lengths(n),
            _STAMP_ENTRY.iter_unpack(memoryview(batch.control)[: n * _ERROR_CONTROL]),
            _stamped_layout(at, bufsize).iter_unpack(memoryview(batch.data)[: n * bufsize]),
            strict=False,
        )
        for k, ((length,), (head, sec, nsec, origin), (key, signature)) in enumerate(entries):
            if head != _STAMP_CMSG or origin != _ORIGIN_STAMP:
                others.append(k)
                continue
            stamp = sec * 1_000_000_000 + nsec - offset
            if length >= at + _STAMPED_SIZE:
                probe = pending_get(key)
                if probe is not None and signature == probe.signature:
                    if probe.stamped:
                        probe.sent_ns = stamp
                        probe.stamped = False
                    continue
            base = k * bufsize
            self.one(channel, batch.data, base, base + length, stamp)
        return others

    def one(self, channel: Channel, data: bytes | bytearray, start: int, end: int, stamp_ns: int) -> None:
        """A kernel send time: ``data[start:end]`` is the packet as it left (link header first), ``stamp_ns``
        its time on the monotonic clock. It replaces the batch's hand-over time as the probe's send time."""
        table = self._tables(channel.v6)
        at = data.find(self._cookie, start, end)  # the payload; the echo header is just before it
        if table is None or at < start + 8 or at + SIGNATURE_SIZE > end:
            return
        icmp_type, _code, _cs, ident, seq = ECHO_HEADER.unpack_from(data, at - 8)
        if icmp_type != self._echo_request(channel.v6):
            return
        channel.stamp_at = at - 8 - start  # where the next stamps' echo headers will be
        probe = table.get((ident << 16) | seq)
        if probe is not None and probe.stamped and data[at : at + SIGNATURE_SIZE] == probe.signature:
            probe.sent_ns = stamp_ns
            probe.stamped = False


class BatchSender:
    """Sends runs of probes with ``sendmmsg`` from a worker thread (see the module docstring)."""

    def __init__(self, stamp_request: bytes, tally: Tally) -> None:
        self.enabled = _mmsg.AVAILABLE
        """Turned off for good when the kernel refuses per-packet send times."""
        self.missing_stamps = 0  # answers whose send time never came (see `transmit`)
        self._stamp_request = stamp_request
        self._tally = tally
        self._free: dict[tuple[bool, int, int], _mmsg.SendBatch] = {}
        self._users: set[int] = set()  # sinks sending batches now (their id)
        # Batches go to the kernel one at a time, from a worker thread of their own token: the user's
        # to_thread calls never wait for ours, nor ours for theirs.
        self._thread = anyio.CapacityLimiter(1)
        self._busy: dict[int, int] = {}  # socket fd -> batches in the worker's hands
        self._close_later: list[Channel] = []
        self._closing = False

    # -------------------------------------------------------------------------------------- batches

    def prepare(
        self,
        channel: Channel,
        table: PendingTable,
        template: EchoTemplate,
        targets: list[Target],
        tags: list[Any],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Sink,
    ) -> tuple[_mmsg.SendBatch, list[Probe]] | None:
        """Build and register the probes of one batch (targets of ``channel``'s family from the first on,
        as many as fit); None when the batch path does not apply to the first target."""
        v6 = channel.v6
        icmp = channel.icmp
        if not self.enabled or not icmp.tx_stamps or ttl != icmp.default_ttl or not template.writable:
            return None
        # Unprivileged sockets may get a small buffer (net.core.rmem_max): smaller batches then.
        fits = max(16, icmp.receive_buffer // _QUEUED_PER_PROBE)
        by_bytes = max(16, _BATCH_BYTES // len(template.blank))
        room = min(SEND_BATCH, fits, by_bytes)
        family = socket.AF_INET6 if v6 else socket.AF_INET
        inet_pton = socket.inet_pton
        # The run this batch takes: targets of this family whose address inet_pton accepts (a scoped IPv6
        # literal, say, is left to the general path).
        addresses: list[bytes] = []
        add_address = addresses.append
        for target in itertools.islice(targets, room):
            if target.v6 is not v6:
                break
            try:
                add_address(inet_pton(family, target.addr))
            except (OSError, ValueError):
                break
        if not addresses:
            return None
        capacity = min(room, max(16, 1 << (len(addresses) - 1).bit_length()))
        batch = self._free.pop((v6, payload_size, capacity), None)
        if batch is None:
            batch = _mmsg.SendBatch(capacity, template.blank, v6=v6, control=self._stamp_request)
        slot, seqs = table.allocate_run(len(addresses))  # may be fewer when the identifier fills up
        del addresses[len(seqs) :]
        ident = slot.ident
        tokens = table.random.u32(len(seqs))
        signatures, sums = template.write_run(batch.packets, batch.stride, ident, seqs, tokens)
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
                csum,
            )
            for target, tag, seq, signature, packed, csum in zip(
                targets, tags, seqs, signatures, addresses, sums, strict=False
            )
        ]
        if v6:
            batch.put_addresses(
                addresses, [t.sockaddr[3] if len(t.sockaddr) > 3 else 0 for t in targets[: len(probes)]]
            )
        else:
            batch.put_addresses(addresses)
        table.add_run(slot, probes, timeout_ns)  # registered before they are sent: replies come at once
        self._users.add(id(sink))
        return batch, probes

    def release(self, batch: _mmsg.SendBatch, payload_size: int) -> None:
        """A batch is back from the kernel: keep one per shape for the sweep's next batch."""
        self._free[(batch.v6, payload_size, batch.capacity)] = batch

    def done(self, sink: Sink) -> None:
        """A sweep is over: when none is sending any more, let the kept batches go."""
        self._users.discard(id(sink))
        if not self._users:
            self._free.clear()

    async def transmit(
        self,
        batch: _mmsg.SendBatch,
        probes: list[Probe],
        channel: Channel,
        forget: Callable[[Probe], None],
        drain_errors: Callable[[], None],
        drain: Callable[[], object],
        is_closed: Callable[[], bool],
        notice_errnos: frozenset[int],
        notice_retries: int,
        errno_names: dict[int, str],
    ) -> int:
        """Hand a prepared batch to the kernel from the worker thread; deal with what it refuses."""
        channel.stamping = True
        fd = channel.sock.fileno()
        count = len(probes)
        start = 0
        retried_at, retries = -1, 0
        missing = self.missing_stamps
        tally = self._tally
        self._busy[fd] = self._busy.get(fd, 0) + 1
        try:
            while start < count:
                sent, err = await anyio.to_thread.run_sync(
                    self._send_chunks, batch, fd, start, count, limiter=self._thread
                )
                tally.sent += sent
                start += sent
                if is_closed():
                    raise ClientClosedError("the client is closed")
                if start >= count or not err:
                    continue
                probe = probes[start]
                if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                    await anyio.sleep(0.0005)  # the send buffer is full: let the kernel drain it
                    continue
                if err == errno.EINVAL and start == 0:
                    # This kernel will not stamp per packet: forget the batch's probes (none went out) and
                    # let the caller send them one at a time.
                    self.enabled = False
                    for unsent in probes:
                        forget(unsent)
                    return 0
                if err in notice_errnos and (retried_at != start or retries < notice_retries):
                    # Most likely an ICMP error queued for an earlier probe, reported on this send: read the
                    # queue, then try again (a few times: errors may keep coming).
                    retries = retries + 1 if retried_at == start else 1
                    retried_at = start
                    tally.notices += 1
                    drain_errors()
                    continue
                start += 1
                if not probe.done:
                    tally.send_errors += 1
                    forget(probe)
                    probe.sink.deliver(probe, Outcome(None, errno_names.get(err, "send-failed")))
        finally:
            self._busy[fd] -= 1
            if not self._busy[fd]:
                del self._busy[fd]
                for waiting in [ch for ch in self._close_later if ch.sock.fileno() == fd]:
                    self._close_later.remove(waiting)
                    waiting.icmp.close()
        # Read the stamps (and whatever came back meanwhile) now, so the next batch starts from a dry socket.
        drain()
        unstamped = [probe for probe in probes if probe.stamped and not probe.done]
        if unstamped or self.missing_stamps > missing:
            # The stamps of the packets that left are all queued by the time sendmmsg returns, before any
            # answer: some did not come, so this path does not stamp. Those probes keep the hand-over time
            # as their send time; from now on, one send at a time.
            self.enabled = False
            for probe in unstamped:
                probe.stamped = False
        return count

    def _send_chunks(self, batch: _mmsg.SendBatch, fd: int, start: int, stop: int) -> tuple[int, int]:
        """In the worker thread: ``sendmmsg`` a chunk at a time until done, refused or closing."""
        total = 0
        while start < stop and not self._closing:
            end = min(stop, start + _CHUNK)
            sent, err = batch.transmit(fd, start, end)
            total += sent
            start += sent
            if err or start < end:
                return total, err
        return total, 0

    # ------------------------------------------------------------------------------------- closing

    def close(self, channel: Channel) -> None:
        """Close ``channel``'s socket now, or, while a batch is in the worker's hands, when it is back (the
        worker stops at its next chunk)."""
        self._closing = True
        self._free.clear()
        if self._busy.get(channel.sock.fileno(), 0):
            self._close_later.append(channel)
        else:
            channel.icmp.close()
