"""Forward and reverse name resolution, off the event loop."""

from __future__ import annotations

import ipaddress
import socket

import anyio
import anyio.to_thread

from ._engine import Target
from ._exceptions import NameResolutionError

__all__ = ["ReverseResolver", "normalize_family", "resolve"]


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


async def resolve(host: str, family: int | None = None) -> Target:
    """Resolve ``host`` (a name or an address literal) to one `Target`, without blocking the loop.

    Literals never touch the resolver. For names, the first address getaddrinfo returns (its RFC 6724
    order) of the wanted family is taken.
    """
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"host must be a non-empty string, not {host!r}")
    host = host.strip()
    fam = normalize_family(family)
    literal = _literal(host)
    if literal is not None and not (literal.version == 6 and literal.scope_id):
        v6 = literal.version == 6
        if fam is not None and (fam == socket.AF_INET6) != v6:
            raise ValueError(
                f"{host} is an IPv{literal.version} address but family IPv{6 if not v6 else 4} was asked"
            )
        addr = literal.compressed
        sockaddr: tuple[object, ...] = (addr, 0, 0, 0) if v6 else (addr, 0)
        return Target(host=host, addr=addr, v6=v6, sockaddr=sockaddr)
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
            addr = str(sa[0]).partition("%")[0]
            return Target(host=host, addr=addr, v6=v6, sockaddr=tuple(sa))
    raise NameResolutionError(host, "no IPv4 or IPv6 address")


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
