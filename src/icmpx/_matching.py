"""Which probe does a packet answer? Sequence allocation, the pending table and expiry. Pure.

No socket, no clock, no event loop here: times are integers (nanoseconds) passed in by the engine, so every
rule can be tested with made-up times.

A probe is keyed by ``ident << 16 | seq``. Each identifier offers 65,536 sequences; when all of one
identifier's sequences are in flight the allocator moves on to the next identifier, and asks its owner for
a new one (a new random identifier on a raw socket, a new ping socket, since there the kernel owns the
identifier) when every identifier it has is full.

Sequences and tokens are drawn at random from the operating system's CSPRNG (``os.urandom``, passed in by
the engine, read in bulk): a
target that sees some of our probes learns nothing about the sequence or token of any other, so it cannot
answer for a probe it did not receive (see docs/security.md).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

from ._models import MplsLabel

__all__ = [
    "TIMEOUT",
    "Entropy",
    "IdentSlot",
    "Outcome",
    "PendingTable",
    "Probe",
    "RandomPool",
    "Sink",
]

SEQ_SPACE = 1 << 16
_DRAW = 4096  # random numbers read from the entropy at a time
_CROWDED = SEQ_SPACE * 3 // 4  # past this many in flight, draw from a list of the free sequences


class Outcome(NamedTuple):
    """What became of a probe: a reply, an ICMP error, a local send error, or a timeout.

    ``rtt_ms`` and ``src`` are ``None`` when nothing answered.
    """

    rtt_ms: float | None
    error: str | None
    src: str | None = None
    dst: bytes | None = None
    """Raw IPv4 destination of the reply (our address) where the IP header was read."""
    ttl: int | None = None
    icmp_type: int = -1
    icmp_code: int = -1
    size: int = 0
    mpls: tuple[MplsLabel, ...] = ()
    weak: bool = False
    """An ICMP error matched on a short quote (identifier, sequence and checksum; see `Verdict.WEAK`)."""
    mtu: int | None = None
    """The next-hop MTU of a Fragmentation Needed / Packet Too Big message."""
    tos: int | None = None
    """The answer's TOS byte / traffic class, where the kernel reports it."""


TIMEOUT = Outcome(rtt_ms=None, error="timeout")


class Sink(Protocol):
    """Receives the outcomes of the probes of one call (a ping series, a trace, a sweep)."""

    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        """Called once per probe, from the engine's reader or timer; must be quick and must not raise.

        A sink that only needs the RTT of echo replies may also define ``deliver_rtt(probe, rtt_ms)``: the
        reader then hands matched echo replies to it, without building an `Outcome`.
        """

    def abort(self, exc: BaseException) -> None:
        """The engine is going away (client closed, socket failed): wake the caller with ``exc``."""


class Probe:
    """One echo request in flight. Mutable and slotted: the engine makes one per packet."""

    __slots__ = (
        "addr",
        "channel",
        "csum",
        "deadline_ns",
        "done",
        "ident",
        "key",
        "options",
        "packed",
        "payload_size",
        "sent_ns",
        "seq",
        "signature",
        "sink",
        "stamped",
        "tag",
        "ttl",
    )

    def __init__(
        self,
        addr: str,
        ident: int,
        seq: int,
        ttl: int,
        payload_size: int,
        signature: bytes,
        sink: Sink,
        tag: Any = None,
        channel: Any = None,
        sent_ns: int = 0,
        deadline_ns: int = 0,
        stamped: bool = False,
        packed: bytes | None = None,
        csum: int = -1,
    ) -> None:
        self.addr = addr
        self.ident = ident
        self.seq = seq
        self.key = (ident << 16) | seq
        self.ttl = ttl
        self.payload_size = payload_size
        self.signature = signature
        self.sink = sink
        self.tag = tag
        self.channel = channel
        self.sent_ns = sent_ns
        self.deadline_ns = deadline_ns
        self.done = False
        # Sent in a batch that asked the kernel for each packet's send time: until that stamp is read,
        # `sent_ns` is the time the batch was handed over (see Engine.send_batch).
        self.stamped = stamped
        self.packed = packed
        """The destination as ``inet_pton`` writes it (the reader's fast path compares replies to it)."""
        self.csum = csum
        """`_wire.sent_sum` of the request (-1: unknown): what a short quote's checksum must show."""
        self.options: Any = None
        """The call's `_options.ProbeOptions` (None: none asked), reported on the result."""

    def __repr__(self) -> str:
        return f"<Probe {self.addr} ident={self.ident} seq={self.seq} ttl={self.ttl} done={self.done}>"


