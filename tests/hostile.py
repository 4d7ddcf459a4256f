"""A hostile network for icmpx tests: an attacker in the lab that sniffs our echo requests and forges answers.

    client C ── R1 ── R2 (silent) ── R3 ── evil target T        down target D: blackholed at R3

The attacker runs in T's namespace (a *probed target*, the threat of issue 12 finding 1). T's kernel answers
no echo; the attacker does, honestly, for requests addressed to T (so it is "the real responder"), and
meanwhile floods the client with forgeries built from what those requests reveal: the client's identifier,
sequence, cookie and token, the Paris checksum of a trace. It never sees a probe to D (R3 drops them
without a word) nor the probes a router answers, yet tries to answer them:

* echo replies spoofed from D with signatures copied from a request it saw, and with predicted ones (the
  next sequences, the next tokens, the same cookie); replies with only 4 payload bytes (each right after a
  full predicted reply from a wrong source, whose bytes a reused receive slot may still hold); bad ICMP
  checksums (IPv4); another program's replies (a foreign identifier, what a kernel filter may drop);
* ICMP errors (Time Exceeded quoting probes to T, Unreachable quoting probes to D) from phantom routers:
  full quotes with a wrong token and with a predicted one, RFC 792 short quotes (IP header + 8 bytes:
  predicted sequence, and checksum either predicted or copied from a Paris probe), cut quotes (cookie and
  half a token), quotes of non-first fragments, random bytes, IPv4 options in the outer and the quoted
  header, IPv6 hop-by-hop and destination options before the ICMPv6 header (outer and quoted).

Every forgery carries its kind in the DSCP field (counted per kind by nftables as it reaches the client)
and, for replies, in its initial TTL (100 + kind: a result that shows it names the forgery that got in);
a forged error comes from a phantom router 198.18.99.<kind> / 2001:db8:99::<kind>.

Run as a script (``python hostile.py CONFIG_JSON`` in T's namespace) this module *is* the attacker: it
prints ``ready``, answers and floods, prints ``budget`` once it has sent its budget of forgeries, and on a
line (or EOF) on its stdin sends a fence packet and prints its per-kind tallies as JSON. `run_hostile` drives
it and a client (`CLIENT_SCRIPT`, as root on raw sockets or as uid 65534 on ping sockets), then returns what
both saw with the nftables counts, for the assertions in test_hostile.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "src") not in sys.path:  # run as a script, the attacker imports only _wire
    sys.path.insert(0, str(HERE.parent / "src"))

from icmpx._wire import checksum  # noqa: E402

# ----------------------------------------------------------------------------------------- the kinds


@dataclass(frozen=True)
class Kind:
    tag: int
    """DSCP value of its packets, initial TTL 100 + tag for replies, phantom router .tag for errors."""
    name: str
    families: tuple[int, ...] = (4, 6)
    dgram: bool = True
    """Whether the kernel hands it to a ping socket of the client (see `deliverable`)."""


HONEST = 0  # the attacker's honest replies to requests addressed to it
ROUTER = 48  # Linux routers send their ICMP errors with TOS 0xc0 (CS6)
FENCE = 62  # the last packet the attacker sends: once it arrived, the flood is over

KINDS = {
    k.tag: k
    for k in (
        Kind(1, "reply-copied-signature"),
        Kind(2, "reply-predicted-signature"),
        Kind(3, "reply-4-byte-payload"),
        Kind(4, "reply-wrong-source"),
        Kind(5, "reply-bad-checksum", families=(4,), dgram=False),
        Kind(6, "reply-bad-checksum-before-honest", families=(4,), dgram=False),
        Kind(7, "reply-ip-options-or-ext-headers"),
        Kind(8, "reply-foreign-identifier", dgram=False),
        Kind(10, "error-full-quote-wrong-token"),
        Kind(11, "error-full-quote-predicted"),
        Kind(12, "error-short-quote-predicted-checksum"),
        Kind(13, "error-short-quote-paris-checksum"),
        Kind(14, "error-cut-quote"),
        Kind(15, "error-non-first-fragment"),
        Kind(16, "error-random-bytes", dgram=False),
        Kind(17, "error-ip-options-or-ext-headers"),
    )
}
_ERROR_TAGS = frozenset(t for t in KINDS if t >= 10)
WINDOW = 8  # predicted sequences on either side of each seen one
POOL = 6  # seen requests whose forgeries are flooded at once (the newest)


def deliverable(tag: int, *, family: int, raw: bool, filtered: bool) -> bool:
    """Does a packet of this tag that reached the client's IP layer reach the client's socket?

    Raw sockets get every ICMP packet whose type passes ICMP_FILTER (all ours do), except that a kernel
    filter (``filtered``: a BPF program on the socket) drops other programs' echo replies; ping sockets
    get echo replies with their identifier and a good checksum, and errors quoting an echo request of
    theirs that the kernel can read (not random bytes; on IPv6 not a non-first fragment, where the
    kernel's header walk stops)."""
    if tag in (HONEST, ROUTER, FENCE):
        return True
    kind = KINDS[tag]
    if raw:
        return not (filtered and tag == 8)
    if tag == 15:
        return family == 4
    return kind.dgram


def phantom(tag: int, family: int) -> str:
    return f"198.18.99.{tag}" if family == 4 else f"2001:db8:99::{tag}"


# ----------------------------------------------------------------------------------------- packets

_ETH_P = {4: 0x0800, 6: 0x86DD}
NOP_OPTIONS = b"\x01\x01\x01\x00"  # three NOPs and End of Options: IHL 6
_PADN = b"\x01\x04\x00\x00\x00\x00"  # a PadN option filling an 8-byte extension header


def _addr(family: int, text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text)


def ipv4(
    src: str,
    dst: str,
    payload: bytes,
    *,
    tos: int = 0,
    ttl: int = 64,
    proto: int = 1,
    ident: int = 0,
    frag: int = 0,
    options: bytes = b"",
    total: int | None = None,
) -> bytes:
    """An IPv4 packet; ``frag`` is the flags + fragment offset field; ``total`` overrides the length
    (a quoted header keeps the length of the datagram it came from)."""
    ihl = 5 + len(options) // 4
    length = total if total is not None else 4 * ihl + len(payload)
    head = bytearray(
        struct.pack("!BBHHHBBH", 0x40 | ihl, tos, length, ident, frag, ttl, proto, 0)
        + _addr(4, src)
        + _addr(4, dst)
        + options
    )
    head[10:12] = struct.pack("!H", checksum(bytes(head)))
    return bytes(head) + payload


def ipv6(
    src: str,
    dst: str,
    payload: bytes,
    *,
    tclass: int = 0,
    hlim: int = 64,
    nh: int = 58,
    ext: tuple[tuple[int, bytes], ...] = (),
    plen: int | None = None,
) -> bytes:
    """An IPv6 packet; ``ext``: (type, body) extension headers before the payload (of type ``nh``)."""
    chain = b""
    types = [t for t, _ in ext] + [nh]
    for (_t, body), following in zip(ext, types[1:], strict=True):
        chain += bytes([following]) + body
    first = types[0]
    length = plen if plen is not None else len(chain) + len(payload)
    head = struct.pack("!IHBB", (6 << 28) | (tclass << 20), length, first, hlim)
    return head + _addr(6, src) + _addr(6, dst) + chain + payload


def ext_header(kind: int) -> tuple[int, bytes]:
    """An 8-byte hop-by-hop (0) or destination options (60) header: its body after the next-header byte."""
    return kind, b"\x00" + _PADN


def icmp_checksum(message: bytes, family: int, src: str, dst: str) -> int:
    if family == 4:
        return checksum(message)
    pseudo = _addr(6, src) + _addr(6, dst) + struct.pack("!I3xB", len(message), 58)
    return checksum(pseudo + message)


def icmp(
    family: int, icmp_type: int, code: int, rest: bytes, body: bytes, src: str, dst: str, *, bad: bool = False
) -> bytes:
    message = bytearray(struct.pack("!BBH", icmp_type, code, 0) + rest + body)
    cs = icmp_checksum(bytes(message), family, src, dst)
    if bad:
        cs ^= 0x0F0F
    message[2:4] = struct.pack("!H", cs)
    return bytes(message)


@dataclass
class Seen:
    """An echo request the attacker saw, addressed to it."""

    family: int
    client: str
    target: str
    ident: int
    seq: int
    message: bytes  # the ICMP echo request, header included

    @property
    def payload(self) -> bytes:
        return self.message[8:]

    @property
    def checksum(self) -> int:
        return int(struct.unpack_from("!H", self.message, 2)[0])

    @property
    def paris(self) -> bool:
        """A traceroute probe: its balance bytes were set to keep the checksum constant."""
        return len(self.message) >= 22 and self.message[20:22] != b"\0\0"

    def request(self, d: int, dst: str, *, token_xor: int = 0) -> bytes:
        """The echo request this client would send ``d`` probes after this one to ``dst``, as a predictable
        signature scheme makes it: sequence + d, token + d, the same cookie (and the same checksum for a
        Paris probe, as a trace keeps it); ``token_xor`` spoils the token."""
        req_type = 8 if self.family == 4 else 128
        seq = (self.seq + d) & 0xFFFF
        payload = bytearray(self.payload)
        if len(payload) >= 12:
            token = (int.from_bytes(payload[8:12], "big") + d) & 0xFFFFFFFF
            payload[8:12] = (token ^ token_xor).to_bytes(4, "big")
        head = struct.pack("!BBHHH", req_type, 0, 0, self.ident, seq)
        if self.paris and len(payload) >= 14:
            payload[12:14] = b"\0\0"
            partial = icmp_checksum(head + bytes(payload), self.family, self.client, dst)
            # ones' complement: the balance word B gives checksum ~(S + B) where ~S == partial
            balance = (~self.checksum & 0xFFFF) + partial
            balance = (balance & 0xFFFF) + (balance >> 16)
            payload[12:14] = struct.pack("!H", balance & 0xFFFF)
        cs = icmp_checksum(head + bytes(payload), self.family, self.client, dst)
        return struct.pack("!BBHHH", req_type, 0, cs, self.ident, seq) + bytes(payload)


class Forger:
    """Builds the frames: Ethernet header towards the router, IP, ICMP."""

    def __init__(self, family: int, down: str, eth_dst: bytes, eth_src: bytes, seed: int) -> None:
        self.family = family
        self.down = down
        self.eth = eth_dst + eth_src + struct.pack("!H", _ETH_P[family])
        self.rng = random.Random(seed)

    # --- IP layer

    def ip(
        self, tag: int, src: str, dst: str, message: bytes, *, ttl: int = 64, outer_options: bool = False
    ) -> bytes:
        if self.family == 4:
            options = NOP_OPTIONS if outer_options else b""
            return ipv4(src, dst, message, tos=tag << 2, ttl=ttl, options=options)
        ext = (ext_header(0), ext_header(60)) if outer_options else ()
        return ipv6(src, dst, message, tclass=tag << 2, hlim=ttl, ext=ext)

    def frame(self, tag: int, src: str, dst: str, message: bytes, **kw: Any) -> tuple[int, bytes]:
        return tag, self.eth + self.ip(tag, src, dst, message, **kw)

    # --- replies

    def reply(
        self, seen: Seen, request: bytes, src: str, *, bad: bool = False, size: int | None = None
    ) -> bytes:
        body = request[4:] if size is None else request[4:8] + request[8 : 8 + size]
        reply_type = 0 if self.family == 4 else 129
        return icmp(self.family, reply_type, 0, body[:4], body[4:], src, seen.client, bad=bad)

    def honest(self, seen: Seen, tags: frozenset[int]) -> list[tuple[int, bytes]]:
        """The honest reply to a request addressed to us, after (kind 6) a copy with a bad checksum."""
        frames = []
        if 6 in tags and self.family == 4:
            bad = self.reply(seen, seen.message, seen.target, bad=True)
            frames.append(self.frame(6, seen.target, seen.client, bad, ttl=106))
        good = self.reply(seen, seen.message, seen.target)
        frames.append(self.frame(HONEST, seen.target, seen.client, good))
        return frames

    def fence(self, seen: Seen) -> bytes:
        request = seen.request(0x8000, seen.target, token_xor=self.rng.getrandbits(32) | 1)
        return self.frame(FENCE, seen.target, seen.client, self.reply(seen, request, seen.target))[1]

    # --- errors

    def quote(
        self, seen: Seen, request: bytes, dst: str, *, options: bool = False, frag: bool = False
    ) -> bytes:
        """Our request as a router quotes it: its IP header (TTL 1, as it expired) and its ICMP bytes."""
        if self.family == 4:
            total = 20 + (4 if options else 0) + len(request)
            flags = 0x2000 | 0x0008 if frag else 0x4000  # MF + offset 64 bytes, or DF
            return ipv4(
                seen.client, dst, request, ttl=1, ident=seen.seq, frag=flags,
                options=NOP_OPTIONS if options else b"", total=total,
            )  # fmt: skip
        if frag:
            fragment = (44, struct.pack("!BHI", 0, (8 << 3) | 1, seen.seq))  # offset 64, more fragments
            return ipv6(seen.client, dst, request, hlim=1, ext=(fragment,), plen=8 + len(request))
        ext = (ext_header(60),) if options else ()
        return ipv6(seen.client, dst, request, hlim=1, ext=ext)

    def error(
        self, tag: int, dst: str, quoted: bytes, client: str, *, outer_options: bool = False
    ) -> tuple[int, bytes]:
        """Time Exceeded when quoting a probe to the target (a trace), Unreachable for the down host."""
        src = phantom(tag, self.family)
        to_down = dst == self.down
        if self.family == 4:
            icmp_type, code = (3, 1) if to_down else (11, 0)
        else:
            icmp_type, code = (1, 3) if to_down else (3, 0)
        message = icmp(self.family, icmp_type, code, b"\0\0\0\0", quoted, src, client)
        return self.frame(tag, src, client, message, outer_options=outer_options)

    def forgeries(self, seen: Seen, tags: frozenset[int]) -> list[tuple[int, bytes]]:
        """Every enabled kind of forgery this request makes possible."""
        f = self.family
        tags = frozenset(t for t in tags if f in KINDS[t].families)
        out: list[tuple[int, bytes]] = []
        down, client, target = self.down, seen.client, seen.target

        def reply(tag: int, src: str, request: bytes, **kw: Any) -> None:
            if tag in tags:
                bad, size = kw.pop("bad", False), kw.pop("size", None)
                message = self.reply(seen, request, src, bad=bad, size=size)
                out.append(self.frame(tag, src, client, message, ttl=100 + tag, **kw))

        def error(tag: int, dst: str, request: bytes, **kw: Any) -> None:
            if tag in tags:
                outer = kw.pop("outer_options", False)
                self_quote = request if tag == 16 else self.quote(seen, request, dst, **kw)
                out.append(self.error(tag, dst, self_quote, client, outer_options=outer))

        reply(1, down, seen.message)
        if 8 in tags:  # another program's echo reply: the same bytes under another identifier
            other = bytearray(seen.message)
            other[4:6] = struct.pack("!H", seen.ident ^ 0x8000)
            message = self.reply(seen, bytes(other), target)
            out.append(self.frame(8, target, client, message, ttl=108))
        for d in [*range(-WINDOW, 0), *range(1, WINDOW + 1)]:
            to_down = seen.request(d, down)
            reply(2, down, to_down)
            # A full predicted reply from a wrong source, then 4 payload bytes from the right one.
            reply(4, target, to_down)
            reply(3, down, to_down, size=4)
            reply(5, down, to_down, bad=True)
            reply(7, down, to_down, outer_options=True)
            for dst in (target, down):
                request = seen.request(d, dst)
                error(10, dst, seen.request(d, dst, token_xor=0xA5A5A5A5))
                error(11, dst, request)
                error(12, dst, request[:8])
                error(13, dst, request[:2] + struct.pack("!H", seen.checksum) + request[4:8])
                error(14, dst, request[:18])  # cookie and half the token
                error(15, dst, request, frag=True)
                rnd = bytearray(self.rng.randbytes(self.rng.randrange(0, 96)))
                if len(rnd) > 9:
                    rnd[6 if f == 6 else 9] = 253  # a protocol no kernel handler takes
                error(16, dst, bytes(rnd))
                error(17, dst, request, options=True, outer_options=True)
        return out


def parse_request(frame: bytes, family: int, own: str) -> tuple[Seen, bytes, bytes] | None:
    """An echo request to ``own`` in an Ethernet frame: (what it reveals, its source and destination MACs)."""
    ip = frame[14:]
    if family == 4:
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 1:
            return None
        ihl = (ip[0] & 0x0F) * 4
        src, dst = socket.inet_ntop(socket.AF_INET, ip[12:16]), socket.inet_ntop(socket.AF_INET, ip[16:20])
        total = struct.unpack_from("!H", ip, 2)[0]
        message = ip[ihl:total]
        want = 8
    else:
        if len(ip) < 48 or ip[0] >> 4 != 6 or ip[6] != 58:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
        plen = struct.unpack_from("!H", ip, 4)[0]
        message = ip[40 : 40 + plen]
        want = 128
    if dst != own or len(message) < 8 or message[0] != want:
        return None
    ident, seq = struct.unpack_from("!HH", message, 4)
    return Seen(family, src, dst, ident, seq, bytes(message)), frame[6:12], frame[0:6]


# ----------------------------------------------------------------------------------------- attacker

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
CHUNK = 64


def attack(config: dict[str, Any]) -> None:
    """The attacker's main loop (see the module docstring); runs in the evil target's namespace."""
    family: int = config["family"]
    own: str = config["own"]
    budget: int = config["budget"]
    rate: float = config["rate"]
    tags = frozenset(config["kinds"])
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P[family]))
    sniff.bind((config["iface"], _ETH_P[family]))
    sniff.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sniff.setblocking(False)
    inject = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    inject.bind((config["iface"], 0))
    inject.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    inject.setblocking(False)
    stdin = sys.stdin.fileno()
    forger: Forger | None = None
    pool: deque[list[tuple[int, bytes]]] = deque(maxlen=POOL)
    frames: list[tuple[int, bytes]] = []
    cursor = 0
    tally: dict[int, int] = {}
    answered = 0
    flooded = 0
    last: Seen | None = None
    start = 0.0
    print("ready", flush=True)

    def send(tag: int, frame: bytes) -> bool:
        try:
            inject.send(frame)
        except (BlockingIOError, OSError):
            return False  # the device queue is full: the packet never left
        tally[tag] = tally.get(tag, 0) + 1
        return True

    while True:
        # Honest answers first, then at most one chunk of the flood, paced at `rate`.
        while True:
            try:
                frame = sniff.recv(4096)
            except BlockingIOError:
                break
            parsed = parse_request(frame, family, own)
            if parsed is None:
                continue
            seen, eth_router, eth_self = parsed
            if forger is None:
                forger = Forger(family, config["down"], eth_router, eth_self, config["seed"])
                start = time.monotonic()
            for tag, honest in forger.honest(seen, tags):
                send(tag, honest)
            answered += 1
            last = seen
            if tags:
                pool.append(forger.forgeries(seen, tags))
                frames = [f for batch in pool for f in batch]
        wait = 0.05
        if frames and flooded < budget:
            allowed = int((time.monotonic() - start) * rate) - flooded
            if allowed > 0:
                for _ in range(min(CHUNK, allowed, budget - flooded)):
                    tag, frame = frames[cursor % len(frames)]
                    cursor += 1
                    if send(tag, frame):
                        flooded += 1
                if flooded >= budget:
                    print("budget", flush=True)
                wait = 0.0
            else:
                wait = min(0.05, -allowed / rate + CHUNK / rate)
        ready, _, _ = select.select([sniff, stdin], [], [], wait)
        if stdin in ready:
            os.read(stdin, 4096)  # "stop", or EOF
            break
    if forger is not None and last is not None:
        for _ in range(100):
            if send(FENCE, forger.fence(last)):
                break
            time.sleep(0.001)  # the device queue was full: it drains within microseconds
    print(json.dumps({"tally": tally, "answered": answered, "flooded": flooded}), flush=True)


