"""The receive classifier on its own (no root, no socket): every finding of the forgery review as a case,
and the batch fast path held to the general path's verdicts on generated, mutated and forged packets."""

from __future__ import annotations

import itertools
import random
import socket
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icmpx import _mmsg, _wire
from icmpx._classify import Answer, BatchDecoder, Classifier, Tally, Verdict
from icmpx._matching import IdentSlot, Outcome, PendingTable, Probe

US_V4, TARGET_V4, DOWN_V4, ROUTER_V4 = "198.18.0.1", "198.18.1.2", "198.18.1.3", "198.18.0.254"
US_V6, TARGET_V6, DOWN_V6, ROUTER_V6 = "2001:db8::1", "2001:db8:1::2", "2001:db8:1::3", "2001:db8::fe"
SENT_NS = 1_000_000_000
DEADLINE_NS = SENT_NS + 1_000_000_000
COOKIE = bytes(range(1, 9))
CMSG = _mmsg.CMSG_HEADER


class Sink:
    def __init__(self) -> None:
        self.outcomes: dict[int, Outcome] = {}

    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        assert probe.key not in self.outcomes, "delivered twice"
        self.outcomes[probe.key] = outcome

    def abort(self, exc: BaseException) -> None:
        raise AssertionError("not closing")


@dataclass
class World:
    """A family's pending table with probes sent to two targets, and what they were sent as."""

    v6: bool
    raw: bool
    accept_weak: bool = True
    seed: int = 0
    table: PendingTable = field(init=False)
    classifier: Classifier = field(init=False)
    sink: Sink = field(init=False)
    probes: list[Probe] = field(init=False)
    packets: list[bytes] = field(init=False)
    tally: Tally = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.table = PendingTable(lambda: IdentSlot(4242), entropy=rng.randbytes)
        self.table.add_slot(IdentSlot(4321))
        self.classifier = Classifier(self.table, v6=self.v6, raw=self.raw, accept_weak=self.accept_weak)
        self.sink = Sink()
        self.tally = Tally()
        template = _wire.EchoTemplate(v6=self.v6, cookie=COOKIE, size=56)
        self.probes, self.packets = [], []
        for i in range(8):
            slot, seq = self.table.allocate()
            packet = template.build(slot.ident, seq, self.table.random.token(), COOKIE)
            addr = self.target if i % 2 == 0 else self.down
            probe = Probe(addr, slot.ident, seq, 64, 56, packet[8:20], self.sink)
            probe.sent_ns, probe.deadline_ns = SENT_NS, DEADLINE_NS
            probe.packed = socket.inet_pton(socket.AF_INET6 if self.v6 else socket.AF_INET, addr)
            probe.csum = _wire.sent_sum(packet, v6=self.v6)
            self.table.add(probe, 10**9)
            self.probes.append(probe)
            self.packets.append(packet)

    @property
    def target(self) -> str:
        return TARGET_V6 if self.v6 else TARGET_V4

    @property
    def down(self) -> str:
        return DOWN_V6 if self.v6 else DOWN_V4

    @property
    def us(self) -> str:
        return US_V6 if self.v6 else US_V4

    def settle(self, decision: tuple[Verdict, Probe | None, Answer | None]) -> None:
        """What the engine does with a verdict (the parts that do no I/O)."""
        verdict, probe, answer = decision
        self.tally.count(verdict)
        if probe is None or answer is None:
            return
        if verdict is Verdict.LATE:
            self.table.finish(probe, answered=False)
            probe.sink.deliver(probe, Outcome(None, "timeout"))
            return
        self.table.finish(probe, answered=True)
        probe.sink.deliver(probe, answer.outcome((answer.rx_ns - probe.sent_ns) / 1e6))

    # ------------------------------------------------------------------------------ packets on the wire

    def reply(self, i: int, *, payload: bytes | None = None) -> bytes:
        """The echo reply to probe ``i`` as its target sends it (ICMP only)."""
        sent = self.packets[i]
        body = sent[8:] if payload is None else payload
        return icmp(self.v6, 129 if self.v6 else 0, 0, sent[4:8] + body)

    def error(
        self, i: int, quote_len: int | None = None, *, fragment: bool = False, cs: int | None = None
    ) -> bytes:
        """A Time Exceeded about probe ``i`` quoting ``quote_len`` bytes of its ICMP message (all of it)."""
        sent = self.packets[i]
        if self.v6:
            sent = sent[:2] + struct.pack("!H", v6_checksum(self.us, self.probes[i].addr, sent)) + sent[4:]
        if cs is not None:
            sent = sent[:2] + struct.pack("!H", cs) + sent[4:]
        quoted = sent if quote_len is None else sent[:quote_len]
        header = ip_header(self.v6, self.us, self.probes[i].addr, len(sent), fragment=fragment)
        return icmp(self.v6, 3 if self.v6 else 11, 0, b"\0\0\0\0" + header + quoted)

    def framed(self, message: bytes, src: str) -> bytes:
        """What the socket reads: raw IPv4 sockets get the IP header too."""
        if self.raw and not self.v6:
            return ip_header(False, src, self.us, len(message)) + message
        return message

    def classify(self, message: bytes, src: str, rx_ns: int = SENT_NS + 100_000) -> Verdict:
        decision = self.classifier.packet(self.framed(message, src), src, rx_ns, None)
        self.settle(decision)
        return decision[0]


