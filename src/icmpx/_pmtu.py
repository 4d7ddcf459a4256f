"""path_mtu: the largest packet that reaches a host unfragmented, and the hop where the MTU drops.

Theory of operation
-------------------
Probes are echo requests sent with DF set on the family's *probe* socket (`Engine.open_extra` with
``IP_PMTUDISC_PROBE`` / ``IPV6_PMTUDISC_PROBE``, and ``IPV6_DONTFRAG``): the kernel sets DF but does not
hold the packet to the path MTU it has cached for the destination, only to the first link's MTU. So a
path MTU learnt earlier (by us, by another program, or stale) can neither fool the search nor make it
skip the router that reports it: every probe is checked by the path itself. (A probe larger than the
first link fails at once, locally, with ``EMSGSIZE``: an immediate answer, not a wait.)

1. **Sizes**: each round sends probes of many sizes at once, one per size, spread over the interval
   still open ``[lo, hi]`` (``lo`` the largest size answered, ``hi`` below the smallest refused) and
   the usual MTU plateaus inside it (RFC 1191's table, 1500, 1492, 1480, 1400, 1280, ...). An echo reply
   raises ``lo``; a Fragmentation Needed / Packet Too Big lowers ``hi`` to the next-hop MTU it carries (and
   names the router); a local ``EMSGSIZE`` lowers it below that size; silence (a router that drops the
   packet and says nothing, a "PMTU black hole") lowers it below that size too, so the search becomes a
   bisection that costs one timeout per round. Rounds continue until ``lo == hi``: a few rounds at most.
2. **The hop**: when the path MTU is below the first link's, probes one byte larger than it go to every
   TTL at once. A router checks the TTL before the MTU, so the probe at TTL ``j`` still gets Time Exceeded
   from router ``j`` (the last router before the narrow link) and the probe at ``j + 1`` does not (Packet
   Too Big from router ``j``, or silence): ``hop`` is ``j``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import anyio

from ._engine import Engine
from ._matching import Outcome, Probe
from ._models import Target
from ._options import ProbeOptions, SendOptions
from ._traceroute import run_round

__all__ = ["PathMtu", "path_mtu"]

_HEADER = {False: 20 + 8, True: 40 + 8}  # IP and ICMP headers of an echo request
_MINIMUM = {False: 68, True: 1280}  # RFC 791 / RFC 8200: every link carries this much
_MAXIMUM = {False: 65535, True: 65535 + 40}
_PLATEAUS = (65535, 32000, 17914, 9000, 8166, 4352, 2002, 1500, 1492, 1480, 1460, 1400, 1280, 1006, 576, 296)
_PER_ROUND = 12
_MAX_ROUNDS = 8
_TOO_BIG = frozenset({"packet-too-big", "fragmentation-needed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMtu:
    """The path MTU to one host (`AsyncClient.path_mtu`); sizes are whole IP packets in bytes."""

    target: str
    """The host as it was asked for (name or address)."""
    addr: str
    """The address probed."""
    mtu: int | None
    """The largest IP packet (headers included) that reached the host unfragmented; ``None`` when not even
    the smallest probe (68 bytes on IPv4, 1280 on IPv6) got an answer."""
    hop: int | None
    """TTL of the last router before the narrowest link: the one that cannot forward a larger packet
    (it answers Time Exceeded at this TTL, and drops larger probes sent further). ``None`` when the path MTU
    is the first link's (nothing narrower on the way) or the hop could not be found."""
    hop_addr: str | None
    """That router's address (``None`` with ``hop``)."""
    reported: bool
    """True when a router said so (Fragmentation Needed / Packet Too Big with the next-hop MTU); False when
    the MTU was found by bisection alone (the router dropped larger packets silently, or none was
    smaller than the first link's)."""
    probes: int
    """Echo requests sent (failures to send a probe larger than the first link included)."""


class _Collect:
    """A sink for one round: outcomes by tag, one wake-up when all are in."""

    def __init__(self, expected: int) -> None:
        self.outcomes: dict[int, Outcome] = {}
        self.expected = expected
        self.failure: BaseException | None = None
        self.done = anyio.Event()

    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        self.outcomes[probe.tag] = outcome
        if len(self.outcomes) >= self.expected:
            self.done.set()

    def abort(self, exc: BaseException) -> None:
        self.failure = exc
        self.done.set()


def candidate_sizes(lo: int, hi: int, per_round: int = _PER_ROUND) -> list[int]:
    """Sizes to try in ``(lo, hi]``: ``hi`` itself, the plateaus inside, evenly spread points; at most about
    ``per_round`` (plus the plateaus), largest first."""
    if hi <= lo:
        return []
    sizes = {hi}
    sizes.update(p for p in _PLATEAUS if lo < p < hi)
    step = (hi - lo) / per_round
    sizes.update(lo + max(1, round(step * k)) for k in range(1, per_round) if lo + step * k < hi)
    return sorted(sizes, reverse=True)


