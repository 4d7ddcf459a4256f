"""The packet layer: golden packets from a real kernel, hand-built corner cases, and properties.

Golden packets live in ``tests/data`` (``capture_golden.py`` made them; ``golden.json`` says what each
one is). Hypothesis properties state their example counts; the file runs in well under a minute.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icmpx import MalformedPacket, MplsLabel, _wire
from icmpx._wire import (
    COOKIE_SIZE,
    SIGNATURE_SIZE,
    IcmpExtension,
    IcmpMessage,
    balance_checksum,
    build_echo_request,
    build_payload,
    checksum,
    error_name,
    parse_icmp,
    parse_ipv4_header,
    parse_ipv4_packet,
)

DATA = Path(__file__).parent / "data"
MANIFEST: dict[str, Any] = json.loads((DATA / "golden.json").read_text())
GOLDEN: list[dict[str, Any]] = MANIFEST["packets"]
COOKIE = bytes.fromhex(MANIFEST["cookie_hex"])
TEST_COOKIE = b"\x01\x23\x45\x67\x89\xab\xcd\xef"

ECHO_REQUEST = {False: 8, True: 128}
ECHO_REPLY = {False: 0, True: 129}

# Test-only reference implementations, written independently of _wire's.


def ones_sum(data: bytes) -> int:
    """One's complement sum of big-endian 16-bit words, the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum(src: str, dst: str, message: bytes) -> int:
    """RFC 4443 2.3: the checksum covers an IPv6 pseudo-header."""
    pseudo = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!I3xB", len(message), 58)
    )
    return ~ones_sum(pseudo + message) & 0xFFFF


def same_ones_complement(a: int, b: int) -> bool:
    """0x0000 and 0xFFFF are both zero in one's complement arithmetic."""
    return a == b or {a, b} == {0, 0xFFFF}


def load(entry: dict[str, Any]) -> bytes:
    return bytes.fromhex((DATA / entry["file"]).read_text())


def golden_ids(entry: dict[str, Any]) -> str:
    return str(entry["name"])


# ------------------------------------------------------------------------------- packet builders


def ipv4_header(
    *,
    src: str = "198.18.1.2",
    dst: str = "198.18.2.2",
    payload_len: int = 0,
    proto: int = 1,
    ttl: int = 64,
    options: bytes = b"",
    tos: int = 0,
) -> bytes:
    assert len(options) % 4 == 0
    assert len(options) <= 40
    ihl = 5 + len(options) // 4
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            tos,
            ihl * 4 + payload_len,
            0x1234,
            0x4000,
            ttl,
            proto,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
        + options
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def ipv6_header(
    *,
    src: str = "2001:db8:1::2",
    dst: str = "2001:db8:2::2",
    payload_len: int = 0,
    next_header: int = 58,
    hop_limit: int = 1,
) -> bytes:
    return struct.pack(
        "!IHBB16s16s",
        6 << 28,
        payload_len,
        next_header,
        hop_limit,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )


def probe_datagram(
    *, v6: bool, ident: int = 0xBEEF, seq: int = 7, size: int = 56, options: bytes = b""
) -> bytes:
    """Our echo request as the router saw it: IP header and all."""
    echo = build_echo_request(v6=v6, ident=ident, seq=seq, payload=build_payload(TEST_COOKIE, 9, size))
    if v6:
        return ipv6_header(payload_len=len(echo)) + echo
    return ipv4_header(payload_len=len(echo), ttl=1, options=options) + echo


def icmp_error(*, v6: bool, icmp_type: int, code: int, rest: bytes, body: bytes) -> bytes:
    """An ICMP error with a valid ICMPv4 checksum (ICMPv6's needs the addresses: left 0)."""
    assert len(rest) == 4
    message = struct.pack("!BBH", icmp_type, code, 0) + rest + body
    if v6:
        return message
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def mpls_entry(label: int, tc: int, bottom: bool, ttl: int) -> bytes:
    return ((label << 12) | (tc << 9) | (int(bottom) << 8) | ttl).to_bytes(4, "big")


def extension_structure(objects: list[tuple[int, int, bytes]], *, with_checksum: bool = True) -> bytes:
    """RFC 4884 section 7: version 2 header with a checksum over the whole structure, then objects."""
    body = b"".join(struct.pack("!HBB", 4 + len(data), cls, ctype) + data for cls, ctype, data in objects)
    structure = bytes([0x20, 0, 0, 0]) + body
    if with_checksum:
        structure = structure[:2] + struct.pack("!H", checksum(structure)) + structure[4:]
    return structure


MPLS_STACK = [(16005, 5, False, 1), (1048575, 7, True, 255)]
MPLS_OBJECT = (1, 1, b"".join(mpls_entry(*e) for e in MPLS_STACK))
EXPECTED_MPLS = tuple(MplsLabel(label=lb, tc=tc, bottom=b, ttl=t) for lb, tc, b, t in MPLS_STACK)


def pad(data: bytes, size: int) -> bytes:
    assert len(data) <= size
    return data + bytes(size - len(data))


# --------------------------------------------------------------------------------- golden packets


def parse_golden(entry: dict[str, Any], data: bytes) -> IcmpMessage:
    v6 = entry["family"] == "ipv6"
    if entry["starts_at"] == "ip":
        header, message = parse_ipv4_packet(data)
        assert header == parse_ipv4_header(data)
        ip = entry["ip"]
        assert header.header_len == ip["header_len"]
        assert header.tos == ip["tos"]
        assert header.proto == ip["proto"]
        assert header.ttl == ip["ttl"]
        assert (header.src, header.dst) == (ip["src"], ip["dst"])
        assert header.total_length == ip["total_length"] == len(data)
        assert checksum(data[: header.header_len]) == 0, "the IPv4 header checksum verifies"
        return message
    return parse_icmp(data, v6=v6)


