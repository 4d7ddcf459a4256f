"""Opening ICMP sockets: the only module that calls ``socket()`` and ``setsockopt()``.

Two kinds (see LINUX-ICMP facts in the docs):

* raw (``SOCK_RAW``): needs ``CAP_NET_RAW``; sees every ICMP packet of its family on the host, so a kernel
  filter keeps only replies and errors; IPv4 reads start at the IP header; we pick the identifiers.
* ping socket (``SOCK_DGRAM``): allowed by ``net.ipv4.ping_group_range``; the kernel owns the identifier
  (the socket's "port") and delivers only our replies; errors come through the error queue (``IP_RECVERR``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass

from ._exceptions import RawSocketPermissionError, SocketError

# Constants CPython does not define (Linux values), in one place.
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
IP_RECVERR = 11
IP_RECVTTL = 12
IP_TTL = 2
IPV6_RECVERR = 25
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_UNICAST_HOPS = 16
IP_RECVTOS = 13
IPV6_RECVTCLASS = 66
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
# SO_TIMESTAMPING flags (linux/net_tstamp.h): what to stamp, and what to report.
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_TX_SCHED = 1 << 8
SO_EE_ORIGIN_TIMESTAMPING = 4
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3

# Large enough for a burst of tens of thousands of replies (each costs ~768 bytes of skb truesize).
RECEIVE_BUFFER = 32 * 1024 * 1024
SEND_BUFFER = 4 * 1024 * 1024

_PERMISSION_ERRNOS = frozenset({errno.EPERM, errno.EACCES})


@dataclass(slots=True)
class IcmpSocket:
    """An open ICMP socket and what the engine must know about it."""

    sock: socket.socket
    v6: bool
    raw: bool
    ident: int | None
    """The kernel-assigned identifier of a ping socket; ``None`` on raw sockets (we choose)."""
    default_ttl: int
    receive_buffer: int = 0
    """The kernel's receive buffer of the socket in bytes (``SO_RCVBUF``, as the kernel reports it)."""
    tx_stamps: bool = False
    """Receive times come from ``SO_TIMESTAMPING``, which also reports the send times of packets that ask
    for one (`tx_stamp_request`) on the error queue. False: ``SO_TIMESTAMPNS``, receive times only."""

    @property
    def kind(self) -> str:
        return "raw" if self.raw else "dgram"

    def close(self) -> None:
        self.sock.close()


def permission_message() -> str:
    exe = os.path.realpath(sys.executable)
    return (
        "icmpx needs either a raw ICMP socket or an unprivileged ICMP (ping) socket, and neither may be "
        "opened by this process.\n"
        f"  * allow raw sockets for this interpreter:  sudo setcap cap_net_raw+ep {exe}\n"
        "  * or allow ping sockets for your group:     "
        f"sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'\n"
        "    (persist it in /etc/sysctl.d/; in a container, set the same sysctl in its namespace)\n"
        "  * or run as root."
    )


def open_icmp_socket(
    *, v6: bool, privileged: bool | None, source: str | None = None, ttl: int = 64, warm_up: bool = True
) -> IcmpSocket:
    """Open and configure an ICMP socket of the family.

    ``privileged=None`` tries a raw socket, then a ping socket; ``True``/``False`` force one kind. Raises
    `RawSocketPermissionError` when the kind(s) tried are not permitted, `SocketError` on other failures.
    ``warm_up=False`` leaves `wait_for_receive_timestamps` to the caller (the engine runs it in a worker
    thread: it may sleep; the socket itself is opened in the caller's thread, so in its network namespace).
    """
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    kinds = [True, False] if privileged is None else [privileged]
    denied: list[OSError] = []
    for raw in kinds:
        try:
            sock = socket.socket(family, socket.SOCK_RAW if raw else socket.SOCK_DGRAM, proto)
        except OSError as exc:
            if exc.errno in _PERMISSION_ERRNOS:
                denied.append(exc)
                continue
            raise SocketError(exc.errno, f"cannot open an ICMP socket: {exc.strerror}") from exc
        try:
            return _configure(sock, v6=v6, raw=raw, source=source, ttl=ttl, warm_up=warm_up)
        except BaseException:
            sock.close()
            raise
    raise RawSocketPermissionError(permission_message()) from (denied[-1] if denied else None)


def _configure(
    sock: socket.socket, *, v6: bool, raw: bool, source: str | None, ttl: int, warm_up: bool = True
) -> IcmpSocket:
    try:
        sock.setblocking(False)
        _set_buffers(sock)
        tx_stamps = _set_timestamps(sock)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl)
            if raw:
                sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter())
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_TTL, ttl)
            if raw:
                sock.setsockopt(SOL_RAW, ICMP_FILTER, icmp4_filter())
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        if source is not None or not raw:
            # A ping socket's identifier is its port: bind now so getsockname() tells it before any send.
            sock.bind((source or ("::" if v6 else "0.0.0.0"), 0))
        ident = None if raw else sock.getsockname()[1]
        receive_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError as exc:
        raise SocketError(exc.errno, f"cannot configure the ICMP socket: {exc.strerror}") from exc
    if warm_up:
        wait_for_receive_timestamps()
    return IcmpSocket(
        sock=sock,
        v6=v6,
        raw=raw,
        ident=ident,
        default_ttl=ttl,
        receive_buffer=receive_buffer,
        tx_stamps=tx_stamps,
    )


