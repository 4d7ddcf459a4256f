"""Per-probe options: what the caller asked for, how it is checked, and the control messages it becomes.

Linux lets most of what ping(8)'s ``-I``, ``-Q`` and ``--mark`` set ride on each packet as a control message
of ``sendmsg``, so concurrent calls with different options still share the family's one socket:

=================  ===============================================  ======================================
option             IPv4                                             IPv6
=================  ===============================================  ======================================
``source``         ``IP_PKTINFO`` (``ipi_spec_dst``)                ``IPV6_PKTINFO`` (``ipi6_addr``)
``interface``      ``IP_PKTINFO`` (``ipi_ifindex``)                 ``IPV6_PKTINFO`` (``ipi6_ifindex``)
``tos``            ``IP_TOS``                                       ``IPV6_TCLASS``
``mark``           ``SO_MARK`` (raw sockets only: needs CAP_NET_RAW or CAP_NET_ADMIN)
``dont_fragment``  none per packet: a socket of its own per mode    ``IPV6_DONTFRAG`` (``"do"``)
=================  ===============================================  ======================================

IPv4 has no per-packet control of the DF bit (``IP_MTU_DISCOVER`` is a socket option), so a probe whose
``dont_fragment`` differs from the kernel's default (``"want"``: DF set unless the packet is larger than the
path MTU the kernel knows) goes out on one more socket of the family, opened lazily, one per mode (see
`Engine.open_extra`). ``interface`` is the ifindex of the packet-info message, not ``SO_BINDTODEVICE``
(which would pin the whole shared socket to one interface).

Everything is checked before anything is sent (`check_options` when the call starts, `SendOptions.build`
once the destination's family is known): out-of-range values, an unknown interface, a source address that
is not this host's, a source of the other family, ``mark`` on an unprivileged (ping) socket: each a
``ValueError`` naming the option.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from ._socket import IPV6_DONTFRAG, source_is_local

__all__ = ["DF_MODES", "ProbeOptions", "SendOptions", "check_options", "merge_options"]

# Linux values (in.h, in6.h, socket.h) of the control messages; CPython lacks some of them.
IP_TOS = 1
IP_PKTINFO = 8
IPV6_PKTINFO = 50
IPV6_TCLASS = 67
SO_MARK = 36
# IP_MTU_DISCOVER / IPV6_MTU_DISCOVER values.
PMTUDISC_DONT = 0
PMTUDISC_WANT = 1
PMTUDISC_DO = 2
PMTUDISC_PROBE = 3

DF_MODES = ("do", "dont", "want")
"""``dont_fragment`` as ping(8)'s ``-M`` spells it: set DF (never fragment), clear it (fragment when too big),
or the kernel's default (DF set, fragmenting locally beyond the path MTU the kernel learnt)."""
_DF_WORDS: dict[object, str] = {True: "do", False: "dont", "do": "do", "dont": "dont", "want": "want"}
# Modes that need a socket of their own, by family: the IP_MTU_DISCOVER value that socket is set to.
# "probe" (internal: path_mtu) sets DF and ignores the path MTU the kernel cached, on both families.
_MODE_SOCKET = {
    (False, "do"): PMTUDISC_DO,
    (False, "dont"): PMTUDISC_DONT,
    (False, "probe"): PMTUDISC_PROBE,
    (True, "probe"): PMTUDISC_PROBE,
}
_INT = struct.Struct("=i")
_U32 = struct.Struct("=I")


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Options of one call (merged with the client's defaults), checked but not yet tied to a family."""

    source: str | None = None
    interface: str | None = None
    tos: int | None = None
    dont_fragment: str | None = None
    mark: int | None = None
    ifindex: int = 0
    """The interface's index (0: none asked)."""


def _check_source(source: object) -> str:
    if not isinstance(source, str):
        raise TypeError(f"source must be an IP address string, not {source!r}")
    try:
        addr = ipaddress.ip_address(source.strip())
    except ValueError:
        raise ValueError(f"source must be an IPv4 or IPv6 address of this host, not {source!r}") from None
    return str(addr)


def _check_interface(interface: object) -> tuple[str, int]:
    if not isinstance(interface, str) or not interface or len(interface) >= 16 or "/" in interface:
        raise ValueError(f"interface must be a network interface name, not {interface!r}")
    try:
        return interface, socket.if_nametoindex(interface)
    except OSError:
        raise ValueError(f"unknown interface {interface!r} (no such network interface here)") from None


def _check_byte(value: object, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not 0 <= value <= high:
        raise ValueError(f"{name} must be between 0 and {high} (0x{high:x}), not {value}")
    return value


def check_options(
    *,
    source: str | None = None,
    interface: str | None = None,
    tos: int | None = None,
    dont_fragment: bool | str | None = None,
    mark: int | None = None,
) -> ProbeOptions | None:
    """Check the options a caller passed (before anything is sent); ``None`` when none was given."""
    if source is None and interface is None and tos is None and dont_fragment is None and mark is None:
        return None
    ifindex = 0
    if source is not None:
        source = _check_source(source)
        if not source_is_local(source, v6=":" in source):
            raise ValueError(f"source address {source} is not an address of this host")
    if interface is not None:
        interface, ifindex = _check_interface(interface)
    if tos is not None:
        tos = _check_byte(tos, "tos", 0xFF)
    mode: str | None = None
    if dont_fragment is not None:
        try:
            mode = _DF_WORDS[dont_fragment]
        except (KeyError, TypeError):
            raise ValueError(
                f"dont_fragment must be True, False, 'do', 'dont' or 'want', not {dont_fragment!r}"
            ) from None
    if mark is not None:
        mark = _check_byte(mark, "mark", 0xFFFFFFFF)
    return ProbeOptions(source, interface, tos, mode, mark, ifindex)


def merge_options(base: ProbeOptions | None, call: ProbeOptions | None) -> ProbeOptions | None:
    """The call's options over the client's defaults (each option separately)."""
    if base is None or call is None:
        return call if base is None else base
    interface, ifindex = (
        (call.interface, call.ifindex) if call.interface is not None else (base.interface, base.ifindex)
    )
    return ProbeOptions(
        call.source if call.source is not None else base.source,
        interface,
        call.tos if call.tos is not None else base.tos,
        call.dont_fragment if call.dont_fragment is not None else base.dont_fragment,
        call.mark if call.mark is not None else base.mark,
        ifindex,
    )


@dataclass(frozen=True, slots=True)
class SendOptions:
    """`ProbeOptions` for one family and socket kind: the control messages each packet carries, and the
    socket mode (``IP_MTU_DISCOVER`` value) of the extra socket it must go out on, if any."""

    asked: ProbeOptions
    cmsgs: tuple[tuple[int, int, bytes], ...]
    extra: tuple[int | None, str | None] | None
    """None: the family's shared socket. Else the extra socket to send on: its ``IP_MTU_DISCOVER`` value
    (None: the kernel's default) and the address it is bound to (None: none)."""

    @classmethod
    def build(cls, options: ProbeOptions, *, v6: bool, raw: bool, kind: str) -> SendOptions:
        """Tie ``options`` to a family and socket kind; ``ValueError`` for what cannot be honoured there."""
        family = "IPv6" if v6 else "IPv4"
        cmsgs: list[tuple[int, int, bytes]] = []
        source = options.source
        bind: str | None = None
        if source is not None:
            if (":" in source) != v6:
                raise ValueError(f"source address {source} cannot send to {family} destinations")
            if v6 and not raw:
                # An IPv6 ping socket takes the source from its bound address whatever IPV6_PKTINFO says:
                # such probes go out on a ping socket bound to it.
                bind, source = source, None
        if source is not None or options.ifindex:
            if v6:
                addr = socket.inet_pton(socket.AF_INET6, source or "::")
                cmsgs.append((socket.IPPROTO_IPV6, IPV6_PKTINFO, addr + _INT.pack(options.ifindex)))
            else:
                addr = socket.inet_pton(socket.AF_INET, source or "0.0.0.0")
                info = _INT.pack(options.ifindex) + addr + bytes(4)  # ifindex, spec_dst, addr
                cmsgs.append((socket.IPPROTO_IP, IP_PKTINFO, info))
        if options.tos is not None:
            level, kind_ = (socket.IPPROTO_IPV6, IPV6_TCLASS) if v6 else (socket.IPPROTO_IP, IP_TOS)
            cmsgs.append((level, kind_, _INT.pack(options.tos)))
        if options.mark is not None:
            if not raw:
                raise ValueError(
                    f"mark needs a raw socket (root or CAP_NET_RAW / CAP_NET_ADMIN): the kernel refuses "
                    f"SO_MARK on this client's {kind} {family} socket"
                )
            cmsgs.append((socket.SOL_SOCKET, SO_MARK, _U32.pack(options.mark)))
        df = options.dont_fragment
        mode = _MODE_SOCKET.get((v6, df)) if df is not None else None
        if v6 and df == "do":
            cmsgs.append((socket.IPPROTO_IPV6, IPV6_DONTFRAG, _INT.pack(1)))
        extra = (mode, bind) if mode is not None or bind is not None else None
        return cls(options, tuple(cmsgs), extra)
