"""icmpx exporter scraped by a real Prometheus (Debian's ``prometheus``), all inside a namespace lab.

    client ── r1 ── target (every address of 198.19.0.0/24 answers there)

Exporter A (vantage a) and Prometheus run in the client namespace, exporter B (vantage b) in the target
namespace; Prometheus scrapes both, and ``/probe`` of A through the multi-target relabelling. Router 1
drops echo requests to 198.19.0.3 (a silent target) and 30% of those to 198.19.0.2 (a lossy one). Names
come from the lab's hosts files; the resolver is 127.0.0.1, where nothing listens, so no lookup leaves.

One lab, two exporters and one Prometheus serve every test of the module (they only read); the reload
test runs last and changes exporter A's configuration.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import Lab, lab_chain
from netns import inside

pytestmark = pytest.mark.lab

PORT = 10111
PORT_NOBODY = 10112
PROM_PORT = 9090
LIVE, LOSSY, SILENT, ADDED, REJECTED = "198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.4", "198.19.0.5"
LOSS_PCT = 30


@dataclass
class Setup:
    lab: Lab
    config: Path
    exporter_a: subprocess.Popen[str]
    exporter_b: subprocess.Popen[str]
    exporter_nobody: subprocess.Popen[str]
    prometheus: subprocess.Popen[str]
    logs: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Prometheus' /api/v1/query, from inside the client namespace."""
        url = f"http://127.0.0.1:{PROM_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with inside(self.lab.client), urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_value(self, promql: str, ok: Callable[[float], bool], timeout: float = 40) -> float:
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(promql)
            if last is not None and ok(last):
                return last
            self.check_alive()
            time.sleep(0.25)
        raise AssertionError(f"{promql}: last value {last}")

    def check_alive(self) -> None:
        for name in ("exporter_a", "exporter_b", "exporter_nobody", "prometheus"):
            proc = getattr(self, name)
            if proc.poll() is not None:
                log = (self.logs / f"{name}.log").read_text()
                raise AssertionError(f"{name} exited ({proc.returncode}): {log}")


EXPORTER_A = f"""\
targets:
  - hosts: [{LIVE}, target.lab.test, nowhere.lab.test]
    interval: 100ms
    labels: {{kind: live}}
  - hosts: [{LOSSY}]
    interval: 20ms
    timeout: 500ms
    labels: {{kind: lossy}}
  - hosts: [{SILENT}]
    interval: 100ms
    timeout: 300ms
    labels: {{kind: silent}}
  - hosts: [{REJECTED}]
    interval: 100ms
    labels: {{kind: rejected}}
"""

PROMETHEUS = f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: icmpx
    static_configs:
      - targets: ["127.0.0.1:{PORT}"]
        labels: {{vantage: a}}
      - targets: ["{{target4}}:{PORT}"]
        labels: {{vantage: b}}
  - job_name: icmpx_nobody
    static_configs:
      - targets: ["127.0.0.1:{PORT_NOBODY}"]
  - job_name: icmpx_probe
    metrics_path: /probe
    params:
      count: ["3"]
      interval: ["0.05"]
      timeout: ["0.5"]
    static_configs:
      - targets: ["{LIVE}", "{SILENT}", "nowhere.lab.test"]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{PORT}
