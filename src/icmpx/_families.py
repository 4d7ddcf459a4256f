"""A client's sockets, by address family: opening them (off the event loop), their pending tables and
classifiers, more identifiers when one fills up, and the extra sockets some probe options need.

The engine (`_engine`) sends and settles; this module owns what it sends on and reads from. Opening a
family's socket happens on first use, in the caller's thread (so in its network namespace); the wait for
kernel receive timestamps (up to 50 ms, once per process) runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import anyio
import anyio.to_thread

from . import _socket as S
from ._classify import Classifier
from ._exceptions import ClientClosedError
from ._matching import IdentSlot, PendingTable
from ._reader import Channel, Receiver, open_reader

__all__ = ["Extra", "Families", "Family"]


class Extra:
    """One more socket of a family for probes whose options a control message cannot carry (IPv4's DF
    bit, path MTU probes: ``IP_MTU_DISCOVER`` is per socket). A raw one only sends (the family's raw
    socket reads every answer); a ping socket has its own identifier (a reserved slot) and reader."""

    __slots__ = ("channel", "icmp", "slot")

    def __init__(self, icmp: S.IcmpSocket, channel: Channel | None, slot: IdentSlot | None) -> None:
        self.icmp = icmp
        self.channel = channel
        self.slot = slot


class Family:
    __slots__ = ("channels", "classifier", "extras", "table", "tos", "v6")

    def __init__(self, v6: bool, table: PendingTable, classifier: Classifier) -> None:
        self.v6 = v6
        self.channels: list[Channel] = []
        self.table = table
        self.classifier = classifier
        self.tos = False
        """Whether the sockets report each reply's TOS (once a call asked for ``tos``: `S.receive_tos`)."""
        self.extras: dict[tuple[int | None, str | None], Extra] = {}
        """Extra sockets by (``IP_MTU_DISCOVER`` mode, bound address), opened on first use
        (`Families.open_extra`)."""


