"""A small HTTP API over icmpx: one AsyncClient (one ICMP socket per family) for the whole app.

usage: python examples/web_backend.py [--host 127.0.0.1] [--port 8000] [--timeout 2]

    curl 'http://127.0.0.1:8000/ping/192.0.2.1?count=3&interval=0.2'
    curl 'http://127.0.0.1:8000/traceroute/192.0.2.1?probes=1&max_hops=20&dns=1'
    curl 'http://127.0.0.1:8000/stats'

The answers are the documents ``icmpx ping --json`` and ``icmpx traceroute --json`` print. Bad query
parameters get 400, a name that does not resolve 404, a socket failure 503, each as ``{"error": "..."}``.
Every request, however many run at once, shares the client opened in the app's lifespan: no socket per
request. Serve it on a public interface only behind authentication: it makes this host send packets.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypedDict, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import icmpx
from icmpx.cli import ping_json, traceroute_json  # the CLI's --json documents


class State(TypedDict):
    client: icmpx.AsyncClient


N = TypeVar("N", int, float)


def number(request: Request, name: str, default: N, low: N, high: N) -> N:
    """Query parameter ``name``, of the default's type, within [low, high]; ValueError (-> 400) otherwise."""
    kind = type(default)
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(
            f"{name} must be {'an integer' if kind is int else 'a number'}, not {text!r}"
        ) from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
    return value


Handler = Callable[[Request, icmpx.AsyncClient], Awaitable[dict[str, Any]]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
    """Turn a handler returning a document into a route: shared client in, errors out as JSON."""

    async def route(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await handler(request, request.state.client))
        except ValueError as exc:  # bad parameters, from us or from icmpx's own checks
            return JSONResponse({"error": str(exc)}, status_code=400)
        except icmpx.NameResolutionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except icmpx.IcmpxError as exc:  # no permission for ICMP sockets, client closing at shutdown
            return JSONResponse({"error": str(exc)}, status_code=503)

    return route


async def ping(request: Request, client: icmpx.AsyncClient) -> dict[str, Any]:
    count = number(request, "count", 4, 1, 100)
    interval = number(request, "interval", 1.0, 0.0, 10.0)
    host = request.path_params["host"]
    target = await client.resolve(host)
    results = await client.ping(target.addr, count=count, interval=interval)
    return ping_json(host, target.addr, results)


async def traceroute(request: Request, client: icmpx.AsyncClient) -> dict[str, Any]:
    result = await client.traceroute(
        request.path_params["host"],
        probes=number(request, "probes", 3, 1, 10),
        max_hops=number(request, "max_hops", 30, 1, 64),
        resolve_dns=request.query_params.get("dns", "0") not in ("0", "", "false"),
    )
    return traceroute_json(result)


async def stats(request: Request, client: icmpx.AsyncClient) -> dict[str, Any]:
    return dataclasses.asdict(client.stats)


def create_app(*, timeout: float = 2.0) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with icmpx.AsyncClient(timeout=timeout) as client:
            yield {"client": client}  # each request sees it as request.state.client

    routes = [
        Route("/ping/{host}", endpoint(ping)),
        Route("/traceroute/{host}", endpoint(traceroute)),
        Route("/stats", endpoint(stats)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each ICMP answer")
    args = parser.parse_args()
    uvicorn.run(create_app(timeout=args.timeout), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