# ----------------------------------------------------------------------------------------- client

CLIENT_SCRIPT = r"""
import ctypes, dataclasses, json, os, socket, sys
import anyio, icmpx

cfg = json.loads(sys.argv[1])
EVIL, DOWN = cfg["evil"], cfg["down"]
libc = ctypes.CDLL(None, use_errno=True)

def icmp_sockets():
    # (inode, has a BPF filter) of every ICMP socket this process holds
    found = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
        if not link.startswith("socket:["):
            continue
        s = socket.socket(fileno=int(entry))
        try:
            proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
            if proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
                n = ctypes.c_uint(0)
                libc.getsockopt(s.fileno(), socket.SOL_SOCKET, 26, None, ctypes.byref(n))  # SO_GET_FILTER
                found.append((int(link[8:-1]), n.value > 0))
        finally:
            s.detach()
    return found

def proc_rows():
    rows = {}
    for name in ("raw", "raw6", "icmp", "icmp6"):
        with open(f"/proc/net/{name}") as f:
            for line in f.readlines()[1:]:
                p = line.split()
                rows[int(p[9])] = {"rx_queue": int(p[4].split(":")[1], 16), "drops": int(p[-1])}
    return rows

def reply_row(r):
    pkt = r.reply.received_packet if r.reply is not None else None
    ttl, size = (pkt.ip_header.ttl, pkt.size) if pkt else (None, None)
    return [r.request.addr, r.error, r.responder, ttl, size]

async def main():
    out = {"ping": [], "multiping": [], "traces": [], "rounds": 0}
    stop = anyio.Event()
    async def watch_stdin():
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        stop.set()
    async with icmpx.AsyncClient(timeout=cfg["timeout"], **cfg["options"]) as client:
        async def ping(host):
            out["ping"] += [reply_row(r) for r in await client.ping(host, count=4, interval=0.05)]
        async def multiping():
            rows = await client.multiping([EVIL, DOWN], count=4, interval=0.05)
            out["multiping"] += [[s.target, s.sent, s.received] for s in rows]
        async def trace():
            tr = await client.traceroute(EVIL, max_hops=6, probes=2)
            out["traces"].append({"reached": tr.reached, "hops": [
                [h.ttl, h.addr, list(h.addrs), [[p.addr, p.error] for p in h.probes]] for h in tr.hops]})
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_stdin)
            while not stop.is_set():
                async with anyio.create_task_group() as rnd:
                    rnd.start_soon(ping, EVIL)
                    rnd.start_soon(ping, DOWN)
                    rnd.start_soon(multiping)
                    rnd.start_soon(trace)
                out["rounds"] += 1
        print("idle", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # "snapshot": the flood is over
        with anyio.fail_after(10):  # every packet queued on our sockets has been read
            while any(proc_rows()[ino]["rx_queue"] for ino, _ in icmp_sockets()):
                await anyio.sleep(0.01)
        rows = proc_rows()
        out["sockets"] = [{"drops": rows[ino]["drops"], "filtered": f} for ino, f in icmp_sockets()]
        stats = client.stats
        out["stats"] = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
        out["stats"]["dropped"] = stats.dropped
    print(json.dumps(out), flush=True)

anyio.run(main)
"""