class Families(dict[bool, Family]):
    """The open families by ``v6``; opens them (`open`, `open_extra`) with the client's settings."""

    def __init__(
        self,
        *,
        privileged: bool | None,
        source: str | None,
        ttl: int,
        accept_weak: bool,
        receiver: Receiver,
        start_reader: Callable[[Channel], object],
        is_closed: Callable[[], bool],
    ) -> None:
        super().__init__()
        self._privileged = privileged
        self._source = source
        self._default_ttl = ttl
        self._accept_weak = accept_weak
        self._receiver = receiver
        self._start_reader = start_reader
        self._is_closed = is_closed
        self._opening: dict[bool, anyio.Event] = {}
        self._opening_extras: dict[tuple[bool, tuple[int | None, str | None]], anyio.Event] = {}

    def require(self, v6: bool) -> Family:
        fam = self.get(v6)
        if fam is None:
            raise RuntimeError("the family's socket is not open: await Engine.open() first")
        return fam

    async def open(self, v6: bool) -> Family:
        """The family's socket and reader, opened on first use, in a worker thread."""
        fam = self.get(v6)
        if fam is not None:
            return fam
        while (opening := self._opening.get(v6)) is not None:
            await opening.wait()  # another call is opening it
            fam = self.get(v6)
            if fam is not None:
                return fam
        if self._is_closed():
            raise ClientClosedError("the client is closed")
        if self._source is not None and (":" in self._source) != v6:
            raise ValueError(
                f"the client's source address {self._source} cannot send to IPv{6 if v6 else 4} destinations"
            )
        opened = self._opening[v6] = anyio.Event()
        try:
            # Opened here, in the caller's thread (and so its network namespace); the wait for kernel
            # receive timestamps (once per process, up to 50 ms of sleeping) in a worker thread.
            icmp = S.open_icmp_socket(
                v6=v6, privileged=self._privileged, source=self._source, ttl=self._default_ttl, warm_up=False
            )
            try:
                if not S.receive_timestamps_ready():
                    await anyio.to_thread.run_sync(S.wait_for_receive_timestamps)
                if self._is_closed():
                    raise ClientClosedError("the client is closed")
                return self._install(v6, icmp)
            except BaseException:
                icmp.close()
                raise
        finally:
            del self._opening[v6]
            opened.set()

    async def open_extra(self, v6: bool, which: tuple[int | None, str | None]) -> Extra:
        """The family's extra socket ``which`` = (``IP_MTU_DISCOVER`` / ``IPV6_MTU_DISCOVER`` mode or None,
        address to bind or None), opened on first use (see `Extra`), of the same kind as the family's."""
        fam = await self.open(v6)
        extra = fam.extras.get(which)
        if extra is not None:
            return extra
        key = (v6, which)
        while (opening := self._opening_extras.get(key)) is not None:
            await opening.wait()
            extra = fam.extras.get(which)
            if extra is not None:
                return extra
        if self._is_closed():
            raise ClientClosedError("the client is closed")
        opened = self._opening_extras[key] = anyio.Event()
        mode, bind = which
        try:
            raw = fam.channels[0].icmp.raw
            icmp = S.open_icmp_socket(
                v6=v6, privileged=raw, source=bind or self._source, ttl=self._default_ttl, warm_up=False
            )
            try:
                if mode is not None:
                    S.set_pmtu_mode(icmp.sock, v6=v6, mode=mode)
                if icmp.raw:
                    S.receive_nothing(icmp.sock)
                    extra = Extra(icmp, None, None)
                else:
                    assert icmp.ident is not None
                    channel = self._start_channel(fam, icmp)
                    slot = IdentSlot(icmp.ident, channel)
                    fam.table.add_slot(slot, reserved=True)
                    extra = Extra(icmp, channel, slot)
            except BaseException:
                icmp.close()
                raise
            fam.extras[which] = extra
            return extra
        finally:
            del self._opening_extras[key]
            opened.set()

    def _install(self, v6: bool, icmp: S.IcmpSocket) -> Family:
        holder: list[Family] = []
        if icmp.raw:
            table = PendingTable(lambda: self._new_raw_ident(holder[0]), entropy=os.urandom)
        else:
            table = PendingTable(lambda: self._new_dgram_ident(holder[0]), entropy=os.urandom)
        fam = Family(v6, table, Classifier(table, v6=v6, raw=icmp.raw, accept_weak=self._accept_weak))
        holder.append(fam)
        first = self._start_channel(fam, icmp)
        if icmp.raw:
            table.add_slot(IdentSlot(random.randrange(1, 0x10000), first))
            S.filter_idents(icmp.sock, v6=v6, idents=table.idents)
            S.discard_queued(icmp.sock)  # what came before the filter: not ours, nothing is sent yet
        else:
            assert icmp.ident is not None
            table.add_slot(IdentSlot(icmp.ident, first))
        self[v6] = fam
        return fam

    def _start_channel(self, fam: Family, icmp: S.IcmpSocket) -> Channel:
        if fam.tos:
            S.receive_tos(icmp)
        channel = Channel(icmp, fam.classifier)
        open_reader(channel, self._receiver)
        fam.channels.append(channel)
        self._start_reader(channel)
        return channel

    def _new_raw_ident(self, fam: Family) -> IdentSlot:
        used = set(fam.table.idents)
        ident = random.randrange(1, 0x10000)
        while ident in used:
            ident = random.randrange(1, 0x10000)
        channel = fam.channels[0]
        S.filter_idents(channel.sock, v6=fam.v6, idents=[*used, ident])
        return IdentSlot(ident, channel)

    def _new_dgram_ident(self, fam: Family) -> IdentSlot:
        # A ping socket's identifier belongs to the kernel: more identifiers means more sockets.
        icmp = S.open_icmp_socket(v6=fam.v6, privileged=False, source=self._source, ttl=self._default_ttl)
        channel = self._start_channel(fam, icmp)
        assert icmp.ident is not None
        return IdentSlot(icmp.ident, channel)