def icmp(v6: bool, icmp_type: int, code: int, rest: bytes) -> bytes:
    message = bytes([icmp_type, code, 0, 0]) + rest
    if v6:
        return message  # the kernel checks ICMPv6 checksums; the classifier never sees a bad one
    return message[:2] + struct.pack("!H", _wire.checksum(message)) + message[4:]


def ip_header(v6: bool, src: str, dst: str, payload_len: int, *, fragment: bool = False) -> bytes:
    if v6:
        base = struct.pack(
            "!IHBB16s16s",
            6 << 28,
            payload_len + (8 if fragment else 0),
            44 if fragment else 58,
            1,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        if fragment:
            base += struct.pack("!BBHI", 58, 0, (185 << 3) | 1, 0x1234)  # offset 185 * 8 bytes
        return base
    frag = 185 if fragment else 0
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + payload_len,
        7,
        frag,
        1,
        1,
        0,
        socket.inet_pton(socket.AF_INET, src),
        socket.inet_pton(socket.AF_INET, dst),
    )
    return header[:10] + struct.pack("!H", _wire.checksum(header)) + header[12:]


def v6_checksum(src: str, dst: str, message: bytes) -> int:
    zeroed = message[:2] + b"\0\0" + message[4:]
    pseudo = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!I", len(zeroed))
        + b"\0\0\0\x3a"
    )
    return _wire.checksum(pseudo + zeroed)


KINDS = [(False, True), (False, False), (True, True), (True, False)]
KIND_IDS = ["raw-v4", "dgram-v4", "raw-v6", "dgram-v6"]


# ------------------------------------------------------------------------------------------ findings


@pytest.mark.parametrize(("v6", "raw"), KINDS, ids=KIND_IDS)
def test_a_seen_signature_cannot_answer_another_probe(v6: bool, raw: bool) -> None:
    """Finding 1: the target saw probe 0; it forges replies for the down host's probe 1 with probe 0's
    payload (same cookie, the next tokens) and probe 1's identifier and sequence."""
    world = World(v6=v6, raw=raw)
    seen = world.packets[0]
    token = int.from_bytes(seen[16:20], "big")
    down = world.probes[1]
    for guess in range(token - 50, token + 50):
        payload = seen[8:16] + (guess & 0xFFFFFFFF).to_bytes(4, "big") + seen[20:]
        forged = icmp(v6, 129 if v6 else 0, 0, struct.pack("!HH", down.ident, down.seq) + payload)
        assert world.classify(forged, world.down) is Verdict.FORGED
    assert world.sink.outcomes == {}
    assert world.tally.forged == 100
    assert world.classify(world.reply(1), world.down) is Verdict.REPLY  # the real one still counts


