"""``icmpx exporter``: a Prometheus exporter for fleet latency and loss (the ``exporter`` extra).

Run it as ``icmpx exporter --config FILE`` or ``icmpx exporter HOST...``; see docs/exporter.md. The
pieces: `_config` (YAML, validated with positions), `_exporter` (resolution, schedule, reload),
`_metrics` (per-target series and their text), `_http` (a small HTTP server), `_app` (endpoints, CLI).
"""

from __future__ import annotations

from ._app import DEFAULT_LISTEN, DEFAULT_PORT, main
from ._config import Config, ConfigError, Group, load_config, parse_config

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_PORT",
    "Config",
    "ConfigError",
    "Group",
    "load_config",
    "main",
    "parse_config",
]