class IdentSlot:
    """One identifier and how many of its sequences are in flight."""

    __slots__ = ("channel", "free", "ident", "in_flight")

    def __init__(self, ident: int, channel: Any = None) -> None:
        self.ident = ident
        self.channel = channel
        self.in_flight = 0
        self.free: list[int] = []
        """Free sequences to draw from once the identifier is crowded (see `PendingTable.allocate_run`)."""


Entropy = Callable[[int], bytes]
"""Where randomness comes from: ``n`` -> ``n`` random bytes (the engine passes ``os.urandom``, tests their
own; this module does no I/O)."""


class RandomPool:
    """Random 16-bit and 32-bit numbers, drawn from `Entropy` a few thousand at a time (one system call
    per draw costs more than the whole rest of a probe)."""

    __slots__ = ("_entropy", "_u16", "_u32")

    def __init__(self, entropy: Entropy) -> None:
        self._entropy = entropy
        self._u16: list[int] = []
        self._u32: list[int] = []

    def u16(self, count: int) -> list[int]:
        """``count`` random 16-bit numbers (sequences)."""
        return self._take(self._u16, "H", count)

    def u32(self, count: int) -> list[int]:
        """``count`` random 32-bit numbers (probe tokens)."""
        return self._take(self._u32, "I", count)

    def u16_one(self) -> int:
        """One random 16-bit number."""
        pool = self._u16
        return pool.pop() if pool else self._take(pool, "H", 1)[0]

    def token(self) -> int:
        """One random 32-bit number."""
        pool = self._u32
        return pool.pop() if pool else self._take(pool, "I", 1)[0]

    def _take(self, pool: list[int], typecode: str, count: int) -> list[int]:
        if len(pool) < count:
            size = array(typecode).itemsize
            pool.extend(array(typecode, self._entropy(size * max(count, _DRAW))))
        taken = pool[-count:]
        del pool[-count:]
        return taken


