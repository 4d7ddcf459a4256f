"""icmpx exporter without Prometheus: configuration errors, the /metrics text, /probe's parameters, reload
keeping counters, the command line's exit codes. Probes go to loopback only; names are resolved by a fake
resolver (or not at all), never by the machine's DNS."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

import icmpx
from icmpx._exceptions import NameResolutionError
from icmpx._models import Target
from icmpx.exporter import ConfigError, parse_config
from icmpx.exporter._app import App, build_parser
from icmpx.exporter._config import DEFAULT_BUCKETS, Config, load_config
from icmpx.exporter._exporter import Exporter, resolve_addresses
from icmpx.exporter._http import Request, parse_listen
from icmpx.exporter._metrics import engine_metrics

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def await_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    with anyio.fail_after(timeout):
        # Engine state has no event to wait on: poll it, within the bound.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """name -> samples (name, labels, value), parsed by prometheus-client's own parser."""
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


# ------------------------------------------------------------------------------------------ config


def test_config_defaults_and_smokeping_buckets() -> None:
    config = parse_config("targets:\n  - hosts: [127.0.0.1, '::1']\n")
    (group,) = config.groups
    assert group.hosts == ("127.0.0.1", "::1")
    assert (group.interval, group.timeout, group.size, group.family) == (1.0, 1.0, 56, "auto")
    assert config.buckets == DEFAULT_BUCKETS
    assert len(DEFAULT_BUCKETS) == 20
    assert DEFAULT_BUCKETS[0] == 0.00005
    assert all(b == 2 * a for a, b in itertools.pairwise(DEFAULT_BUCKETS))


