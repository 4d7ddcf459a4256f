"""ICMP and ICMPv6 on the wire: bytes in, typed packets out, and back. Pure functions, no I/O.

Nothing here imports ``socket``, ``anyio`` or ``time`` (a test enforces it). Every parser takes any bytes and
either returns a packet or raises one `MalformedPacket`; never ``IndexError`` or ``struct.error``.

Echo request / reply (RFC 792, RFC 4443)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Type      |     Code      |          Checksum             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           Identifier          |        Sequence Number        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Payload: cookie (8) | token (4) | balance (2) | padding ...
    +-+-+-+-+-+-+-+-

The payload proves a reply is ours: an 8-byte cookie drawn at random per client and a 4-byte token per
probe (so a late reply to an earlier probe that used the same identifier and sequence is told apart). The
two "balance" bytes let a traceroute keep the ICMP checksum constant while the sequence changes (Paris
traceroute: per-flow load balancers hash type, code and checksum, so every probe stays on one path).

Errors (Destination Unreachable, Time Exceeded, Parameter Problem, Packet Too Big) quote the datagram that
caused them, after a 4-byte field whose meaning depends on the type::

    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Type      |     Code      |          Checksum             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | v4: pointer/unused | length | next-hop MTU/unused             |
    | v6: length | unused  (Time Exceeded, Unreachable); MTU; pointer |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      Internet header + leading octets of original datagram     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      RFC 4884 extension structure (optional): MPLS labels ...  |

RFC 4884 puts the length of the original datagram field in the ``length`` byte (32-bit words for ICMPv4,
64-bit words for ICMPv6); older routers pad the quote to 128 bytes and append the extension without it.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from array import array
from dataclasses import dataclass

from ._exceptions import MalformedPacket
from ._models import MplsLabel

__all__ = [
    "BALANCE_OFFSET",
    "COOKIE_SIZE",
    "ECHO_HEADER",
    "ICMP4_DEST_UNREACH",
    "ICMP4_ECHO_REPLY",
    "ICMP4_ECHO_REQUEST",
    "ICMP4_PARAM_PROBLEM",
    "ICMP4_TIME_EXCEEDED",
    "ICMP6_DEST_UNREACH",
    "ICMP6_ECHO_REPLY",
    "ICMP6_ECHO_REQUEST",
    "ICMP6_PACKET_TOO_BIG",
    "ICMP6_PARAM_PROBLEM",
    "ICMP6_TIME_EXCEEDED",
    "MAX_PAYLOAD",
    "SIGNATURE_SIZE",
    "TOKEN_OFFSET",
    "EchoTemplate",
    "IPv4Header",
    "IcmpExtension",
    "IcmpMessage",
    "Quoted",
    "balance_checksum",
    "build_echo_request",
    "build_payload",
    "checksum",
    "checksum_ok",
    "error_name",
    "format_ipv4",
    "format_ipv6",
    "parse_icmp",
    "parse_ipv4_header",
    "parse_ipv4_packet",
    "quoted_checksum_ok",
    "sent_sum",
]

ICMP4_ECHO_REPLY = 0
ICMP4_DEST_UNREACH = 3
ICMP4_SOURCE_QUENCH = 4
ICMP4_REDIRECT = 5
ICMP4_ECHO_REQUEST = 8
ICMP4_TIME_EXCEEDED = 11
ICMP4_PARAM_PROBLEM = 12

ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROBLEM = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

ECHO_HEADER = struct.Struct("!BBHHH")
"""type, code, checksum, identifier, sequence: the 8-byte header of echo messages."""

COOKIE_SIZE = 8
MAX_PAYLOAD = {False: 65535 - 20 - 8, True: 65535 - 8}
"""The largest echo payload per family (``True``: IPv6): an IPv4 datagram's 65,535 bytes less its 20-byte
header and the 8-byte echo header; an IPv6 payload's 65,535 less the echo header."""
TOKEN_OFFSET = 8
BALANCE_OFFSET = 12
SIGNATURE_SIZE = 12
"""Payload bytes that prove a reply is ours: the cookie and the token."""
_PAYLOAD_HEADER = 14