# ----------------------------------------------------------------------------------------- orchestration


@dataclass
class HostileRun:
    """What one run saw: the client's results and counters, the attacker's tallies, the nft counts."""

    family: int
    raw: bool
    client: dict[str, Any]
    tally: dict[int, int]
    arrived: dict[int, int]
    """Packets of each tag (DSCP) that reached the client's IP layer, counted by nftables."""
    addrs: dict[str, Any] = field(default_factory=dict)

    @property
    def stats(self) -> Any:
        return _Stats(self.client["stats"])

    @property
    def filtered(self) -> bool:
        return any(s["filtered"] for s in self.client["sockets"])

    @property
    def socket_drops(self) -> int:
        return sum(s["drops"] for s in self.client["sockets"])

    def reached_socket(self, tags: frozenset[int] | None = None) -> int:
        """Packets that reached the client's socket, by the counts at its IP layer (minus the socket's
        own drops: a full receive buffer)."""
        return sum(
            n
            for tag, n in self.arrived.items()
            if (tags is None or tag in tags)
            and deliverable(tag, family=self.family, raw=self.raw, filtered=self.filtered)
        )


class _Stats:
    def __init__(self, values: dict[str, int]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"EngineStats has no counter {name!r} (issue 12 adds it)")


def nft_counting(lab: Any) -> None:
    """Named counters per DSCP value and family for every ICMP packet a raw socket's type filter passes,
    at the client's input hook (before any socket)."""
    lines = ["table inet hostile {"]
    for dscp in range(64):
        lines += [f"  counter v4_{dscp} {{ }}", f"  counter v6_{dscp} {{ }}"]
    lines += ["  chain input {", "    type filter hook input priority -400; policy accept;"]
    for dscp in range(64):
        lines.append(
            "    meta nfproto ipv4 meta l4proto icmp icmp type { echo-reply, destination-unreachable, "
            f'time-exceeded, parameter-problem }} ip dscp {dscp} counter name "v4_{dscp}"'
        )
        lines.append(
            "    meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type { echo-reply, destination-unreachable, "
            f'packet-too-big, time-exceeded, parameter-problem }} ip6 dscp {dscp} counter name "v6_{dscp}"'
        )
    lines += ["  }", "}"]
    lab.exec(["nft", "-f", "-"], input="\n".join(lines) + "\n")