class PendingTable:
    """Probes in flight, by key; their deadlines; a short memory of finished keys.

    Deadlines live in one FIFO queue per timeout value: probes are added in send order, so each queue is
    sorted by deadline and adding or expiring a probe costs O(1) (a sweep uses one timeout for all).

    The memory tells a *duplicate* (a second answer to a probe that was answered) and a *late* answer (to a
    probe that timed out) from a packet that matches nothing we sent.
    """

    def __init__(self, new_ident: Callable[[], IdentSlot], *, entropy: Entropy, memory: int = 65536) -> None:
        self._new_ident = new_ident
        self.random = RandomPool(entropy)
        """Random sequences (here) and tokens (the engine's) come from this."""
        self._probes: dict[int, Probe] = {}
        self.get: Callable[[int], Probe | None] = self._probes.get
        """The pending probe of a key, or None (the dict's own method: the reader calls it per packet)."""
        self._slots: list[IdentSlot] = []
        self._slot_by_ident: dict[int, IdentSlot] = {}
        self._current = 0
        self._deadlines: dict[int, deque[Probe]] = {}
        self._memory = memory
        # key -> the probe's signature (answered) or a 1-tuple of it (timed out): the GC never visits bytes.
        # Two generations instead of one ordered map: a finish is one dict store, and when the newer
        # generation holds `memory` keys it becomes the older one, the older one is dropped. So the last
        # `memory` finished keys are always remembered, and never more than twice that.
        self._recent: dict[int, bytes | tuple[bytes]] = {}
        self._older: dict[int, bytes | tuple[bytes]] = {}

    def __len__(self) -> int:
        return len(self._probes)

    def __iter__(self) -> Iterator[Probe]:
        return iter(list(self._probes.values()))

    @property
    def idents(self) -> list[int]:
        return [slot.ident for slot in self._slots]

    def owns(self, ident: int) -> bool:
        return ident in self._slot_by_ident

    def add_slot(self, slot: IdentSlot, *, reserved: bool = False) -> None:
        """Own ``slot``'s identifier. A *reserved* slot (a socket with its own options, see
        `Engine.open_extra`) is never handed out by `allocate`: only by `allocate_in`."""
        if not reserved:
            self._slots.append(slot)
        self._slot_by_ident[slot.ident] = slot

    def allocate_in(self, slot: IdentSlot) -> int | None:
        """A free random sequence of ``slot``'s identifier; None while all 65,536 are in flight."""
        if slot.in_flight >= SEQ_SPACE:
            return None
        return self._draw(slot, 1)[0]

    def allocate(self) -> tuple[IdentSlot, int]:
        """A free (identifier, random sequence); a new identifier only when every one we have is full."""
        slot = self._slots[self._current] if self._slots else None
        if slot is None or slot.in_flight >= _CROWDED:
            slot, seqs = self.allocate_run(1)
            return slot, seqs[0]
        # The common case of `allocate_run(1)`, without its lists (ping and traceroute send this way).
        probes, base = self._probes, slot.ident << 16
        seq = self.random.u16_one()
        while (base | seq) in probes:
            seq = (seq + 1) & 0xFFFF
        return slot, seq

    def allocate_run(self, count: int) -> tuple[IdentSlot, list[int]]:
        """Up to ``count`` distinct free random sequences of one identifier (at least one; fewer when it fills
        up), for a batch. Register each with `add` (or `add_run`) before allocating again."""
        slot = self._free_slot()
        return slot, self._draw(slot, count)

    def _draw(self, slot: IdentSlot, count: int) -> list[int]:
        probes = self._probes
        base = slot.ident << 16
        room = min(count, SEQ_SPACE - slot.in_flight)
        if slot.in_flight + room > _CROWDED:
            return self._draw_crowded(slot, room)
        # Each a random draw, moved on to the next free sequence when that one is taken (in flight, or
        # already in this run): O(1) each while the identifier is far from full.
        seqs: dict[int, None] = {}
        for seq in self.random.u16(room):
            while (base | seq) in probes or seq in seqs:
                seq = (seq + 1) & 0xFFFF
            seqs[seq] = None
        return list(seqs)

    def _draw_crowded(self, slot: IdentSlot, room: int) -> list[int]:
        """``room`` random free sequences of an identifier that is filling up: drawn from a list of the
        free ones (rebuilt when it runs dry), so the cost stays O(1) each however full it gets."""
        probes = self._probes
        base = slot.ident << 16
        free = slot.free
        picked: list[int] = []
        taken: set[int] = set()
        while len(picked) < room:
            if not free:
                free = [seq for seq in range(SEQ_SPACE) if (base | seq) not in probes and seq not in taken]
                if not free:
                    break
            for draw in self.random.u16(min(room - len(picked), len(free))):
                at = draw % len(free)
                seq = free[at]
                free[at] = free[-1]
                free.pop()
                if (base | seq) not in probes:
                    picked.append(seq)
                    taken.add(seq)
                if not free:
                    break
        slot.free = free
        return picked

    def _free_slot(self) -> IdentSlot:
        for _ in range(len(self._slots)):
            slot = self._slots[self._current]
            if slot.in_flight < SEQ_SPACE:
                return slot
            self._current = (self._current + 1) % len(self._slots)
        slot = self._new_ident()
        self.add_slot(slot)
        self._current = len(self._slots) - 1
        return slot

    def add_run(self, slot: IdentSlot, probes: list[Probe], timeout_ns: int) -> None:
        """`add` for probes of one identifier, sent in this order, with one timeout."""
        self._probes.update({probe.key: probe for probe in probes})
        slot.in_flight += len(probes)
        queue = self._deadlines.get(timeout_ns)
        if queue is None:
            queue = self._deadlines[timeout_ns] = deque()
        queue.extend(probes)

    def add(self, probe: Probe, timeout_ns: int) -> None:
        """Register a sent probe (key from `allocate`, ``deadline_ns`` set, sent after earlier ones)."""
        self._probes[probe.key] = probe
        self._slot_by_ident[probe.ident].in_flight += 1
        queue = self._deadlines.get(timeout_ns)
        if queue is None:
            queue = self._deadlines[timeout_ns] = deque()
        queue.append(probe)

    def finish(self, probe: Probe, answered: bool) -> None:
        """Take a probe out of the table (answered, timed out or discarded). Idempotent."""
        if probe.done:
            return
        probe.done = True
        if self._probes.pop(probe.key, None) is not None:
            self._slot_by_ident[probe.ident].in_flight -= 1
        recent = self._recent
        recent[probe.key] = probe.signature if answered else (probe.signature,)
        if len(recent) >= self._memory:
            self._older, self._recent = recent, {}

    def finish_answered(self, probes: list[Probe]) -> None:
        """`finish` for answered probes that the caller already marked done (the reader's fast path
        does, so that a second reply read before this call is not taken for the first)."""
        pop = self._probes.pop
        slots = self._slot_by_ident
        recent = self._recent
        memory = self._memory
        for probe in probes:
            key = probe.key
            if pop(key, None) is not None:
                slots[probe.ident].in_flight -= 1
            recent[key] = probe.signature
            if len(recent) >= memory:
                self._older, self._recent = recent, {}
                recent = self._recent

    def recall(self, key: int, signature: bytes) -> str | None:
        """For a packet that matched no pending probe: ``"duplicate"``, ``"late"`` or ``None`` (unknown)."""
        seen = self._recent.get(key)
        if seen is None:
            seen = self._older.get(key)
            if seen is None:
                return None
        expected = seen if isinstance(seen, bytes) else seen[0]
        n = min(len(signature), len(expected))
        if signature[:n] != expected[:n]:
            return None
        return "duplicate" if isinstance(seen, bytes) else "late"

    def next_deadline(self) -> int | None:
        """Earliest deadline among pending probes (finished probes are dropped from the queues)."""
        earliest: int | None = None
        for timeout_ns, queue in list(self._deadlines.items()):
            while queue and queue[0].done:
                queue.popleft()
            if not queue:
                del self._deadlines[timeout_ns]
            elif earliest is None or queue[0].deadline_ns < earliest:
                earliest = queue[0].deadline_ns
        return earliest

    def prune(self) -> None:
        """Drop finished probes from the heads of the deadline queues, so answered probes are not kept
        alive until their deadline (cheap: amortised O(1) per probe)."""
        for queue in self._deadlines.values():
            while queue and queue[0].done:
                queue.popleft()

    def expire(self, now_ns: int) -> list[Probe]:
        """Remove and return the probes whose deadline is at or before ``now_ns``."""
        expired: list[Probe] = []
        for queue in self._deadlines.values():
            while queue and (queue[0].done or queue[0].deadline_ns <= now_ns):
                probe = queue.popleft()
                if not probe.done:
                    self.finish(probe, answered=False)
                    expired.append(probe)
        return expired

    def drain(self) -> list[Probe]:
        """Remove and return every pending probe (closing)."""
        probes = list(self._probes.values())
        for probe in probes:
            self.finish(probe, answered=False)
        self._deadlines.clear()
        return probes
