"""The engine, ping(), probe() and traceroute() against real kernel routers in network namespaces.

Each scenario runs as root (raw sockets) and as uid 65534 (unprivileged ping sockets, errors read from the
socket's error queue). Code that must see the lab's hosts file (reverse DNS) runs in a subprocess under
``ip netns exec``; the rest enters the client namespace in-process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import icmpx
from lab import Lab
from netns import inside

pytestmark = pytest.mark.lab

USERS = ["root", "nobody"]


def run_json(lab: Lab, code: str, *, user: str = "root", timeout: float = 60) -> Any:
    """Run an asyncio snippet in the client namespace; it prints one JSON document."""
    proc = lab.python(code, user=user, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


PING_SCRIPT = """
import json, anyio, icmpx
async def main():
    out = {}
    async with icmpx.AsyncClient(timeout=2) as client:
        for host in HOSTS:
            rs = await client.ping(host, count=3, interval=0.05)
            out[host] = [[r.error, r.responder, r.rtt, r.request.ident] for r in rs]
        out["kinds"] = list(client.stats.socket_kinds)
    print(json.dumps(out))
anyio.run(main)
"""


@pytest.mark.parametrize("user", USERS)
def test_ping_lab_hosts_both_families(lab8: Lab, user: str) -> None:
    hosts = [lab8.target4, lab8.target6, lab8.hop4(4), lab8.hop6(4)]
    out = run_json(lab8, f"HOSTS = {hosts!r}\n" + PING_SCRIPT, user=user)
    expected_kind = "raw" if user == "root" else "dgram"
    assert out["kinds"] == [expected_kind, expected_kind]
    for host in hosts:
        assert [row[0] for row in out[host]] == [None, None, None], host
        assert [row[1] for row in out[host]] == [host] * 3
        assert all(0 < row[2] < 100 for row in out[host])


PROBE_SCRIPT = """
import json, anyio, icmpx
async def main():
    out = []
    async with icmpx.AsyncClient(timeout=2) as client:
        async with anyio.create_task_group() as tg:
            async def one(target, ttl):
                r = await client.probe(target, ttl=ttl)
                out.append([target, ttl, r.error, r.responder, r.rtt,
                            r.reply.received_packet.icmp_type if r.reply else None])
            for target in TARGETS:
                for ttl in range(1, 10):
                    tg.start_soon(one, target, ttl)
    print(json.dumps(out))
anyio.run(main)
"""


@pytest.mark.parametrize("user", USERS)
def test_probe_at_ttl_k_names_router_k(lab8: Lab, user: str) -> None:
    """All 18 probes (TTL 1-9, two families) at once on one client: each names its own router."""
    targets = [lab8.target4, lab8.target6]
    rows = run_json(lab8, f"TARGETS = {targets!r}\n" + PROBE_SCRIPT, user=user)
    assert len(rows) == 18
    for target, ttl, error, responder, rtt, icmp_type in rows:
        v6 = ":" in target
        expected = (lab8.hop6 if v6 else lab8.hop4)(ttl)
        assert responder == expected, (target, ttl)
        assert rtt is not None
        assert rtt > 0
        if ttl <= 8:
            assert error == "time-exceeded"
            assert icmp_type == (3 if v6 else 11)
        else:
            assert error is None


def test_closed_ping_group_range_means_permission_error_and_exit_4(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(1, ping_group_range=(1, 0))
    code = (
        "import anyio, icmpx\n"
        "async def main():\n"
        "    async with icmpx.AsyncClient() as c:\n"
        f"        await c.probe({lab.target4!r})\n"
        "try:\n"
        "    anyio.run(main)\n"
        "except icmpx.RawSocketPermissionError as exc:\n"
        "    print('PERMISSION', exc)\n"
    )
    proc = lab.python(code, user="nobody", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PERMISSION")
    assert "setcap cap_net_raw+ep" in proc.stdout
    assert "ping_group_range" in proc.stdout

    cli = lab.python(
        "import sys; from icmpx.cli import main; sys.exit(main(sys.argv[1:]))",
        user="nobody",
        check=False,
        args=["ping", lab.target4, "-c", "1", "-n"],
    )
    assert cli.returncode == 4, (cli.stdout, cli.stderr)
    assert cli.stdout == ""  # nothing printed before the failure
    assert cli.stderr.startswith("icmpx needs")
    assert "setcap cap_net_raw+ep" in cli.stderr
    assert "sysctl -w net.ipv4.ping_group_range" in cli.stderr
    # The same user may ping once the range admits it.
    lab.set_ping_group_range(0, 2147483647)
    ok = lab.python(
        "import sys; from icmpx.cli import main; sys.exit(main(sys.argv[1:]))",
        user="nobody",
        check=False,
        args=["ping", lab.target4, "-c", "1", "-n", "--json"],
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["stats"]["received"] == 1


TRACE_SCRIPT = """
import json, time, anyio, icmpx
async def main():
    out = {}
    async with icmpx.AsyncClient(timeout=1, resolve_dns_default=True) as client:
        for target in TARGETS:
            started = time.monotonic()
            tr = await client.traceroute(target)
            out[target] = {
                "elapsed": time.monotonic() - started,
                "reached": tr.reached,
                "addr": tr.addr,
                "hops": [[h.ttl, h.addr, h.addrs, h.hostname, [p.rtt for p in h.probes]] for h in tr.hops],
            }
        out["kinds"] = list(client.stats.socket_kinds)
    print(json.dumps(out))