_TOKEN = struct.Struct("!I")
# checksum, identifier, sequence, cookie, token: bytes 2..20 of an echo request (see EchoTemplate.write_into)
_CHECKSUM_TO_TOKEN = struct.Struct(f"!HHH{TOKEN_OFFSET}sI")
_U16 = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_EXT_OBJECT = struct.Struct("!HBB")
_LITTLE_ENDIAN = sys.byteorder == "little"

_V4_ERRORS = frozenset(
    {
        ICMP4_DEST_UNREACH,
        ICMP4_SOURCE_QUENCH,
        ICMP4_REDIRECT,
        ICMP4_TIME_EXCEEDED,
        ICMP4_PARAM_PROBLEM,
    }
)
_V6_ERRORS = frozenset({ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROBLEM})

_V4_UNREACH = {
    0: "net-unreachable",
    1: "host-unreachable",
    2: "protocol-unreachable",
    3: "port-unreachable",
    4: "fragmentation-needed",
    5: "source-route-failed",
    6: "net-unknown",
    7: "host-unknown",
    8: "source-host-isolated",
    9: "net-prohibited",
    10: "host-prohibited",
    11: "net-unreachable-for-tos",
    12: "host-unreachable-for-tos",
    13: "admin-prohibited",
    14: "host-precedence-violation",
    15: "precedence-cutoff",
}
# ICMPv6 codes map onto the ICMPv4 names where they mean the same thing, so users test one name.
_V6_UNREACH = {
    0: "net-unreachable",
    1: "admin-prohibited",
    2: "beyond-scope",
    3: "host-unreachable",
    4: "port-unreachable",
    5: "source-policy-failed",
    6: "reject-route",
    7: "source-route-error",
    8: "headers-too-long",
}
_TIME_EXCEEDED = {0: "time-exceeded", 1: "reassembly-time-exceeded"}


def error_name(v6: bool, icmp_type: int, code: int) -> str | None:
    """The stable kebab-case name of an ICMP message, ``None`` for an echo reply."""
    if v6:
        if icmp_type == ICMP6_ECHO_REPLY:
            return None
        if icmp_type == ICMP6_DEST_UNREACH:
            return _V6_UNREACH.get(code, f"unreachable-code-{code}")
        if icmp_type == ICMP6_TIME_EXCEEDED:
            return _TIME_EXCEEDED.get(code, f"time-exceeded-code-{code}")
        if icmp_type == ICMP6_PACKET_TOO_BIG:
            return "packet-too-big"
        if icmp_type == ICMP6_PARAM_PROBLEM:
            return "parameter-problem"
        return f"icmpv6-type-{icmp_type}-code-{code}"
    if icmp_type == ICMP4_ECHO_REPLY:
        return None
    if icmp_type == ICMP4_DEST_UNREACH:
        return _V4_UNREACH.get(code, f"unreachable-code-{code}")
    if icmp_type == ICMP4_TIME_EXCEEDED:
        return _TIME_EXCEEDED.get(code, f"time-exceeded-code-{code}")
    if icmp_type == ICMP4_PARAM_PROBLEM:
        return "parameter-problem"
    if icmp_type == ICMP4_SOURCE_QUENCH:
        return "source-quench"
    if icmp_type == ICMP4_REDIRECT:
        return "redirect"
    return f"icmp-type-{icmp_type}-code-{code}"


# --------------------------------------------------------------------------------------------- checksum


def _ones_sum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 one's complement sum of 16-bit big-endian words, folded to 16 bits."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    words = array("H", bytes(data))
    if _LITTLE_ENDIAN:
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``, as an integer in network order."""
    return ~_ones_sum(data) & 0xFFFF


def checksum_ok(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` (an ICMPv4 message, checksum field included) sums to all ones, as RFC 1071 asks.

    One C-speed pass: the one's complement sum of 16-bit words equals the message read as one big-endian
    number modulo 0xFFFF (2**16 is 1 modulo 0xFFFF), so a valid message is a non-zero multiple of 0xFFFF.
    An odd length is padded with a zero byte, as the sum defines.
    """
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8
    return value != 0 and value % 0xFFFF == 0


