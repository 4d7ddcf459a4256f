"""Capture golden ICMP packets from this machine's kernel into ``tests/data/``.

Usage (as root, from the repository root; needs ``ip`` from iproute2 and ``sysctl``)::

    uv run python tests/data/capture_golden.py            # writes tests/data/*.hex + golden.json
    uv run python tests/data/capture_golden.py --out DIR  # somewhere else

Nothing touches the root network namespace. The script builds three throwaway namespaces::

    client  c0 198.18.1.2/24 2001:db8:1::2/64
      |  veth (both ends created inside namespaces)
    router  r0 198.18.1.1/24 2001:db8:1::1/64     forwarding on, ICMP rate limits 0,
            r1 198.18.2.1/24 2001:db8:2::1/64     "unreachable" 198.18.99.0/24, 2001:db8:99::/48,
      |  veth                                      "prohibit"    198.18.98.0/24, 2001:db8:98::/48
    target  t0 198.18.2.2/24 2001:db8:2::2/64

and, from inside the client namespace (entered with ``setns(2)`` through ctypes: Python 3.11 has
no ``os.setns``), captures:

* echo replies from 127.0.0.1 and ::1 read on raw sockets (IPv4 reads start at the IP header,
  IPv6 reads at the ICMPv6 header) and on ping sockets (``SOCK_DGRAM``; reads start at the ICMP
  header and the kernel chose the identifier);
* Time Exceeded from the router (probe sent with TTL / hop limit 1), read on raw sockets, also
  with large payloads so that the router truncates its quote;
* Destination Unreachable from the router's ``unreachable`` and ``prohibit`` routes (raw sockets);
* the error-queue entries of ping sockets with ``IP_RECVERR`` / ``IPV6_RECVERR`` for a TTL-1
  probe and an unreachable destination: the payload (the quoted echo request) and the
  ``sock_extended_err`` control message with the offender address; also what a plain ``recv``
  did before and after.

Every probe carries a payload from ``icmpx._wire.build_payload`` with the fixed `COOKIE` and a
distinct token, so tests can check the cookie and token survive the round trip.

Each packet goes to ``<name>.hex`` (a hex dump, 16 bytes a line; ``bytes.fromhex`` reads it back)
and is described in ``golden.json``: what socket read it, where it starts, and what a parser must
find in it. The expected values come from how the probes were built and the lab was wired, never
from icmpx's parser. The namespaces are deleted in ``finally``, whatever happens.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import platform
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    from icmpx._wire import build_echo_request, build_payload
except ImportError:  # run without the project installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from icmpx._wire import build_echo_request, build_payload

COOKIE = b"icmpxGLD"
IDENT = 0xBEEF  # raw sockets: ours; ping sockets: the kernel picks its own
PAYLOAD_SIZE = 56

# CPython 3.11 lacks these (see LINUX-ICMP.md).
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
CLONE_NEWNET = 0x40000000
SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")

CLIENT_V4, ROUTER_V4, TARGET_V4 = "198.18.1.2", "198.18.1.1", "198.18.2.2"
CLIENT_V6, ROUTER_V6, TARGET_V6 = "2001:db8:1::2", "2001:db8:1::1", "2001:db8:2::2"
UNREACH_V4, PROHIBIT_V4 = "198.18.99.1", "198.18.98.1"
UNREACH_V6, PROHIBIT_V6 = "2001:db8:99::1", "2001:db8:98::1"
# Extra client addresses: each IPv4 error probe leaves from its own (see `Capture.source_v4`).
SOURCES_V4 = [f"198.18.1.{i}" for i in range(10, 20)]

TIMEOUT = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------------------------------- the lab


def run(*args: str) -> None:
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def sysctl(ns: str, *settings: str) -> None:
    run("ip", "netns", "exec", ns, "sysctl", "-qw", *settings)


class Lab:
    """Three namespaces in a line; `close` deletes every namespace this object created."""

    def __init__(self) -> None:
        tag = f"icmpxgold{os.getpid()}"
        self.client, self.router, self.target = f"{tag}c", f"{tag}r", f"{tag}t"
        self.created: list[str] = []

    def build(self) -> None:
        for ns in (self.client, self.router, self.target):
            run("ip", "netns", "add", ns)
            self.created.append(ns)
            # No duplicate address detection: addresses are usable at once (we still poll, below).
            sysctl(
                ns,
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            )
        sysctl(self.client, "net.ipv4.ping_group_range=0 2147483647")
        sysctl(self.router, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        c, r, t = self.client, self.router, self.target
        run("ip", "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", r)
        run("ip", "-n", r, "link", "add", "r1", "type", "veth", "peer", "name", "t0", "netns", t)
        for ns, dev, v4, v6 in (
            (c, "c0", "198.18.1.2/24", "2001:db8:1::2/64"),
            (r, "r0", "198.18.1.1/24", "2001:db8:1::1/64"),
            (r, "r1", "198.18.2.1/24", "2001:db8:2::1/64"),
            (t, "t0", "198.18.2.2/24", "2001:db8:2::2/64"),
        ):
            run("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            run("ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", dev, "up")
        for addr in SOURCES_V4:
            run("ip", "-n", c, "addr", "add", f"{addr}/24", "dev", "c0")
        for ns in (c, r, t):
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", c, "route", "add", "default", "via", ROUTER_V4)
        run("ip", "-n", c, "-6", "route", "add", "default", "via", ROUTER_V6)
        run("ip", "-n", t, "route", "add", "default", "via", "198.18.2.1")
        run("ip", "-n", t, "-6", "route", "add", "default", "via", "2001:db8:2::1")
        run("ip", "-n", r, "route", "add", "unreachable", "198.18.99.0/24")
        run("ip", "-n", r, "route", "add", "prohibit", "198.18.98.0/24")
        run("ip", "-n", r, "-6", "route", "add", "unreachable", "2001:db8:99::/48")
        run("ip", "-n", r, "-6", "route", "add", "prohibit", "2001:db8:98::/48")
        self._wait_for_dad()

    def _wait_for_dad(self) -> None:
        deadline = time.monotonic() + 10.0
        for ns in (self.client, self.router, self.target):
            while True:
                out = subprocess.run(
                    ("ip", "-n", ns, "-6", "addr", "show", "tentative"),
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                if not out.strip():
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"IPv6 addresses still tentative in {ns}: {out}")
                time.sleep(0.05)

    def close(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(("ip", "netns", "del", ns), check=False, capture_output=True)
        self.created.clear()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``ns``; sockets made there stay there."""
    with open("/proc/self/ns/net", "rb") as home, open(f"/run/netns/{ns}", "rb") as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


