"""Batched datagram I/O: ``sendmmsg(2)`` and ``recvmmsg(2)`` through ctypes, for the sweep's hot path.

Why: on a fast path (loopback, a LAN) most of the cost of one echo is the kernel's, inside ``sendto``. A
sweep hands the engine hundreds of echo requests at once; `SendBatch.transmit` gives them to the kernel in
one call, from a worker thread, with the GIL released for the whole batch, so that work runs on another core
while the event loop reads the replies. Each packet asks the kernel for its send time (`tx_stamp_request`),
which comes back on the socket's error queue: RTTs stay kernel-to-kernel, as exact as one send at a time.
`ErrorQueueBatch` reads those stamps many per system call.

Everything here works on preallocated buffers; the Python objects a batch touches in the worker thread are
its own bytearrays. `AVAILABLE` is False where libc lacks the calls (or ctypes is missing): the engine then
sends one packet at a time.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["AVAILABLE", "NAME_SIZE", "MessageBatch", "SendBatch", "cmsg_align", "sockaddr_size"]

MSG_DONTWAIT = 0x40
MSG_ERRQUEUE = 0x2000


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_HDR_SIZE = ctypes.sizeof(_MMsgHdr)
_LEN_OFFSET = _MMsgHdr.len.offset
_UINT = struct.Struct("@I")


def _tail_format() -> struct.Struct:
    """Reads ``(msg_controllen, msg_flags, msg_len)`` from one ``struct mmsghdr``, whatever the ABI."""
    controllen, flags, length = _MsgHdr.controllen.offset, _MsgHdr.flags.offset, _MMsgHdr.len.offset
    size_t, int_size = ctypes.sizeof(ctypes.c_size_t), ctypes.sizeof(ctypes.c_int)
    fmt = (
        f"={controllen}x{'Q' if size_t == 8 else 'I'}"
        f"{flags - controllen - size_t}xi"
        f"{length - flags - int_size}xI{_HDR_SIZE - length - 4}x"
    )
    tail = struct.Struct(fmt)
    assert tail.size == _HDR_SIZE
    return tail


_TAIL = _tail_format()
# Only msg_len of each ``struct mmsghdr``: the readers' fast paths need nothing else.
_LENGTH = struct.Struct(f"={_LEN_OFFSET}xI{_HDR_SIZE - _LEN_OFFSET - 4}x")


def _native(ctype: Any) -> str:
    return {1: "B", 2: "H", 4: "I", 8: "Q"}[ctypes.sizeof(ctype)]


def _layout(struct_type: Any, names: list[str], size: int) -> struct.Struct:
    """A `struct.Struct` writing the named fields of a ctypes structure at their offsets."""
    fmt, at = "=", 0
    for name in names:
        field = getattr(struct_type, name)
        ctype = dict(struct_type._fields_)[name]
        fmt += f"{field.offset - at}x{_native(ctype)}"
        at = field.offset + field.size
    layout = struct.Struct(fmt + f"{size - at}x")
    assert layout.size == size
    return layout


_IOVEC = _layout(_IoVec, ["base", "len"], ctypes.sizeof(_IoVec))
# name, namelen, iov, iovlen, control, controllen of a struct mmsghdr (the msghdr comes first).
_SEND_HDR = _layout(_MsgHdr, ["name", "namelen", "iov", "iovlen", "control", "controllen"], _HDR_SIZE)


def _load() -> tuple[Any, Any] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        sendmmsg, recvmmsg = libc.sendmmsg, libc.recvmmsg
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        return None
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    return sendmmsg, recvmmsg


_CALLS = _load()
AVAILABLE = _CALLS is not None


def sockaddr_size(v6: bool) -> int:
    return 28 if v6 else 16


_SOCKADDR_IN = struct.Struct("=HH4s8x")  # family (host order), port, address, zero
_SOCKADDR_IN6 = struct.Struct("=HHI16sI")  # family, port, flow info, address, scope


def _address(buffer: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


class SendBatch:
    """Room for ``capacity`` echo requests of one size to one address family, and their ``mmsghdr``s.

    Fill slot ``k`` with `put` (the packet bytes are written by the caller into `packets` at ``k * stride``,
    e.g. with `EchoTemplate.write_into`), then `transmit` slots ``[start, stop)``.
    """

    def __init__(self, capacity: int, blank: bytes, *, v6: bool, control: bytes) -> None:
        self.capacity = capacity
        self.v6 = v6
        self.stride = len(blank)
        self.packets = bytearray(blank * capacity)
        self._namelen = sockaddr_size(v6)
        # Every slot's family (and port 0) written once; IPv4 addresses then go in with one strided copy
        # (a sockaddr_in is four 32-bit words, the address the second).
        blank_name = (
            _SOCKADDR_IN6.pack(socket.AF_INET6, 0, 0, bytes(16), 0)
            if v6
            else _SOCKADDR_IN.pack(socket.AF_INET, 0, bytes(4))
        )
        self._names = bytearray(blank_name * capacity)
        self._control = bytearray(control)
        self._iovs = (_IoVec * capacity)()
        self._hdrs = (_MMsgHdr * capacity)()
        packets, names = _address(self.packets), _address(self._names)
        control_at = _address(self._control) if control else 0
        iovs, iov_size = ctypes.addressof(self._iovs), ctypes.sizeof(_IoVec)
        # Filled with struct, not field by field through ctypes: a first sweep pays for this.
        iov_view, hdr_view = memoryview(self._iovs).cast("B"), memoryview(self._hdrs).cast("B")
        pack_iov, pack_hdr = _IOVEC.pack_into, _SEND_HDR.pack_into
        for k in range(capacity):
            pack_iov(iov_view, k * iov_size, packets + k * self.stride, self.stride)
            pack_hdr(
                hdr_view,
                k * _HDR_SIZE,
                names + k * self._namelen,
                self._namelen,
                iovs + k * iov_size,
                1,
                control_at,
                len(control),
            )
        self._base = ctypes.addressof(self._hdrs)
        self._pack_v4 = _SOCKADDR_IN.pack_into
        self._pack_v6 = _SOCKADDR_IN6.pack_into
        self._address_words = None if v6 else memoryview(self._names).cast("I")[1::4]

    def put_address(self, k: int, packed: bytes, scope: int = 0) -> None:
        """Slot ``k``'s destination: ``packed`` is the address as ``inet_pton`` returns it."""
        if self.v6:
            self._pack_v6(self._names, k * 28, socket.AF_INET6, 0, 0, packed, scope)
        else:
            self._pack_v4(self._names, k * 16, socket.AF_INET, 0, packed)

    def put_addresses(self, packed: list[bytes], scopes: list[int] | None = None) -> None:
        """`put_address` for slots ``0 .. len(packed) - 1``."""
        if self.v6:
            pack6 = self._pack_v6
            for k, (address, scope) in enumerate(zip(packed, scopes or [0] * len(packed), strict=True)):
                pack6(self._names, k * 28, socket.AF_INET6, 0, 0, address, scope)
            return
        words = self._address_words
        assert words is not None
        words[: len(packed)] = memoryview(b"".join(packed)).cast("I")

    def packet(self, k: int) -> bytes:
        return bytes(self.packets[k * self.stride : (k + 1) * self.stride])

    def transmit(self, fd: int, start: int, stop: int) -> tuple[int, int]:
        """Send slots ``[start, stop)`` in one ``sendmmsg`` (call it from a worker thread: the GIL is
        released meanwhile). Returns ``(sent, errno)``: how many went, and why the next one did not (0 when
        all went)."""
        assert _CALLS is not None
        sent = _CALLS[0](fd, self._base + start * _HDR_SIZE, stop - start, MSG_DONTWAIT)
        if sent < 0:
            return 0, ctypes.get_errno() or errno.EIO
        # Fewer than asked: the kernel stopped at a packet it could not take; sending from there tells why.
        return sent, 0