def nft_counts(lab: Any, family: int) -> dict[int, int]:
    listing = json.loads(lab.exec(["nft", "-j", "list", "counters", "table", "inet", "hostile"]).stdout)
    counts: dict[int, int] = {}
    for item in listing["nftables"]:
        counter = item.get("counter")
        if counter and counter["name"].startswith(f"v{family}_") and counter["packets"]:
            counts[int(counter["name"].split("_")[1])] = counter["packets"]
    return counts


@contextlib.contextmanager
def hostile_lab() -> Iterator[Any]:
    """The chain of the module docstring: 3 routers (R2 silent), T ignoring echoes (the attacker answers),
    D = 198.18.200.7 / 2001:db8:200::7 routed towards T and blackholed by R3."""
    from lab import lab_chain

    with lab_chain(
        3, silent={2}, target_local4=["198.18.200.0/24"], target_local6=["2001:db8:200::/64"]
    ) as lab:
        r3 = lab.routers[-1]
        lab.exec(["ip", "route", "add", "blackhole", "198.18.200.7/32"], ns=r3)
        lab.exec(["ip", "-6", "route", "add", "blackhole", "2001:db8:200::7/128"], ns=r3)
        lab.sysctl("net.ipv4.icmp_echo_ignore_all", "1", ns=lab.target)
        lab.sysctl("net.ipv6.icmp.echo_ignore_all", "1", ns=lab.target)
        nft_counting(lab)
        lab.down4, lab.down6 = "198.18.200.7", "2001:db8:200::7"
        yield lab