def test_config_full_group() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            targets:
              - hosts: [a.example, 127.0.0.2]
                interval: 500ms
                timeout: 1s500ms
                size: 100
                family: both
                source: 127.0.0.1
                labels: {site: par, rack: 7}
                dns_refresh: 0
            buckets: [0.001, 0.01, 0.1]
            """
        )
    )
    (group,) = config.groups
    assert group.interval == 0.5
    assert group.timeout == 1.5
    assert group.size == 100
    assert group.family == "both"
    assert group.source == "127.0.0.1"
    assert group.labels == (("rack", "7"), ("site", "par"))
    assert group.dns_refresh == 0
    assert config.buckets == (0.001, 0.01, 0.1)


BAD_CONFIGS = [
    (
        "targets:\n  - hosts: [127.0.0.1]\n    network: ip4\n",
        3,
        "targets[0].network",
        "did you mean 'family'",
    ),
    ("targets:\n  - hosts: [127.0.0.1]\n    interval: fast\n", 3, "targets[0].interval", "duration"),
    ("targets:\n  - hosts: [127.0.0.1]\n    interval: 0\n", 3, "targets[0].interval", "more than zero"),
    ("targets:\n  - hosts: [127.0.0.1]\n    family: 5\n", 3, "targets[0].family", "auto, 4, 6 or both"),
    ("targets:\n  - interval: 1s\n", 2, "targets[0].hosts", "missing"),
    ("targets:\n  - hosts: []\n", 2, "targets[0].hosts", "non-empty"),
    ("targets:\n  - hosts: [127.0.0.1, 127.0.0.1]\n", 2, "targets[0].hosts[1]", "twice"),
    ("targets:\n  - hosts: ['bad!host']\n", 2, "targets[0].hosts[0]", "neither an address"),
    ("targets:\n  - hosts: [127.0.0.1]\n    family: 6\n", 2, "targets[0].hosts[0]", "IPv6 was asked"),
    ("targets:\n  - hosts: [127.0.0.1]\n    labels: {host: x}\n", 3, "targets[0].labels.host", "reserved"),
    ("targets:\n  - hosts: [127.0.0.1]\n    labels: {9x: y}\n", 3, "targets[0].labels.9x", "label name"),
    ("targets:\n  - hosts: [127.0.0.1]\n    size: 70000\n", 3, "targets[0].size", "integer from 0"),
    ("targets:\n  - hosts: [127.0.0.1]\n    tos: 16\n", 3, "targets[0].tos", "only 0"),
    ("targets:\n  - hosts: [127.0.0.1]\n    source: somewhere\n", 3, "targets[0].source", "address literal"),
    ("targets:\n  - hosts: [127.0.0.1]\nbuckets: [0.1, 0.01]\n", 3, "buckets[1]", "increase"),
    ("targets:\n  - hosts: [127.0.0.1]\nlisten: x\n", 3, "listen", "unknown key"),
    ("targets: [\n", 2, None, "not valid YAML"),
    ("hosts: [127.0.0.1]\n", 1, "hosts", "unknown key"),
    (
        "targets:\n  - hosts: [127.0.0.1]\n  - hosts: [127.0.0.1]\n",
        3,
        "targets[1].hosts",
        "also in targets[0]",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), BAD_CONFIGS)
def test_bad_config_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str | None, message: str
) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = str(caught.value)
    assert error.startswith(f"{path}:{line}:"), error
    if key is not None:
        assert f" {key}: " in error, error
    assert message in error, error


def test_unreadable_and_empty_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "missing.yml")
    (tmp_path / "empty.yml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(tmp_path / "empty.yml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:10111", ("127.0.0.1", 10111)), ("[::1]:80", ("::1", 80)), (":9", ("0.0.0.0", 9))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["10111", "::1:80", "host:port", "127.0.0.1:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_listen(text)


# ------------------------------------------------------------------------------- the running exporter


def config_of(text: str) -> Config:
    return parse_config(textwrap.dedent(text))


async def fake_resolver(host: str, family: str) -> list[Target]:
    """Names ending .invalid do not resolve; other names map to loopback addresses; literals as usual."""
    if host.endswith(".invalid"):
        raise NameResolutionError(host, "Name or service not known")
    if host == "both.test":
        return [icmpx.Target("both.test", "127.0.0.5", False, ("127.0.0.5", 0)),
                icmpx.Target("both.test", "::1", True, ("::1", 0, 0, 0))]  # fmt: skip
    return await resolve_addresses(host, family)


@pytest.fixture
async def running() -> Iterator[Callable[..., object]]:
    """Start an Exporter on a config (in this test's task group); yields a starter. At the end each
    exporter's task is cancelled and has ended before its clients close, as in `icmpx exporter`."""
    started: list[tuple[Exporter, anyio.CancelScope, anyio.Event]] = []
    async with anyio.create_task_group() as tg:

        async def start(config: Config) -> Exporter:
            exporter = Exporter(config, resolver=fake_resolver, log=lambda message: None)
            await exporter.__aenter__()
            scope, ended = anyio.CancelScope(), anyio.Event()

            async def run() -> None:
                with scope:
                    await exporter.run()
                ended.set()

            started.append((exporter, scope, ended))
            tg.start_soon(run)
            await await_for(lambda: exporter.ready, what="first resolution")
            return exporter

        yield start
        for exporter, scope, ended in reversed(started):
            scope.cancel()
            await ended.wait()
            await exporter.__aexit__(None, None, None)


async def test_metrics_count_requests_responses_and_histogram(running: Callable[..., object]) -> None:
    config = config_of(
        """\
        targets:
          - hosts: [127.0.0.1, both.test, gone.invalid]
            interval: 50ms
            family: both
            labels: {site: "a \\"quoted\\" site"}
        """
    )
    exporter: Exporter = await running(config)  # type: ignore[assignment]
    await await_for(lambda: all(s.responses >= 5 for s in exporter.series.values()), what="5 replies each")
    app = App(exporter, None)
    text = app.render()
    parsed = families(text)
    requests = {s[1]["ip"]: s[2] for s in parsed["icmpx_requests"]}
    responses = {s[1]["ip"]: s[2] for s in parsed["icmpx_responses"]}
    assert set(requests) == {"127.0.0.1", "127.0.0.5", "::1"}
    for sample in parsed["icmpx_responses"]:
        assert sample[1]["site"] == 'a "quoted" site'
        assert sample[1]["family"] == ("6" if sample[1]["ip"] == "::1" else "4")
    counts = {s[1]["ip"]: s[2] for s in parsed["icmpx_rtt_seconds"] if s[0] == "icmpx_rtt_seconds_count"}
    infs = {
        s[1]["ip"]: s[2]
        for s in parsed["icmpx_rtt_seconds"]
        if s[0] == "icmpx_rtt_seconds_bucket" and s[1]["le"] == "+Inf"
    }
    assert counts == responses == infs
    buckets = [s for s in parsed["icmpx_rtt_seconds"] if s[0] == "icmpx_rtt_seconds_bucket"]
    assert len(buckets) == 3 * 21
    for ip, sent in requests.items():
        assert sent >= responses[ip] >= 5
    ttls = {s[1]["ip"]: s[2] for s in parsed["icmpx_reply_ttl"]}
    assert ttls["127.0.0.1"] == 64
    resolvable = {s[1]["host"]: s[2] for s in parsed["icmpx_resolvable"]}
    assert resolvable == {"127.0.0.1": 1, "both.test": 1, "gone.invalid": 0}
    assert parsed["icmpx_build_info"][0][1]["version"] == icmpx.__version__
    # Every integer field of EngineStats is exported, whatever fields it has.
    stats = exporter.client.stats
    int_fields = [f.name for f in dataclasses.fields(stats) if type(getattr(stats, f.name)) is int]
    names = {m.name for m in engine_metrics(stats)}
    assert len(names) == len(int_fields)
    for name in names:
        assert name in parsed, name
    assert parsed["icmpx_engine_sent"][0][2] >= sum(requests.values())


async def test_reload_keeps_unchanged_counters(running: Callable[..., object]) -> None:
    exporter: Exporter = await running(
        config_of("targets:\n  - hosts: [127.0.0.1, 127.0.0.2]\n    interval: 20ms\n")
    )
    await await_for(
        lambda: len(exporter.series) == 2 and all(s.responses >= 3 for s in exporter.series.values())
    )
    kept = next(s for s in exporter.series.values() if s.ip == "127.0.0.1")
    before = kept.responses
    await exporter.apply(config_of("targets:\n  - hosts: [127.0.0.1, 127.0.0.3]\n    interval: 20ms\n"))
    assert sorted(s.ip for s in exporter.series.values()) == ["127.0.0.1", "127.0.0.3"]
    now = next(s for s in exporter.series.values() if s.ip == "127.0.0.1")
    assert now is kept
    assert now.responses >= before
    added = next(s for s in exporter.series.values() if s.ip == "127.0.0.3")
    await await_for(lambda: added.responses >= 3 and kept.responses >= before + 3, what="probing goes on")
    text = App(exporter, None).render()
    assert '"127.0.0.2"' not in text


async def test_reload_with_a_bad_file_keeps_the_old_config(
    running: Callable[..., object], tmp_path: Path
) -> None:
    path = tmp_path / "c.yml"
    path.write_text("targets:\n  - hosts: [127.0.0.1]\n    interval: 20ms\n")
    exporter: Exporter = await running(load_config(path))
    app = App(exporter, str(path))
    await await_for(lambda: all(s.responses >= 2 for s in exporter.series.values()))
    path.write_text("targets:\n  - hosts: [127.0.0.1]\n    interval: soon\n")
    response = await app(Request("POST", "/-/reload", []))
    assert response.status == 500
    assert f"{path}:3: targets[0].interval:" in str(response.body)
    assert not exporter.last_reload_ok
    series = next(iter(exporter.series.values()))
    count = series.responses
    await await_for(lambda: series.responses > count, what="the old config still probing")
    assert "icmpx_config_last_reload_successful 0.0" in app.render()
    path.write_text("targets:\n  - hosts: [127.0.0.1, 127.0.0.4]\n    interval: 20ms\n")
    response = await app(Request("POST", "/-/reload", []))
    assert response.status == 200, response.body
    assert len(exporter.series) == 2
    assert exporter.last_reload_ok


async def test_reload_to_a_source_that_is_not_ours_keeps_the_old_config(
    running: Callable[..., object], tmp_path: Path
) -> None:
    """192.0.2.1 is no address of this machine: binding to it fails (nothing is sent), the reload is
    refused, and probing goes on with the previous configuration."""
    path = tmp_path / "c.yml"
    path.write_text("targets:\n  - hosts: [127.0.0.1]\n    interval: 20ms\n")
    exporter: Exporter = await running(load_config(path))
    app = App(exporter, str(path))
    path.write_text("targets:\n  - hosts: [127.0.0.1]\n    interval: 20ms\n    source: 192.0.2.1\n")
    response = await app(Request("POST", "/-/reload", []))
    assert response.status == 500
    assert str(path) in str(response.body)
    assert not exporter.last_reload_ok
    series = next(iter(exporter.series.values()))
    count = series.responses
    await await_for(lambda: series.responses > count + 2, what="the old config still probing")


async def test_dns_refresh_picks_up_a_name_that_starts_resolving(running: Callable[..., object]) -> None:
    answers: dict[str, list[Target]] = {}

    async def flaky(host: str, family: str) -> list[Target]:
        if host not in answers:
            raise NameResolutionError(host, "not yet")
        return answers[host]

    exporter = Exporter(
        config_of("targets:\n  - hosts: [later.test, 127.0.0.1]\n    interval: 20ms\n    dns_refresh: 0.2\n"),
        resolver=flaky,
        log=lambda m: None,
    )
    async with exporter, anyio.create_task_group() as tg:
        tg.start_soon(exporter.run)
        await await_for(lambda: exporter.ready)
        assert exporter.resolvable["later.test"] == 0
        answers["later.test"] = [icmpx.Target("later.test", "127.0.0.9", False, ("127.0.0.9", 0))]
        await await_for(lambda: exporter.resolvable.get("later.test") == 1, what="refresh")
        await await_for(lambda: any(s.ip == "127.0.0.9" and s.responses for s in exporter.series.values()))
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- /probe


async def probe(app: App, query: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    from urllib.parse import parse_qsl

    response = await app(Request("GET", "/probe", parse_qsl(query, keep_blank_values=True), headers or {}))
    return response.status, str(response.body)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "target is required"),
        ("target=127.0.0.1&count=0", "count must be an integer from 1 to 100"),
        ("target=127.0.0.1&count=abc", "count must be"),
        ("target=127.0.0.1&interval=-1", "interval must be"),
        ("target=127.0.0.1&timeout=0", "timeout must be from more than 0"),
        ("target=127.0.0.1&family=7", "family must be"),
        ("target=127.0.0.1&colour=red", "unknown parameter 'colour'"),
        ("target=127.0.0.1&target=127.0.0.2", "given twice"),
        ("target=a/b", "host name or an address"),
    ],
)
async def test_probe_bad_parameters_get_400_with_the_reason(
    running: Callable[..., object], query: str, reason: str
) -> None:
    exporter: Exporter = await running(config_of("targets:\n  - hosts: [127.0.0.1]\n"))
    status, body = await probe(App(exporter, None), query)
    assert status == 400
    assert reason in body