anyio.run(main)
"""


@pytest.mark.parametrize("user", USERS)
def test_traceroute_with_a_silent_hop(make_lab: Callable[..., Lab], user: str) -> None:
    lab = make_lab(8, silent=(3,))
    targets = [lab.target4, lab.target6]
    out = run_json(lab, f"TARGETS = {targets!r}\n" + TRACE_SCRIPT, user=user)
    assert out["kinds"] == (["raw", "raw"] if user == "root" else ["dgram", "dgram"])
    for target in targets:
        trace = out[target]
        hop = lab.hop6 if ":" in target else lab.hop4
        assert trace["reached"] is True
        assert [h[0] for h in trace["hops"]] == list(range(1, 10))
        for ttl, addr, addrs, hostname, rtts in trace["hops"]:
            if ttl == 3:
                assert addr is None
                assert addrs == []
                assert hostname is None
                assert all(math.isinf(r) for r in rtts)
            else:
                assert addr == hop(ttl), (target, ttl)
                assert addrs == [hop(ttl)]
                assert hostname == lab.hostname(ttl)
                assert len(rtts) == 3
                assert all(0 < r < 1000 for r in rtts)
        # One timeout (1 s) for the silent hop, not one per hop or per probe.
        assert trace["elapsed"] < 1.5


def test_traceroute_through_random_loss(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(8, loss={4: 20})
    with inside(lab.client):
        result = anyio.run(_trace, lab.target4)
    assert result.reached
    assert result.hops[-1].addr == lab.target4
    # All three TTL-9 probes are lost about 1 time in 20 (0.36**3): the destination then first answers
    # at TTL 10, which is still correct (hop 9 shows as silent). Any TTL past the routers is the target.
    assert len(result.hops) in (9, 10)
    answered = 0
    for hop in result.hops:
        expected = lab.hop4(min(hop.ttl, lab.n_routers + 1))
        if hop.addr is not None:
            assert hop.addr == expected
            answered += 1
        # Every responder recorded is the router at that TTL, and the hop's address is one of them.
        assert set(hop.addrs) <= {expected}
    assert answered >= 7


async def _trace(target: str) -> icmpx.TracerouteResult:
    async with icmpx.AsyncClient(timeout=1) as client:
        return await client.traceroute(target)


def test_50_traceroutes_and_500_pings_share_one_socket_per_family(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(4, target_local4=["198.18.200.0/24"], target_local6=["2001:db8:aa::/64"])
    targets4 = [f"198.18.200.{i}" for i in range(1, 26)]
    targets6 = [f"2001:db8:aa::{i:x}" for i in range(1, 26)]

    async def main() -> tuple[dict[str, icmpx.TracerouteResult], dict[str, list[icmpx.EchoResult]], Any]:
        traces: dict[str, icmpx.TracerouteResult] = {}
        pings: dict[str, list[icmpx.EchoResult]] = {}
        async with icmpx.AsyncClient(timeout=2) as client:

            async def trace(t: str) -> None:
                traces[t] = await client.traceroute(t, probes=2)

            async def ping(t: str, n: int) -> None:
                pings[f"{t}#{n}"] = await client.ping(t, count=1)

            async with anyio.create_task_group() as tg:
                for t in targets4 + targets6:
                    tg.start_soon(trace, t)
                for n in range(10):
                    for t in targets4 + targets6:
                        tg.start_soon(ping, t, n)
            return traces, pings, client.stats

    with inside(lab.client):
        traces, pings, stats = anyio.run(main)
    assert stats.sockets == 2
    assert sorted(stats.socket_kinds) == ["raw", "raw"]
    assert len(traces) == 50
    for t, tr in traces.items():
        hop = lab.hop6 if ":" in t else lab.hop4
        assert tr.reached, t
        assert [h.addr for h in tr.hops] == [hop(k) for k in range(1, 5)] + [t]
    assert len(pings) == 500
    for key, rs in pings.items():
        assert rs[0].error is None, key
        assert rs[0].responder == key.split("#")[0]


def test_unreachable_destination_is_an_error_result(lab8: Lab) -> None:
    """A destination outside every route: router 1 answers net-unreachable (or the kernel refuses
    locally); either way a result with an error, never an exception."""
    with inside(lab8.client):
        result = anyio.run(_probe_unroutable)
    assert result.error in {"net-unreachable", "host-unreachable"}


async def _probe_unroutable() -> icmpx.EchoResult:
    async with icmpx.AsyncClient(timeout=1) as client:
        started = time.monotonic()
        result = await client.probe("198.19.250.1")
        assert time.monotonic() - started < 1.0
        return result
