"""Per-target counters, the engine's sink that feeds them, and the text of ``/metrics``.

A target's state is one slotted object (`Series`): plain integers and a list of bucket counts, updated by
the engine's reader in a few hundred nanoseconds per echo. `/metrics` renders them straight into the
Prometheus text format; prometheus-client's generic path (a metric object per series, `generate_latest`)
costs seconds per scrape at 10,000 targets, this one a small fraction of that (see bench/exporter.py).
The exporter-wide metrics (engine counters, build info) are few and go through prometheus-client.
"""

from __future__ import annotations

import dataclasses
import platform
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .._matching import Outcome, Probe
from .._models import EngineStats, Target

__all__ = [
    "Series",
    "Sink",
    "Snapshot",
    "engine_metrics",
    "escape",
    "label_text",
    "render_series",
    "snapshot",
]


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


class Series:
    """One target (a host's address, with its group's labels): counters and RTT histogram."""

    __slots__ = (
        "buckets",
        "family",
        "group",
        "host",
        "icmp_errors",
        "ip",
        "labels",
        "last_ttl",
        "requests",
        "rtt_sum",
        "send_errors",
        "target",
    )

    def __init__(self, host: str, target: Target, labels: str, group: int, nbuckets: int) -> None:
        self.host = host
        self.ip = target.addr
        self.family = "6" if target.v6 else "4"
        self.target = target
        self.labels = labels
        """The label set, rendered once: ``host="a",ip="…",family="4",site="x"``; also its identity."""
        self.group = group
        self.requests = 0
        self.buckets = [0] * (nbuckets + 1)  # the last one is +Inf's own share
        self.rtt_sum = 0.0
        self.last_ttl: int | None = None
        self.send_errors = 0
        self.icmp_errors: dict[str, int] = {}

    @property
    def responses(self) -> int:
        """Echo replies received in time: the histogram's count, so the two always agree, even in a
        scrape rendered while a reply is being recorded."""
        return sum(self.buckets)

    def reset_histogram(self, nbuckets: int) -> None:
        self.buckets = [0] * (nbuckets + 1)
        self.rtt_sum = 0.0


class Sink:
    """The engine's sink for every continuous probe: the probe's tag is its `Series`."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.failure: BaseException | None = None

    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        series: Series = probe.tag
        error = outcome.error
        rtt_ms = outcome.rtt_ms
        if error is None and rtt_ms is not None:
            rtt = rtt_ms / 1000.0
            series.rtt_sum += rtt
            series.buckets[bisect_left(self.bounds, rtt)] += 1
            if outcome.ttl is not None:
                series.last_ttl = outcome.ttl
        elif error == "timeout":
            pass
        elif rtt_ms is None:
            series.send_errors += 1  # the kernel refused the send: nothing answered, nothing came
        else:
            assert error is not None
            series.icmp_errors[error] = series.icmp_errors.get(error, 0) + 1

    def abort(self, exc: BaseException) -> None:
        self.failure = exc


_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("icmpx_requests_total", "counter", "Echo requests sent to the target (send errors included)."),
    ("icmpx_responses_total", "counter", "Echo replies received from the target in time."),
    ("icmpx_rtt_seconds", "histogram", "Round-trip time of the echo replies, kernel-timed, in seconds."),
    ("icmpx_reply_ttl", "gauge", "TTL (hop limit) of the latest echo reply."),
    ("icmpx_send_errors_total", "counter", "Echo requests the kernel refused to send."),
    ("icmpx_icmp_errors_total", "counter", "ICMP errors received for the target's echoes, by kind."),
)


def _go_float(value: float) -> str:
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _head(name: str) -> str:
    for family, kind, help_text in _FAMILIES:
        if family == name:
            return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
    raise KeyError(name)


class Snapshot(NamedTuple):
    """One target's numbers at one instant (taken on the event loop, rendered in a worker thread)."""

    labels: str
    requests: int
    buckets: list[int]
    rtt_sum: float
    last_ttl: int | None
    send_errors: int
    icmp_errors: tuple[tuple[str, int], ...]


