"""The `icmpx` command line on loopback: JSON documents as API.md fixes them, text output, exit codes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pty
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import icmpx
from lab import Lab
from netns import inside, quiet_namespace

# A name that fails in the resolver library itself (a label longer than 63 characters): no DNS query leaves.
UNRESOLVABLE = "a" * 64 + ".test"


def icmpx_cli(
    *args: str, input: str | None = None, netns: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "icmpx", *args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, input=input)


def start_cli(*args: str, netns: str | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "icmpx", *args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_when(proc: subprocess.Popen[str], ready: Callable[[str], bool], timeout: float = 20) -> str:
    """Read stdout line by line until ``ready(line)``; then send SIGINT (Ctrl-C) and return that line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line == "":
            raise AssertionError(f"the command ended before it was interrupted: {proc.communicate()}")
        if ready(line):
            proc.send_signal(signal.SIGINT)
            return line
    raise AssertionError("the command never printed what the test waits for")


def icmp_counter(netns: str, name: str) -> int:
    """An ICMP counter of a network namespace (``InEchoReps``, ``InTimeExcds``, ``Icmp6InEchoReplies``)."""
    for table in ("snmp", "snmp6"):
        text = subprocess.run(
            ["ip", "netns", "exec", netns, "cat", f"/proc/net/{table}"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        lines = text.splitlines()
        if table == "snmp6":
            values = dict(line.split() for line in lines if line.strip())
            if name in values:
                return int(values[name])
            continue
        icmp = [line.split()[1:] for line in lines if line.startswith("Icmp:")]
        if len(icmp) == 2 and name in icmp[0]:
            return int(icmp[1][icmp[0].index(name)])
    raise KeyError(name)


def interrupt_once(
    args: list[str], netns: str, counter: str, at_least: int, timeout: float = 20
) -> subprocess.Popen[str]:
    """Start the command in ``netns``; SIGINT (Ctrl-C) it as soon as the namespace has counted ``at_least``
    more of ``counter`` (packets the command received: it has something to report)."""
    goal = icmp_counter(netns, counter) + at_least
    proc = start_cli(*args, netns=netns)
    deadline = time.monotonic() + timeout
    while icmp_counter(netns, counter) < goal:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{counter} never reached {goal}"
    proc.send_signal(signal.SIGINT)
    return proc


@contextlib.contextmanager
def namespace(*sysctls: str) -> Iterator[str]:
    """A fresh network namespace with loopback up; ``sysctls`` are ``path=value`` under /proc/sys."""
    name = f"icmpx-{secrets.token_hex(4)}-cli"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        script = "; ".join(
            f"echo {value} > /proc/sys/{path}" for path, value in (s.split("=") for s in sysctls)
        )
        if script:
            subprocess.run(["ip", "netns", "exec", name, "sh", "-c", script], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


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
        assert set(row) == {"seq", "rtt_ms", "error", "from", "ttl", "weak"}
        assert row["weak"] is False
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
    assert set(hop) == {"ttl", "addr", "addrs", "hostname", "rtts_ms", "weak"}
    assert hop["weak"] == [False, False]
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


# ----------------------------------------------------------------------------------- Ctrl-C (item 6)


# The namespace counts a packet a moment before the command reads it: a SIGINT sent in that moment finds
# nothing collected yet. The run is then repeated (the output is still checked, apart from the rows).
ATTEMPTS = 5


def _no_traceback(proc: subprocess.Popen[str], stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr


@pytest.mark.lab
def test_ctrl_c_in_traceroute_prints_the_hops_it_has(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(2, silent=[2])  # hop 1 answers at once, hop 2 never: the trace waits its 30 s timeout
    proc = start_cli("traceroute", lab.target4, "-n", "-q", "1", "-W", "30", netns=lab.client)
    interrupt_when(proc, lambda line: line.startswith(" 1 "))
    out, err = proc.communicate(timeout=20)
    _no_traceback(proc, err)
    assert proc.returncode == 1  # the destination had not answered: as documented for an unreached trace
    args = ["traceroute", lab.target4, "-n", "-q", "1", "-W", "30", "--json"]
    for _attempt in range(ATTEMPTS):
        proc = interrupt_once(args, lab.client, "InTimeExcds", 1)
        out, err = proc.communicate(timeout=20)
        _no_traceback(proc, err)
        assert proc.returncode == 1
        doc = json.loads(out)
        assert doc["reached"] is False
        if doc["hops"]:
            break
    assert [(h["ttl"], h["addr"]) for h in doc["hops"]] == [(1, lab.hop4(1))]


@pytest.mark.lab
def test_ctrl_c_in_multiping_prints_every_row(lab_required: None) -> None:
    # IPv4 echoes go unanswered (30 s timeout), IPv6 ones are answered at once.
    with namespace("net/ipv4/icmp_echo_ignore_all=1") as ns:
        for mode in ([], ["--json"]):
            args = ["multiping", "::1", "127.0.0.1", "-W", "30", *mode]
            for _attempt in range(ATTEMPTS):
                proc = interrupt_once(args, ns, "Icmp6InEchoReplies", 1)
                out, err = proc.communicate(timeout=20)
                _no_traceback(proc, err)
                assert proc.returncode == 1
                first = json.loads(out)["hosts"][0]["received"] if mode else out.splitlines()[0]
                if first == 1 or (not mode and "interrupted" not in first):
                    break
            if mode:
                hosts = json.loads(out)["hosts"]
                assert [(h["target"], h["received"]) for h in hosts] == [("::1", 1), ("127.0.0.1", 0)]
                assert hosts[0]["error"] is None
                assert "interrupted" in hosts[1]["error"]
            else:
                lines = out.splitlines()
                assert lines[0].startswith("::1       : xmt/rcv/%loss = 1/1/0%")
                assert lines[1].startswith("127.0.0.1 : interrupted")
                assert lines[2].startswith("2 targets, 1 alive")


@pytest.mark.lab
@pytest.mark.parametrize("mode", [["--json"], ["--report"]])
def test_ctrl_c_in_mtr_prints_the_report_so_far(lab_required: None, mode: list[str]) -> None:
    with namespace() as ns:
        args = ["mtr", "127.0.0.1", "-n", "-i", "0.01", "-c", "100000", *mode]
        # A cycle probes TTLs 1-30 at once and, on loopback, all 30 come back as echo replies: 200
        # replies are several complete cycles.
        proc = interrupt_once(args, ns, "InEchoReps", 200)
        out, err = proc.communicate(timeout=20)
    _no_traceback(proc, err)
    assert proc.returncode == 0, (out, err)
    if mode == ["--json"]:
        doc = json.loads(out)
        assert 1 <= doc["cycles"] < 100000
        assert doc["hops"][0]["received"] >= 1
    else:
        assert out.startswith("mtr to 127.0.0.1 (127.0.0.1), ")
        assert out.splitlines()[1].split()[:2] == ["Hop", "Address"]


def test_ctrl_c_in_ping_prints_the_summary() -> None:
    proc = start_cli("ping", "127.0.0.1", "-n", "-i", "0.05", "-c", "100000")
    interrupt_when(proc, lambda line: "icmp_seq=2 " in line)
    out, err = proc.communicate(timeout=20)
    _no_traceback(proc, err)
    assert proc.returncode == 0
    assert "ping statistics" in out


# ------------------------------------------------------------------------------- closed pipe (item 7)


@pytest.mark.parametrize(
    "args",
    [
        ["ping", "127.0.0.1", "-n", "-i", "0.01", "-c", "50"],
        ["multiping", "127.0.0.1", "::1", "127.0.0.2", "-c", "1"],
        ["traceroute", "127.0.0.1", "-n"],
        ["mtr", "127.0.0.1", "-n", "-c", "2", "-i", "0.01"],
    ],
)
def test_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails with EPIPE
    proc = subprocess.run(
        [sys.executable, "-m", "icmpx", *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60
    )
    os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 0


def test_head_gets_its_line_and_the_command_stops() -> None:
    shell = f"{sys.executable} -m icmpx ping 127.0.0.1 -n -i 0.01 -c 500 | head -1; echo ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == ["PING 127.0.0.1 (127.0.0.1) 56 data bytes", "0"]


# ----------------------------------------------------------------------------- argument errors (8, 9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ping", "::1", "-c", "-1"], "argument -c/--count: invalid value '-1': out of range: 1 <= value"),
        (["ping", "::1", "-W", "-1"], "argument -W/--timeout: invalid value '-1': out of range: 0 < value"),
        (["ping", "127.0.0.1", "-t", "-5"], "out of range: 1 <= value <= 255"),
        (["multiping", "::1", "--rate", "-5"], "--rate: invalid value '-5': out of range: 0 <= value"),
        (["mtr", "127.0.0.1", "-i", "-0.5"], "out of range: 0 < value"),
        (["traceroute", "127.0.0.1", "-f", "5", "-m", "3"], "first hop 5 is beyond max hops 3"),
        (["ping", "127.0.0.1", "-s", "65508"], "payload size 65508 is too large for IPv4 (at most 65507)"),
        (["ping", "::1", "-s", "65528"], "out of range: 0 <= value <= 65527"),
        (["ping", "fe80::1%nosuchif0"], "unknown interface 'nosuchif0' in fe80::1%nosuchif0"),
    ],
)  # fmt: skip
def test_range_errors_name_the_range_and_the_command(args: list[str], message: str) -> None:
    proc = icmpx_cli(*args)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""  # no PING header before the error
    usage, *rest = proc.stderr.splitlines()
    assert usage.startswith(f"usage: icmpx {args[0]} "), proc.stderr  # the command's usage, not icmpx's
    assert rest[-1].startswith(f"icmpx {args[0]}: error: "), proc.stderr
    assert rest[-1].endswith(message), proc.stderr


def test_help_states_the_payload_limits_the_check_applies() -> None:
    text = " ".join(icmpx_cli("ping", "--help").stdout.split())
    assert "at most 65507 over IPv4, 65527 over IPv6" in text
    largest = icmpx_cli("ping", "127.0.0.1", "-s", "65507", "-c", "1", "-n", "-q")
    assert largest.returncode == 0, largest.stderr
    assert icmpx_cli("ping", "127.0.0.1", "-s", "65508", "-c", "1").returncode == 3


def test_ping_quiet_prints_only_header_and_summary() -> None:
    proc = icmpx_cli("ping", "127.0.0.1", "-q", "-c", "3", "-i", "0.01")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PING 127.0.0.1 (127.0.0.1) 56 data bytes"
    assert not any("icmp_seq" in line for line in lines)
    assert "3 packets transmitted, 3 received, 0% packet loss" in proc.stdout


def test_multiping_numeric_is_accepted_and_hosts_come_from_stdin() -> None:
    proc = icmpx_cli("multiping", "-n", "--json", input="127.0.0.1\n::1 # comment\n")
    assert proc.returncode == 0, proc.stderr
    assert [h["target"] for h in json.loads(proc.stdout)["hosts"]] == ["127.0.0.1", "::1"]


# ------------------------------------------------------------------------------ target files (item 10)


def test_target_file_words_control_bytes_and_long_names(tmp_path: Path) -> None:
    garbage = "bad\x1b[31m" + UNRESOLVABLE  # control bytes; fails in the resolver library like UNRESOLVABLE
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 ::1\n127.0.0.2\t{garbage}\n{UNRESOLVABLE}\n# comment only\n")
    proc = icmpx_cli("multiping", "-f", str(hosts))
    assert proc.returncode == 2, proc.stderr  # two names did not resolve
    lines = proc.stdout.splitlines()
    names = [line.split(" : ")[0].rstrip() for line in lines[:-1]]
    assert names == ["127.0.0.1", "::1", "127.0.0.2", "bad\\x1b[31m" + UNRESOLVABLE, UNRESOLVABLE]
    assert "\x1b" not in proc.stdout
    # Short names are padded to at most 40 columns, not to the longest name (69 characters).
    assert lines[0].index(" : ") == 40


# ------------------------------------------------------------------------------------ --json (item 11)


def test_json_figures_are_rounded_to_the_microsecond() -> None:
    runs = [
        icmpx_cli("ping", "127.0.0.1", "-c", "3", "-i", "0.01", "-n", "--json"),
        icmpx_cli("multiping", "127.0.0.1", "::1", "-c", "3", "-i", "0.01", "--json"),
        icmpx_cli("traceroute", "127.0.0.1", "-n", "--json"),
        icmpx_cli("mtr", "127.0.0.1", "-n", "-c", "3", "-i", "0.01", "--json"),
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    docs = [json.loads(run.stdout) for run in runs]

    def floats(value: object) -> Iterator[float]:
        if isinstance(value, float):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from floats(item)
        elif isinstance(value, list):
            for item in value:
                yield from floats(item)

    figures = [x for doc in docs for x in floats(doc)]
    assert len(figures) > 20
    for x in figures:
        assert round(x, 6) == x, x  # elapsed_s keeps microseconds in seconds
    ping_rtts = [r["rtt_ms"] for r in docs[0]["results"]]
    assert all(round(x, 3) == x for x in ping_rtts)


@pytest.mark.parametrize("command", ["ping", "traceroute", "mtr", "multiping"])
def test_an_unresolvable_name_is_reported_in_the_json_document(command: str) -> None:
    proc = icmpx_cli(command, UNRESOLVABLE, "--json", "-c" if command != "traceroute" else "-q", "1")
    assert proc.returncode == 2
    assert "cannot resolve" in proc.stderr or command == "multiping"
    doc = json.loads(proc.stdout)
    row = doc["hosts"][0] if command == "multiping" else doc
    assert row["target"] == UNRESOLVABLE
    assert row["addr"] is None
    assert row["error"]


# ------------------------------------------------------------------------ mtr without rich (item 12)


def test_mtr_on_a_terminal_without_rich_says_the_live_view_needs_the_extra(tmp_path: Path) -> None:
    (tmp_path / "rich").mkdir()
    (tmp_path / "rich" / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "icmpx", "mtr", "127.0.0.1", "-n", "-c", "2", "-i", "0.01"],
            stdout=follower, stderr=subprocess.PIPE, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )  # fmt: skip
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("the live view needs the 'cli' extra (pip install 'icmpx[cli]')") == 1
    assert b"mtr to 127.0.0.1 (127.0.0.1), 2 cycles" in shown


# ------------------------------------------------------------------------------- link-local (item 14)


@pytest.mark.lab
def test_link_local_addresses_keep_their_zone(lab_required: None) -> None:
    with namespace() as ns:
        link = ["ip", "-n", ns, "link"]
        subprocess.run([*link, "add", "d0", "type", "veth", "peer", "name", "d1"], check=True, timeout=30)
        subprocess.run([*link, "set", "d0", "up"], check=True, timeout=30)
        subprocess.run([*link, "set", "d1", "up"], check=True, timeout=30)
        subprocess.run(
            ["ip", "-n", ns, "addr", "add", "fe80::1/64", "dev", "d0", "nodad"], check=True, timeout=30
        )
        proc = icmpx_cli("ping", "fe80::1%d0", "-n", "-c", "1", netns=ns)
        unknown = icmpx_cli("ping", "fe80::1%nosuchif0", "-c", "1", netns=ns)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PING fe80::1%d0 (fe80::1%d0) 56 data bytes"
    assert lines[1].startswith("64 bytes from fe80::1%d0: icmp_seq=1 ")
    assert unknown.returncode == 3
    assert "unknown interface 'nosuchif0'" in unknown.stderr
    assert "cannot resolve" not in unknown.stderr


def test_exit_statuses_are_documented() -> None:
    cli_doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for phrase in ("Ctrl-C", "closed", "| head"):
        assert phrase in cli_doc, phrase
    help_text = " ".join(icmpx_cli("--help").stdout.split())
    assert "Ctrl-C prints what was collected" in help_text