async def _round(
    engine: Engine,
    target: Target,
    sizes: list[int],
    *,
    ttl: int,
    timeout: float,
    options: SendOptions,
) -> dict[int, Outcome]:
    sink = _Collect(len(sizes))
    sent: list[Probe] = []
    header = _HEADER[target.v6]
    try:
        with engine.watch(sink):
            for size in sizes:
                probe = await engine.send(
                    target,
                    ttl=ttl,
                    payload_size=size - header,
                    timeout=timeout,
                    sink=sink,
                    tag=size,
                    options=options,
                )
                sent.append(probe)
            await sink.done.wait()
            if sink.failure is not None:
                raise copy.copy(sink.failure)
    finally:
        engine.discard(sent)
    return sink.outcomes


async def path_mtu(
    engine: Engine,
    target: Target,
    *,
    timeout: float,
    max_hops: int,
    ttl: int,
    asked: ProbeOptions | None,
) -> PathMtu:
    """Find the path MTU to ``target`` (see the module docstring)."""
    v6 = target.v6
    base = asked or ProbeOptions()
    probing = ProbeOptions(base.source, base.interface, base.tos, "probe", base.mark, base.ifindex)
    options = await engine.send_options(probing, v6)
    assert options is not None
    lo, hi = 0, _MAXIMUM[v6]
    first = True
    reported = False
    reporter: str | None = None
    smallest_remote_failure: int | None = None  # a size the first link let out but the path refused
    probes = 0
    for _ in range(_MAX_ROUNDS):
        sizes = candidate_sizes(lo, hi)
        if first:
            if _MINIMUM[v6] not in sizes:
                sizes.append(_MINIMUM[v6])  # can we reach the host at all?
            first = False
        if not sizes:
            break
        outcomes = await _round(engine, target, sizes, ttl=ttl, timeout=timeout, options=options)
        probes += len(sizes)
        for size in sorted(outcomes):
            outcome = outcomes[size]
            if outcome.error is None:
                lo = max(lo, size)
                continue
            if outcome.src is not None and outcome.error in _TOO_BIG:
                reported = True
                reporter = outcome.src
                limit = outcome.mtu if outcome.mtu is not None and outcome.mtu < size else size - 1
            else:
                limit = size - 1
            left = outcome.src is not None or outcome.error == "timeout"
            if left and (smallest_remote_failure is None or size < smallest_remote_failure):
                # It left this host: the path, not the first link, refused it.
                smallest_remote_failure = size
            hi = min(hi, limit)
        if lo == 0:
            # Not even the smallest packet was answered: the host is unreachable (or does not answer).
            return PathMtu(
                target=target.host,
                addr=target.addr,
                mtu=None,
                hop=None,
                hop_addr=None,
                reported=False,
                probes=probes,
            )
        hi = max(hi, lo)  # a reply above a silent size: that one was lost, not too big
        if lo == hi:
            break
    mtu = lo
    hop: int | None = None
    hop_addr: str | None = None
    if smallest_remote_failure is not None and smallest_remote_failure > mtu:
        hop, hop_addr, sent = await _find_hop(
            engine, target, mtu + 1, timeout=timeout, max_hops=max_hops, options=options
        )
        probes += sent
        if hop_addr is None:
            hop_addr = reporter
    return PathMtu(
        target=target.host,
        addr=target.addr,
        mtu=mtu,
        hop=hop,
        hop_addr=hop_addr,
        reported=reported,
        probes=probes,
    )


async def _find_hop(
    engine: Engine, target: Target, size: int, *, timeout: float, max_hops: int, options: SendOptions
) -> tuple[int | None, str | None, int]:
    """Probes of ``size`` (one byte over the path MTU) at every TTL at once: the last TTL answered with
    Time Exceeded before one that is not is the router that cannot forward them."""
    trace = await run_round(
        engine,
        target,
        ttls=range(1, max_hops + 1),
        probes=1,
        timeout=timeout,
        payload_size=size - _HEADER[target.v6],
        checksum=None,
        options=options,
    )
    sent = len(trace.sent)
    previous: str | None = None
    for ttl in trace.ttls:
        outcome = trace.outcomes[ttl][0]
        if outcome is None or outcome.error != "time-exceeded":
            if ttl == 1:
                return None, None, sent
            return ttl - 1, previous, sent
        previous = outcome.src
    return None, None, sent