def test_tokens_and_sequences_of_consecutive_probes_are_unrelated() -> None:
    """Finding 1, at the source: nothing about the next probe follows from the last one."""
    world = World(v6=False, raw=True, seed=11)
    tokens = [int.from_bytes(p.signature[8:12], "big") for p in world.probes]
    seqs = [p.seq for p in world.probes]
    assert len({(b - a) % 2**32 for a, b in itertools.pairwise(tokens)}) == len(tokens) - 1
    assert len({(b - a) % 2**16 for a, b in itertools.pairwise(seqs)}) == len(seqs) - 1


@pytest.mark.parametrize(("v6", "raw"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("quote_len", [8, 12, 16, 18])
def test_a_short_quote_is_weak_and_needs_the_checksum(v6: bool, raw: bool, quote_len: int) -> None:
    """Finding 2: quotes of the IP header + 8 bytes, or the cookie and a cut token, were matched on the
    prefix they showed. Now: the quoted checksum must be the probe's (it covers the random token)."""
    world = World(v6=v6, raw=raw)
    probe = world.probes[0]
    right_cs = struct.unpack("!H", world.error(0, None)[4 + (40 if v6 else 20) + 2 :][:2])[0]
    forged = world.error(0, quote_len, cs=(right_cs + 1) & 0xFFFF)
    assert world.classify(forged, ROUTER_V6 if v6 else ROUTER_V4) is Verdict.FORGED
    genuine = world.error(0, quote_len)
    verdict = world.classify(genuine, ROUTER_V6 if v6 else ROUTER_V4)
    assert verdict is Verdict.WEAK
    outcome = world.sink.outcomes[probe.key]
    assert outcome.weak
    assert outcome.error == "time-exceeded"
    assert (world.tally.errors, world.tally.weak, world.tally.forged) == (1, 1, 1)


@pytest.mark.parametrize("v6", [False, True])
def test_a_client_may_refuse_weak_matches(v6: bool) -> None:
    world = World(v6=v6, raw=True, accept_weak=False)
    router = ROUTER_V6 if v6 else ROUTER_V4
    assert world.classify(world.error(0, 8), router) is Verdict.REFUSED
    assert world.classify(world.error(2, None), router) is Verdict.ERROR  # a full quote still counts
    assert world.tally.refused == 1
    assert world.probes[0].key not in world.sink.outcomes
    assert not world.sink.outcomes[world.probes[2].key].weak


@pytest.mark.parametrize("v6", [False, True])
def test_a_full_quote_must_carry_the_whole_signature(v6: bool) -> None:
    world = World(v6=v6, raw=True)
    router = ROUTER_V6 if v6 else ROUTER_V4
    sent = world.packets[0]
    world.packets[0] = sent[:19] + bytes([sent[19] ^ 1]) + sent[20:]  # the quote's token is off by a bit
    assert world.classify(world.error(0, None), router) is Verdict.FORGED
    world.packets[0] = sent
    assert world.classify(world.error(0, None), router) is Verdict.ERROR


@pytest.mark.parametrize("v6", [False, True])
def test_a_quote_of_a_non_first_fragment_names_no_probe(v6: bool) -> None:
    """Finding 5: the bytes after a later fragment's IP header are payload, not an echo header."""
    world = World(v6=v6, raw=True)
    message = world.error(0, None, fragment=True)
    parsed = _wire.parse_icmp(message, v6=v6)
    assert parsed.quoted is not None
    assert parsed.quoted.fragment
    assert parsed.quoted.ident is None
    assert world.classify(message, ROUTER_V6 if v6 else ROUTER_V4) is Verdict.FOREIGN
    assert world.sink.outcomes == {}


def test_a_bad_checksum_on_raw_ipv4_is_counted_not_answered() -> None:
    """Finding 4: the kernel checks ICMPv6 and ping-socket checksums, never raw ICMPv4 ones."""
    world = World(v6=False, raw=True)
    reply = bytearray(world.reply(0))
    reply[30] ^= 0xFF  # a padding byte changed on the way: the checksum no longer adds up
    assert world.classify(bytes(reply), world.target) is Verdict.BAD_CHECKSUM
    error = bytearray(world.error(2, None))
    error[2] ^= 1
    assert world.classify(bytes(error), ROUTER_V4) is Verdict.BAD_CHECKSUM
    assert world.tally.bad_checksum == 2
    assert world.classify(world.reply(0), world.target) is Verdict.REPLY


def test_checksum_ok_agrees_with_rfc_1071() -> None:
    rng = random.Random(3)
    for size in range(8, 200):
        message = bytearray(rng.randbytes(size))
        message[2:4] = b"\0\0"
        message[2:4] = struct.pack("!H", _wire.checksum(message))
        assert _wire.checksum_ok(message)
        message[rng.randrange(size)] ^= 1 << rng.randrange(8)
        assert not _wire.checksum_ok(message)
    assert not _wire.checksum_ok(bytes(8))  # all zero: its checksum would be 0xFFFF


@pytest.mark.parametrize(("v6", "raw"), KINDS, ids=KIND_IDS)
def test_replies_short_wrongly_sourced_and_late(v6: bool, raw: bool) -> None:
    world = World(v6=v6, raw=raw)
    sent = world.packets[0]
    assert world.classify(world.reply(0, payload=sent[8:12]), world.target) is Verdict.FORGED  # 4 bytes
    assert world.classify(world.reply(0), world.down) is Verdict.FOREIGN  # from the other host
    assert world.classify(world.reply(0), world.target, rx_ns=DEADLINE_NS + 1) is Verdict.LATE
    assert world.sink.outcomes[world.probes[0].key].error == "timeout"
    assert world.classify(world.reply(0), world.target) is Verdict.LATE  # remembered as timed out
    assert world.classify(world.reply(2), world.target) is Verdict.REPLY
    assert world.classify(world.reply(2), world.target) is Verdict.DUPLICATE


# ------------------------------------------------------------------------------ fast path = general path


def sockaddr(v6: bool, addr: str) -> bytes:
    if v6:
        return struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, addr), 0)
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_pton(socket.AF_INET, addr))