def build_payload(cookie: bytes, token: int, size: int) -> bytes:
    """An echo payload of ``size`` bytes: cookie, token, two balance bytes (zero), then padding.

    Payloads shorter than the 14-byte header carry what fits (their replies are matched on the prefix).
    """
    if len(cookie) != COOKIE_SIZE:
        raise ValueError(f"cookie must be {COOKIE_SIZE} bytes")
    head = cookie + _TOKEN.pack(token & 0xFFFFFFFF) + b"\0\0"
    if size <= _PAYLOAD_HEADER:
        return head[:size]
    return head + _padding(size - _PAYLOAD_HEADER)


_PAD_CACHE: dict[int, bytes] = {}


def _padding(n: int) -> bytes:
    pad = _PAD_CACHE.get(n)
    if pad is None:
        # ping(8)'s habit of an incrementing byte pattern makes payload corruption visible in captures.
        pad = bytes((0x20 + i) & 0xFF for i in range(n))
        if len(_PAD_CACHE) < 64:
            _PAD_CACHE[n] = pad
    return pad


class EchoTemplate:
    """Builds the echo requests of one payload size fast: the checksum of everything that does not change
    (type, code, cookie, padding) is summed once, and each packet adds only its identifier, sequence and
    token. Produces exactly the bytes of `build_payload` + `build_echo_request`."""

    __slots__ = ("_base", "_head", "_tail", "_type", "_v6", "blank", "size")

    def __init__(self, *, v6: bool, cookie: bytes, size: int) -> None:
        self._v6 = v6
        self.size = size
        payload = build_payload(cookie, 0, size)
        self._head = payload[:TOKEN_OFFSET] if size >= TOKEN_OFFSET + 4 else b""
        self._tail = payload[TOKEN_OFFSET + 4 :] if size >= TOKEN_OFFSET + 4 else b""
        icmp_type = ICMP6_ECHO_REQUEST if v6 else ICMP4_ECHO_REQUEST
        self._type = icmp_type
        self._base = _ones_sum(ECHO_HEADER.pack(icmp_type, 0, 0, 0, 0) + payload)
        self.blank = ECHO_HEADER.pack(icmp_type, 0, 0, 0, 0) + payload
        """The packet with identifier, sequence, token and checksum zero: what `write_into` starts from."""

    def build(self, ident: int, seq: int, token: int, cookie: bytes) -> bytes:
        """The echo request; ``cookie`` must be the one the template was made with."""
        if not self._head:  # payload too short for cookie and token: the general path
            payload = build_payload(cookie, token, self.size)
            return build_echo_request(v6=self._v6, ident=ident, seq=seq, payload=payload)
        token &= 0xFFFFFFFF
        if self._v6:
            cs = 0
        else:
            total = self._base + ident + seq + (token >> 16) + (token & 0xFFFF)
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            cs = ~total & 0xFFFF
        return b"".join(
            (ECHO_HEADER.pack(self._type, 0, cs, ident, seq), self._head, _TOKEN.pack(token), self._tail)
        )

    @property
    def writable(self) -> bool:
        """True when the payload holds cookie and token, so `write_into` can be used."""
        return bool(self._head)

    def write_run(
        self, buffer: bytearray, stride: int, ident: int, seqs: list[int], tokens: list[int]
    ) -> tuple[list[bytes], list[int]]:
        """`write_into` slot ``k`` of ``buffer`` (at ``k * stride``) the request with ``seqs[k]`` and
        ``tokens[k]``; returns each request's signature (cookie and token) and its `sent_sum`."""
        base, cookie, v6 = self._base, self._head, self._v6
        pack_into = _CHECKSUM_TO_TOKEN.pack_into
        signatures: list[bytes] = []
        sums: list[int] = []
        append, add_sum = signatures.append, sums.append
        offset = 2
        for seq, token in zip(seqs, tokens, strict=False):
            total = base + ident + seq + (token >> 16) + (token & 0xFFFF)
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            if v6:
                pack_into(buffer, offset, 0, ident, seq, cookie, token)
                add_sum(total)
            else:
                pack_into(buffer, offset, ~total & 0xFFFF, ident, seq, cookie, token)
                add_sum(~total & 0xFFFF)
            append(cookie + token.to_bytes(4, "big"))
            offset += stride
        return signatures, sums

    def write_into(self, buffer: bytearray, offset: int, ident: int, seq: int, token: int) -> None:
        """Write the echo request `build` would return into ``buffer`` at ``offset``, where `blank` (or an
        earlier packet of this template) already lies: only checksum, identifier, sequence and token
        change. The batch path of sweeps; requires `writable`."""
        if self._v6:
            cs = 0
        else:
            total = self._base + ident + seq + (token >> 16) + (token & 0xFFFF)
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            cs = ~total & 0xFFFF
        _CHECKSUM_TO_TOKEN.pack_into(buffer, offset + 2, cs, ident, seq, self._head, token)


