"""The exporter's configuration: a YAML file close to smokeping_prober's, validated with positions.

Every error names the file, the line and the key, so a typo never starts a half-configured exporter::

    targets:                 # required: a list of groups
      - hosts: [a, b]        # required: names or address literals
        interval: 1s         # between two echoes to each target (default 1s)
        timeout: 1s          # wait for each answer (default: the interval, at most 10s)
        size: 56             # payload bytes (default 56)
        family: auto         # auto (the first address, as ping does); 4, 6, both: every such address
        tos: 0               # only 0 for now
        source: 198.18.0.1   # local address to send from
        labels: {site: a}    # extra Prometheus labels for this group's series
        dns_refresh: 1m      # re-resolve the names this often (0: never)
    buckets: [...]           # RTT histogram bounds in seconds (default 50 µs doubling 20 times)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._resolve import resolve_literal

__all__ = [
    "DEFAULT_BUCKETS",
    "Config",
    "ConfigError",
    "Group",
    "load_config",
    "parse_config",
    "parse_duration",
]

DEFAULT_BUCKETS: tuple[float, ...] = tuple(0.00005 * 2**k for k in range(20))
"""smokeping_prober's default RTT buckets: 50 µs doubling 20 times (up to about 26 s)."""

RESERVED_LABELS = frozenset({"host", "ip", "family", "error", "le", "job", "instance"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|s|m|h)")
_UNITS = {"ms": 1e-3, "us": 1e-6, "µs": 1e-6, "s": 1.0, "m": 60.0, "h": 3600.0}
_FAMILIES = {"auto": "auto", "4": "4", "6": "6", "both": "both"}
_GROUP_KEYS = ("hosts", "interval", "timeout", "size", "family", "tos", "source", "labels", "dns_refresh")
_TOP_KEYS = ("targets", "buckets")
_HINTS = {"network": "family", "ttl": None, "protocol": None}
_MAX_SIZE = 65507


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file, line and key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """One group of hosts that share their settings and labels."""

    hosts: tuple[str, ...]
    interval: float = 1.0
    timeout: float = 1.0
    size: int = 56
    family: str = "auto"
    tos: int = 0
    source: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    dns_refresh: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A validated configuration."""

    groups: tuple[Group, ...]
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    source: str = field(default="<command line>", compare=False)
    """Where it came from (a file name), for messages."""


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go-style duration (``"1s"``, ``"500ms"``, ``"1m30s"``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 1s or 500ms, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"expected a duration such as 1s or 500ms, not {value!r}") from None
    else:
        raise ValueError(f"expected a duration such as 1s or 500ms, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration of zero or more, not {value!r}")
    return seconds


# The composer has already resolved each scalar's tag (int, float, bool, str, ...): constructing the
# value is all that is left. (libyaml's composer when PyYAML has it: 6 times faster on 10,000 hosts.)
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Where:
    """Formats ``file:line: key: message`` for a YAML node."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: yaml.Node | None, key: str, message: str) -> ConfigError:
        line = f"{node.start_mark.line + 1}:" if node is not None else ""
        return ConfigError(f"{self.source}:{line} {key}: {message}")


def _scalar(where: _Where, node: yaml.Node, key: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise where.error(node, key, "expected a single value")
    return _CONSTRUCTOR.construct_object(node)


def _mapping(where: _Where, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise where.error(node, key, "expected a mapping of keys to values")
    out: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        name = str(_scalar(where, key_node, key))
        if name not in allowed:
            hint = _HINTS.get(name, "")
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise where.error(
                key_node,
                f"{key}.{name}" if key else name,
                f"unknown key{extra}; known keys: {', '.join(allowed)}",
            )
        if name in out:
            raise where.error(key_node, f"{key}.{name}" if key else name, "given twice")
        out[name] = value_node
    return out


def _duration(where: _Where, node: yaml.Node, key: str, *, positive: bool = True) -> float:
    try:
        seconds = parse_duration(_scalar(where, node, key))
    except ValueError as exc:
        raise where.error(node, key, str(exc)) from None
    if positive and seconds <= 0:
        raise where.error(node, key, "must be more than zero")
    return seconds


def _int(where: _Where, node: yaml.Node, key: str, low: int, high: int) -> int:
    value = _scalar(where, node, key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise where.error(node, key, f"expected an integer from {low} to {high}, not {value!r}")
    return value


def _group(where: _Where, node: yaml.Node, index: int) -> Group:
    key = f"targets[{index}]"
    items = _mapping(where, node, key, _GROUP_KEYS)
    if "hosts" not in items:
        raise where.error(node, f"{key}.hosts", "missing: every group needs a list of hosts")
    hosts_node = items["hosts"]
    if not isinstance(hosts_node, yaml.SequenceNode) or not hosts_node.value:
        raise where.error(hosts_node, f"{key}.hosts", "expected a non-empty list of hosts")
    options: dict[str, Any] = {}
    if "family" in items:
        family = str(_scalar(where, items["family"], f"{key}.family")).strip().lower()
        if family not in _FAMILIES:
            raise where.error(
                items["family"], f"{key}.family", f"expected auto, 4, 6 or both, not {family!r}"
            )
        options["family"] = family
    hosts: list[str] = []
    seen: set[str] = set()
    for h, host_node in enumerate(hosts_node.value):
        host_key = f"{key}.hosts[{h}]"
        host = _scalar(where, host_node, host_key)
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
            raise where.error(host_node, host_key, f"expected a host name or address, not {host!r}")
        host = host.strip()
        try:
            literal = resolve_literal(host, {"4": 4, "6": 6}.get(options.get("family", "auto")))
        except ValueError as exc:
            raise where.error(host_node, host_key, str(exc)) from None
        if literal is None and not _plausible_name(host):
            raise where.error(host_node, host_key, f"{host!r} is neither an address nor a host name")
        if host in seen:
            raise where.error(host_node, host_key, f"{host} is listed twice in this group")
        seen.add(host)
        hosts.append(host)
    options["hosts"] = tuple(hosts)
    if "interval" in items:
        options["interval"] = _duration(where, items["interval"], f"{key}.interval")
    interval = options.get("interval", 1.0)
    if "timeout" in items:
        options["timeout"] = _duration(where, items["timeout"], f"{key}.timeout")
    else:
        options["timeout"] = min(interval, 10.0)
    if options["timeout"] > 60:
        raise where.error(items["timeout"], f"{key}.timeout", "must be at most 60 s")
    if "size" in items:
        options["size"] = _int(where, items["size"], f"{key}.size", 0, _MAX_SIZE)
    if "tos" in items:
        options["tos"] = _int(where, items["tos"], f"{key}.tos", 0, 255)
        if options["tos"]:
            raise where.error(
                items["tos"], f"{key}.tos", "only 0 is supported so far (no per-packet TOS yet)"
            )
    if "source" in items:
        source = _scalar(where, items["source"], f"{key}.source")
        if not isinstance(source, str) or resolve_literal_safe(source) is None:
            raise where.error(
                items["source"], f"{key}.source", f"expected an address literal, not {source!r}"
            )
        options["source"] = source
    if "labels" in items:
        labels = _mapping(where, items["labels"], f"{key}.labels", _AnyKey())
        pairs = []
        for name, value_node in labels.items():
            label_key = f"{key}.labels.{name}"
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise where.error(value_node, label_key, "not a valid Prometheus label name")
            if name in RESERVED_LABELS:
                raise where.error(value_node, label_key, "reserved: the exporter sets this label itself")
            value = _scalar(where, value_node, label_key)
            if value is None or isinstance(value, bool | list | dict):
                raise where.error(value_node, label_key, f"expected a string, not {value!r}")
            pairs.append((name, str(value)))
        options["labels"] = tuple(sorted(pairs))
    if "dns_refresh" in items:
        options["dns_refresh"] = _duration(where, items["dns_refresh"], f"{key}.dns_refresh", positive=False)
    return Group(**options)


class _AnyKey(tuple[str, ...]):
    """Accepts every key (label names are free)."""

    def __contains__(self, item: object) -> bool:
        return True


def resolve_literal_safe(text: str) -> object:
    try:
        return resolve_literal(text)
    except ValueError:
        return None


def _plausible_name(host: str) -> bool:
    # A DNS name (or a name /etc/hosts knows): letters, digits, hyphens, underscores and dots.
    return bool(re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?", host)) and ".." not in host


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate a configuration given as YAML text; `ConfigError` names the line and key of a mistake."""
    where = _Where(source)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{line} not valid YAML: {problem}") from None
    if root is None:
        raise ConfigError(f"{source}: targets: missing: the file is empty")
    items = _mapping(where, root, "", _TOP_KEYS)
    if "targets" not in items:
        raise where.error(root, "targets", "missing: list the groups of hosts to probe")
    targets = items["targets"]
    if not isinstance(targets, yaml.SequenceNode) or not targets.value:
        raise where.error(targets, "targets", "expected a non-empty list of groups")
    groups = tuple(_group(where, node, i) for i, node in enumerate(targets.value))
    _check_unique(where, groups, targets)
    options: dict[str, Any] = {}
    if "buckets" in items:
        options["buckets"] = _buckets(where, items["buckets"])
    return Config(groups=groups, source=source, **options)


def _check_unique(where: _Where, groups: tuple[Group, ...], node: yaml.SequenceNode) -> None:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for index, group in enumerate(groups):
        for host in group.hosts:
            first = seen.setdefault((host, group.labels), index)
            if first != index:
                raise where.error(
                    node.value[index],
                    f"targets[{index}].hosts",
                    f"{host} is also in targets[{first}] with the same labels: its series would clash",
                )


def _buckets(where: _Where, node: yaml.Node) -> tuple[float, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise where.error(node, "buckets", "expected a non-empty list of upper bounds in seconds")
    bounds: list[float] = []
    for i, item in enumerate(node.value):
        value = _scalar(where, item, f"buckets[{i}]")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise where.error(item, f"buckets[{i}]", f"expected a positive number of seconds, not {value!r}")
        if bounds and value <= bounds[-1]:
            raise where.error(item, f"buckets[{i}]", "bounds must increase")
        bounds.append(float(value))
    return tuple(bounds)


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(text, str(path))