async def test_probe_longer_than_the_scrape_timeout_is_refused(running: Callable[..., object]) -> None:
    exporter: Exporter = await running(config_of("targets:\n  - hosts: [127.0.0.1]\n"))
    status, body = await probe(
        App(exporter, None),
        "target=127.0.0.1&count=10&interval=1&timeout=1",
        {"x-prometheus-scrape-timeout-seconds": "5"},
    )
    assert status == 400
    assert "more than the scrape timeout of 5 s" in body


async def test_probe_sends_count_echoes(running: Callable[..., object]) -> None:
    exporter: Exporter = await running(config_of("targets:\n  - hosts: [127.0.0.1]\n    interval: 1h\n"))
    sent = exporter.client.stats.sent
    status, body = await probe(App(exporter, None), "target=127.0.0.7&count=4&interval=0.01")
    assert status == 200
    parsed = {name: samples[0] for name, samples in families(body).items()}
    assert parsed["icmpx_probe_success"][2] == 1
    assert parsed["icmpx_probe_sent"][2] == 4
    assert parsed["icmpx_probe_received"][2] == 4
    assert parsed["icmpx_probe_loss_ratio"][2] == 0
    assert parsed["icmpx_probe_ip_info"][1] == {"ip": "127.0.0.7", "family": "4"}
    assert 0 < parsed["icmpx_probe_rtt_min_seconds"][2] <= parsed["icmpx_probe_rtt_max_seconds"][2] < 1
    assert "icmpx_probe_rtt_stddev_seconds" in parsed
    assert "icmpx_probe_duration_seconds" in parsed
    assert exporter.client.stats.sent - sent >= 4