def _set_timestamps(sock: socket.socket) -> bool:
    """Kernel receive timestamps on every packet; with ``SO_TIMESTAMPING`` where the kernel has it, so that
    a packet sent with `tx_stamp_request` also gets its send time (taken as it enters the device's queue)
    on the error queue. Returns whether that worked."""
    try:
        sock.setsockopt(
            socket.SOL_SOCKET,
            SO_TIMESTAMPING,
            SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE,
        )
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return False
    return True


def tx_stamp_request() -> bytes:
    """The control message (raw ``cmsghdr`` bytes) that asks the kernel for one packet's send time."""
    header = struct.Struct("@NiiI")  # cmsg_len, cmsg_level, cmsg_type, the u32 flags
    body = header.pack(socket.CMSG_LEN(4), socket.SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SCHED)
    return body.ljust(socket.CMSG_SPACE(4), b"\0")


_timestamps_ready = False


def receive_timestamps_ready() -> bool:
    """True once `wait_for_receive_timestamps` saw the kernel stamp on arrival (no need to wait again)."""
    return _timestamps_ready


def wait_for_receive_timestamps(bound: float = 0.05) -> bool:
    """Wait (once per process, at most ``bound`` seconds) until the kernel stamps packets on arrival.

    Linux turns receive timestamps on lazily: the first socket that asks for them schedules the switch on a
    workqueue, and packets that arrive before it flips are stamped when they are *read*, which would turn
    the first RTTs of a process into "time until the reader got to them". A loopback UDP datagram sent to
    ourselves tells: stamped on arrival, its timestamp is earlier than the moment we read it.
    """
    global _timestamps_ready
    if _timestamps_ready:
        return True
    try:
        # Best effort: without a descriptor to spare (EMFILE), say so and let the caller go on.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        probe.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
        deadline = time.monotonic() + bound
        while True:
            probe.sendto(b"t", address)
            time.sleep(0.0002)  # let the datagram arrive well before we read it
            before_read = time.time_ns()
            _data, ancdata, _flags, _addr = probe.recvmsg(8, 64)
            stamps = [
                c for level, kind, c in ancdata if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS
            ]
            if stamps:
                sec, nsec = struct.unpack("@ll", stamps[0][:16])
                if sec * 1_000_000_000 + nsec < before_read:
                    _timestamps_ready = True
                    return True
            if time.monotonic() > deadline:
                return False
    except OSError:
        return False
    finally:
        probe.close()


def _set_buffers(sock: socket.socket) -> None:
    for force, plain, size in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF, RECEIVE_BUFFER),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF, SEND_BUFFER),
    ):
        try:
            # Root (CAP_NET_ADMIN) may go past net.core.rmem_max; others get what the sysctl allows.
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def icmp4_filter() -> bytes:
    """ICMP_FILTER mask: a set bit drops that type. Pass echo reply, unreachable, time exceeded, param."""
    allowed = (1 << 0) | (1 << 3) | (1 << 11) | (1 << 12)
    return struct.pack("=I", ~allowed & 0xFFFFFFFF)


def icmp6_filter() -> bytes:
    """ICMP6_FILTER: 256 bits, a set bit blocks that type (Linux semantics)."""
    words = [0xFFFFFFFF] * 8
    for t in (1, 2, 3, 4, 129):
        words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
IPV6_DONTFRAG = 62
_PMTUDISC_PROBE = 3


def set_pmtu_mode(sock: socket.socket, *, v6: bool, mode: int) -> None:
    """Set the socket's path MTU discovery mode (``IP_PMTUDISC_*``); in probe mode IPv6 packets are never
    fragmented either (``IPV6_DONTFRAG``)."""
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, mode)
            if mode == _PMTUDISC_PROBE:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, mode)
    except OSError as exc:
        raise SocketError(exc.errno, f"cannot set the path MTU discovery mode: {exc.strerror}") from exc


def receive_tos(icmp: IcmpSocket) -> None:
    """Have the kernel report each received packet's TOS byte / traffic class (``IP_RECVTOS`` /
    ``IPV6_RECVTCLASS``): one more control message per packet, so only once a call asks for ``tos``. Raw
    IPv4 sockets need none: they read the IP header."""
    if icmp.raw and not icmp.v6:
        return
    with contextlib.suppress(OSError):  # the reply's TOS is then unknown (None), nothing worse
        if icmp.v6:
            icmp.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        else:
            icmp.sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)


