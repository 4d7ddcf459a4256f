"""Reading a socket: one strategy per socket, picked when it opens (as trio picks one I/O manager).

Facts the strategies rest on:

* ``recvmmsg(2)`` reads up to a batch of datagrams per system call into preallocated buffers; where libc has
  it (`_mmsg.AVAILABLE`), `BatchReader` reads that way and lets `BatchDecoder` take the common case (a
  matched echo reply) straight out of the buffers. Elsewhere `MessageReader` reads one ``recvmsg`` at a time.
* A ping socket with ``IP_RECVERR`` / ``IPV6_RECVERR`` gets ICMP errors on its *error queue*
  (``MSG_ERRQUEUE``); a pending one also makes a plain read fail once with its errno: a notice to drain the
  queue, not a failure.
* Packets sent with a send-time request (`_sending`) come back on the error queue too, stamped, before any
  reply to them can be read: the send times are read first.

The strategies only read. What a packet is, `Classifier` decides; what then happens (delivery, counting),
the engine's `Receiver` methods do.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Protocol

from . import _mmsg
from . import _socket as S
from ._classify import (
    ORIGIN_ICMP,
    ORIGIN_ICMP6,
    ORIGIN_TIMESTAMPING,
    BatchDecoder,
    Classifier,
    Decision,
    Tally,
)
from ._classify import read_controls as _read_controls
from ._matching import Outcome, Probe

__all__ = ["BatchReader", "Channel", "MessageReader", "Receiver", "open_reader"]

_ANCILLARY = 512
_RECV_BATCH = 256  # packets per recvmmsg call
_ERROR_BATCH = 256  # error-queue entries per recvmmsg call
_ERROR_CONTROL = 256
_BUFFER_BYTES = 4 * 1024 * 1024
_TIMESPEC = struct.Struct("@ll")
_new_outcome = tuple.__new__  # skips the NamedTuple's Python-level __new__ on a hot path
_EXTENDED_ORIGIN = struct.Struct("=4xB")
# What SO_TIMESTAMPING / SO_TIMESTAMPNS put first on a received packet: the cmsg header of the receive time.
_STAMPING_CMSG = _mmsg.CMSG_HEADER.pack(
    socket.CMSG_LEN(3 * _TIMESPEC.size), socket.SOL_SOCKET, S.SCM_TIMESTAMPING
)
_STAMPNS_CMSG = _mmsg.CMSG_HEADER.pack(socket.CMSG_LEN(_TIMESPEC.size), socket.SOL_SOCKET, S.SCM_TIMESTAMPNS)


class Receiver(Protocol):
    """What the engine does with what a reader reads."""

    tally: Tally
    bufsize: int

    def settle(self, decision: Decision, channel: Channel) -> None:
        """Act on a classified packet: count it, deliver a match, time out a late one."""

    def send_time(
        self, channel: Channel, data: bytes | bytearray, start: int, end: int, stamp_ns: int
    ) -> None:
        """A kernel send time from the error queue (``data[start:end]`` is the packet as it left)."""

    def stamp_entries(self, channel: Channel, batch: _mmsg.MessageBatch, n: int, offset: int) -> list[int]:
        """Apply the send times among the first ``n`` error-queue entries of ``batch``; the indices of
        the entries that are something else."""


class Channel:
    """One open socket, its classifier and its read strategy."""

    __slots__ = ("classifier", "icmp", "reader", "sock", "stamp_at", "stamping", "v6")

    def __init__(self, icmp: S.IcmpSocket, classifier: Classifier) -> None:
        self.icmp = icmp
        self.sock = icmp.sock
        self.v6 = icmp.v6
        self.classifier = classifier
        # Set once a batch asked for send times: from then on the reader reads the error queue first.
        self.stamping = False
        self.stamp_at = 0  # where the echo header starts in a send-time entry (after the link header)
        self.reader: BatchReader | MessageReader


def open_reader(channel: Channel, receiver: Receiver) -> BatchReader | MessageReader:
    """The read strategy for a new socket: batches where libc has ``recvmmsg``, else one at a time."""
    reader = BatchReader(channel, receiver) if _mmsg.AVAILABLE else MessageReader(channel, receiver)
    channel.reader = reader
    return reader


class _Base:
    __slots__ = ("_reading_errors", "channel", "receiver")

    def __init__(self, channel: Channel, receiver: Receiver) -> None:
        self.channel = channel
        self.receiver = receiver
        self._reading_errors = False

    def drain(self, offset: int, budget: int) -> int:
        """Read up to about ``budget`` packets without blocking; how many were read. Send times first
        when batches asked for them, then the packets, then a ping socket's error queue. ``offset``
        converts the kernel's receive times (real time) to the monotonic clock."""
        channel = self.channel
        if channel.stamping:
            self.drain_errors(offset)  # send times first: they were queued before any reply
        count = self._drain_packets(offset, budget)
        if not channel.icmp.raw:
            self.drain_errors(offset)
        if count:
            channel.classifier.table.prune()
        return count

    def drain_errors(self, offset: int) -> None:
        """Read the error queue: kernel send times of batch-sent probes and, on ping sockets, ICMP errors
        about our probes (the router as offender). Not re-entered (settling may ask for it)."""
        if self._reading_errors:
            return
        self._reading_errors = True  # a stamp must not trigger a nested read into the same buffers
        try:
            self._drain_error_queue(offset)
        finally:
            self._reading_errors = False

    def _drain_packets(self, offset: int, budget: int) -> int:
        raise NotImplementedError

    def _drain_error_queue(self, offset: int) -> None:
        raise NotImplementedError

    def _notice(self, offset: int) -> None:
        """A queued ICMP error reported through errno (sk_err): read the error queue."""
        self.receiver.tally.notices += 1
        if not self.channel.icmp.raw:
            self.drain_errors(offset)

    def _on_datagram(
        self, data: bytes, ancdata: list[tuple[int, int, bytes]], addr: Any, offset: int
    ) -> None:
        channel = self.channel
        try:
            rx_ns, ttl, _extended, tos = _read_controls(ancdata, offset)
            decision = channel.classifier.packet(
                data, addr[0] if addr else None, rx_ns or time.monotonic_ns(), ttl, tos
            )
        except Exception:
            # Whatever a packet holds, it never raises into the reader: it is counted and dropped.
            self.receiver.tally.malformed += 1
            return
        self.receiver.settle(decision, channel)

    def _on_queued(self, data: bytes, ancdata: list[tuple[int, int, bytes]], addr: Any, offset: int) -> None:
        """One error-queue entry as ``recvmsg(MSG_ERRQUEUE)`` returns it."""
        channel, receiver = self.channel, self.receiver
        try:
            rx_ns, _ttl, extended, _tos = _read_controls(ancdata, offset)
            origin = _EXTENDED_ORIGIN.unpack_from(extended)[0] if extended and len(extended) >= 5 else None
            if origin == ORIGIN_TIMESTAMPING:
                if rx_ns:
                    receiver.send_time(channel, data, 0, len(data), rx_ns)
                return
            if extended is not None and origin not in (ORIGIN_ICMP, ORIGIN_ICMP6):
                receiver.tally.notices += 1  # a local error (e.g. message too long): no router involved
                return
            if extended is None:
                receiver.tally.malformed += 1
                return
            decision = channel.classifier.queued(data, extended, addr, rx_ns or time.monotonic_ns())
        except Exception:
            receiver.tally.malformed += 1
            return
        receiver.settle(decision, channel)


