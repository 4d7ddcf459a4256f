"""What icmpx puts on the wire, counted twice: tcpdump in the client's namespace (``-B 65536``, trusted only
with 0 drops) and an nft counter on the client's output hook.

* ``icmpx multiping --rate R`` never has more than R echo requests in any one-second window, the first one
  included;
* ``icmpx mtr -c 5 -i 0.2 -W 2`` through a chain with a silent hop sends only what its cycles need.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from icmpx._pacing import Pacer
from lab import Lab

pytestmark = pytest.mark.lab

_NFT_TABLE = "icmpx_wire"


@contextlib.contextmanager
def counted_echo_requests(lab: Lab, tmp_path: Path) -> Iterator[Callable[[], list[float]]]:
    """Capture the client's echo requests; yields a function that stops the capture, checks that tcpdump
    and nft agree (and tcpdump dropped nothing), and returns the capture's timestamps."""
    lab.exec(
        ["nft", "-f", "-"],
        input=(
            f"table inet {_NFT_TABLE} {{\n"
            "  counter requests { }\n"
            "  chain out { type filter hook output priority 0; policy accept;\n"
            '    icmp type echo-request counter name "requests"\n'
            '    icmpv6 type echo-request counter name "requests"\n'
            "  }\n"
            "}\n"
        ),
    )
    pcap = tmp_path / "requests.pcap"
    dump = lab.popen(
        ["tcpdump", "-i", "next", "-B", "65536", "-n", "-U", "-w", str(pcap),
         "icmp[icmptype] == icmp-echo or icmp6[icmp6type] == icmp6-echo"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert dump.stderr is not None
    # tcpdump says "listening on ..." once its capture is open.
    deadline = time.monotonic() + 10
    banner = ""
    while "listening on" not in banner:
        left = deadline - time.monotonic()
        assert left > 0, f"tcpdump did not start: {banner!r}"
        ready, _, _ = select.select([dump.stderr], [], [], left)
        if ready:
            line = dump.stderr.readline()
            assert line, f"tcpdump exited: {banner!r}"
            banner += line

    def captured() -> list[float]:
        listing = subprocess.run(
            ["tcpdump", "-r", str(pcap), "-tt", "-n"], capture_output=True, text=True, check=False
        ).stdout
        return [float(line.split()[0]) for line in listing.splitlines() if line.strip()]

    def stop() -> list[float]:
        counter = lab.exec(["nft", "-j", "list", "counter", "inet", _NFT_TABLE, "requests"]).stdout
        packets = next(
            item["counter"]["packets"] for item in json.loads(counter)["nftables"] if "counter" in item
        )
        # tcpdump writes what it has read (-U); let it read the rest of its buffer before stopping it.
        deadline = time.monotonic() + 10
        while len(captured()) < packets and time.monotonic() < deadline:
            time.sleep(0.1)  # polls a file, bounded by the deadline
        dump.send_signal(signal.SIGINT)
        _, err = dump.communicate(timeout=10)
        dropped = re.search(r"(\d+) packets? dropped by kernel", err)
        assert dropped is not None, err
        assert dropped.group(1) == "0", err
        times = captured()
        assert packets == len(times), f"nft counted {packets}, tcpdump {len(times)}"
        return times

    yield stop


def most_in_a_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def icmpx_cli(lab: Lab, *args: str, input: str | None = None, timeout: float = 60) -> str:
    done = lab.exec([sys.executable, "-m", "icmpx", *args], input=input, timeout=timeout, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_multiping_rate_holds_in_every_second_from_the_start(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    rate = 500
    lab = make_lab(0, target_local4=["198.19.0.0/16"])
    hosts = [f"198.19.{i // 250}.{i % 250 + 1}" for i in range(1300)]
    with counted_echo_requests(lab, tmp_path) as stop:
        out = icmpx_cli(lab, "multiping", "--rate", str(rate), "-c", "1", "-W", "1", "--json", "-f", "-",
                        input="\n".join(hosts))  # fmt: skip
        times = stop()
    rows = json.loads(out)["hosts"]
    assert sum(row["received"] for row in rows) == len(hosts)
    assert len(times) == len(hosts)
    start = times[0]
    first_tenth = sum(t < start + 0.1 for t in times)
    first_second = sum(t < start + 1.0 for t in times)
    # A tenth of the rate, plus the few slots a late sender may catch up on (the first send also opens
    # the socket, which delays it on the wire).
    limit = rate * 0.1 + 1 + Pacer(rate).catch_up
    assert first_tenth <= limit, f"{first_tenth} echo requests in the first 100 ms"
    assert first_second <= rate, f"{first_second} echo requests in the first second"
    assert most_in_a_window(times) <= rate
    # ... and the rate is used: 1,300 at 500/s take about 2.6 s.
    assert times[-1] - start < 3.0


def test_mtr_through_a_silent_hop_sends_only_what_its_cycles_need(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """Cycles start every 0.2 s, each waits 2 s for the silent hop: the first round probes all 30 TTLs, the
    four others (started before the first completes) only up to the destination, learnt from its first
    answer. (Every round probing 30 TTLs until the first completed: 150 echo requests.)"""
    lab = make_lab(3, silent=[2])
    destination_ttl = 4
    with counted_echo_requests(lab, tmp_path) as stop:
        out = icmpx_cli(lab, "mtr", "-c", "5", "-i", "0.2", "-W", "2", "-n", "--json", lab.target4)
        times = stop()
    report = json.loads(out)
    assert report["cycles"] == 5
    hops = report["hops"]
    assert [h["ttl"] for h in hops] == [1, 2, 3, 4]
    assert hops[-1]["addr"] == lab.target4
    assert hops[1]["addr"] is None  # the silent hop
    assert all(h["sent"] == 5 for h in hops)
    assert len(times) <= 30 + 4 * destination_ttl, f"{len(times)} echo requests for 5 cycles"