@pytest.mark.parametrize("entry", GOLDEN, ids=golden_ids)
def test_golden_packet_parses_as_described(entry: dict[str, Any]) -> None:
    data = load(entry)
    assert len(data) == entry["length"]
    v6 = entry["family"] == "ipv6"
    message = parse_golden(entry, data)
    expected = entry["icmp"]
    assert message.v6 is v6
    assert (message.type, message.code) == (expected["type"], expected["code"])
    if "error" in expected:
        assert message.error == expected["error"]
    if "ident" in expected:  # echo replies, and the error queue's quoted echo request
        assert message.quoted is None
        assert (message.ident, message.seq) == (expected["ident"], expected["seq"])
        assert message.payload == bytes.fromhex(expected["payload_hex"])
        assert message.size == expected["size"]
        assert message.payload[:COOKIE_SIZE] == COOKIE
        assert int.from_bytes(message.payload[COOKIE_SIZE:SIGNATURE_SIZE], "big") == expected["token"]
    if "quoted" in entry:
        assert message.is_error
        assert message.info == 0
        assert (message.extensions, message.mpls) == ((), ())
        want = entry["quoted"]
        quoted = message.quoted
        assert quoted is not None
        assert (quoted.src, quoted.dst) == (want["src"], want["dst"])
        assert (quoted.proto, quoted.ttl) == (want["proto"], want["ttl"])
        assert (quoted.icmp_type, quoted.icmp_code) == (want["icmp_type"], 0)
        assert (quoted.ident, quoted.seq) == (want["ident"], want["seq"])
        sent = bytes.fromhex(want["payload_hex"])
        assert len(quoted.payload) >= SIGNATURE_SIZE
        assert sent.startswith(quoted.payload), "the router quotes a prefix of what we sent"
        assert quoted.payload[:COOKIE_SIZE] == COOKIE
        assert int.from_bytes(quoted.payload[COOKIE_SIZE:SIGNATURE_SIZE], "big") == want["token"]
        if entry["starts_at"] == "ip":  # the quoted header, read in place
            inner = parse_ipv4_header(data, 20 + 8)
            assert (inner.src, inner.dst, inner.ttl, inner.proto) == (
                want["src"],
                want["dst"],
                want["ttl"],
                1,
            )
            assert inner.total_length == 20 + 8 + len(sent), "the quote keeps the original length"


@pytest.mark.parametrize("entry", GOLDEN, ids=golden_ids)
def test_golden_icmp_checksum_verifies(entry: dict[str, Any]) -> None:
    """The kernel filled in (and checked) these checksums; ours must agree with it."""
    data = load(entry)
    if entry["starts_at"] == "ip":
        data = data[(data[0] & 0x0F) * 4 :]
    if entry["family"] == "ipv4":
        assert checksum(data) == 0
        return
    if entry["read"] == "errqueue":  # the quoted echo request went from us to the target
        src, dst = entry["src"], entry["dst"]
    elif "quoted" in entry:  # an error from the router to us
        src, dst = entry["ipv6_src"], entry["ipv6_dst"]
    else:  # echo reply on loopback
        src = dst = entry["recvfrom_addr"]
    assert icmpv6_checksum(src, dst, data) == 0


def test_golden_set_is_complete() -> None:
    kinds = {(e["family"], e["socket"], e["read"], e["icmp"]["type"]) for e in GOLDEN}
    for family, v6 in (("ipv4", False), ("ipv6", True)):
        assert (family, "raw", "recvfrom", ECHO_REPLY[v6]) in kinds
        assert (family, "ping", "recvfrom", ECHO_REPLY[v6]) in kinds
        assert (family, "ping", "errqueue", ECHO_REQUEST[v6]) in kinds
    errors = {e["icmp"].get("error") for e in GOLDEN if "quoted" in e}
    assert {"time-exceeded", "host-unreachable", "net-unreachable", "admin-prohibited"} <= errors


def test_golden_big_quotes_are_truncated_prefixes() -> None:
    """Routers quote as much as fits 576 bytes (IPv4) / the IPv6 minimum MTU of 1280."""
    big = [e for e in GOLDEN if e["name"].endswith("_big")]
    assert len(big) == 2
    for entry in big:
        data = load(entry)
        message = parse_golden(entry, data)
        assert message.quoted is not None
        sent = bytes.fromhex(entry["quoted"]["payload_hex"])
        assert len(message.quoted.payload) < len(sent)
        limit = 1280 - 40 if entry["family"] == "ipv6" else 576
        assert len(data) == limit


ERRQUEUE = [e for e in GOLDEN if e["read"] == "errqueue"]


