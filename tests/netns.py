"""In-process helpers for tests: enter a network namespace on this thread, count ICMP sockets.

``inside(name)`` moves only the calling thread (setns(2) with CLONE_NEWNET is per thread), so an async test
can open its client's sockets inside a namespace it built while pytest itself stays where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body with this thread in network namespace ``name`` (from ``ip netns add``)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def quiet_namespace() -> Iterator[str]:
    """A namespace with only loopback, where the kernel answers no echo request (both families)."""
    name = f"icmpx-{secrets.token_hex(4)}-q"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        script = (
            "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all; "
            "echo 1 > /proc/sys/net/ipv6/icmp/echo_ignore_all; "
            "echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range"
        )
        subprocess.run(["ip", "netns", "exec", name, "sh", "-c", script], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def icmp_socket_count() -> int:
    """How many ICMP sockets (raw or ping, either family) this process has open."""
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # closed by another thread since the listing
        try:
            proto = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
            domain = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        except OSError:
            proto = domain = -1
        finally:
            sock.detach()
        if (domain, proto) in (
            (socket.AF_INET, socket.IPPROTO_ICMP),
            (socket.AF_INET6, socket.IPPROTO_ICMPV6),
        ):
            count += 1
    return count
