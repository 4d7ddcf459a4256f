"""icmpx: asyncio-native ICMP diagnostics.

    async with icmpx.AsyncClient() as client:
        results = await client.ping("127.0.0.1", count=3, interval=0.2)

One ICMP socket per address family per client, one reader task demultiplexing every reply and error.
"""

from ._client import AsyncClient
from ._exceptions import (
    ClientClosedError,
    IcmpxError,
    MalformedPacket,
    NameResolutionError,
    RawSocketPermissionError,
    SocketError,
)
from ._models import (
    EchoReply,
    EchoRequest,
    EchoResult,
    EngineStats,
    Hop,
    HopProbe,
    IPHeader,
    MplsLabel,
    MtrHop,
    MtrReport,
    PingStats,
    ReceivedPacket,
    Target,
    TracerouteResult,
)
from ._multiping import DEFAULT_RATE as DEFAULT_SWEEP_RATE
from ._pmtu import PathMtu
from ._sync import Client

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SWEEP_RATE",
    "AsyncClient",
    "Client",
    "ClientClosedError",
    "EchoReply",
    "EchoRequest",
    "EchoResult",
    "EngineStats",
    "Hop",
    "HopProbe",
    "IPHeader",
    "IcmpxError",
    "MalformedPacket",
    "MplsLabel",
    "MtrHop",
    "MtrReport",
    "NameResolutionError",
    "PathMtu",
    "PingStats",
    "RawSocketPermissionError",
    "ReceivedPacket",
    "SocketError",
    "Target",
    "TracerouteResult",
    "__version__",
]