@pytest.mark.parametrize("entry", ERRQUEUE, ids=golden_ids)
def test_golden_errqueue_entry(entry: dict[str, Any]) -> None:
    """What a ping socket's error queue gave: the quoted echo request, from its ICMP header on.

    The control message is not parsed by ``_wire``; these checks pin the kernel facts the engine
    relies on (see LINUX-ICMP.md), as recorded by ``capture_golden.py``.
    """
    v6 = entry["family"] == "ipv6"
    message = parse_icmp(load(entry), v6=v6)
    assert message.is_echo_request
    assert not message.is_error
    assert message.payload[:COOKIE_SIZE] == COOKIE
    cmsg, expect = entry["cmsg"], entry["expect"]
    assert (cmsg["level"], cmsg["type"]) == (expect["cmsg_level"], expect["cmsg_type"])
    raw = bytes.fromhex(cmsg["data_hex"])
    ee_errno, origin, ee_type, ee_code, ee_pad, ee_info, ee_data = struct.unpack_from("=IBBBBII", raw)
    assert (origin, ee_type, ee_code) == (expect["ee_origin"], expect["ee_type"], expect["ee_code"])
    assert (ee_errno, ee_pad, ee_info, ee_data) == (cmsg["ee_errno"], 0, 0, 0)
    assert cmsg["ee_errno_name"] in ("EHOSTUNREACH", "ENETUNREACH")
    assert cmsg["offender"]["addr"] == expect["offender"]
    offender = raw[16:]
    if v6:
        assert struct.unpack_from("=H", offender)[0] == 10  # AF_INET6
        assert ipaddress.IPv6Address(offender[8:24]) == ipaddress.IPv6Address(expect["offender"])
    else:
        assert struct.unpack_from("=H", offender)[0] == 2  # AF_INET
        assert ipaddress.IPv4Address(offender[4:8]) == ipaddress.IPv4Address(expect["offender"])
    assert entry["recvmsg_addr"] == entry["dst"], "msg_name is the probe's destination"
    assert entry["plain_recv_before"] == cmsg["ee_errno_name"]
    assert entry["plain_recv_after"] == "EAGAIN"


# ------------------------------------------------------------------------------ hand-built packets


@pytest.mark.parametrize("ihl", list(range(6, 16)))
def test_ipv4_header_options_are_skipped(ihl: int) -> None:
    options = bytes([1]) * ((ihl - 5) * 4)  # NOPs
    echo = build_echo_request(v6=False, ident=0x4321, seq=99, payload=b"abc")
    echo = b"\0" + echo[1:]  # an echo reply (its checksum no longer matters to the parser)
    packet = ipv4_header(payload_len=len(echo), options=options) + echo
    header, message = parse_ipv4_packet(packet)
    assert header.header_len == ihl * 4
    assert (header.src, header.dst, header.ttl, header.proto) == ("198.18.1.2", "198.18.2.2", 64, 1)
    assert message.is_echo_reply
    assert (message.ident, message.seq, message.payload) == (0x4321, 99, b"abc")


@pytest.mark.parametrize("ihl", list(range(6, 16)))
def test_quoted_ipv4_header_options_are_skipped(ihl: int) -> None:
    options = bytes([1]) * ((ihl - 5) * 4)
    quote = probe_datagram(v6=False, seq=4242, options=options)
    message = parse_icmp(icmp_error(v6=False, icmp_type=11, code=0, rest=bytes(4), body=quote), v6=False)
    assert message.quoted is not None
    assert (message.quoted.ident, message.quoted.seq, message.quoted.ttl) == (0xBEEF, 4242, 1)
    assert message.quoted.payload[:COOKIE_SIZE] == TEST_COOKIE


@pytest.mark.parametrize("ihl", list(range(5)))
def test_ipv4_ihl_below_five_is_malformed(ihl: int) -> None:
    packet = bytearray(ipv4_header(payload_len=8) + bytes(8))
    packet[0] = 0x40 | ihl
    with pytest.raises(MalformedPacket):
        parse_ipv4_packet(bytes(packet))


def test_ipv4_header_negative_offset_is_refused() -> None:
    """Regression: a negative offset read from the end of the buffer, or leaked struct.error."""
    packet = ipv4_header() + ipv4_header(src="192.0.2.1")
    for offset in (-20, -40, -41, -1000):
        with pytest.raises(ValueError, match="negative"):
            parse_ipv4_header(packet, offset)
    assert parse_ipv4_header(packet, 20).src == "192.0.2.1"


