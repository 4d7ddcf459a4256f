"""Forward and reverse name resolution, off the event loop."""

from __future__ import annotations

import functools
import ipaddress
import socket

import anyio
import anyio.to_thread

from ._exceptions import NameResolutionError
from ._models import Target

__all__ = ["ReverseResolver", "normalize_family", "resolve", "resolve_literal", "with_zone"]


def normalize_family(family: int | None) -> int | None:
    """Accept ``None``, ``4``/``6`` or ``socket.AF_INET``/``AF_INET6``; return an ``AF_*`` or ``None``."""
    if family is None:
        return None
    if family in (4, socket.AF_INET):
        return socket.AF_INET
    if family in (6, socket.AF_INET6):
        return socket.AF_INET6
    raise ValueError(f"family must be 4, 6, socket.AF_INET or socket.AF_INET6, not {family!r}")


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def resolve_literal(host: str, family: int | None = None) -> Target | None:
    """The `Target` for an address literal (no resolver involved), ``None`` if ``host`` is a name.

    Addresses are written as the kernel writes them (``inet_ntop``), so they compare equal to the source
    addresses ``recvmsg`` reports.
    """
    if not isinstance(host, str) or not host or host.isspace():
        raise ValueError(f"host must be a non-empty string, not {host!r}")
    target = _literal_target(host.strip())
    if target is None:
        return None
    fam = normalize_family(family) if family is not None else None
    if fam is not None and (fam == socket.AF_INET6) != target.v6:
        asked = "IPv6" if fam == socket.AF_INET6 else "IPv4"
        raise ValueError(f"{host} is an IPv{6 if target.v6 else 4} address but {asked} was asked for")
    return target


_new_target = tuple.__new__  # skips NamedTuple's Python-level __new__: this runs once per sweep target


@functools.lru_cache(maxsize=1 << 17)
def _literal_target(host: str) -> Target | None:
    # Cached: monitoring programs sweep the same addresses again and again.
    if ":" in host:
        if "%" in host:
            return None  # a scoped IPv6 literal: getaddrinfo finds its interface index
        try:
            addr = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host))
        except (OSError, ValueError):
            return None
        return _new_target(Target, (host, addr, True, (addr, 0, 0, 0)))
    try:
        socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        return None
    # inet_pton accepts only the canonical dotted quad (four decimal parts, no leading zeros), so the
    # text is already what recvmsg will report.
    return _new_target(Target, (host, host, False, (host, 0)))


async def resolve(host: str, family: int | None = None) -> Target:
    """Resolve ``host`` (a name or an address literal) to one `Target`, without blocking the loop.

    Literals never touch the resolver. For names, the first address getaddrinfo returns (its RFC 6724
    order) of the wanted family is taken.
    """
    target = resolve_literal(host, family)
    if target is not None:
        return target
    host = host.strip()
    fam = normalize_family(family)
    literal = _literal(host)
    try:
        infos = await anyio.getaddrinfo(
            host,
            None,
            family=fam or 0,
            type=socket.SOCK_DGRAM,
            flags=socket.AI_NUMERICHOST if literal is not None else 0,
        )
    except socket.gaierror as exc:
        raise NameResolutionError(host, exc.strerror or str(exc)) from exc
    except UnicodeError as exc:
        raise NameResolutionError(host, str(exc)) from exc
    for af, _type, _proto, _canon, sa in infos:
        if af in (socket.AF_INET, socket.AF_INET6):
            v6 = af == socket.AF_INET6
            addr, _, zone = str(sa[0]).partition("%")
            sockaddr = tuple(sa)
            scope = sa[3] if len(sa) > 3 else _zone_index(zone)
            if v6 and scope:
                # A scoped (link-local) address keeps its zone, by the interface's name; the kernel gets
                # the zone as the scope id (a "%zone" inside the address string would be lost on sendto).
                addr = f"{addr}%{_zone_name(scope)}"
                sockaddr = (str(sockaddr[0]).partition("%")[0], sockaddr[1], 0, scope)
            return Target(host=host, addr=addr, v6=v6, sockaddr=sockaddr)
    raise NameResolutionError(host, "no IPv4 or IPv6 address")


def _zone_index(zone: str) -> int:
    """The scope id of an IPv6 zone given by index or interface name; 0 for none or an unknown name."""
    if not zone:
        return 0
    if zone.isdigit():
        return int(zone)
    try:
        return socket.if_nametoindex(zone)
    except OSError:
        return 0


def _zone_name(scope: int | str) -> str:
    """The interface name of an IPv6 zone given by index or name (``fe80::1%eth0`` as the kernel writes it);
    the zone as given when no interface has it."""
    try:
        return socket.if_indextoname(int(scope))
    except (OSError, ValueError):
        return str(scope)


def with_zone(src: str, addr: str) -> str:
    """A link-local responder written with the zone of the scoped destination ``addr`` it was reached
    through (``fe80::1%eth0``), whatever the socket reported; any other address as it is."""
    if "%" not in addr or "%" in src or not src.lower().startswith("fe80:"):
        return src
    return src + addr[addr.index("%") :]


class ReverseResolver:
    """Reverse DNS with a per-client cache, in worker threads, bounded in time, never raising."""

    def __init__(self, *, timeout: float = 2.0) -> None:
        self._timeout = timeout
        self._cache: dict[str, str | None] = {}

    async def lookup(self, addr: str) -> str | None:
        if addr in self._cache:
            return self._cache[addr]
        name: str | None = None
        with anyio.move_on_after(self._timeout):
            try:
                name = await anyio.to_thread.run_sync(_reverse, addr, abandon_on_cancel=True)
            except OSError:
                name = None
        self._cache[addr] = name
        return name


def _reverse(addr: str) -> str | None:
    host, _port = socket.getnameinfo((addr, 0), socket.NI_NAMEREQD)
    return host if host != addr else None