# --------------------------------------------------------------------------------------- captures


class Capture:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.entries: list[dict[str, Any]] = []
        self.seq = 1000
        self.token = 0x60000000
        self.sources = iter(SOURCES_V4)

    def source_v4(self) -> str:
        """A client address no probe has used yet.

        The router's ``ip_error()`` (which answers for unreachable routes) draws from a per-source
        token bucket that costs one second a message (``net.ipv4.route.error_cost``: global, not per
        namespace) and that ICMP rate limiting shares; with ``icmp_ratelimit=0`` every ICMP error
        empties it. A fresh source address starts with a full bucket, so each IPv4 error probe gets
        its own.
        """
        return next(self.sources)

    def probe(self, size: int = PAYLOAD_SIZE) -> tuple[int, int, bytes]:
        self.seq += 1
        self.token += 1
        return self.seq, self.token, build_payload(COOKIE, self.token, size)

    def save(self, name: str, data: bytes, entry: dict[str, Any]) -> None:
        lines = [data[i : i + 16].hex(" ") for i in range(0, len(data), 16)]
        (self.out / f"{name}.hex").write_text("\n".join(lines) + "\n")
        self.entries.append({"name": name, "file": f"{name}.hex", "length": len(data), **entry})
        print(f"  {name}: {len(data)} bytes", file=sys.stderr)


