"""``icmpx exporter``: the command line, the HTTP endpoints and the ``/probe`` handler."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import anyio
import anyio.to_thread
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from .._exceptions import IcmpxError, NameResolutionError, RawSocketPermissionError
from .._models import PingStats
from ._config import Config, ConfigError, load_config, parse_config, parse_duration
from ._exporter import Exporter, resolve_addresses
from ._http import Request, Response, parse_listen, serve
from ._metrics import build_info, engine_metrics, escape, render_series, snapshot

__all__ = ["DEFAULT_LISTEN", "DEFAULT_PORT", "App", "build_parser", "main"]

DEFAULT_PORT = 10111
"""Outside 9100–9999, the range of Prometheus' port registry, which is full: see docs/exporter.md."""
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXIT_OK, EXIT_USAGE, EXIT_SYSTEM = 0, 3, 4
_PROBE_PARAMS = ("target", "count", "interval", "timeout", "family", "size")
_PROBE_MAX_COUNT = 100
_DRAIN_SECONDS = 5.0


class _Exported(Collector):
    """The exporter-wide metrics, through prometheus-client (a few dozen lines)."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> list[Metric]:
        ex = self.exporter
        totals: dict[str, int] = {}
        metrics: list[Metric] = []
        for engine in ex.engines():
            for metric in engine_metrics(engine.stats()):
                totals[metric.name] = totals.get(metric.name, 0) + int(metric.samples[0].value)
                if metric.name not in {m.name for m in metrics}:
                    metrics.append(metric)
        for metric in metrics:
            value = totals[metric.name]
            metric.samples = [metric.samples[0]._replace(value=value)]
        resolvable = GaugeMetricFamily(
            "icmpx_resolvable",
            "1 when the host's name resolved at its last resolution, else 0.",
            labels=["host"],
        )
        for host, ok in sorted(ex.resolvable.items()):
            resolvable.add_metric([host], ok)
        metrics.append(resolvable)
        metrics.append(
            GaugeMetricFamily("icmpx_targets", "Targets probed continuously.", value=len(ex.series))
        )
        metrics.append(
            GaugeMetricFamily(
                "icmpx_config_last_reload_successful",
                "1 when the last configuration (re)load succeeded.",
                value=int(ex.last_reload_ok),
            )
        )
        metrics.append(
            GaugeMetricFamily(
                "icmpx_config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully (Unix time).",
                value=ex.last_reload_time,
            )
        )
        metrics.append(build_info(__version__))
        return metrics


class App:
    """The HTTP endpoints over one `Exporter`."""

    def __init__(self, exporter: Exporter, config_path: str | None) -> None:
        self.exporter = exporter
        self.config_path = config_path
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Exported(exporter))

    def render(self) -> str:
        """The whole of ``/metrics`` as one string (the endpoint streams it: see `_stream`)."""
        series = render_series(snapshot(self.exporter.series.values()), self.exporter.config.buckets)
        return generate_latest(self.registry).decode() + "".join(series)

    async def _stream(self) -> AsyncIterator[bytes]:
        """``/metrics`` in chunks. The numbers are copied here, on the event loop, at once (so the histogram
        and the counters agree); each chunk is formatted in a worker thread while the reader goes on
        reading replies, and sent before the next is made."""
        yield generate_latest(self.registry)
        chunks = render_series(snapshot(self.exporter.series.values()), self.exporter.config.buckets)
        while (chunk := await anyio.to_thread.run_sync(_next_encoded, chunks)) is not None:
            yield chunk

    async def reload(self) -> str | None:
        if self.config_path is None:
            # The quick form has no file: a reload resolves the names again.
            config = self.exporter.config
            return await self.exporter.reload(lambda: config)
        path = self.config_path
        return await self.exporter.reload(lambda: load_config(path))

    async def __call__(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/metrics":
            if method != "GET":
                return Response(405, "use GET\n")
            return Response(200, self._stream(), CONTENT_TYPE)
        if path == "/probe":
            if method != "GET":
                return Response(405, "use GET\n")
            return await self.probe(request)
        if path == "/-/reload":
            if method not in ("POST", "PUT"):
                return Response(405, "use POST to reload\n")
            error = await self.reload()
            if error is not None:
                return Response(500, f"reload failed, still running the previous configuration: {error}\n")
            return Response(200, f"reloaded: {len(self.exporter.series)} targets\n")
        if path == "/-/healthy":
            return Response(200, "icmpx exporter is healthy.\n")
        if path == "/-/ready":
            if self.exporter.ready:
                return Response(200, "icmpx exporter is ready.\n")
            return Response(503, "icmpx exporter is resolving its targets.\n")
        if path == "/":
            return Response(200, _INDEX, "text/html; charset=utf-8")
        return Response(404, f"no such endpoint: {path}\n")

    async def probe(self, request: Request) -> Response:
        try:
            params = _probe_params(request)
        except ValueError as exc:
            return Response(400, f"{exc}\n")
        target, count, interval, timeout, family, size = params
        budget = request.headers.get("x-prometheus-scrape-timeout-seconds")
        duration = (count - 1) * interval + timeout
        if budget is not None:
            try:
                limit = float(budget)
            except ValueError:
                limit = math.inf
            if duration > limit:
                return Response(
                    400,
                    f"count {count} at interval {interval:g} s with timeout {timeout:g} s takes up to "
                    f"{duration:g} s, more than the scrape timeout of {limit:g} s\n",
                )
        start = time.monotonic()
        lines: list[str] = []
        try:
            addresses = await resolve_addresses(target, family)
        except NameResolutionError as exc:
            lines.append(f"# {escape(str(exc))}\n")
            lines += _gauge("icmpx_probe_resolvable", "1 when the target's name resolved.", 0)
            lines += _gauge("icmpx_probe_success", "1 when at least one echo reply came back.", 0)
        else:
            addr = addresses[0]
            results = await self.exporter.client.ping(
                addr.addr, count=count, interval=interval, timeout=timeout, payload_size=size
            )
            stats = PingStats.from_results(results, target=target)
            lines += _gauge("icmpx_probe_resolvable", "1 when the target's name resolved.", 1)
            lines += _gauge(
                "icmpx_probe_success", "1 when at least one echo reply came back.", int(stats.is_alive)
            )
            info = f'ip="{escape(addr.addr)}",family="{6 if addr.v6 else 4}"'
            lines += _gauge("icmpx_probe_ip_info", "The address that was probed.", 1, info)
            lines += _gauge("icmpx_probe_sent", "Echo requests sent.", stats.sent)
            lines += _gauge("icmpx_probe_received", "Echo replies received in time.", stats.received)
            lines += _gauge("icmpx_probe_loss_ratio", "Echoes lost, 0 to 1.", stats.loss_pct / 100)
            # No reply, no RTT: absent rather than 0, so a dead host never looks fast.
            for name, value, what in (
                ("min", stats.min_rtt, "Lowest"),
                ("avg", stats.avg_rtt, "Mean"),
                ("max", stats.max_rtt, "Highest"),
                ("stddev", stats.stdev_rtt, "Standard deviation of the"),
            ):
                if value is not None:
                    lines += _gauge(
                        f"icmpx_probe_rtt_{name}_seconds", f"{what} RTT in seconds.", value / 1000
                    )
        lines += _gauge("icmpx_probe_duration_seconds", "How long the probe took.", time.monotonic() - start)
        return Response(200, "".join(lines), CONTENT_TYPE)


def _next_encoded(chunks: Iterator[str]) -> bytes | None:
    chunk = next(chunks, None)
    return chunk.encode() if chunk is not None else None


def _gauge(name: str, help_text: str, value: float, labels: str = "") -> list[str]:
    sample = f"{name}{{{labels}}} {value!r}\n" if labels else f"{name} {value!r}\n"
    return [f"# HELP {name} {help_text}\n# TYPE {name} gauge\n", sample]


def _probe_params(request: Request) -> tuple[str, int, float, float, str, int]:
    """The parameters of ``/probe``, checked; ValueError says what is wrong."""
    values: dict[str, str] = {}
    for name, value in request.query:
        if name not in _PROBE_PARAMS:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(_PROBE_PARAMS)}")
        if name in values:
            raise ValueError(f"parameter {name!r} given twice")
        values[name] = value
    target = values.get("target", "").strip()
    if not target:
        raise ValueError("target is required: /probe?target=HOST")
    count_text = values.get("count", "3")
    if not count_text.isdigit() or not 1 <= int(count_text) <= _PROBE_MAX_COUNT:
        raise ValueError(f"count must be an integer from 1 to {_PROBE_MAX_COUNT}, not {count_text!r}")
    interval = _seconds(values.get("interval", "0.2"), "interval", zero=True)
    timeout = _seconds(values.get("timeout", "1"), "timeout", zero=False)
    family = values.get("family", "auto")
    if family not in ("auto", "4", "6"):
        raise ValueError(f"family must be auto, 4 or 6, not {family!r}")
    size_text = values.get("size", "56")
    if not size_text.isdigit() or int(size_text) > 65507:
        raise ValueError(f"size must be an integer from 0 to 65507, not {size_text!r}")
    if any(c.isspace() or c in "/?#[]@" for c in target) and not target.startswith("["):
        raise ValueError(f"target must be a host name or an address, not {target!r}")
    return target, int(count_text), interval, timeout, family, int(size_text)


def _seconds(text: str, name: str, *, zero: bool) -> float:
    try:
        value = parse_duration(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds (or 500ms, 1s), not {text!r}") from None
    if (not zero and value <= 0) or value > 60:
        low = "0" if zero else "more than 0"
        raise ValueError(f"{name} must be from {low} to 60 seconds, not {text!r}")
    return value


_INDEX = """<!doctype html><title>icmpx exporter</title><h1>icmpx exporter</h1>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/probe?target=127.0.0.1">/probe?target=127.0.0.1</a>
</li><li><a href="/-/healthy">/-/healthy</a></li><li><a href="/-/ready">/-/ready</a></li></ul>
"""


# ------------------------------------------------------------------------------------------ command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="icmpx exporter",
        description="Prometheus exporter: ping every target continuously from one shared socket and serve "
        "its latency and loss on /metrics; /probe?target=HOST&count=N pings on demand.",
        epilog="Reload with SIGHUP or POST /-/reload. Exit status: 0 stopped by SIGTERM or Ctrl-C, "
        "3 bad arguments or configuration, 4 no permission for ICMP sockets or another system error.",
    )
    parser.add_argument("hosts", nargs="*", metavar="HOST", help="hosts to probe (instead of --config)")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (see docs/exporter.md)")
    parser.add_argument("--interval", metavar="S", help="seconds between echoes to each HOST (default 1)")
    parser.add_argument("--timeout", metavar="S", help="seconds to wait for each answer (default: interval)")
    parser.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        default=DEFAULT_LISTEN,
        help=f"where to serve (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--privileged",
        choices=("auto", "raw", "dgram"),
        default="auto",
        help="socket kind: raw (needs CAP_NET_RAW), dgram (unprivileged ping socket), auto (default)",
    )
    return parser


def _quick_config(args: argparse.Namespace) -> Config:
    """The configuration of ``icmpx exporter HOST... [--interval S]``: one group."""
    interval = parse_duration(args.interval) if args.interval is not None else 1.0
    if interval <= 0:
        raise ConfigError("--interval must be more than zero")
    timeout = parse_duration(args.timeout) if args.timeout is not None else min(interval, 10.0)
    if timeout <= 0:
        raise ConfigError("--timeout must be more than zero")
    # The same checks as a file's: write the group as YAML and validate it.
    hosts = "".join(f"\n      - {_yaml_string(h)}" for h in args.hosts)
    text = f"targets:\n  - interval: {interval!r}\n    timeout: {timeout!r}\n    hosts:{hosts}\n"
    return parse_config(text, "<command line>")


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _serve(args: argparse.Namespace, config: Config, listen: tuple[str, int]) -> None:
    privileged = {"auto": None, "raw": True, "dgram": False}[args.privileged]
    async with Exporter(config, privileged=privileged) as exporter, anyio.create_task_group() as connections:
        app = App(exporter, args.config)
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, listen[0], listen[1], app, connections)
            exporter.log(f"listening on http://{_url_host(listen[0])}:{port}/metrics")

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as received:
                    async for signum in received:
                        if signum == signal.SIGHUP:
                            tg.start_soon(app.reload)
                        else:
                            exporter.log(f"{signal.Signals(signum).name}: stopping")
                            tg.cancel_scope.cancel()
                            return

            tg.start_soon(signals)
            await exporter.run()
        # Stopping: nothing is accepted any more; scrapes under way get a few seconds to finish.
        connections.cancel_scope.deadline = anyio.current_time() + _DRAIN_SECONDS


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: Sequence[str] | None = None) -> int:
    """``icmpx exporter ...``; returns the exit status."""
    args = build_parser().parse_args(argv)
    prog = "icmpx exporter"
    try:
        if args.config is not None and args.hosts:
            raise ConfigError("give either --config FILE or HOST arguments, not both")
        if args.config is None and not args.hosts:
            raise ConfigError("nothing to probe: give HOST arguments or --config FILE")
        if args.config is not None and (args.interval is not None or args.timeout is not None):
            raise ConfigError("--interval and --timeout apply to HOST arguments; set them in the file")
        config = load_config(args.config) if args.config is not None else _quick_config(args)
        listen = parse_listen(args.listen)
    except (ConfigError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        anyio.run(_serve, args, config, listen)
    except KeyboardInterrupt:
        return EXIT_OK
    except (IcmpxError, OSError, BaseExceptionGroup) as exc:
        failure = _first_failure(exc)
        if failure is None:
            raise
        if isinstance(failure, RawSocketPermissionError):
            print(failure, file=sys.stderr)  # it says what to run
        elif isinstance(failure, OSError) and failure.strerror:
            print(
                f"{prog}: cannot listen on {args.listen} or open ICMP sockets: {failure.strerror}",
                file=sys.stderr,
            )
        else:
            print(f"{prog}: {failure}", file=sys.stderr)
        return EXIT_SYSTEM
    return EXIT_OK


def _first_failure(exc: BaseException) -> BaseException | None:
    """The IcmpxError or OSError inside ``exc`` (task groups wrap what their tasks raise)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_failure(inner)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, IcmpxError | OSError) else None