class MessageReader(_Base):
    """One ``recvmsg`` per packet (where ``recvmmsg`` cannot be had)."""

    __slots__ = ()

    def _drain_packets(self, offset: int, budget: int) -> int:
        recvmsg = self.channel.sock.recvmsg
        count = 0
        while count < budget:
            try:
                data, ancdata, _flags, addr = recvmsg(self.receiver.bufsize, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._notice(offset)
                continue
            count += 1
            self._on_datagram(data, ancdata, addr, offset)
        return count

    def _drain_error_queue(self, offset: int) -> None:
        sock = self.channel.sock
        while True:
            try:
                data, ancdata, _flags, addr = sock.recvmsg(self.receiver.bufsize, _ANCILLARY, S.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.receiver.tally.notices += 1
                return
            self._on_queued(data, ancdata, addr, offset)


class BatchReader(_Base):
    """``recvmmsg`` batches, the common case taken by `BatchDecoder` straight from the buffers."""

    __slots__ = ("_decoder", "_errors", "_messages")

    def __init__(self, channel: Channel, receiver: Receiver) -> None:
        super().__init__(channel, receiver)
        self._messages: _mmsg.MessageBatch | None = None
        self._decoder: BatchDecoder | None = None
        self._errors: _mmsg.MessageBatch | None = None

    def _batch(self) -> tuple[_mmsg.MessageBatch, BatchDecoder]:
        messages, decoder = self._messages, self._decoder
        bufsize = self.receiver.bufsize
        if messages is None or decoder is None or messages.bufsize < bufsize:
            # Large payloads get fewer slots: the buffers stay within a few MiB whatever the size.
            capacity = max(16, min(_RECV_BATCH, _BUFFER_BYTES // bufsize))
            messages = self._messages = _mmsg.MessageBatch(capacity, bufsize, 128)
            decoder = self._decoder = BatchDecoder(
                self.channel.classifier,
                data=messages.data,
                control=messages.control,
                names=messages.names,
                bufsize=messages.bufsize,
                control_size=messages.control_size,
                name_size=_mmsg.NAME_SIZE,
                cmsg_header=_mmsg.CMSG_HEADER.size,
                stamp_head=_STAMPING_CMSG if self.channel.icmp.tx_stamps else _STAMPNS_CMSG,
            )
        return messages, decoder

    def _drain_packets(self, offset: int, budget: int) -> int:
        messages, decoder = self._batch()
        fd = self.channel.sock.fileno()
        tally = self.receiver.tally
        count = 0

        def general(k: int) -> None:
            data, ancdata, _flags, addr = messages.message(k)
            self._on_datagram(data, ancdata, addr, offset)

        while count < budget:
            try:
                n = messages.receive(fd)
            except OSError:
                self._notice(offset)
                continue
            if not n:
                break
            count += n
            decoder.take(
                messages.lengths(n), n, offset, time.monotonic_ns(), general, self._full_outcome, tally
            )
            if n < messages.capacity:
                break
        return count

    def _full_outcome(self, probe: Probe, k: int, rtt_ms: float, length: int) -> None:
        """Deliver a matched echo reply (already out of the table) with everything in its `Outcome`, read
        from slot ``k`` where it lies (its source is the probe's destination: the fast path checked)."""
        messages = self._messages
        assert messages is not None
        data, at = messages.data, k * messages.bufsize
        if self.channel.classifier.has_ip_header:  # IPv4 header of 20 bytes (the fast path checked)
            fields = (rtt_ms, None, probe.addr, bytes(data[at + 16 : at + 20]), data[at + 8], data[at + 20])
            outcome = _new_outcome(
                Outcome, (*fields, data[at + 21], length - 20, (), False, None, data[at + 1])
            )
        else:
            _rx, ttl, _extended, tos = _read_controls(messages.ancillary(k), 0)
            outcome = Outcome(
                rtt_ms, None, probe.addr, None, ttl, data[at], data[at + 1], length, (), False, None, tos
            )
        probe.sink.deliver(probe, outcome)

    def _drain_error_queue(self, offset: int) -> None:
        batch = self._errors
        bufsize = self.receiver.bufsize
        if batch is None or batch.bufsize < bufsize:
            capacity = _ERROR_BATCH if bufsize <= 4096 else 16
            batch = self._errors = _mmsg.MessageBatch(capacity, bufsize, _ERROR_CONTROL)
        fd = self.channel.sock.fileno()
        while True:
            try:
                n = batch.receive(fd, errors=True)
            except OSError:
                self.receiver.tally.notices += 1
                return
            for k in self.receiver.stamp_entries(self.channel, batch, n, offset):
                data, ancdata, _flags, addr = batch.message(k)
                self._on_queued(data, ancdata, addr, offset)
            if n < batch.capacity:
                return