def test_ipv4_header_truncated_inside_options_is_malformed() -> None:
    packet = bytearray(ipv4_header() + bytes(8))
    packet[0] = 0x4F  # 60-byte header in a 28-byte packet
    with pytest.raises(MalformedPacket):
        parse_ipv4_header(bytes(packet))


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        bytes(19),
        ipv6_header(),  # version 6
        ipv4_header(proto=6) + bytes(20),  # TCP
        ipv4_header(payload_len=4) + bytes(4),  # ICMP shorter than 8 bytes
    ],
)
def test_ipv4_packet_malformed(packet: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_ipv4_packet(packet)


def test_rfc4884_icmpv4_time_exceeded_with_mpls() -> None:
    """RFC 4884 / RFC 4950: the length byte counts 32-bit words of the (padded) quote."""
    quote = pad(probe_datagram(v6=False), 128)
    ext = extension_structure([MPLS_OBJECT])
    packet = icmp_error(v6=False, icmp_type=11, code=0, rest=bytes([0, 128 // 4, 0, 0]), body=quote + ext)
    message = parse_icmp(packet, v6=False)
    assert message.error == "time-exceeded"
    assert message.payload == quote
    assert message.extensions == (IcmpExtension(class_num=1, c_type=1, data=MPLS_OBJECT[2]),)
    assert message.mpls == EXPECTED_MPLS
    assert message.quoted is not None
    assert (message.quoted.ident, message.quoted.seq) == (0xBEEF, 7)


def test_rfc4884_icmpv6_time_exceeded_with_mpls() -> None:
    """ICMPv6 counts the quote in 64-bit words, in the first byte after the checksum."""
    quote = pad(probe_datagram(v6=True), 128)
    ext = extension_structure([MPLS_OBJECT, (2, 9, b"\x00\x00\x00\x01")])
    packet = icmp_error(v6=True, icmp_type=3, code=0, rest=bytes([128 // 8, 0, 0, 0]), body=quote + ext)
    message = parse_icmp(packet, v6=True)
    assert message.error == "time-exceeded"
    assert message.payload == quote
    assert [(e.class_num, e.c_type) for e in message.extensions] == [(1, 1), (2, 9)]
    assert message.mpls == EXPECTED_MPLS
    assert message.quoted is not None
    assert (message.quoted.dst, message.quoted.ident, message.quoted.seq) == ("2001:db8:2::2", 0xBEEF, 7)


def test_rfc4884_extension_without_checksum_is_accepted_when_length_is_set() -> None:
    quote = pad(probe_datagram(v6=False), 128)
    ext = extension_structure([MPLS_OBJECT], with_checksum=False)
    packet = icmp_error(v6=False, icmp_type=11, code=0, rest=bytes([0, 32, 0, 0]), body=quote + ext)
    assert parse_icmp(packet, v6=False).mpls == EXPECTED_MPLS


def test_rfc4884_unpadded_quote_with_length() -> None:
    """Some routers set the length without padding to 128 bytes: the length still rules."""
    quote = probe_datagram(v6=False, size=20)  # 48 bytes, a multiple of 4
    ext = extension_structure([MPLS_OBJECT])
    packet = icmp_error(
        v6=False, icmp_type=3, code=1, rest=bytes([0, len(quote) // 4, 0, 0]), body=quote + ext
    )
    message = parse_icmp(packet, v6=False)
    assert message.payload == quote
    assert message.mpls == EXPECTED_MPLS


@pytest.mark.parametrize("v6", [False, True])
def test_legacy_extension_after_128_byte_quote(v6: bool) -> None:
    """Pre-RFC 4884 (RFC 4950 era) routers: no length, quote padded to 128, extension appended."""
    quote = pad(probe_datagram(v6=v6), 128)
    ext = extension_structure([MPLS_OBJECT])
    packet = icmp_error(v6=v6, icmp_type=3 if v6 else 11, code=0, rest=bytes(4), body=quote + ext)
    message = parse_icmp(packet, v6=v6)
    assert message.payload == quote
    assert message.mpls == EXPECTED_MPLS
    assert message.quoted is not None
    assert message.quoted.seq == 7


@pytest.mark.parametrize("v6", [False, True])
def test_legacy_extension_needs_a_valid_checksum(v6: bool) -> None:
    """Without a length, a long quote is only split at 128 bytes when the checksum proves it."""
    quote = pad(probe_datagram(v6=v6), 128)
    for ext in (
        extension_structure([MPLS_OBJECT], with_checksum=False),
        extension_structure([MPLS_OBJECT])[:-1] + b"\x00",  # corrupted
    ):
        body = quote + ext
        packet = icmp_error(v6=v6, icmp_type=3 if v6 else 11, code=0, rest=bytes(4), body=body)
        message = parse_icmp(packet, v6=v6)
        assert message.payload == body
        assert (message.extensions, message.mpls) == ((), ())


def test_long_quote_is_not_mistaken_for_an_extension() -> None:
    quote = probe_datagram(v6=False, size=400)
    message = parse_icmp(icmp_error(v6=False, icmp_type=11, code=0, rest=bytes(4), body=quote), v6=False)
    assert message.payload == quote
    assert message.extensions == ()
    assert message.quoted is not None
    assert len(message.quoted.payload) == 400


def test_rfc4884_length_beyond_message_keeps_the_whole_quote() -> None:
    quote = probe_datagram(v6=False)
    packet = icmp_error(v6=False, icmp_type=11, code=0, rest=bytes([0, 255, 0, 0]), body=quote)
    message = parse_icmp(packet, v6=False)
    assert message.payload == quote
    assert message.extensions == ()


def test_mpls_ignores_other_extension_classes() -> None:
    quote = pad(probe_datagram(v6=False), 128)
    ext = extension_structure([(2, 1, mpls_entry(1, 0, True, 1))])  # RFC 5837 interface info
    packet = icmp_error(v6=False, icmp_type=11, code=0, rest=bytes([0, 32, 0, 0]), body=quote + ext)
    message = parse_icmp(packet, v6=False)
    assert len(message.extensions) == 1
    assert message.mpls == ()


V4_UNREACHABLE = [
    "net-unreachable",
    "host-unreachable",
    "protocol-unreachable",
    "port-unreachable",
    "fragmentation-needed",
    "source-route-failed",
    "net-unknown",
    "host-unknown",
    "source-host-isolated",
    "net-prohibited",
    "host-prohibited",
    "net-unreachable-for-tos",
    "host-unreachable-for-tos",
    "admin-prohibited",
    "host-precedence-violation",
    "precedence-cutoff",
]
V6_UNREACHABLE = [
    "net-unreachable",
    "admin-prohibited",
    "beyond-scope",
    "host-unreachable",
    "port-unreachable",
    "source-policy-failed",
    "reject-route",
    "source-route-error",
    "headers-too-long",
]


@pytest.mark.parametrize(("code", "name"), list(enumerate(V4_UNREACHABLE)))
def test_icmpv4_unreachable_names(code: int, name: str) -> None:
    assert error_name(False, 3, code) == name
    packet = icmp_error(v6=False, icmp_type=3, code=code, rest=bytes(4), body=probe_datagram(v6=False))
    message = parse_icmp(packet, v6=False)
    assert message.is_error
    assert message.error == name
    assert message.quoted is not None
    assert message.quoted.seq == 7


@pytest.mark.parametrize(("code", "name"), list(enumerate(V6_UNREACHABLE)))
def test_icmpv6_unreachable_names(code: int, name: str) -> None:
    assert error_name(True, 1, code) == name
    packet = icmp_error(v6=True, icmp_type=1, code=code, rest=bytes(4), body=probe_datagram(v6=True))
    message = parse_icmp(packet, v6=True)
    assert message.is_error
    assert message.error == name
    assert message.quoted is not None
    assert message.quoted.seq == 7


@pytest.mark.parametrize(
    ("v6", "icmp_type", "code", "name"),
    [
        (False, 0, 0, None),
        (True, 129, 0, None),
        (False, 3, 16, "unreachable-code-16"),
        (True, 1, 9, "unreachable-code-9"),
        (False, 11, 0, "time-exceeded"),
        (False, 11, 1, "reassembly-time-exceeded"),
        (True, 3, 0, "time-exceeded"),
        (True, 3, 1, "reassembly-time-exceeded"),
        (False, 11, 2, "time-exceeded-code-2"),
        (False, 12, 0, "parameter-problem"),
        (True, 4, 2, "parameter-problem"),
        (True, 2, 0, "packet-too-big"),
        (False, 4, 0, "source-quench"),
        (False, 5, 1, "redirect"),
        (False, 8, 0, "icmp-type-8-code-0"),
        (True, 128, 0, "icmpv6-type-128-code-0"),
    ],
)
def test_other_names(v6: bool, icmp_type: int, code: int, name: str | None) -> None:
    assert error_name(v6, icmp_type, code) == name


@pytest.mark.parametrize("pointer", [0, 1, 9, 20, 255])
def test_icmpv4_parameter_problem_pointer(pointer: int) -> None:
    packet = icmp_error(
        v6=False, icmp_type=12, code=0, rest=bytes([pointer, 0, 0, 0]), body=probe_datagram(v6=False)
    )
    message = parse_icmp(packet, v6=False)
    assert message.error == "parameter-problem"
    assert message.info == pointer
    assert message.quoted is not None


@pytest.mark.parametrize("pointer", [0, 6, 40, 0x12345678])
def test_icmpv6_parameter_problem_pointer(pointer: int) -> None:
    rest = pointer.to_bytes(4, "big")
    packet = icmp_error(v6=True, icmp_type=4, code=1, rest=rest, body=probe_datagram(v6=True))
    message = parse_icmp(packet, v6=True)
    assert message.error == "parameter-problem"
    assert message.info == pointer
    assert message.quoted is not None
    assert message.quoted.seq == 7


@pytest.mark.parametrize("mtu", [1280, 1480, 9000, 65535, 0x10000])
def test_icmpv6_packet_too_big_mtu(mtu: int) -> None:
    packet = icmp_error(
        v6=True, icmp_type=2, code=0, rest=mtu.to_bytes(4, "big"), body=probe_datagram(v6=True)
    )
    message = parse_icmp(packet, v6=True)
    assert message.error == "packet-too-big"
    assert message.is_error
    assert message.info == mtu
    assert message.quoted is not None


@pytest.mark.parametrize("mtu", [68, 576, 1400, 65535])
def test_icmpv4_fragmentation_needed_mtu(mtu: int) -> None:
    """RFC 1191: the next-hop MTU is in the low 16 bits of the second word."""
    rest = bytes([0, 0]) + mtu.to_bytes(2, "big")
    packet = icmp_error(v6=False, icmp_type=3, code=4, rest=rest, body=probe_datagram(v6=False))
    message = parse_icmp(packet, v6=False)
    assert message.error == "fragmentation-needed"
    assert message.info == mtu


def test_error_quoting_less_than_an_icmp_header() -> None:
    """RFC 792 only promises 8 bytes past the IP header; a shorter quote still names the target."""
    quote = probe_datagram(v6=False)[:24]
    message = parse_icmp(icmp_error(v6=False, icmp_type=11, code=0, rest=bytes(4), body=quote), v6=False)
    assert message.quoted is not None
    assert message.quoted.dst == "198.18.2.2"
    assert (message.quoted.ident, message.quoted.seq, message.quoted.icmp_type) == (None, None, None)


@pytest.mark.parametrize("ihl", list(range(5)))
def test_quoted_ipv4_header_with_bad_ihl_is_unreadable(ihl: int) -> None:
    quote = bytearray(probe_datagram(v6=False))
    quote[0] = 0x40 | ihl
    message = parse_icmp(
        icmp_error(v6=False, icmp_type=11, code=0, rest=bytes(4), body=bytes(quote)), v6=False
    )
    assert message.is_error
    assert message.quoted is None


def test_quoted_ipv4_header_longer_than_the_quote_is_unreadable() -> None:
    quote = bytearray(probe_datagram(v6=False)[:40])
    quote[0] = 0x4F  # claims 60 bytes
    message = parse_icmp(
        icmp_error(v6=False, icmp_type=11, code=0, rest=bytes(4), body=bytes(quote)), v6=False
    )
    assert message.quoted is None


def test_extension_object_overrunning_the_structure_is_dropped() -> None:
    quote = pad(probe_datagram(v6=False), 128)
    good = (2, 1, b"\x00\x00\x00\x07")
    ext = extension_structure([good, MPLS_OBJECT], with_checksum=False)[:-2]  # the MPLS object overruns
    packet = icmp_error(v6=False, icmp_type=11, code=0, rest=bytes([0, 32, 0, 0]), body=quote + ext)
    message = parse_icmp(packet, v6=False)
    assert message.extensions == (IcmpExtension(class_num=2, c_type=1, data=good[2]),)
    assert message.mpls == ()


@pytest.mark.parametrize("length", [0, 1, 3])
def test_extension_object_with_impossible_length_ends_the_walk(length: int) -> None:
    quote = pad(probe_datagram(v6=False), 128)
    ext = bytes([0x20, 0, 0, 0]) + struct.pack("!HBB", length, 1, 1) + mpls_entry(1, 0, True, 1)
    packet = icmp_error(v6=False, icmp_type=11, code=0, rest=bytes([0, 32, 0, 0]), body=quote + ext)
    assert parse_icmp(packet, v6=False).extensions == ()


def test_error_with_unreadable_quote() -> None:
    message = parse_icmp(icmp_error(v6=True, icmp_type=3, code=0, rest=bytes(4), body=b"junk"), v6=True)
    assert message.is_error
    assert message.quoted is None


def test_quoted_ipv6_extension_headers_are_skipped() -> None:
    echo = build_echo_request(v6=True, ident=1, seq=2, payload=b"x" * 16)
    hop_by_hop = bytes([60, 0]) + bytes(6)  # next: destination options, 8 bytes
    dest_opts = bytes([44, 1]) + bytes(14)  # next: fragment, 16 bytes
    fragment = bytes([58, 0, 0, 0, 0, 0, 0, 1])  # next: ICMPv6
    inner = hop_by_hop + dest_opts + fragment + echo
    quote = ipv6_header(payload_len=len(inner), next_header=0) + inner
    message = parse_icmp(icmp_error(v6=True, icmp_type=3, code=0, rest=bytes(4), body=quote), v6=True)
    assert message.quoted is not None
    assert (message.quoted.proto, message.quoted.ident, message.quoted.seq) == (58, 1, 2)
    assert message.quoted.payload == b"x" * 16


def test_checksum_rfc1071_example() -> None:
    """RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2."""
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert checksum(data) == ~0xDDF2 & 0xFFFF
    assert checksum(memoryview(data)) == checksum(bytearray(data)) == 0x220D


def test_build_payload_short_and_bad_cookie() -> None:
    assert build_payload(TEST_COOKIE, 5, 0) == b""
    assert build_payload(TEST_COOKIE, 5, 10) == TEST_COOKIE + b"\0\0"
    assert build_payload(TEST_COOKIE, 5, 14) == TEST_COOKIE + b"\0\0\0\x05\0\0"
    with pytest.raises(ValueError, match="cookie"):
        build_payload(b"short", 1, 20)


@pytest.mark.parametrize(("ident", "seq"), [(-1, 0), (0x10000, 0), (0, -1), (0, 0x10000)])
def test_build_echo_request_rejects_out_of_range(ident: int, seq: int) -> None:
    with pytest.raises(ValueError, match="16 bits"):
        build_echo_request(v6=False, ident=ident, seq=seq, payload=b"")


@pytest.mark.parametrize("v6", [False, True])
def test_balance_checksum_leaves_short_payloads_alone(v6: bool) -> None:
    packet = build_echo_request(v6=v6, ident=1, seq=2, payload=build_payload(TEST_COOKIE, 3, 13))
    assert balance_checksum(packet, v6=v6, target=0x1234) == packet


# ------------------------------------------------------------------------------------- properties

idents = st.integers(0, 0xFFFF)
tokens = st.integers(0, 0xFFFFFFFF)
targets = st.integers(0, 0xFFFF)


@settings(max_examples=600, deadline=None)
@given(
    v6=st.booleans(),
    ident=idents,
    seq=idents,
    token=tokens,
    size=st.integers(0, 1472),
    cookie=st.binary(min_size=8, max_size=8),
)
def test_echo_round_trip(v6: bool, ident: int, seq: int, token: int, size: int, cookie: bytes) -> None:
    payload = build_payload(cookie, token, size)
    assert len(payload) == size
    packet = build_echo_request(v6=v6, ident=ident, seq=seq, payload=payload)
    for reply in (False, True):
        wire = bytes([ECHO_REPLY[v6]]) + packet[1:] if reply else packet
        message = parse_icmp(wire, v6=v6)
        assert message.is_echo_reply is reply
        assert message.is_echo_request is not reply
        assert not message.is_error
        assert (message.ident, message.seq, message.payload) == (ident, seq, payload)
        assert message.size == 8 + size
        assert message.quoted is None
        if size >= SIGNATURE_SIZE:
            assert message.payload[:COOKIE_SIZE] == cookie
            assert int.from_bytes(message.payload[COOKIE_SIZE:SIGNATURE_SIZE], "big") == token


@settings(max_examples=500, deadline=None)
@given(v6=st.booleans(), ident=idents, seq=idents, payload=st.binary(max_size=1472))
def test_echo_round_trip_any_payload(v6: bool, ident: int, seq: int, payload: bytes) -> None:
    message = parse_icmp(build_echo_request(v6=v6, ident=ident, seq=seq, payload=payload), v6=v6)
    assert (message.ident, message.seq, message.payload) == (ident, seq, payload)


@settings(max_examples=1000, deadline=None)
@given(ident=idents, seq=idents, payload=st.binary(max_size=1472))
def test_icmpv4_request_checksum_verifies(ident: int, seq: int, payload: bytes) -> None:
    packet = build_echo_request(v6=False, ident=ident, seq=seq, payload=payload)
    assert checksum(packet) == 0
    assert checksum(packet[:2] + b"\0\0" + packet[4:]) == struct.unpack_from("!H", packet, 2)[0]
    assert ones_sum(packet) == 0xFFFF


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=600))
def test_checksum_matches_reference(data: bytes) -> None:
    assert checksum(data) == ~ones_sum(data) & 0xFFFF
    if len(data) % 2:
        assert checksum(data) == checksum(data + b"\0")


@settings(max_examples=1000, deadline=None)
@given(ident=idents, seq=idents, seq2=idents, token=tokens, size=st.integers(14, 1472), target=targets)
def test_balance_checksum_icmpv4(ident: int, seq: int, seq2: int, token: int, size: int, target: int) -> None:
    payload = build_payload(TEST_COOKIE, token, size)
    packet = build_echo_request(v6=False, ident=ident, seq=seq, payload=payload)
    balanced = balance_checksum(packet, v6=False, target=target)
    assert len(balanced) == len(packet)
    assert struct.unpack_from("!H", balanced, 2)[0] == target
    assert checksum(balanced) == 0, "the checksum field is valid, not just equal to the target"
    # Only the checksum and the two balance bytes changed: the probe is still ours.
    assert balanced[:2] + balanced[4:20] + balanced[22:] == packet[:2] + packet[4:20] + packet[22:]
    message = parse_icmp(balanced, v6=False)
    assert (message.ident, message.seq, message.checksum) == (ident, seq, target)
    assert message.payload[:SIGNATURE_SIZE] == payload[:SIGNATURE_SIZE]
    other = balance_checksum(
        build_echo_request(v6=False, ident=ident, seq=seq2, payload=payload), v6=False, target=target
    )
    assert other[:4] == balanced[:4], "type, code and checksum stay put while the sequence moves"
    assert checksum(other) == 0


@settings(max_examples=1000, deadline=None)
@given(ident=idents, seq=idents, seq2=idents, token=tokens, size=st.integers(14, 1472), target=targets)
def test_balance_checksum_icmpv6(ident: int, seq: int, seq2: int, token: int, size: int, target: int) -> None:
    payload = build_payload(TEST_COOKIE, token, size)
    packet = build_echo_request(v6=True, ident=ident, seq=seq, payload=payload)
    balanced = balance_checksum(packet, v6=True, target=target)
    assert len(balanced) == len(packet)
    assert balanced[2:4] == b"\0\0", "the kernel fills in the ICMPv6 checksum"
    assert same_ones_complement(ones_sum(balanced), target)
    assert balanced[:2] + balanced[4:20] + balanced[22:] == packet[:2] + packet[4:20] + packet[22:]
    message = parse_icmp(balanced, v6=True)
    assert (message.ident, message.seq) == (ident, seq)
    other = balance_checksum(
        build_echo_request(v6=True, ident=ident, seq=seq2, payload=payload), v6=True, target=target
    )
    # So the checksum the kernel computes (pseudo-header included) is the same for both probes.
    src, dst = "2001:db8:1::2", "2001:db8:2::2"
    assert icmpv6_checksum(src, dst, balanced) == icmpv6_checksum(src, dst, other)


def assert_only_malformed(parse: Any, data: bytes, **kwargs: Any) -> Any:
    """Run a parser: it may return or raise MalformedPacket; anything else escapes and fails."""
    try:
        return parse(data, **kwargs)
    except MalformedPacket:
        return None


def check_all_parsers(data: bytes) -> None:
    for v6 in (False, True):
        message = assert_only_malformed(parse_icmp, data, v6=v6)
        if message is not None:
            check_message(message, data, v6=v6)
    parsed = assert_only_malformed(parse_ipv4_packet, data)
    if parsed is not None:
        header, message = parsed
        assert header.header_len >= 20
        check_message(message, data[header.header_len :], v6=False)
    assert_only_malformed(parse_ipv4_header, data)


def check_message(message: IcmpMessage, data: bytes, *, v6: bool) -> None:
    """What holds for any message the parser accepts, and its properties do not raise."""
    assert isinstance(message, IcmpMessage)
    assert message.v6 is v6
    assert message.size == len(data) >= 8
    assert (message.type, message.code) == (data[0], data[1])
    _ = (message.error, message.is_error, message.is_echo_reply, message.is_echo_request)
    if message.is_error:
        assert message.ident is None
        assert 0 <= message.info <= 0xFFFFFFFF
        if message.quoted is not None:
            assert message.quoted.ident is None or 0 <= message.quoted.ident <= 0xFFFF
    else:
        assert message.payload == data[8:]
    for label in message.mpls:
        assert 0 <= label.label < 1 << 20
        assert 0 <= label.tc < 8
        assert 0 <= label.ttl < 256


@settings(max_examples=3000, deadline=None)
@given(data=st.binary(max_size=1600))
def test_arbitrary_bytes_only_raise_malformed(data: bytes) -> None:
    check_all_parsers(data)


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=100), offset=st.integers(0, 120))
def test_ipv4_header_at_any_offset(data: bytes, offset: int) -> None:
    header = assert_only_malformed(parse_ipv4_header, data, offset=offset)
    if header is not None:
        assert 20 <= header.header_len <= len(data) - offset


@st.composite
def quoted_datagram(draw: st.DrawFn, v6: bool) -> bytes:
    """A plausible quoted datagram: IP header (IPv4 options / IPv6 extension headers), ICMP, payload,
    cut at a random point, often right at or near a header boundary where off-by-ones live."""
    boundaries = [0]
    if v6:
        chain = draw(st.lists(st.sampled_from([0, 43, 44, 60]), max_size=3))
        kinds = [*chain, draw(st.sampled_from([58, 58, 6, 17, 0xFF]))]
        out = bytearray(ipv6_header(next_header=kinds[0], payload_len=draw(st.integers(0, 0xFFFF))))
        boundaries.append(len(out))
        for next_kind in kinds[1:]:
            units = draw(st.integers(0, 2))
            out += bytes([next_kind, units]) + draw(st.binary(min_size=6 + 8 * units, max_size=6 + 8 * units))
            boundaries.append(len(out))
    else:
        ihl = draw(st.integers(0, 15))
        out = bytearray(ipv4_header(proto=draw(st.sampled_from([1, 1, 6, 17]))))
        out[0] = 0x40 | ihl
        out += draw(st.binary(min_size=max(ihl * 4 - 20, 0), max_size=max(ihl * 4 - 20, 0)))
        boundaries += [20, ihl * 4]
    out += draw(st.binary(min_size=8, max_size=8)) + draw(st.binary(max_size=64))
    boundaries.append(boundaries[-1] + 8)
    how = draw(st.sampled_from(["whole", "anywhere", "near", "near", "near"]))
    if how == "anywhere":
        out = out[: draw(st.integers(0, len(out)))]
    elif how == "near":
        out = out[: max(draw(st.sampled_from(boundaries)) + draw(st.integers(-1, 9)), 0)]
    return bytes(out)


@st.composite
def error_like(draw: st.DrawFn) -> bytes:
    """Random bytes shaped like errors, so the quote and extension paths see deep, odd input."""
    v6 = draw(st.booleans())
    errors = [1, 2, 3, 4] if v6 else [3, 4, 5, 11, 12]
    icmp_type = draw(st.sampled_from([*errors, *errors, 0, 8, 128, 129]))
    code = draw(st.integers(0, 255))
    rest = draw(st.binary(min_size=4, max_size=4))
    if draw(st.integers(0, 3)):
        quote = draw(quoted_datagram(v6))
    else:  # anything at all, sometimes wearing the right version nibble
        version = draw(st.sampled_from([6 if v6 else 4, 2, 0]))
        quote = bytes([draw(st.integers(0, 15)) | version << 4]) + draw(st.binary(max_size=200))
    body = quote
    if draw(st.booleans()):  # an RFC 4884 extension structure, intact or damaged
        length = draw(st.sampled_from([128, len(quote) + 4 - len(quote) % 4]))
        body = quote.ljust(length, b"\0")[:length]
        objects = draw(
            st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.binary(max_size=24)), max_size=3)
        )
        ext = bytearray(extension_structure(objects, with_checksum=draw(st.booleans())))
        if draw(st.booleans()) and len(ext) > 4:  # break an object length or the checksum
            ext[draw(st.integers(0, len(ext) - 1))] = draw(st.integers(0, 255))
        body += bytes(ext[: draw(st.integers(0, len(ext)))]) if draw(st.booleans()) else bytes(ext)
        units = length // (8 if v6 else 4)
        rest = bytes([units & 0xFF, 0, 0, 0]) if v6 else bytes([0, units & 0xFF, 0, 0])
        if draw(st.booleans()):
            rest = bytes(4)  # the legacy form
    return struct.pack("!BBH", icmp_type, code, 0) + rest + body


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=error_like())
def test_error_shaped_bytes_only_raise_malformed(data: bytes) -> None:
    check_all_parsers(data)
    check_all_parsers(ipv4_header(payload_len=len(data)) + data)


@settings(max_examples=2000, deadline=None)
@given(data=st.data(), v6=st.booleans(), code=st.integers(0, 255), rest=st.binary(min_size=4, max_size=4))
def test_quoted_datagrams_only_raise_malformed(data: st.DataObject, v6: bool, code: int, rest: bytes) -> None:
    """Errors quoting plausible datagrams cut at odd places: the quote parser's own fuzz."""
    icmp_type = data.draw(st.sampled_from([1, 2, 3, 4] if v6 else [3, 4, 5, 11, 12]))
    quote = data.draw(quoted_datagram(v6))
    message = assert_only_malformed(parse_icmp, struct.pack("!BBH", icmp_type, code, 0) + rest + quote, v6=v6)
    assert message is not None, "8 bytes of ICMP header are always enough for an error"
    assert message.is_error


@st.composite
def mutated_golden(draw: st.DrawFn) -> bytes:
    data = bytearray(load(draw(st.sampled_from(GOLDEN))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "extend", "delete"]))
        if not data:
            break
        index = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[index] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[index:]
        elif action == "extend":
            data += draw(st.binary(min_size=1, max_size=200))
        else:
            del data[index : index + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=2000, deadline=None)
@given(data=mutated_golden())
def test_mutated_golden_only_raise_malformed(data: bytes) -> None:
    check_all_parsers(data)


_V6_SHAPES = st.one_of(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=4, max_size=4).map(lambda v4: bytes(10) + b"\xff\xff" + v4),  # IPv4-mapped
    st.binary(min_size=4, max_size=4).map(lambda v4: bytes(12) + v4),  # IPv4-compatible, ::1, ::
    st.binary(min_size=2, max_size=2).map(lambda w: bytes(10) + w + bytes(4)),
)