def stamp(rx_ns: int, control_size: int) -> bytes:
    sec, nsec = divmod(rx_ns, 1_000_000_000)
    body = struct.pack("@ll", sec, nsec) + bytes(32)
    return (CMSG.pack(CMSG.size + len(body), socket.SOL_SOCKET, 37) + body).ljust(control_size, b"\0")


MUTATIONS = [
    "reply",
    "reply-again",
    "late",
    "short",
    "forged-token",
    "wrong-source",
    "foreign-ident",
    "bad-checksum",
    "flip-byte",
    "truncate",
    "error-full",
    "error-short",
    "error-short-bad-cs",
    "error-fragment",
    "random",
]


def build(world: World, kind: str, i: int, rng: random.Random) -> tuple[bytes, str, int]:
    """One packet of ``kind`` about probe ``i``: (datagram as read, source, receive time)."""
    router = ROUTER_V6 if world.v6 else ROUTER_V4
    src = world.probes[i].addr
    rx = SENT_NS + 50_000
    sent = world.packets[i]
    if kind in ("reply", "reply-again"):
        message = world.reply(i)
    elif kind == "late":
        message, rx = world.reply(i), DEADLINE_NS + 5
    elif kind == "short":
        message = world.reply(i, payload=sent[8:12])
    elif kind == "forged-token":
        message = world.reply(i, payload=sent[8:16] + rng.randbytes(4) + sent[20:])
    elif kind == "wrong-source":
        message, src = world.reply(i), (world.down if src == world.target else world.target)
    elif kind == "foreign-ident":
        message = icmp(world.v6, 129 if world.v6 else 0, 0, struct.pack("!HH", 999, 1) + sent[8:])
    elif kind == "bad-checksum":
        message = world.reply(i)
        message = message[:2] + bytes([message[2] ^ 0x55]) + message[3:]
    elif kind == "flip-byte":
        message = bytearray(world.reply(i))
        message[rng.randrange(4, len(message))] ^= 1 << rng.randrange(8)
        message = bytes(message)
    elif kind == "truncate":
        message = world.reply(i)[: rng.randrange(0, 20)]
    elif kind == "error-full":
        message, src = world.error(i, None), router
    elif kind == "error-short":
        message, src = world.error(i, rng.choice([8, 12, 18])), router
    elif kind == "error-short-bad-cs":
        message, src = world.error(i, 8, cs=rng.randrange(0x10000)), router
    elif kind == "error-fragment":
        message, src = world.error(i, None, fragment=True), router
    else:
        message = rng.randbytes(rng.randrange(0, 90))
    return world.framed(message, src), src, rx