def recv_until(sock: socket.socket, accept: Callable[[bytes], bool]) -> tuple[bytes, Any]:
    """Read until ``accept`` likes a datagram (raw sockets also see our own requests)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching packet")
        sock.settimeout(remaining)
        data, addr = sock.recvfrom(65535)
        if accept(data):
            return data, addr


def icmp_at(data: bytes, v4_raw: bool) -> bytes:
    return data[(data[0] & 0x0F) * 4 :] if v4_raw else data


def echo_capture(cap: Capture, *, v6: bool, kind: str) -> None:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    stype = socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM
    dst = "::1" if v6 else "127.0.0.1"
    seq, token, payload = cap.probe()
    with socket.socket(family, stype, proto) as sock:
        sock.sendto(build_echo_request(v6=v6, ident=IDENT, seq=seq, payload=payload), (dst, 0))
        ident = IDENT if kind == "raw" else sock.getsockname()[1]
        reply_type = 129 if v6 else 0
        v4_raw = not v6 and kind == "raw"

        def accept(data: bytes) -> bool:
            icmp = icmp_at(data, v4_raw)
            return icmp[0] == reply_type and icmp[4:8] == struct.pack("!HH", ident, seq)

        data, addr = recv_until(sock, accept)
    fam = "ipv6" if v6 else "ipv4"
    entry: dict[str, Any] = {
        "family": fam,
        "socket": kind,
        "read": "recvfrom",
        "starts_at": "ip" if v4_raw else "icmp",
        "recvfrom_addr": addr[0],
        "icmp": {
            "type": reply_type,
            "code": 0,
            "ident": ident,
            "seq": seq,
            "payload_hex": payload.hex(),
            "token": token,
            "size": 8 + len(payload),
            "error": None,
        },
    }
    if v4_raw:
        # The reply copies the request's TOS (0).
        entry["ip"] = {
            "header_len": 20,
            "tos": 0,
            "proto": 1,
            "ttl": 64,
            "src": dst,
            "dst": dst,
            "total_length": 20 + 8 + len(payload),
        }
    cap.save(f"{fam}_{kind}_echo_reply", data, entry)


def error_capture(
    cap: Capture,
    *,
    v6: bool,
    name: str,
    dst: str,
    ttl: int,
    icmp_type: int,
    code: int,
    error: str,
    size: int = PAYLOAD_SIZE,
) -> None:
    """A raw-socket read of the router's ICMP error for a probe to ``dst`` sent with ``ttl``."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    seq, token, payload = cap.probe(size)
    src, router = (CLIENT_V6, ROUTER_V6) if v6 else (cap.source_v4(), ROUTER_V4)
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.bind((src, 0))
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.sendto(build_echo_request(v6=v6, ident=IDENT, seq=seq, payload=payload), (dst, 0))

        def accept(data: bytes) -> bool:
            icmp = icmp_at(data, not v6)
            return icmp[0] == icmp_type and COOKIE + struct.pack("!I", token) in icmp

        data, addr = recv_until(sock, accept)
    fam = "ipv6" if v6 else "ipv4"
    entry: dict[str, Any] = {
        "family": fam,
        "socket": "raw",
        "read": "recvfrom",
        "starts_at": "icmp" if v6 else "ip",
        "recvfrom_addr": addr[0],
        "icmp": {"type": icmp_type, "code": code, "error": error},
        "quoted": {
            "src": src,
            "dst": dst,
            "ttl": ttl,
            "proto": 58 if v6 else 1,
            "icmp_type": 128 if v6 else 8,
            "ident": IDENT,
            "seq": seq,
            "payload_hex": payload.hex(),
            "token": token,
        },
    }
    if not v6:
        # The router is one hop away: its error arrives with the TTL it was sent with, and with
        # TOS 0xc0 (precedence "internetwork control"): Linux sets it on the errors it sends.
        entry["ip"] = {
            "header_len": 20,
            "tos": 0xC0,
            "proto": 1,
            "ttl": 64,
            "src": router,
            "dst": src,
            "total_length": len(data),
        }
    else:
        entry["ipv6_src"] = router
        entry["ipv6_dst"] = src
    cap.save(f"{fam}_raw_{name}", data, entry)


def _errno_name(num: int) -> str:
    return errno.errorcode.get(num, str(num))