class MessageBatch:
    """Reads up to ``capacity`` datagrams (or error-queue entries) per ``recvmmsg`` into preallocated buffers.

    After `receive` returned ``n``: entry ``k < n`` has its bytes in `data` from ``k * bufsize``, its control
    messages in `control` from ``k * control_size`` (the rest of that slot zeroed), its source address in
    `names` from ``k * NAME_SIZE``; `lengths` gives the length of each, in one pass.
    """

    def __init__(self, capacity: int, bufsize: int, control_size: int = 256) -> None:
        self.capacity = capacity
        self.bufsize = bufsize
        self.control_size = control_size
        self.data = bytearray(capacity * bufsize)
        self.control = bytearray(capacity * control_size)
        self.names = bytearray(capacity * NAME_SIZE)
        self._iovs = (_IoVec * capacity)()
        self._hdrs = (_MMsgHdr * capacity)()
        data, control, names = _address(self.data), _address(self.control), _address(self.names)
        for k in range(capacity):
            self._iovs[k].base = data + k * bufsize
            self._iovs[k].len = bufsize
            hdr = self._hdrs[k].hdr
            hdr.name = names + k * NAME_SIZE
            hdr.namelen = NAME_SIZE
            hdr.iov = ctypes.addressof(self._iovs[k])
            hdr.iovlen = 1
            hdr.control = control + k * control_size
            hdr.controllen = control_size
        self._view = memoryview(self._hdrs).cast("B")
        self._pristine = bytes(self._view)
        self._zero_control = bytes(len(self.control))
        self._base = ctypes.addressof(self._hdrs)

    def receive(self, fd: int, *, errors: bool = False) -> int:
        """Read what is queued (up to `capacity`) without blocking; 0 when nothing is. ``errors``: read the
        error queue. Raises `OSError` with the socket's pending error (e.g. an ICMP error's errno on a
        ping socket) instead of an empty read."""
        assert _CALLS is not None
        self._view[:] = self._pristine  # the kernel overwrote the in/out lengths last time
        self.control[:] = self._zero_control  # so a packet without control data reads as zeros
        flags = MSG_DONTWAIT | MSG_ERRQUEUE if errors else MSG_DONTWAIT
        n: int = _CALLS[1](fd, self._base, self.capacity, flags, None)
        if n < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        return n

    def lengths(self, n: int) -> Iterator[tuple[int]]:
        """``(length,)`` of the first ``n`` entries."""
        return _LENGTH.iter_unpack(self._view[: n * _HDR_SIZE])

    def length(self, k: int) -> int:
        length: int = _UINT.unpack_from(self._view, k * _HDR_SIZE + _LEN_OFFSET)[0]
        return length

    def message(self, k: int) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[Any, ...] | None]:
        """Entry ``k`` as ``socket.recvmsg`` returns it: ``(data, ancillary data, flags, address)``."""
        controllen, flags, length = _TAIL.unpack_from(self._view, k * _HDR_SIZE)
        data = bytes(self.data[k * self.bufsize : k * self.bufsize + min(length, self.bufsize)])
        return data, self._ancillary(k, controllen), flags, self.address(k)

    def ancillary(self, k: int) -> list[tuple[int, int, bytes]]:
        """Entry ``k``'s control messages as ``socket.recvmsg`` gives them."""
        controllen, _flags, _length = _TAIL.unpack_from(self._view, k * _HDR_SIZE)
        return self._ancillary(k, controllen)

    def address(self, k: int) -> tuple[Any, ...] | None:
        """Entry ``k``'s address as ``socket.recvmsg`` gives it, or None."""
        at = k * NAME_SIZE
        family = _FAMILY.unpack_from(self.names, at)[0]
        if family == socket.AF_INET:
            _f, port, packed = _SOCKADDR_IN.unpack_from(self.names, at)
            return (socket.inet_ntop(socket.AF_INET, packed), socket.ntohs(port))
        if family == socket.AF_INET6:
            _f, port, flow, packed, scope = _SOCKADDR_IN6.unpack_from(self.names, at)
            return (socket.inet_ntop(socket.AF_INET6, packed), socket.ntohs(port), flow, scope)
        return None

    def _ancillary(self, k: int, controllen: int) -> list[tuple[int, int, bytes]]:
        out: list[tuple[int, int, bytes]] = []
        base = k * self.control_size
        end = base + min(controllen, self.control_size)
        header = CMSG_HEADER
        at = base
        while at + header.size <= end:
            length, level, kind = header.unpack_from(self.control, at)
            if length < header.size or at + length > end:
                break
            out.append((level, kind, bytes(self.control[at + header.size : at + length])))
            at += cmsg_align(length)
        return out


NAME_SIZE = 28  # room for a sockaddr_in6
_FAMILY = struct.Struct("=H")
CMSG_HEADER = struct.Struct("@Nii")
"""A ``struct cmsghdr``: length, level, type."""
_ALIGN = ctypes.sizeof(ctypes.c_size_t)


def cmsg_align(length: int) -> int:
    """CMSG_ALIGN: where the control message after one of ``length`` bytes starts."""
    return (length + _ALIGN - 1) & ~(_ALIGN - 1)
