"""The `icmpx` command line on loopback: JSON documents as API.md fixes them, text output, exit codes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator

import pytest

import icmpx
from netns import inside, quiet_namespace


def icmpx_cli(
    *args: str, input: str | None = None, netns: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "icmpx", *args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, input=input)


@pytest.fixture
def quiet_netns(lab_required: None) -> Iterator[str]:
    """A namespace where nothing answers echoes, for commands run in it (this thread stays put)."""
    with quiet_namespace() as name:
        yield name


def test_public_names_are_the_documented_ones() -> None:
    documented = {
        "AsyncClient", "Client", "EchoResult", "EchoRequest", "EchoReply", "ReceivedPacket", "IPHeader",
        "TracerouteResult", "Hop", "PingStats", "MtrReport", "MtrHop", "IcmpxError",
        "RawSocketPermissionError", "NameResolutionError", "ClientClosedError",
    }  # fmt: skip
    assert documented <= set(icmpx.__all__)
    for name in icmpx.__all__:
        assert getattr(icmpx, name) is not None
        if name != "__version__":
            assert getattr(icmpx, name).__doc__, f"{name} has no docstring"
    for name in ("RawSocketPermissionError", "NameResolutionError", "ClientClosedError", "MalformedPacket"):
        assert issubclass(getattr(icmpx, name), icmpx.IcmpxError)


def test_ping_json_document() -> None:
    proc = icmpx_cli("ping", "127.0.0.1", "-c", "3", "-i", "0.05", "-n", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"target", "addr", "results", "stats"}
    assert doc["target"] == doc["addr"] == "127.0.0.1"
    assert [r["seq"] for r in doc["results"]] == [1, 2, 3]
    for row in doc["results"]:
        assert set(row) == {"seq", "rtt_ms", "error", "from", "ttl"}
        assert row["error"] is None
        assert row["from"] == "127.0.0.1"
        assert row["ttl"] == 64
        assert 0 < row["rtt_ms"] < 100
    stats = doc["stats"]
    assert set(stats) == {
        "sent",
        "received",
        "loss_pct",
        "min_ms",
        "avg_ms",
        "max_ms",
        "stdev_ms",
        "jitter_ms",
    }
    assert (stats["sent"], stats["received"], stats["loss_pct"]) == (3, 3, 0.0)
    assert stats["min_ms"] <= stats["avg_ms"] <= stats["max_ms"]


def test_ping_text_output() -> None:
    proc = icmpx_cli("ping", "::1", "-c", "2", "-i", "0.05", "-n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PING ::1 (::1) 56 data bytes"
    assert lines[1].startswith("64 bytes from ::1: icmp_seq=1 ttl=64 time=")
    assert lines[2].startswith("64 bytes from ::1: icmp_seq=2 ")
    assert "2 packets transmitted, 2 received, 0% packet loss" in proc.stdout


def test_traceroute_json_document() -> None:
    proc = icmpx_cli("traceroute", "127.0.0.1", "-q", "2", "-n", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"target", "addr", "reached", "hops"}
    assert doc["reached"] is True
    assert len(doc["hops"]) == 1
    hop = doc["hops"][0]
    assert set(hop) == {"ttl", "addr", "addrs", "hostname", "rtts_ms"}
    assert (hop["ttl"], hop["addr"], hop["addrs"], hop["hostname"]) == (1, "127.0.0.1", ["127.0.0.1"], None)
    assert len(hop["rtts_ms"]) == 2
    assert all(isinstance(r, float) and not math.isinf(r) for r in hop["rtts_ms"])


def test_mtr_json_and_report() -> None:
    proc = icmpx_cli("mtr", "127.0.0.1", "-c", "3", "-i", "0.05", "-n", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"target", "addr", "cycles", "hops"}
    assert doc["cycles"] == 3
    (hop,) = doc["hops"]
    assert set(hop) == {
        "ttl", "addr", "addrs", "hostname", "sent", "received", "loss_pct", "last_ms", "avg_ms", "best_ms",
        "worst_ms", "stdev_ms", "javg_ms",
    }  # fmt: skip
    assert (hop["sent"], hop["received"], hop["loss_pct"]) == (3, 3, 0.0)
    # Not a terminal: a plain report after 10 cycles by default.
    report = icmpx_cli("mtr", "127.0.0.1", "-i", "0.01", "-n")
    assert report.returncode == 0, report.stderr
    assert "10 cycles" in report.stdout.splitlines()[0]
    assert report.stdout.splitlines()[1].split()[:3] == ["Hop", "Address", "Hostname"]


@pytest.mark.parametrize(
    "args",
    [
        ["ping", "127.0.0.1", "-c", "0"],
        ["ping", "127.0.0.1", "-t", "256"],
        ["ping", "127.0.0.1", "-W", "-1"],
        ["ping", "127.0.0.1", "-s", "70000"],
        ["ping", "127.0.0.1", "-6"],
        ["ping"],
        ["traceroute", "127.0.0.1", "-m", "0"],
        ["traceroute", "127.0.0.1", "-f", "5", "-m", "3"],
        ["mtr", "127.0.0.1", "-i", "0"],
        ["multiping"],
        ["nonsense"],
    ],
)
def test_bad_arguments_exit_3(args: list[str]) -> None:
    proc = icmpx_cli(*args)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert proc.stderr.strip()
    assert proc.stdout == ""


def test_version_and_help() -> None:
    assert icmpx_cli("--version").stdout.strip() == f"icmpx {icmpx.__version__}"
    for command in ("ping", "traceroute", "multiping", "mtr"):
        proc = icmpx_cli(command, "--help")
        assert proc.returncode == 0
        assert "--json" in proc.stdout


@pytest.mark.lab
def test_no_answer_exits_1(quiet_netns: str) -> None:
    proc = icmpx_cli(
        "ping", "127.0.0.1", "-c", "2", "-i", "0.05", "-W", "0.2", "-n", "--json", netns=quiet_netns
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["error"] for r in doc["results"]] == ["timeout", "timeout"]
    assert doc["stats"]["loss_pct"] == 100.0
    assert doc["stats"]["min_ms"] is None
    trace = icmpx_cli(
        "traceroute", "127.0.0.1", "-m", "3", "-q", "1", "-W", "0.2", "-n", "--json", netns=quiet_netns
    )
    assert trace.returncode == 1
    assert json.loads(trace.stdout)["reached"] is False
    sweep = icmpx_cli("multiping", "127.0.0.1", "::1", "-W", "0.2", "--json", netns=quiet_netns)
    assert sweep.returncode == 1
    assert [h["received"] for h in json.loads(sweep.stdout)["hosts"]] == [0, 0]


@pytest.mark.lab
def test_in_process_quiet_namespace_helper_really_drops_echoes(quiet_netns: str) -> None:
    """Guard for the other quiet-namespace tests: inside it, nothing answers; outside, loopback does."""
    with inside(quiet_netns), icmpx.Client(timeout=0.2) as client:
        assert client.probe("127.0.0.1").error == "timeout"
    with icmpx.Client(timeout=0.5) as client:
        assert client.probe("127.0.0.1").error is None