def snapshot(series: Iterable[Series]) -> list[Snapshot]:
    """Copy every target's numbers, on the event loop's thread: the reader cannot run meanwhile, so the
    histogram, its count and ``icmpx_responses_total`` agree in every scrape. (About 2 ms per 10,000.)"""
    return [
        Snapshot(
            s.labels,
            s.requests,
            s.buckets.copy(),
            s.rtt_sum,
            s.last_ttl,
            s.send_errors,
            tuple(sorted(s.icmp_errors.items())) if s.icmp_errors else (),
        )
        for s in series
    ]


def render_series(series: Sequence[Snapshot], bounds: Sequence[float]) -> Iterator[str]:
    """The per-target part of ``/metrics``, in chunks (one per metric family, the histogram in several)."""
    yield _head("icmpx_requests_total")
    yield "".join([f"icmpx_requests_total{{{s.labels}}} {s.requests}\n" for s in series])
    yield _head("icmpx_responses_total")
    yield "".join([f"icmpx_responses_total{{{s.labels}}} {sum(s.buckets)}\n" for s in series])
    yield _head("icmpx_rtt_seconds")
    les = [f'",le="{_go_float(b)}"}} ' for b in bounds]
    les.append('",le="+Inf"} ')
    for chunk_start in range(0, len(series), 1000):
        parts: list[str] = []
        add = parts.append
        for s in series[chunk_start : chunk_start + 1000]:
            # Each bucket line is the prefix, its cumulative count and a newline; the series' labels go
            # first, `le` last.
            prefix = "icmpx_rtt_seconds_bucket{" + s.labels[:-1]
            total = 0
            for le, count in zip(les, s.buckets, strict=True):
                total += count
                add(f"{prefix}{le}{total}\n")
            add(f"icmpx_rtt_seconds_sum{{{s.labels}}} {s.rtt_sum!r}\n")
            add(f"icmpx_rtt_seconds_count{{{s.labels}}} {total}\n")
        yield "".join(parts)
    yield _head("icmpx_reply_ttl")
    yield "".join([f"icmpx_reply_ttl{{{s.labels}}} {s.last_ttl}\n" for s in series if s.last_ttl is not None])
    yield _head("icmpx_send_errors_total")
    yield "".join([f"icmpx_send_errors_total{{{s.labels}}} {s.send_errors}\n" for s in series])
    yield _head("icmpx_icmp_errors_total")
    yield "".join(
        [
            f'icmpx_icmp_errors_total{{{s.labels},error="{escape(kind)}"}} {count}\n'
            for s in series
            for kind, count in s.icmp_errors
        ]
    )


# EngineStats fields that describe the moment rather than count since the start.
_GAUGES = {
    "pending": ("icmpx_probes_in_flight", "Echo requests sent and neither answered nor timed out."),
    "sockets": ("icmpx_engine_sockets", "ICMP sockets open."),
}


def engine_metrics(stats: EngineStats) -> list[Metric]:
    """Every integer field of `EngineStats`: counters as ``icmpx_engine_<field>_total``, the two that
    describe the moment as gauges. New counters of the engine appear here without a change."""
    metrics: list[Metric] = []
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        doc = _field_doc(f.name)
        if f.name in _GAUGES:
            name, help_text = _GAUGES[f.name]
            metrics.append(GaugeMetricFamily(name, help_text, value=value))
        else:
            metrics.append(CounterMetricFamily(f"icmpx_engine_{f.name}", doc, value=value))
    return metrics


def _field_doc(name: str) -> str:
    # The attribute docstrings of EngineStats are not kept at run time; a plain description does.
    return f"Engine-wide count of {name.replace('_', ' ')} (see icmpx.EngineStats.{name})."


def build_info(version: str) -> Metric:
    info = GaugeMetricFamily(
        "icmpx_build_info", "icmpx version and Python implementation.", labels=["version", "python"]
    )
    info.add_metric([version, f"{platform.python_implementation()} {platform.python_version()}"], 1)
    return info