"""

NFT = f"""\
table inet icmpx_exporter_test {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip daddr {SILENT} icmp type echo-request drop
    ip daddr {REJECTED} icmp type echo-request reject with icmp type host-unreachable
    ip daddr {LOSSY} icmp type echo-request numgen random mod 100 < {LOSS_PCT} drop
  }}
}}
"""


def _ready(ns: str, url: str, proc: subprocess.Popen[str], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: process exited ({proc.returncode}): {log.read_text()}")
        try:
            with inside(ns), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    if shutil.which("prometheus") is None:
        pytest.fail("Debian's prometheus is not installed (.ci/run installs it with apt)")
    with (
        tempfile.TemporaryDirectory(prefix="icmpx-exporter-") as tmp,
        lab_chain(1, target_local4=["198.19.0.0/24"]) as lab,
    ):
        work = Path(tmp)
        router = lab.routers[0]
        lab.exec(["nft", "-f", "-"], ns=router, input=NFT)
        config_a = work / "a.yml"
        config_a.write_text(EXPORTER_A)
        config_b = work / "b.yml"
        config_b.write_text("targets:\n  - hosts: [client.lab.test]\n    interval: 100ms\n")
        prom = work / "prometheus.yml"
        prom.write_text(PROMETHEUS.replace("{target4}", lab.target4))
        (work / "data").mkdir()
        exporter = [sys.executable, "-m", "icmpx", "exporter"]
        names = ("exporter_a", "exporter_b", "exporter_nobody", "prometheus")
        logs = {name: work / f"{name}.log" for name in names}
        with ExitStack() as files:
            err = {name: files.enter_context(path.open("w")) for name, path in logs.items()}
            a = lab.popen(
                [*exporter, "--config", str(config_a), "--listen", f"127.0.0.1:{PORT}"],
                stdout=subprocess.DEVNULL,
                stderr=err["exporter_a"],
            )
            b = lab.popen(
                [*exporter, "--config", str(config_b), "--listen", f"{lab.target4}:{PORT}"],
                ns=lab.target,
                stdout=subprocess.DEVNULL,
                stderr=err["exporter_b"],
            )
            # Uid 65534 with no capability: only a ping socket is possible (the quick form: no file to read).
            nobody = lab.popen(
                [
                    *exporter,
                    LIVE,
                    "--interval",
                    "0.1",
                    "--listen",
                    f"127.0.0.1:{PORT_NOBODY}",
                    "--privileged",
                    "dgram",
                ],
                user="nobody",
                stdout=subprocess.DEVNULL,
                stderr=err["exporter_nobody"],
            )
            prometheus = lab.popen(
                [
                    "prometheus",
                    f"--config.file={prom}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{PROM_PORT}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err["prometheus"],
            )
        _ready(lab.client, f"http://127.0.0.1:{PORT}/-/ready", a, logs["exporter_a"])
        _ready(lab.target, f"http://{lab.target4}:{PORT}/-/ready", b, logs["exporter_b"])
        _ready(lab.client, f"http://127.0.0.1:{PORT_NOBODY}/-/ready", nobody, logs["exporter_nobody"])
        _ready(lab.client, f"http://127.0.0.1:{PROM_PORT}/-/ready", prometheus, logs["prometheus"])
        yield Setup(lab, config_a, a, b, nobody, prometheus, work)
        for proc in (prometheus, a, b, nobody):
            proc.send_signal(signal.SIGTERM)
        for proc in (prometheus, a, b, nobody):
            proc.wait(timeout=15)
        for name, proc in (("exporter_a", a), ("exporter_b", b), ("exporter_nobody", nobody)):
            text = logs[name].read_text()
            assert proc.returncode == 0, text
            assert "Traceback" not in text


def loss(host: str, window: str = "1m") -> str:
    sel = f'job="icmpx",vantage="a",host="{host}"'
    return (
        f"1 - sum(increase(icmpx_responses_total{{{sel}}}[{window}]))"
        f" / sum(increase(icmpx_requests_total{{{sel}}}[{window}]))"
    )


def test_live_targets_answer_and_histogram_counts_them(setup: Setup) -> None:
    sel = f'job="icmpx",vantage="a",host="{LIVE}"'
    first = setup.wait_value(f"icmpx_responses_total{{{sel}}}", lambda v: v > 0)
    setup.wait_value(f"icmpx_responses_total{{{sel}}}", lambda v: v >= first + 20)
    # Same scrape, same target: the histogram counted every reply.
    assert setup.value(f"icmpx_rtt_seconds_count{{{sel}}} - icmpx_responses_total{{{sel}}}") == 0
    setup.wait_value(f"sum(increase(icmpx_requests_total{{{sel}}}[1m]))", lambda v: v >= 30)
    assert setup.value(loss(LIVE)) == pytest.approx(0, abs=0.02)
    name = setup.value('icmpx_responses_total{job="icmpx",vantage="a",host="target.lab.test"}')
    assert name is not None
    assert name > 0
    p99 = setup.value(f"histogram_quantile(0.99, sum by (le) (rate(icmpx_rtt_seconds_bucket{{{sel}}}[1m])))")
    assert p99 is not None
    assert 0 < p99 < 0.1
    assert setup.value(f"icmpx_reply_ttl{{{sel}}}") == 63  # 64, less one for router 1


def test_silent_target_loss_is_1(setup: Setup) -> None:
    sel = f'job="icmpx",vantage="a",host="{SILENT}"'
    setup.wait_value(f"icmpx_requests_total{{{sel}}}", lambda v: v >= 20)
    assert setup.value(f"icmpx_responses_total{{{sel}}}") == 0
    assert setup.value(loss(SILENT)) == 1


def test_icmp_errors_are_counted_by_kind_not_as_replies(setup: Setup) -> None:
    sel = f'job="icmpx",vantage="a",host="{REJECTED}"'
    errors = setup.wait_value(f'icmpx_icmp_errors_total{{{sel},error="host-unreachable"}}', lambda v: v >= 10)
    assert errors > 0
    assert setup.value(f"icmpx_responses_total{{{sel}}}") == 0
    assert setup.value(f"icmpx_rtt_seconds_count{{{sel}}}") == 0
    assert setup.value(loss(REJECTED)) == 1


def test_lossy_link_loss_within_the_band(setup: Setup) -> None:
    sel = f'job="icmpx",vantage="a",host="{LOSSY}"'
    # 50 echoes a second: after 300 of them the binomial spread is about 2.6 points.
    setup.wait_value(f"sum(increase(icmpx_requests_total{{{sel}}}[1m]))", lambda v: v >= 300)
    measured = setup.value(loss(LOSSY))
    assert measured is not None
    assert LOSS_PCT / 100 - 0.12 < measured < LOSS_PCT / 100 + 0.12


def test_unresolvable_name_is_a_signal_not_a_failure(setup: Setup) -> None:
    setup.wait_value('icmpx_resolvable{job="icmpx",vantage="a",host="target.lab.test"}', lambda v: v == 1)
    assert setup.value('icmpx_resolvable{job="icmpx",vantage="a",host="nowhere.lab.test"}') == 0
    assert setup.query('icmpx_requests_total{host="nowhere.lab.test"}') == []


def test_two_vantage_points_are_told_apart_by_label(setup: Setup) -> None:
    b = setup.wait_value('icmpx_responses_total{vantage="b",host="client.lab.test"}', lambda v: v >= 5)
    assert b > 0
    vantages = {r["metric"]["vantage"] for r in setup.query('icmpx_build_info{job="icmpx"}')}
    assert vantages == {"a", "b"}
    assert setup.query('icmpx_responses_total{vantage="a",host="client.lab.test"}') == []


def test_unprivileged_exporter_on_a_ping_socket(setup: Setup) -> None:
    sel = f'job="icmpx_nobody",host="{LIVE}"'
    setup.wait_value(f"sum(increase(icmpx_requests_total{{{sel}}}[1m]))", lambda v: v >= 30)
    responses = f"sum(increase(icmpx_responses_total{{{sel}}}[1m]))"
    requests = f"sum(increase(icmpx_requests_total{{{sel}}}[1m]))"
    assert setup.value(f"1 - {responses} / {requests}") == pytest.approx(0, abs=0.02)
    # A ping socket gets only its own replies: nothing foreign to read, whatever else pings here.
    assert setup.value('icmpx_engine_foreign_total{job="icmpx_nobody"}') == 0


def test_probe_through_relabelling(setup: Setup) -> None:
    setup.wait_value(f'icmpx_probe_success{{job="icmpx_probe",instance="{LIVE}"}}', lambda v: v == 1)
    assert setup.value(f'icmpx_probe_sent{{job="icmpx_probe",instance="{LIVE}"}}') == 3
    setup.wait_value(f'icmpx_probe_success{{job="icmpx_probe",instance="{SILENT}"}}', lambda v: v == 0)
    assert setup.value(f'icmpx_probe_loss_ratio{{job="icmpx_probe",instance="{SILENT}"}}') == 1
    assert setup.query(f'icmpx_probe_rtt_avg_seconds{{job="icmpx_probe",instance="{SILENT}"}}') == []
    nowhere = 'job="icmpx_probe",instance="nowhere.lab.test"'
    setup.wait_value(f"icmpx_probe_resolvable{{{nowhere}}}", lambda v: v == 0)
    assert setup.value(f"up{{{nowhere}}}") == 1


def test_reload_adds_and_removes_without_resetting_the_others(setup: Setup) -> None:
    sel = f'job="icmpx",vantage="a",host="{LIVE}"'
    setup.wait_value(f"icmpx_responses_total{{{sel}}}", lambda v: v > 0)
    setup.config.write_text(EXPORTER_A.replace(f"[{SILENT}]", f"[{ADDED}]"))
    setup.exporter_a.send_signal(signal.SIGHUP)
    added = f'job="icmpx",vantage="a",host="{ADDED}"'
    setup.wait_value(f"icmpx_responses_total{{{added}}}", lambda v: v >= 5)
    # The removed target's series went stale at the first scrape without it.
    deadline = time.monotonic() + 20
    while setup.query(f'icmpx_requests_total{{host="{SILENT}"}}'):
        assert time.monotonic() < deadline, "the removed target is still exported"
        time.sleep(0.25)
    before = setup.value(f"icmpx_responses_total{{{sel}}}")
    assert before is not None
    setup.wait_value(f"icmpx_responses_total{{{sel}}}", lambda v: v >= before + 10)
    assert setup.value(f"resets(icmpx_responses_total{{{sel}}}[5m])") == 0
    assert setup.value(f"resets(icmpx_requests_total{{{sel}}}[5m])") == 0
    assert setup.value('icmpx_config_last_reload_successful{job="icmpx",vantage="a"}') == 1