async def test_probe_unresolvable_name_is_success_0_not_an_error(
    running: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import icmpx.exporter._app as app_module

    monkeypatch.setattr(app_module, "resolve_addresses", fake_resolver)
    exporter: Exporter = await running(config_of("targets:\n  - hosts: [127.0.0.1]\n"))
    status, body = await probe(App(exporter, None), "target=nowhere.invalid")
    assert status == 200
    assert "nowhere.invalid" in body
    assert "Name or service not known" in body
    parsed = {name: samples[0][2] for name, samples in families(body).items()}
    assert parsed["icmpx_probe_success"] == 0
    assert parsed["icmpx_probe_resolvable"] == 0
    assert not any(name.startswith("icmpx_probe_rtt") for name in parsed)  # no RTT 0 for a lost probe


async def test_http_endpoints(running: Callable[..., object]) -> None:
    exporter: Exporter = await running(config_of("targets:\n  - hosts: [127.0.0.1]\n"))
    app = App(exporter, None)
    assert (await app(Request("GET", "/-/healthy", []))).status == 200
    assert (await app(Request("GET", "/-/ready", []))).status == 200
    assert (await app(Request("GET", "/nothing", []))).status == 404
    assert (await app(Request("GET", "/-/reload", []))).status == 405
    assert (await app(Request("POST", "/metrics", []))).status == 405


# ---------------------------------------------------------------------------------- command line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icmpx", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_bad_config_exits_3_with_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("targets:\n  - hosts: [127.0.0.1]\n    interval: often\n")
    proc = run_cli("--config", str(path), "--listen", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 3
    assert f"{path}:3: targets[0].interval:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to probe"),
        (("127.0.0.1", "--config", "x.yml"), "either --config FILE or HOST"),
        (("127.0.0.1", "--interval", "0"), "more than zero"),
        (("127.0.0.1", "--listen", "nowhere"), "--listen expects ADDR:PORT"),
        (("bad!host",), "neither an address nor a host name"),
    ],
)
def test_cli_usage_errors_exit_3(args: tuple[str, ...], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 3, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_port_in_use_exits_4() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("127.0.0.1", "--listen", f"127.0.0.1:{port}")
    assert proc.returncode == 4, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_help_lists_the_options() -> None:
    text = build_parser().format_help()
    for option in ("--config", "--interval", "--listen", "--privileged", "127.0.0.1:10111"):
        assert option in text
    main_help = subprocess.run(
        [sys.executable, "-m", "icmpx", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "exporter" in main_help


def get(url: str, *, method: str = "GET", timeout: float = 10) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def exporter_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port = free_port()
    path = tmp_path / "c.yml"
    path.write_text("targets:\n  - hosts: [127.0.0.1, 127.0.0.2]\n    interval: 20ms\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "icmpx", "exporter", "--config", str(path), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return get(f"{base}/-/ready", timeout=1)[0] == 200
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(up, what="the exporter to listen")
        assert proc.poll() is None, proc.communicate()
        yield proc, base, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_sighup_reload_and_sigterm_while_scraping(
    exporter_process: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, base, path = exporter_process
    wait_for(lambda: 'icmpx_responses_total{host="127.0.0.2"' in get(f"{base}/metrics")[1])
    path.write_text("targets:\n  - hosts: [127.0.0.1, 127.0.0.3]\n    interval: 20ms\n")
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: 'host="127.0.0.3"' in get(f"{base}/metrics")[1], what="SIGHUP reload")
    assert 'host="127.0.0.2"' not in get(f"{base}/metrics")[1]
    # Scrape in a loop from another thread, and stop the exporter in the middle of it.
    failures: list[BaseException] = []
    scrapes: list[int] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                status, text = get(f"{base}/metrics", timeout=5)
                assert status == 200
                assert text.endswith("\n")
                scrapes.append(status)
            except (OSError, urllib.error.URLError):
                return  # the server went away between scrapes: expected
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=scrape)
    thread.start()
    wait_for(lambda: len(scrapes) >= 3, what="scrapes under way")
    os.kill(proc.pid, signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "SIGTERM: stopping" in err
    assert "reloaded" in err
    assert not failures, failures


# ------------------------------------------------------------------------------------------- docs

DOC = Path(__file__).resolve().parent.parent / "docs" / "exporter.md"


def doc_blocks(language: str) -> list[str]:
    blocks, current, inside_block = [], [], False
    for line in DOC.read_text().splitlines():
        if not inside_block and line.strip() == f"```{language}":
            inside_block, current = True, []
        elif inside_block and line.strip() == "```":
            inside_block = False
            blocks.append("\n".join(current) + "\n")
        elif inside_block:
            current.append(line)
    return blocks


def test_docs_config_example_is_valid() -> None:
    examples = [b for b in doc_blocks("yaml") if b.startswith("targets:")]
    assert examples
    for text in examples:
        parse_config(text, "docs/exporter.md")


async def test_docs_metric_tables_name_every_metric(running: Callable[..., object]) -> None:
    exporter: Exporter = await running(
        config_of("targets:\n  - hosts: [127.0.0.1, 127.0.0.1.invalid]\n    interval: 20ms\n")
    )
    await await_for(lambda: all(s.responses for s in exporter.series.values()))
    app = App(exporter, None)
    _status, probe_text = await probe(app, "target=127.0.0.1&count=2&interval=0")
    doc = DOC.read_text()
    for text in (app.render(), probe_text):
        for line in text.splitlines():
            if not line.startswith("# TYPE "):
                continue
            name = line.split()[2]
            generic = name.startswith("icmpx_engine_") and name.endswith("_total")
            named = f"`{name}`" in doc or f"`{name}{{" in doc or name.startswith("icmpx_probe_rtt_")
            assert named or generic, f"{name} is not in docs/exporter.md"
    assert "`icmpx_probe_rtt_{min,avg,max,stddev}_seconds`" in doc


# ------------------------------------------------------------------------------------- the schedule


class _RecordingEngine:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_many(
        self, targets: list[Target], tags: object, ttl: int, size: int, timeout_ns: int, sink: object
    ) -> int:
        self.sent += [t.addr for t in targets]
        return len(targets)


class _StubClient:
    ttl = 64

    def __init__(self) -> None:
        self._engine = _RecordingEngine()


def test_schedule_spreads_a_group_over_its_interval() -> None:
    """100 targets at 1 s: echoes leave at i * 10 ms, never all at once; the next round starts after 1 s,
    and a stalled loop skips the rounds it missed instead of bursting them."""
    hosts = [f"127.0.1.{i}" for i in range(1, 101)]
    exporter = Exporter(config_of(f"targets:\n  - hosts: [{', '.join(hosts)}]\n"), log=lambda m: None)
    client = _StubClient()
    exporter._clients[None] = client  # type: ignore[assignment]
    exporter._resolved = [anyio.run(exporter._resolve_group, exporter.config.groups[0])]
    exporter._rebuild()
    start = exporter._schedules[0].start
    wake = exporter._send_due(start)
    assert client._engine.sent == hosts[:1]
    assert wake == pytest.approx(start + 0.01)
    exporter._send_due(start + 0.5)
    assert client._engine.sent == hosts[:51]
    exporter._send_due(start + 0.999)
    assert len(client._engine.sent) == 100
    exporter._send_due(start + 1.0)
    assert client._engine.sent[100:] == hosts[:1]
    exporter._send_due(start + 5.5)  # stalled for 4.5 s: round 1 is finished, then round 5 starts half-way
    assert len(client._engine.sent) == 200 + 51
    assert [s.requests for s in exporter.series.values()] == [3] * 51 + [2] * 49


def test_not_ready_before_the_first_resolution() -> None:
    exporter = Exporter(config_of("targets:\n  - hosts: [127.0.0.1]\n"), log=lambda m: None)
    response = anyio.run(App(exporter, None), Request("GET", "/-/ready", []))
    assert response.status == 503


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("auto", ["2001:db8::1"]),
        ("4", ["198.18.0.1", "198.18.0.2"]),
        ("6", ["2001:db8::1"]),
        ("both", ["2001:db8::1", "198.18.0.1", "198.18.0.2"]),
    ],
)
async def test_family_picks_the_first_address_or_every_address(
    monkeypatch: pytest.MonkeyPatch, family: str, expected: list[str]
) -> None:
    """A name with two IPv4 addresses and one IPv6 (a fake resolver: nothing is looked up)."""
    answers = [
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 0, 0, 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("198.18.0.1", 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("198.18.0.2", 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("198.18.0.1", 0)),
    ]

    async def getaddrinfo(host: str, port: object, *, family: int = 0, type: int = 0) -> list[object]:
        return [a for a in answers if family in (0, a[0])]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    targets = await resolve_addresses("fleet.test", family)
    assert [t.addr for t in targets] == expected
