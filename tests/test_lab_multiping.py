"""multiping() against kernel routers in network namespaces: unreachable and silent targets, names from the
lab's hosts file, unprivileged ping sockets, IPv6 at scale.

Sweeps that need no name resolution run in-process with this thread moved into the client namespace
(``inside``); those that resolve names, or run as uid 65534, run as a subprocess under ``ip netns exec``,
where /etc/hosts and /etc/resolv.conf are the lab's own (a resolver at 127.0.0.1 where nothing listens),
so no lookup leaves the machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import icmpx
from lab import Lab
from netns import inside

pytestmark = pytest.mark.lab

BACKENDS = ["asyncio", "trio"]
RTT_FIELDS = ("min_rtt", "avg_rtt", "max_rtt", "stdev_rtt", "jitter")


def run_json(lab: Lab, code: str, *, user: str = "root", timeout: float = 60) -> Any:
    """Run a snippet in the client namespace; it prints one JSON document."""
    proc = lab.python(code, user=user, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sweep_in(
    lab: Lab, backend: str, targets: list[str], **options: Any
) -> tuple[list[icmpx.PingStats], float]:
    """multiping from the lab's client namespace, in this process: (rows, seconds the call took)."""

    async def main() -> tuple[list[icmpx.PingStats], float]:
        async with icmpx.AsyncClient(timeout=2) as client:
            started = time.monotonic()
            rows = await client.multiping(targets, **options)
            elapsed = time.monotonic() - started
            assert client.stats.pending == 0
            return rows, elapsed

    with inside(lab.client):
        return anyio.run(main, backend=backend)


# ------------------------------------------------------------------------------- unreachable targets


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_unreachable_sweep_ends_in_about_the_timeout(make_lab: Callable[..., Lab], backend: str) -> None:
    """200 targets answer; 100 have no route (router 1 answers net-unreachable, but rate-limits those
    errors, so most simply time out) and 100 sit on the last link where no host owns them (ARP fails:
    silence). Every target gets its verdict, and the sweep waits for the timeout once, not per target."""
    lab = make_lab(2, target_local4=["198.18.200.0/24"])
    reachable = [f"198.18.200.{i}" for i in range(1, 201)]
    unroutable = [f"198.19.77.{i}" for i in range(1, 101)]
    silent = [f"198.18.3.{i}" for i in range(100, 200)]  # link 3 joins router 2 and the target (.1, .2)
    targets = [t for pair in zip(reachable, unroutable + silent, strict=True) for t in pair]
    assert len(targets) == 400

    rows, elapsed = sweep_in(lab, backend, targets, timeout=1.0, rate=None)

    assert [r.target for r in rows] == targets
    by_target = {r.target: r for r in rows}
    for t in reachable:
        row = by_target[t]
        assert (row.addr, row.sent, row.received, row.loss_pct, row.error) == (t, 1, 1, 0.0, None), row
        assert row.avg_rtt is not None
        assert 0 < row.avg_rtt < 100
    for t in unroutable + silent:
        row = by_target[t]
        assert (row.addr, row.sent, row.received, row.loss_pct, row.error) == (t, 1, 0, 100.0, None), row
        assert all(getattr(row, f) is None for f in RTT_FIELDS), row
    assert 0.9 <= elapsed < 1.6, elapsed


@pytest.mark.parametrize("backend", BACKENDS)
def test_answers_stream_out_before_the_timeouts(make_lab: Callable[..., Lab], backend: str) -> None:
    """iter_multiping hands over each answered target at once; the silent ones come at the timeout."""
    lab = make_lab(2, target_local4=["198.18.200.0/24"])
    reachable = [f"198.18.200.{i}" for i in range(1, 101)]
    silent = [f"198.18.3.{i}" for i in range(100, 200)]

    async def main() -> list[tuple[float, icmpx.PingStats]]:
        seen = []
        async with icmpx.AsyncClient(timeout=1.0) as client:
            await client.multiping(reachable[:1], rate=None)
            started = time.monotonic()
            async for row in client.iter_multiping(silent + reachable, count=2, interval=0.05, rate=None):
                seen.append((time.monotonic() - started, row))
        return seen

    with inside(lab.client):
        seen = anyio.run(main, backend=backend)
    assert sorted(r.target for _, r in seen) == sorted(silent + reachable)
    answered = [(at, r) for at, r in seen if r.target in reachable]
    lost = [(at, r) for at, r in seen if r.target in silent]
    assert all(r.received == 2 for _, r in answered)
    assert all(r.received == 0 for _, r in lost)
    assert max(at for at, _ in answered) < 0.5
    assert min(at for at, _ in lost) >= 0.9  # the second round's echoes time out at 0.05 + 1 s


# ------------------------------------------------------------------------------- names


NAMES_SCRIPT = """
import json, anyio, icmpx
async def main():
    async with icmpx.AsyncClient(timeout=1) as client:
        rows = await client.multiping(HOSTS, count=2, interval=0.05, rate=None)
        streamed = [r async for r in client.iter_multiping(HOSTS, rate=None)]
        sent = client.stats.sent
    print(json.dumps({
        "rows": [[r.target, r.addr, r.sent, r.received, r.loss_pct, r.avg_rtt, r.error] for r in rows],
        "streamed": sorted([r.target, r.received, r.error] for r in streamed),
        "sent": sent,
    }))
anyio.run(main)
"""

UNKNOWN = ["no-such-host.lab.test", "198.18.300.1", "bad..name.lab.test"]  # 300: not an address