def source_is_local(source: str, *, v6: bool) -> bool:
    """Whether this host (in the caller's network namespace) has the address: binding a UDP socket to it
    tells."""
    probe = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((source, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def receive_nothing(sock: socket.socket) -> None:
    """Make a raw socket send-only: a filter that accepts no packet (the family's other raw socket reads
    every answer), and nothing left queued from before it."""
    import ctypes  # only raw sockets need it

    code = _BPF_INSN.pack(_RET, 0, 0, 0)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = struct.pack("@HP", 1, ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
    except OSError as exc:
        raise SocketError(exc.errno, f"cannot filter the ICMP socket: {exc.strerror}") from exc
    discard_queued(sock)


def ttl_cmsg(v6: bool, ttl: int) -> tuple[int, int, bytes]:
    """The control message that sets the TTL / hop limit of one packet on ``sendmsg``."""
    if v6:
        return (socket.IPPROTO_IPV6, IPV6_HOPLIMIT, struct.pack("=i", ttl))
    return (socket.IPPROTO_IP, IP_TTL, struct.pack("=i", ttl))


# Classic BPF (linux/filter.h), the few instructions the ident filter needs.
SO_ATTACH_FILTER = 26
SO_MEMINFO = 55
_SK_MEMINFO_DROPS = 8
_BPF_INSN = struct.Struct("=HBBI")
_LDX_MSH = 0xB1  # BPF_LDX | BPF_B | BPF_MSH: X = 4 * (packet[k] & 0x0F), the IPv4 header's length
_LDB_IND, _LDH_IND = 0x50, 0x48  # A = packet[X + k] (byte, half word)
_LDB_ABS, _LDH_ABS = 0x30, 0x28  # A = packet[k]
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_MAX_FILTERED_IDENTS = 64


def ident_filter(*, v6: bool, idents: list[int]) -> bytes:
    """A classic BPF program for a raw ICMP socket: echo replies pass only with one of ``idents`` (every
    other program's replies stay in the kernel, as iputils ping filters them); every other type passes
    (``ICMP_FILTER`` already keeps only replies and errors). Raw IPv4 sockets see the IP header first,
    raw IPv6 ones the ICMPv6 header."""
    program: list[tuple[int, int, int, int]] = []
    if v6:
        program += [(_LDB_ABS, 0, 0, 0)]
        load_ident = (_LDH_ABS, 0, 0, 4)
        echo_reply = 129
    else:
        program += [(_LDX_MSH, 0, 0, 0), (_LDB_IND, 0, 0, 0)]
        load_ident = (_LDH_IND, 0, 0, 4)
        echo_reply = 0
    checks = sorted(set(idents))[:_MAX_FILTERED_IDENTS] if len(set(idents)) <= _MAX_FILTERED_IDENTS else []
    # if type != echo reply: accept; A = ident; if A == ident_k: accept; ...; reject; accept
    total = len(program) + 2 + len(checks) + 2
    accept = total - 1
    at = len(program)
    program.append((_JEQ, 0, accept - (at + 1), echo_reply))
    if checks:
        program.append(load_ident)
        for ident in checks:
            at = len(program)
            program.append((_JEQ, accept - (at + 1), 0, ident))
        program.append((_RET, 0, 0, 0))
    else:
        # Too many identifiers to list: every echo reply passes (Python tells ours apart).
        program += [(_RET, 0, 0, 0xFFFFFFFF), (_RET, 0, 0, 0xFFFFFFFF)]
    program.append((_RET, 0, 0, 0xFFFFFFFF))
    return b"".join(_BPF_INSN.pack(*insn) for insn in program)


def filter_idents(sock: socket.socket, *, v6: bool, idents: list[int]) -> None:
    """Attach (or replace) `ident_filter` on a raw socket; a kernel that refuses it only costs speed."""
    import ctypes  # only raw sockets need it

    code = ident_filter(v6=v6, idents=idents)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = struct.pack("@HP", len(code) // _BPF_INSN.size, ctypes.addressof(buffer))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)


def kernel_drops(sock: socket.socket) -> int:
    """Packets the kernel dropped for this socket (its receive buffer was full): ``SK_MEMINFO_DROPS`` of
    ``SO_MEMINFO``, the counter ``SO_RXQ_OVFL`` reports, read when asked instead of on every packet."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    except OSError:
        return 0
    if len(info) < 9 * 4:
        return 0
    drops: int = struct.unpack_from("=9I", info)[_SK_MEMINFO_DROPS]
    return drops


def discard_queued(sock: socket.socket) -> int:
    """Read and drop what a new socket queued before its filters were attached (other programs' packets:
    nothing of ours is in flight yet); how many."""
    dropped = 0
    for _ in range(100_000):
        try:
            sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue  # a pending error reported by errno: consumed by this read
        dropped += 1
    return dropped