def sent_sum(packet: bytes, *, v6: bool) -> int:
    """What a quote of ``packet`` must show in its checksum field, as far as we know it when sending.

    ICMPv4: the checksum itself. ICMPv6: the one's complement sum of the message with a zero checksum field;
    the kernel adds the pseudo-header (source address included) when it sends, so `quoted_checksum_ok`
    completes it from the addresses the quote shows.
    """
    if not v6:
        return (packet[2] << 8) | packet[3]
    return _ones_sum(packet[:2] + b"\0\0" + packet[4:])


def quoted_checksum_ok(quoted: Quoted, sent: int, *, v6: bool, length: int) -> bool:
    """Whether the checksum field of a quoted echo request is the one of the probe we sent (``sent`` from
    `sent_sum`, ``length`` the ICMP message's size in bytes)."""
    if quoted.checksum is None:
        return False
    if not v6:
        return quoted.checksum == sent
    pseudo = (
        ipaddress.IPv6Address(quoted.src).packed
        + ipaddress.IPv6Address(quoted.dst).packed
        + length.to_bytes(4, "big")
        + b"\0\0\0"
        + bytes([IPPROTO_ICMPV6])
    )
    total = _ones_sum(pseudo) + sent
    total = (total & 0xFFFF) + (total >> 16)
    return quoted.checksum == ~total & 0xFFFF