def _try_recv(sock: socket.socket) -> str:
    try:
        data = sock.recv(2048, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "EAGAIN"
    except OSError as exc:
        return _errno_name(exc.errno or 0)
    return f"data:{len(data)}"


def _decode_sockaddr(raw: bytes) -> dict[str, Any]:
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET:
        return {"family": "AF_INET", "addr": socket.inet_ntop(socket.AF_INET, raw[4:8])}
    if family == socket.AF_INET6:
        return {"family": "AF_INET6", "addr": socket.inet_ntop(socket.AF_INET6, raw[8:24])}
    return {"family": family, "raw_hex": raw.hex()}


def errqueue_capture(
    cap: Capture, *, v6: bool, name: str, dst: str, ttl: int, icmp_type: int, code: int
) -> None:
    """A ping socket with IP(V6)_RECVERR: the error queue's payload and control message."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    seq, token, payload = cap.probe()
    src, router = (CLIENT_V6, ROUTER_V6) if v6 else (cap.source_v4(), ROUTER_V4)
    with socket.socket(family, socket.SOCK_DGRAM, proto) as sock:
        sock.bind((src, 0))
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.sendto(build_echo_request(v6=v6, ident=IDENT, seq=seq, payload=payload), (dst, 0))
        ident = sock.getsockname()[1]
        readable, _, _ = select.select([sock], [], [], TIMEOUT)
        if not readable:
            raise TimeoutError(f"{name}: the ping socket never became readable")
        plain_before = _try_recv(sock)
        data, ancdata, flags, addr = sock.recvmsg(2048, 1024, MSG_ERRQUEUE)
        plain_after = _try_recv(sock)
    if len(ancdata) != 1:
        raise RuntimeError(f"{name}: expected one control message, got {ancdata!r}")
    level, ctype, cdata = ancdata[0]
    ee_errno, origin, ee_type, ee_code, pad, info, ee_data = SOCK_EXTENDED_ERR.unpack_from(cdata)
    fam = "ipv6" if v6 else "ipv4"
    entry: dict[str, Any] = {
        "family": fam,
        "socket": "ping",
        "read": "errqueue",
        "starts_at": "quoted-icmp",
        "recvmsg_addr": addr[0],
        "recvmsg_flags": flags,
        "plain_recv_before": plain_before,
        "plain_recv_after": plain_after,
        "src": src,
        "dst": dst,
        # What the setup must produce; "cmsg" below is what the kernel actually returned.
        "expect": {
            "ee_origin": 3 if v6 else 2,
            "ee_type": icmp_type,
            "ee_code": code,
            "offender": router,
            "cmsg_level": socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP,
            "cmsg_type": IPV6_RECVERR if v6 else IP_RECVERR,
        },
        # What the payload must parse to, as an ICMP message in its own right: our echo request.
        "icmp": {
            "type": 128 if v6 else 8,
            "code": 0,
            "ident": ident,
            "seq": seq,
            "payload_hex": payload.hex(),
            "token": token,
            "size": 8 + len(payload),
        },
        "cmsg": {
            "level": level,
            "type": ctype,
            "data_hex": cdata.hex(),
            "ee_errno": ee_errno,
            "ee_errno_name": _errno_name(ee_errno),
            "ee_origin": origin,
            "ee_type": ee_type,
            "ee_code": ee_code,
            "ee_pad": pad,
            "ee_info": info,
            "ee_data": ee_data,
            "offender": _decode_sockaddr(cdata[SOCK_EXTENDED_ERR.size :]),
        },
    }
    cap.save(f"{fam}_ping_errqueue_{name}", data, entry)


def capture_all(lab: Lab, cap: Capture) -> None:
    with inside(lab.client):
        for v6 in (False, True):
            for kind in ("raw", "ping"):
                echo_capture(cap, v6=v6, kind=kind)
        for v6, name, dst, ttl, icmp_type, code, error, size in (
            (False, "time_exceeded", TARGET_V4, 1, 11, 0, "time-exceeded", PAYLOAD_SIZE),
            (False, "time_exceeded_big", TARGET_V4, 1, 11, 0, "time-exceeded", 1000),
            (False, "host_unreachable", UNREACH_V4, 64, 3, 1, "host-unreachable", PAYLOAD_SIZE),
            (False, "admin_prohibited", PROHIBIT_V4, 64, 3, 13, "admin-prohibited", PAYLOAD_SIZE),
            (True, "time_exceeded", TARGET_V6, 1, 3, 0, "time-exceeded", PAYLOAD_SIZE),
            (True, "time_exceeded_big", TARGET_V6, 1, 3, 0, "time-exceeded", 1400),
            (True, "net_unreachable", UNREACH_V6, 64, 1, 0, "net-unreachable", PAYLOAD_SIZE),
            (True, "admin_prohibited", PROHIBIT_V6, 64, 1, 1, "admin-prohibited", PAYLOAD_SIZE),
        ):
            error_capture(
                cap,
                v6=v6,
                name=name,
                dst=dst,
                ttl=ttl,
                icmp_type=icmp_type,
                code=code,
                error=error,
                size=size,
            )
        for v6, name, dst, ttl, icmp_type, code in (
            (False, "time_exceeded", TARGET_V4, 1, 11, 0),
            (False, "host_unreachable", UNREACH_V4, 64, 3, 1),
            (True, "time_exceeded", TARGET_V6, 1, 3, 0),
            (True, "net_unreachable", UNREACH_V6, 64, 1, 0),
        ):
            errqueue_capture(cap, v6=v6, name=name, dst=dst, ttl=ttl, icmp_type=icmp_type, code=code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it builds network namespaces and opens raw sockets")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    lab = Lab()
    cap = Capture(out)
    try:
        lab.build()
        capture_all(lab, cap)
    finally:
        lab.close()
    manifest = {
        "generated_by": "tests/data/capture_golden.py",
        "kernel": platform.release(),
        "cookie_hex": COOKIE.hex(),
        "packets": cap.entries,
    }
    (out / "golden.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(cap.entries)} packets and golden.json to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