def test_unresolvable_names_get_a_row_with_the_error(lab8: Lab) -> None:
    hosts = [
        "r1.lab.test",
        UNKNOWN[0],
        lab8.target4,
        "target.lab.test",
        UNKNOWN[1],
        UNKNOWN[2],
        "r1.lab.test",
    ]
    out = run_json(lab8, f"HOSTS = {hosts!r}\n" + NAMES_SCRIPT)
    rows = dict(enumerate(out["rows"]))
    assert [row[0] for row in out["rows"]] == hosts
    # A name takes getaddrinfo's first address (RFC 6724 order: here the IPv6 one) from the lab's hosts file.
    resolved = {
        "r1.lab.test": {lab8.hop4(1), lab8.hop6(1)},
        lab8.target4: {lab8.target4},
        "target.lab.test": {lab8.target4, lab8.target6},
    }
    for i, host in enumerate(hosts):
        _target, addr, sent, received, loss, avg, error = rows[i]
        if host in resolved:
            assert addr in resolved[host], rows[i]
            assert (sent, received, loss, error) == (2, 2, 0.0, None), rows[i]
            assert avg is not None
        else:
            assert error, rows[i]
            assert (addr, sent, received, avg) == (None, 0, 0, None), rows[i]
    # 4 pingable rows, 2 echoes each, then 1 each in the streamed sweep; nothing for the unknown names.
    assert out["sent"] == 4 * 2 + 4
    assert sorted(row[0] for row in out["streamed"]) == sorted(hosts)
    for target, received, error in out["streamed"]:
        assert (received == 1) is (target not in UNKNOWN)
        assert bool(error) is (target in UNKNOWN)


CLI = "import sys\nfrom icmpx.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.mark.parametrize(
    ("hosts", "status"),
    [
        (["r1.lab.test", "target.lab.test"], 0),
        (["r1.lab.test", "198.18.9.77"], 1),  # link 9 joins router 8 and the target: nobody owns .77
        (["r1.lab.test", "no-such-host.lab.test"], 2),
        (["no-such-host.lab.test", "198.18.9.77", "r1.lab.test"], 2),  # 2 wins over 1
    ],
)
def test_cli_exit_status_inside_the_lab(lab8: Lab, hosts: list[str], status: int) -> None:
    text = lab8.python(CLI, args=["multiping", *hosts, "-W", "0.5", "--rate", "0"], check=False)
    assert text.returncode == status, (text.stdout, text.stderr)
    lines = text.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == hosts
    for host, line in zip(hosts, lines, strict=False):
        if host == "no-such-host.lab.test":
            assert "xmt/rcv" not in line  # the row says why instead

    doc = lab8.python(CLI, args=["multiping", *hosts, "-W", "0.5", "--json"], check=False)
    assert doc.returncode == status, doc.stderr
    rows = json.loads(doc.stdout)["hosts"]
    assert [r["target"] for r in rows] == hosts
    for row in rows:
        unknown = row["target"] == "no-such-host.lab.test"
        assert bool(row["error"]) is unknown
        assert row["sent"] == (0 if unknown else 1)
    assert [r["addr"] in {lab8.hop4(1), lab8.hop6(1)} for r in rows if r["target"] == "r1.lab.test"] == [True]


# ------------------------------------------------------------------------------- unprivileged, IPv6


SWEEP_SCRIPT = """
import json, anyio, icmpx
async def main():
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(TARGETS, rate=None)
        stats = client.stats
    print(json.dumps({
        "rows": [[r.target, r.addr, r.received] for r in rows],
        "kinds": list(stats.socket_kinds),
        "sent": stats.sent,
        "pending": stats.pending,
    }))
anyio.run(main)
"""


@pytest.mark.parametrize(("user", "kind"), [("nobody", "dgram"), ("root", "raw")])
def test_1000_target_sweep_with_ping_sockets(make_lab: Callable[..., Lab], user: str, kind: str) -> None:
    lab = make_lab(1, target_local4=["198.18.200.0/22"])
    targets = [f"198.18.{200 + i // 250}.{i % 250 + 1}" for i in range(1000)]
    out = run_json(lab, f"TARGETS = {targets!r}\n" + SWEEP_SCRIPT, user=user)
    assert out["kinds"] == [kind]
    assert (out["sent"], out["pending"]) == (1000, 0)
    assert [row[0] for row in out["rows"]] == targets
    unanswered = [row[0] for row in out["rows"] if row[2] != 1]
    assert not unanswered, f"{len(unanswered)} unanswered as {user}, e.g. {unanswered[:5]}"
    assert all(row[1] == row[0] for row in out["rows"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_200_ipv6_targets_all_answer(make_lab: Callable[..., Lab], backend: str) -> None:
    lab = make_lab(2, target_local6=["2001:db8:aa::/64"])
    canonical = [f"2001:db8:aa::{i:x}" for i in range(1, 201)]
    # Every other target spelled out in full: the row keeps the spelling, addr is the kernel's form.
    targets = [
        f"2001:0db8:00aa:0000:0000:0000:0000:{i:04x}" if i % 2 else c for i, c in enumerate(canonical, 1)
    ]
    rows, _elapsed = sweep_in(lab, backend, targets, count=2, interval=0.05, rate=None)
    assert [r.target for r in rows] == targets
    assert [r.addr for r in rows] == canonical
    unanswered = [r.target for r in rows if r.received != 2]
    assert not unanswered, unanswered[:5]
