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
    MalformedPacketError,
    NameResolutionError,
    RawSocketPermissionError,
    SocketError,
)
from ._models import (
    DEFAULT_SWEEP_RATE,
    EchoReply,
    EchoRequest,
    EchoResult,
    EngineStats,
    ErrorKind,
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
    "ErrorKind",
    "Hop",
    "HopProbe",
    "IPHeader",
    "IcmpxError",
    "MalformedPacket",
    "MalformedPacketError",
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

# Public classes say where users find them (``icmpx.EchoResult``, not ``icmpx._models.EchoResult``), in
# reprs, tracebacks and docs, as httpx does; pickling finds them here too.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("icmpx._"):
        _obj.__module__ = __name__
del _name, _obj