def _readline(
    proc: subprocess.Popen[str], timeout: float, what: str, alive: subprocess.Popen[str] | None = None
) -> str:
    """The next line of ``proc``'s output, within ``timeout`` seconds, while ``alive`` (if given) runs."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.1))
        if ready:
            line = proc.stdout.readline()
            break
        if alive is not None and alive.poll() is not None:
            _out, err = alive.communicate(timeout=10)
            raise AssertionError(f"{what}: its peer ended (exit {alive.returncode}); stderr:\n{err}")
    if not line:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        raise AssertionError(f"{what}: no line within {timeout} s (exit {proc.returncode}); stderr:\n{err}")
    return line.strip()


def run_hostile(
    lab: Any,
    *,
    family: int,
    user: str,
    budget: int,
    kinds: frozenset[int] | None = None,
    rate: float = 20000,
    timeout: float = 0.5,
    seed: int = 12,
    options: dict[str, Any] | None = None,
) -> HostileRun:
    """One attack on one client: the attacker floods ``budget`` forgeries of ``kinds`` (default: every kind
    of the family) at ``rate`` per second while the client (``user`` root: raw sockets; nobody: ping
    sockets) runs rounds of ping, multiping and traceroute (``options`` go to its `AsyncClient`); then both
    report."""
    tags = frozenset(t for t, k in KINDS.items() if family in k.families) if kinds is None else kinds
    evil = lab.target4 if family == 4 else lab.target6
    down = lab.down4 if family == 4 else lab.down6
    lab.exec(["nft", "reset", "counters", "table", "inet", "hostile"])
    config = {
        "family": family, "own": evil, "down": down, "iface": "prev", "budget": budget, "rate": rate,
        "kinds": sorted(tags), "seed": seed,
    }  # fmt: skip
    attacker = lab.popen(
        [sys.executable, str(HERE / "hostile.py"), json.dumps(config)],
        ns=lab.target, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = None
    try:
        assert _readline(attacker, 30, "attacker start") == "ready"
        settings = json.dumps({"evil": evil, "down": down, "timeout": timeout, "options": options or {}})
        client = lab.popen(
            [sys.executable, "-c", CLIENT_SCRIPT, settings],
            user=user, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert _readline(attacker, 60 + budget / rate * 4, "attacker budget", alive=client) == "budget"
        assert client.stdin is not None
        assert attacker.stdin is not None
        client.stdin.write("stop\n")
        client.stdin.flush()
        assert _readline(client, 30, "client rounds") == "idle"
        attacker.stdin.write("stop\n")  # (closing a pipe here would upset Lab.close's communicate)
        attacker.stdin.flush()
        report = json.loads(_readline(attacker, 30, "attacker report"))
        attacker.wait(10)
        deadline = time.monotonic() + 10
        while not nft_counts(lab, family).get(FENCE):
            assert time.monotonic() < deadline, "the attacker's fence packet never reached the client"
            time.sleep(0.01)
        client.stdin.write("snapshot\n")
        client.stdin.flush()
        out = json.loads(_readline(client, 30, "client report"))
        client.wait(10)
    finally:
        for proc in (attacker, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    return HostileRun(
        family=family,
        raw=user == "root",
        client=out,
        tally={int(k): v for k, v in report["tally"].items()},
        arrived=nft_counts(lab, family),
        addrs={"evil": evil, "down": down},
    )


if __name__ == "__main__":
    attack(json.loads(sys.argv[1]))