def build_echo_request(*, v6: bool, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP(v6) echo request. ICMPv4 gets its checksum; ICMPv6 leaves it 0 (the kernel fills it in,
    since it covers the IPv6 pseudo-header)."""
    if not 0 <= ident <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise ValueError("identifier and sequence must fit in 16 bits")
    if v6:
        return ECHO_HEADER.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload
    unsummed = ECHO_HEADER.pack(ICMP4_ECHO_REQUEST, 0, 0, ident, seq) + payload
    cs = checksum(unsummed)
    return unsummed[:2] + _U16.pack(cs) + unsummed[4:]


def balance_checksum(packet: bytes, *, v6: bool, target: int) -> bytes:
    """Rewrite the two balance bytes of an echo request so that its checksum field is ``target``.

    ICMPv4: the returned packet carries ``target`` as its (valid) checksum. ICMPv6: the checksum field stays
    0 for the kernel to fill, and the one's complement sum of the message is made equal to ``target``, so
    the kernel's checksum is the same for every probe to one destination. A payload too short to hold the
    balance bytes is returned unchanged.
    """
    offset = ECHO_HEADER.size + BALANCE_OFFSET
    if len(packet) < offset + 2:
        return packet
    buf = bytearray(packet)
    buf[offset : offset + 2] = b"\0\0"
    if v6:
        buf[2:4] = b"\0\0"
        want = target & 0xFFFF
    else:
        buf[2:4] = _U16.pack(target & 0xFFFF)
        want = 0xFFFF  # a valid ICMPv4 message sums to all ones, checksum included
    have = _ones_sum(buf)
    # one's complement subtraction: want - have == want + ~have
    fix = want + (~have & 0xFFFF)
    fix = (fix & 0xFFFF) + (fix >> 16)
    buf[offset : offset + 2] = _U16.pack(fix & 0xFFFF)
    return bytes(buf)


# ------------------------------------------------------------------------------------------- addresses


def format_ipv4(raw: bytes) -> str:
    """Dotted quad of 4 raw bytes (faster than ``ipaddress`` on a hot path)."""
    return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])  # noqa: UP031


def format_ipv6(raw: bytes) -> str:
    """16 raw bytes written exactly as ``inet_ntop`` writes them (so as ``recvmsg`` reports addresses).

    That differs from ``ipaddress`` in one way: an IPv4-mapped (``::ffff:a.b.c.d``) or IPv4-compatible
    (``::a.b.c.d``) address keeps its dotted quad.
    """
    if len(raw) != 16:
        raise ValueError("an IPv6 address is 16 bytes")
    head = raw[:10]
    if not any(head) and (raw[10:12] == b"\xff\xff" or (raw[10:12] == b"\0\0" and any(raw[12:14]))):
        prefix = "::ffff:" if raw[10:12] == b"\xff\xff" else "::"
        return prefix + format_ipv4(raw[12:16])
    return ipaddress.IPv6Address(raw).compressed


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True, kw_only=True)
class IPv4Header:
    """An IPv4 header (RFC 791); ``header_len`` comes from IHL, options included."""

    header_len: int
    tos: int
    total_length: int
    ident: int
    flags: int
    frag_offset: int
    ttl: int
    proto: int
    checksum: int
    src: str
    dst: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Quoted:
    """The original datagram quoted in an ICMP error: enough of our probe to know which one it was.

    ``ident``/``seq``/``icmp_type`` are ``None`` when the quote stops before the ICMP header or is of a
    non-first fragment (whose bytes after the IP header are payload); ``payload`` holds
    whatever of the probe's payload the router quoted (often all of it, at least 0 bytes).
    """

    src: str
    dst: str
    proto: int
    ttl: int
    icmp_type: int | None
    icmp_code: int | None
    ident: int | None
    seq: int | None
    payload: bytes
    checksum: int | None = None
    """The quoted ICMP header's checksum field (``None`` when no ICMP header is quoted)."""
    fragment: bool = False
    """True when the quote is of a non-first fragment: what follows its IP header is payload, not an ICMP
    header, so ``ident``/``seq`` are ``None``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IcmpExtension:
    """One RFC 4884 extension object."""

    class_num: int
    c_type: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class IcmpMessage:
    """A parsed ICMP or ICMPv6 message.

    For echo messages ``ident``/``seq``/``payload`` are set and ``quoted`` is ``None``.
    For errors ``quoted`` is
    the original datagram when one could be read, ``info`` the type-specific field (pointer, MTU), and
    ``mpls`` the RFC 4950 label stack if the router sent one.
    """

    v6: bool
    type: int
    code: int
    checksum: int
    size: int
    ident: int | None = None
    seq: int | None = None
    payload: bytes = b""
    info: int = 0
    quoted: Quoted | None = None
    extensions: tuple[IcmpExtension, ...] = ()
    mpls: tuple[MplsLabel, ...] = ()

    @property
    def is_echo_reply(self) -> bool:
        return self.type == (ICMP6_ECHO_REPLY if self.v6 else ICMP4_ECHO_REPLY)

    @property
    def is_echo_request(self) -> bool:
        return self.type == (ICMP6_ECHO_REQUEST if self.v6 else ICMP4_ECHO_REQUEST)

    @property
    def is_error(self) -> bool:
        return self.type in (_V6_ERRORS if self.v6 else _V4_ERRORS)

    @property
    def error(self) -> str | None:
        """Stable name of the message (``None`` for an echo reply)."""
        return error_name(self.v6, self.type, self.code)


def parse_ipv4_header(data: bytes, offset: int = 0) -> IPv4Header:
    """Parse the IPv4 header at ``offset``, honouring IHL (options are skipped, not interpreted)."""
    if offset < 0:
        # struct would count a negative offset from the end (or raise struct.error): refuse it.
        raise ValueError(f"offset must not be negative, got {offset}")
    if len(data) - offset < 20:
        raise MalformedPacket(f"IPv4 header needs 20 bytes, got {max(len(data) - offset, 0)}")
    ver_ihl, tos, total, ident, frag, ttl, proto, cs, src, dst = _IPV4.unpack_from(data, offset)
    if ver_ihl >> 4 != 4:
        raise MalformedPacket(f"not IPv4 (version {ver_ihl >> 4})")
    header_len = (ver_ihl & 0x0F) * 4
    if header_len < 20:
        raise MalformedPacket(f"IPv4 IHL {ver_ihl & 0x0F} is below the minimum of 5")
    if len(data) - offset < header_len:
        raise MalformedPacket("IPv4 header truncated inside its options")
    return IPv4Header(
        header_len=header_len,
        tos=tos,
        total_length=total,
        ident=ident,
        flags=frag >> 13,
        frag_offset=frag & 0x1FFF,
        ttl=ttl,
        proto=proto,
        checksum=cs,
        src=format_ipv4(src),
        dst=format_ipv4(dst),
    )


def parse_ipv4_packet(data: bytes) -> tuple[IPv4Header, IcmpMessage]:
    """What a raw IPv4 ICMP socket reads: an IPv4 header, then an ICMP message."""
    header = parse_ipv4_header(data)
    if header.proto != IPPROTO_ICMP:
        raise MalformedPacket(f"IPv4 protocol {header.proto} is not ICMP")
    return header, parse_icmp(data[header.header_len :], v6=False)


def parse_icmp(data: bytes, *, v6: bool) -> IcmpMessage:
    """Parse an ICMP (``v6=False``) or ICMPv6 message starting at its type byte."""
    size = len(data)
    if size < 8:
        raise MalformedPacket(f"ICMP message needs 8 bytes, got {size}")
    icmp_type, code, cs, word1, word2 = ECHO_HEADER.unpack_from(data)
    errors = _V6_ERRORS if v6 else _V4_ERRORS
    if icmp_type not in errors:
        # Echo and everything else: the second word is identifier and sequence for echo messages; for other
        # informational types it is carried the same way, which is harmless.
        return IcmpMessage(
            v6=v6,
            type=icmp_type,
            code=code,
            checksum=cs,
            size=size,
            ident=word1,
            seq=word2,
            payload=bytes(data[8:]),
        )
    return _parse_error(data, v6=v6, icmp_type=icmp_type, code=code, cs=cs)


def _parse_error(data: bytes, *, v6: bool, icmp_type: int, code: int, cs: int) -> IcmpMessage:
    size = len(data)
    rest = data[4:8]
    if v6:
        info = int.from_bytes(rest, "big")
        length_units = rest[0] * 8 if icmp_type in (ICMP6_DEST_UNREACH, ICMP6_TIME_EXCEEDED) else 0
    else:
        info = rest[0] if icmp_type == ICMP4_PARAM_PROBLEM else int.from_bytes(rest[2:4], "big")
        length_units = rest[1] * 4 if icmp_type != ICMP4_REDIRECT else 0
    body = bytes(data[8:])
    quoted_bytes = body
    extensions: tuple[IcmpExtension, ...] = ()
    if length_units and length_units <= len(body):
        # RFC 4884 compliant: the original datagram has an explicit length, extensions follow it.
        quoted_bytes = body[:length_units]
        extensions = _parse_extensions(body[length_units:])
    elif not length_units and len(body) > 128 + 4:
        # Pre-RFC 4884 routers: the quote is padded to 128 bytes and the extension follows, unannounced.
        # Only accept it when the extension header validates, so a long quote is never misread.
        candidate = _parse_extensions(body[128:], strict=True)
        if candidate:
            quoted_bytes, extensions = body[:128], candidate
    quoted = _parse_quoted(quoted_bytes, v6=v6)
    return IcmpMessage(
        v6=v6,
        type=icmp_type,
        code=code,
        checksum=cs,
        size=size,
        info=info,
        payload=quoted_bytes,
        quoted=quoted,
        extensions=extensions,
        mpls=_mpls_labels(extensions),
    )


def _parse_quoted(data: bytes, *, v6: bool) -> Quoted | None:
    """The IP header and leading bytes of our datagram, as quoted in an error; ``None`` if unreadable.

    Only a first fragment (offset 0) starts with the ICMP header: a quote of a later fragment carries
    payload bytes where the identifier and sequence would be, so it names no echo at all.
    """
    fragment = False
    if v6:
        if len(data) < 40 or data[0] >> 4 != 6:
            return None
        _vtf, _plen, next_header, hop_limit, src, dst = _IPV6.unpack_from(data)
        offset = 40
        # Skip extension headers we might have quoted (hop-by-hop, routing, destination options, fragment).
        while next_header in (0, 43, 44, 60) and offset + 8 <= len(data):
            if next_header == 44:
                fragment = fragment or bool(_U16.unpack_from(data, offset + 2)[0] >> 3)
                hdr_len = 8
            else:
                hdr_len = (data[offset + 1] + 1) * 8
            next_header = data[offset]
            offset += hdr_len
        proto, ttl = next_header, hop_limit
        src_s, dst_s = format_ipv6(src), format_ipv6(dst)
    else:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        header_len = (data[0] & 0x0F) * 4
        if header_len < 20 or header_len > len(data):
            return None
        fragment = bool(_U16.unpack_from(data, 6)[0] & 0x1FFF)
        ttl, proto = data[8], data[9]
        src_s, dst_s = format_ipv4(data[12:16]), format_ipv4(data[16:20])
        offset = header_len
    inner = data[offset:]
    icmp_proto = IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP
    if proto == icmp_proto and len(inner) >= 8 and not fragment and offset <= len(data):
        itype, icode, cs, ident, seq = ECHO_HEADER.unpack_from(inner)
        return Quoted(
            src=src_s,
            dst=dst_s,
            proto=proto,
            ttl=ttl,
            icmp_type=itype,
            icmp_code=icode,
            ident=ident,
            seq=seq,
            payload=bytes(inner[8:]),
            checksum=cs,
        )
    return Quoted(
        src=src_s,
        dst=dst_s,
        proto=proto,
        ttl=ttl,
        icmp_type=None,
        icmp_code=None,
        ident=None,
        seq=None,
        payload=b"",
        fragment=fragment,
    )


def _parse_extensions(data: bytes, *, strict: bool = False) -> tuple[IcmpExtension, ...]:
    """RFC 4884 extension structure: a 4-byte header (version 2, checksum) then objects.

    Malformed structures yield no extensions rather than an error: they are optional decoration on an
    otherwise useful message.
    """
    if len(data) < 4 or data[0] >> 4 != 2:
        return ()
    # A zero checksum means "not computed" (RFC 4884 allows it); a non-zero one must verify.
    if (strict or int.from_bytes(data[2:4], "big")) and _ones_sum(data) != 0xFFFF:
        return ()
    objects: list[IcmpExtension] = []
    offset = 4
    while offset + 4 <= len(data):
        length, class_num, c_type = _EXT_OBJECT.unpack_from(data, offset)
        if length < 4 or offset + length > len(data):
            break
        objects.append(
            IcmpExtension(class_num=class_num, c_type=c_type, data=bytes(data[offset + 4 : offset + length]))
        )
        offset += length
    return tuple(objects)


def _mpls_labels(extensions: tuple[IcmpExtension, ...]) -> tuple[MplsLabel, ...]:
    """RFC 4950: class 1, c-type 1 carries label stack entries of 4 bytes each."""
    labels: list[MplsLabel] = []
    for ext in extensions:
        if ext.class_num != 1 or ext.c_type != 1:
            continue
        for i in range(0, len(ext.data) - 3, 4):
            entry = int.from_bytes(ext.data[i : i + 4], "big")
            labels.append(
                MplsLabel(
                    label=entry >> 12,
                    tc=(entry >> 9) & 0x7,
                    bottom=bool(entry & 0x100),
                    ttl=entry & 0xFF,
                )
            )
    return tuple(labels)
