"""IPv6 link-local targets with a zone (``fe80::…%next``): pinged on the right link, the zone kept."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable

import pytest

import icmpx
from lab import Lab
from netns import inside

pytestmark = [pytest.mark.lab, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def link_local(lab: Lab, ns: str, dev: str) -> str:
    argv = ["ip", "-6", "-j", "addr", "show", "dev", dev, "scope", "link"]
    shown = json.loads(lab.exec(argv, ns=ns).stdout)
    found = [str(a["local"]) for a in shown[0]["addr_info"] if "local" in a]
    assert found, shown
    return found[0]


@pytest.mark.parametrize("privileged", [True, False], ids=["raw", "dgram"])
async def test_ping_a_link_local_router_keeps_the_zone(
    make_lab: Callable[..., Lab], privileged: bool
) -> None:
    lab = make_lab(1)
    router = link_local(lab, lab.routers[0], "prev")
    scoped = f"{router}%next"
    with inside(lab.client):
        async with icmpx.AsyncClient(timeout=2, privileged=privileged) as client:
            target = await client.resolve(scoped)
            assert target.addr == scoped
            results = await client.ping(scoped, count=3, interval=0.02)
            by_index = await client.ping(f"{router}%{socket.if_nametoindex('next')}", count=1)
            rows = await client.multiping([scoped, lab.target6], rate=None)
    assert [r.error for r in results] == [None] * 3
    assert {r.request.addr for r in results} == {scoped}
    assert {r.responder for r in results} == {scoped}
    assert by_index[0].ok
    assert by_index[0].request.addr == scoped  # a numeric zone is written as the interface's name
    assert [(row.addr, row.received) for row in rows] == [(scoped, 1), (lab.target6, 1)]


def test_cli_ping_and_pmtu_of_a_link_local_address(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(1)
    scoped = f"{link_local(lab, lab.routers[0], 'prev')}%next"
    doc = json.loads(
        lab.exec([sys.executable, "-m", "icmpx", "ping", scoped, "-c", "1", "-n", "--json"]).stdout
    )
    assert (doc["addr"], doc["results"][0]["from"], doc["results"][0]["error"]) == (scoped, scoped, None)
    text = lab.exec([sys.executable, "-m", "icmpx", "ping", scoped, "-c", "1", "-n"]).stdout
    assert f"PING {scoped} ({scoped}) 56 data bytes" in text
    assert f"bytes from {scoped}: icmp_seq=1" in text
    pmtu = json.loads(lab.exec([sys.executable, "-m", "icmpx", "pmtu", scoped, "--json"]).stdout)
    assert (pmtu["addr"], pmtu["mtu"]) == (scoped, 1500)
    bad = lab.exec([sys.executable, "-m", "icmpx", "ping", "fe80::1%nosuch0", "-c", "1"], check=False)
    assert bad.returncode == 3
    assert "unknown interface 'nosuch0'" in bad.stderr
