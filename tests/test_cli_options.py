"""The command line's per-probe options (-I, -Q, -M, --mark) and `icmpx pmtu`, on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def icmpx_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "icmpx", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ping", "127.0.0.1", "-c", "1", "-Q", "256"], "invalid TOS '256'"),
        (["ping", "127.0.0.1", "-c", "1", "-Q", "ef"], "invalid TOS 'ef'"),
        (["ping", "127.0.0.1", "-c", "1", "-M", "maybe"], "invalid choice: 'maybe'"),
        (["ping", "127.0.0.1", "-c", "1", "--mark", "-1"], "invalid mark '-1'"),
        (["ping", "127.0.0.1", "-c", "1", "-I", "nosuch0"], "unknown interface 'nosuch0'"),
        (["ping", "127.0.0.1", "-c", "1", "-I", "198.18.77.1"], "198.18.77.1 is not an address of this host"),
        (["ping", "::1", "-c", "1", "-I", "127.0.0.1"], "cannot send to IPv6 destinations"),
        (["traceroute", "127.0.0.1", "-n", "-I", "nosuch0"], "unknown interface 'nosuch0'"),
        (["multiping", "127.0.0.1", "-Q", "999"], "invalid TOS '999'"),
        (["mtr", "127.0.0.1", "--report", "-I", "198.18.77.1"], "is not an address of this host"),
        (["pmtu", "127.0.0.1", "-I", "nosuch0"], "unknown interface 'nosuch0'"),
        (["pmtu", "127.0.0.1", "-M", "do"], "unrecognized arguments: -M do"),
    ],
)
def test_bad_option_values_exit_3_with_one_error_line_and_no_output(args: list[str], message: str) -> None:
    proc = icmpx_cli(*args)
    assert proc.returncode == 3, proc
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    assert message in errors[0]
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr


def test_options_ride_on_ping_and_sweeps() -> None:
    ping = icmpx_cli(
        "ping", "127.0.0.1", "-c", "2", "-i", "0.01", "-I", "lo", "-Q", "0xb8", "-M", "do", "--json"
    )
    assert ping.returncode == 0, ping.stderr
    assert [r["error"] for r in json.loads(ping.stdout)["results"]] == [None, None]
    source = icmpx_cli("ping", "::1", "-c", "1", "-I", "::1", "-n")
    assert source.returncode == 0, source.stderr
    sweep = icmpx_cli("multiping", "127.0.0.1", "::1", "-Q", "16", "-M", "dont", "--rate", "0", "--json")
    assert sweep.returncode == 0, sweep.stderr
    assert [h["received"] for h in json.loads(sweep.stdout)["hosts"]] == [1, 1]


def test_pmtu_of_loopback_is_its_mtu() -> None:
    text = icmpx_cli("pmtu", "127.0.0.1", "-n")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("path MTU to 127.0.0.1 (127.0.0.1): 65535 bytes")
    doc = json.loads(icmpx_cli("pmtu", "::1", "--json").stdout)
    assert (doc["mtu"], doc["hop"], doc["hop_addr"], doc["reported"]) == (65536, None, None, False)
    assert doc["probes"] > 0


def test_help_lists_the_options_and_pmtu() -> None:
    top = icmpx_cli("--help").stdout
    assert "pmtu" in top
    for command in ("ping", "traceroute", "multiping", "mtr"):
        text = icmpx_cli(command, "--help").stdout
        for flag in ("-I ADDR|IFACE", "-Q TOS", "-M {do,dont,want}", "--mark N"):
            assert flag in text, (command, flag)
    pmtu = icmpx_cli("pmtu", "--help").stdout
    assert "-I ADDR|IFACE" in pmtu
    assert "-M" not in pmtu