@settings(max_examples=2000)
@given(_V6_SHAPES)
def test_ipv6_addresses_are_written_as_the_kernel_writes_them(raw: bytes) -> None:
    """Quoted destinations must compare equal to the addresses recvmsg and inet_ntop give."""
    assert _wire.format_ipv6(raw) == socket.inet_ntop(socket.AF_INET6, raw)


# ------------------------------------------------------------------------------ echo templates


@settings(max_examples=1000, deadline=None)
@given(
    v6=st.booleans(),
    cookie=st.binary(min_size=8, max_size=8),
    size=st.integers(min_value=0, max_value=300),
    packets=st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)),
        min_size=1,
        max_size=4,
    ),
)
def test_echo_template_builds_and_writes_the_general_paths_bytes(
    v6: bool, cookie: bytes, size: int, packets: list[tuple[int, int, int]]
) -> None:
    template = _wire.EchoTemplate(v6=v6, cookie=cookie, size=size)
    buffer = bytearray(template.blank)
    for ident, seq, token in packets:
        payload = _wire.build_payload(cookie, token, size)
        expected = _wire.build_echo_request(v6=v6, ident=ident, seq=seq, payload=payload)
        assert template.build(ident, seq, token, cookie) == expected
        assert template.writable == (size >= _wire.TOKEN_OFFSET + 4)
        if template.writable:
            # Written over the blank packet, or over the previous packet of the same template (a reused
            # batch slot): the same bytes, with a valid ICMPv4 checksum.
            template.write_into(buffer, 0, ident, seq, token)
            assert bytes(buffer) == expected
            if not v6:
                assert _wire.checksum(bytes(buffer)) == 0