@pytest.mark.parametrize(("v6", "raw"), KINDS, ids=KIND_IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 7)), min_size=1, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_the_fast_path_reaches_the_general_paths_verdicts(
    v6: bool, raw: bool, batch: list[tuple[str, int]], seed: int
) -> None:
    """Finding 3 too: every slot is first filled with a whole valid reply (what an earlier read left there)
    and then overwritten by the packet of this read: the fast path must never read past its length."""
    general, fast = World(v6=v6, raw=raw, seed=seed), World(v6=v6, raw=raw, seed=seed)
    rng = random.Random(seed)
    packets = [build(general, kind, i, rng) for kind, i in batch]

    for data, src, rx in packets:  # the reference: one packet at a time through the classifier
        general.settle(general.classifier.packet(data, src, rx, None))

    bufsize, control_size, n = 512, 128, len(packets)
    data_buf, control, names = bytearray(n * bufsize), bytearray(n * control_size), bytearray(n * 28)
    lengths: list[tuple[int]] = []
    for k, (data, src, rx) in enumerate(packets):
        stale = fast.framed(fast.reply(k % 8), fast.probes[k % 8].addr)
        data_buf[k * bufsize : k * bufsize + len(stale)] = stale
        data_buf[k * bufsize : k * bufsize + len(data)] = data
        control[k * control_size : (k + 1) * control_size] = stamp(rx, control_size)
        names[k * 28 : k * 28 + len(sockaddr(v6, src))] = sockaddr(v6, src)
        lengths.append((len(data),))
    decoder = BatchDecoder(
        fast.classifier,
        data=data_buf,
        control=control,
        names=names,
        bufsize=bufsize,
        control_size=control_size,
        name_size=28,
        cmsg_header=CMSG.size,
        stamp_head=bytes(control[: CMSG.size]),
    )

    def slow(k: int) -> None:
        data, src, rx = packets[k]
        fast.settle(fast.classifier.packet(data, src, rx, None))

    def full(probe: Probe, k: int, rtt_ms: float, length: int) -> None:
        probe.sink.deliver(probe, Outcome(rtt_ms, None))

    decoder.take(iter(lengths), n, 0, SENT_NS, slow, full, fast.tally)

    assert {key: (o.error, o.rtt_ms) for key, o in fast.sink.outcomes.items()} == {
        key: (o.error, o.rtt_ms) for key, o in general.sink.outcomes.items()
    }
    counters = [name for name in Tally.__slots__]
    assert {c: getattr(fast.tally, c) for c in counters} == {c: getattr(general.tally, c) for c in counters}
    assert len(fast.table) == len(general.table)
