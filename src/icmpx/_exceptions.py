"""The exceptions icmpx raises.

One root, so ``except icmpx.IcmpxError`` catches everything the library raises on purpose::

    IcmpxError
    ├── RawSocketPermissionError   neither a raw nor an unprivileged ICMP socket may be opened
    ├── SocketError                another system failure of the ICMP socket (``OSError`` too)
    ├── NameResolutionError        a host name did not resolve (``socket.gaierror`` stays the cause)
    ├── ClientClosedError          the client was closed, before or during the call
    └── MalformedPacketError       bytes that are not a well-formed ICMP packet (``ValueError`` too)

``MalformedPacket`` is the old name of ``MalformedPacketError``, kept as an alias.

Bad arguments raise plain ``ValueError`` (or ``TypeError``) before anything is sent. Timeouts and ICMP
errors are never exceptions: they are data on the result (``EchoResult.error``).
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "IcmpxError",
    "MalformedPacket",
    "MalformedPacketError",
    "NameResolutionError",
    "RawSocketPermissionError",
    "SocketError",
]


class IcmpxError(Exception):
    """Root of every exception icmpx raises on purpose.

    Timeouts and ICMP errors are never exceptions: they are data on the result (`EchoResult.error`).
    """


class RawSocketPermissionError(IcmpxError, PermissionError):
    """Neither a raw ICMP socket nor an unprivileged ICMP ("ping") socket could be opened.

    The message says how to grant either: ``setcap cap_net_raw+ep`` on the interpreter, or opening
    ``net.ipv4.ping_group_range`` to the user's group.
    """


class SocketError(IcmpxError, OSError):
    """A system error on the ICMP socket other than a missing permission.

    Also an ``OSError``, with its ``errno``: for instance the ``source`` address is not on this host.
    """


class NameResolutionError(IcmpxError):
    """A host name could not be resolved to an address of the wanted family.

    Raised by single-target calls (``probe``, ``ping``, ``traceroute``, ``mtr``); a sweep
    (``multiping``) reports it on the target's row (`PingStats.error`) instead.

    Attributes:
        host: The name that did not resolve.
        reason: The resolver's message (``socket.gaierror`` stays the ``__cause__``).
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"cannot resolve {host!r}: {reason}")
        self.host = host
        self.reason = reason


class ClientClosedError(IcmpxError):
    """The client is closed: it was used after ``aclose()``, or closed while the call was waiting."""


class MalformedPacketError(IcmpxError, ValueError):
    """The bytes are not a well-formed ICMP packet (too short, wrong type for the request, bad fields)."""


MalformedPacket = MalformedPacketError
"""The name of `MalformedPacketError` before 0.2 (an alias: the same class)."""
