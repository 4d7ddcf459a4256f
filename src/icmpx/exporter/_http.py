"""A small HTTP/1.1 server on anyio: what Prometheus needs and nothing else.

One request per connection (``Connection: close``), a bounded request head, handlers that return a status,
a content type and a body. It runs in the exporter's event loop, so handlers read the exporter's state
without locks; a slow client costs one task, never the probing.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import anyio
from anyio.abc import SocketStream

__all__ = ["Request", "Response", "parse_listen", "serve"]

_MAX_HEAD = 16384
_MAX_BODY = 65536
_READ_TIMEOUT = 10.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes | str | AsyncIterator[bytes]
    """A large body is an iterator of chunks, sent as they come (HTTP/1.1 chunked transfer coding), so
    the whole of it never sits in memory."""
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[Request], Awaitable[Response]]


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT``, or ``:PORT`` for every address) to a host and port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen expects ADDR:PORT (for instance 127.0.0.1:10111), not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--listen: write an IPv6 address in brackets, as [::1]:10111, not {text!r}")
    return host or "0.0.0.0", int(port)


async def _read_request(stream: SocketStream) -> Request | Response:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD:
            return Response(413, "request head too large\n")
        chunk = await stream.receive(65536)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return Response(400, "malformed request line\n")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        return Response(400, "bad Content-Length\n")
    length = int(length_text)
    if length > _MAX_BODY:
        return Response(413, "request body too large\n")
    while len(body) < length:
        body += await stream.receive(65536)
    url = urlsplit(target)
    try:
        query = parse_qsl(url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=32)
    except ValueError as exc:
        return Response(400, f"bad query string: {exc}\n")
    return Request(method=method.upper(), path=url.path, query=query, headers=headers)


async def _handle(stream: SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            with anyio.fail_after(_READ_TIMEOUT):
                request = await _read_request(stream)
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        if isinstance(request, Response):
            response = request
        else:
            try:
                response = await handler(request)
            except Exception as exc:  # a bug in a handler answers 500 and leaves the server running
                print(f"icmpx exporter: error serving {request.path}: {exc!r}", file=sys.stderr, flush=True)
                response = Response(500, f"internal error: {exc}\n")
        body = response.body
        status = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
        head = f"{status}Content-Type: {response.content_type}\r\nConnection: close\r\n"
        try:
            if isinstance(body, str | bytes):
                data = body.encode() if isinstance(body, str) else body
                await stream.send(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
                return
            await stream.send(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            async for chunk in body:
                if chunk:
                    await stream.send(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return


async def serve(
    host: str,
    port: int,
    handler: Handler,
    connections: anyio.abc.TaskGroup | None = None,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound port through ``task_status`` (port 0 picks one).

    Connections are handled in ``connections`` when given: cancelling this task then stops accepting
    new ones while responses under way can finish (a graceful stop)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(bound)

        async def one(stream: SocketStream) -> None:
            await _handle(stream, handler)

        await listener.serve(one, task_group=connections)
