"""path_mtu() against kernel routers: a narrow middle link, reported or silent, beside tracepath's answer.

    client ── R1 ══ R2 ── target        (══: the middle link, MTU 1280 or 1400; the others 1500)

R1 is the last router before the narrow link: it answers TTL 1 with Time Exceeded and refuses larger
packets at TTL 2 and beyond with Fragmentation Needed / Packet Too Big, or, "silent", drops them without a
word (nft drops its own destination-unreachable / packet-too-big on output).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import icmpx
from lab import Lab
from netns import inside

pytestmark = [pytest.mark.lab, pytest.mark.anyio]

SILENT_PMTU = (
    "table inet icmpx_pmtu {\n chain output {\n  type filter hook output priority filter; policy accept;\n"
    "  icmp type destination-unreachable drop\n  icmpv6 type packet-too-big drop\n }\n}\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def narrow_lab(make_lab: Callable[..., Lab], mtu: int, *, silent: bool) -> Lab:
    lab = make_lab(2)
    lab.exec(["ip", "link", "set", "next", "mtu", str(mtu)], ns=lab.routers[0])
    lab.exec(["ip", "link", "set", "prev", "mtu", str(mtu)], ns=lab.routers[1])
    if silent:
        lab.exec(["nft", "-f", "-"], ns=lab.routers[0], input=SILENT_PMTU)
    return lab


def tracepath(lab: Lab, target: str) -> int | None:
    """tracepath's path MTU (the "Resume: pmtu N" line), from a flushed route cache."""
    lab.exec(["ip", "route", "flush", "cache"])
    lab.exec(["ip", "-6", "route", "flush", "cache"])
    out = lab.exec(["tracepath", "-n", "-m", "3", target], check=False, timeout=60).stdout
    found = re.search(r"Resume: pmtu (\d+)", out)
    return int(found.group(1)) if found else None


async def measure(lab: Lab, targets: list[str], privileged: bool, **kw: Any) -> dict[str, icmpx.PathMtu]:
    found: dict[str, icmpx.PathMtu] = {}
    with inside(lab.client):
        async with (
            icmpx.AsyncClient(timeout=1, privileged=privileged) as client,
            anyio.create_task_group() as tg,
        ):
            for target in targets:

                async def one(target: str = target) -> None:
                    found[target] = await client.path_mtu(target, max_hops=5, **kw)

                tg.start_soon(one)
    return found


@pytest.mark.parametrize("mtu", [1280, 1400])
@pytest.mark.parametrize("silent", [False, True], ids=["reported", "silent"])
async def test_path_mtu_and_hop_beside_tracepath(
    make_lab: Callable[..., Lab], mtu: int, silent: bool
) -> None:
    lab = narrow_lab(make_lab, mtu, silent=silent)
    targets = [lab.target4, lab.target6]
    reference = {target: tracepath(lab, target) for target in targets}
    # tracepath has now left the path MTU in the kernel's cache (when a router told): not our guide.
    for privileged in (True, False):
        found = await measure(lab, targets, privileged)
        for target in targets:
            result = found[target]
            assert result.mtu == mtu, (privileged, result)
            assert result.hop == 1, (privileged, result)
            assert result.hop_addr == (lab.hop6(1) if ":" in target else lab.hop4(1)), result
            assert result.reported is not silent, result
    for target in targets:
        if silent:
            # A black hole: tracepath never hears of the narrow link.
            assert reference[target] != mtu, reference
        else:
            assert reference[target] == mtu, reference


async def test_path_mtu_of_a_wide_path_names_no_hop(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(2)
    found = await measure(lab, [lab.target4, lab.target6], True)
    for result in found.values():
        assert (result.mtu, result.hop, result.hop_addr, result.reported) == (1500, None, None, False)
    assert tracepath(lab, lab.target4) == 1500


async def test_path_mtu_of_a_host_that_does_not_answer(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(1)
    with inside(lab.client):
        async with icmpx.AsyncClient(timeout=0.3) as client:
            result = await client.path_mtu("198.18.99.1")  # routed towards the lab, owned by nobody
            assert result.mtu is None
            assert result.probes > 0


def test_pmtu_command_names_the_mtu_and_the_hop(make_lab: Callable[..., Lab]) -> None:
    lab = narrow_lab(make_lab, 1280, silent=False)
    for target, router in ((lab.target4, lab.hop4(1)), (lab.target6, lab.hop6(1))):
        text = lab.exec([sys.executable, "-m", "icmpx", "pmtu", target], check=False)
        assert text.returncode == 0, text.stderr
        assert f"path MTU to {target} ({target}): 1280 bytes, drops after hop 1: r1.lab.test ({router})" in (
            text.stdout
        )
        doc = json.loads(lab.exec([sys.executable, "-m", "icmpx", "pmtu", target, "-n", "--json"]).stdout)
        assert (doc["mtu"], doc["hop"], doc["hop_addr"], doc["reported"]) == (1280, 1, router, True)


async def test_a_stale_cached_path_mtu_does_not_fool_it(make_lab: Callable[..., Lab]) -> None:
    """The kernel learns 1280 through a narrow link; the link is widened again; the cache still says 1280
    (ping -M do refuses larger packets locally), path_mtu says 1500."""
    lab = narrow_lab(make_lab, 1280, silent=False)
    targets = [lab.target4, lab.target6]
    for target in targets:  # teach the kernel: a DF packet too large for the middle link
        lab.exec(["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1400", target], check=False)
    lab.exec(["ip", "link", "set", "next", "mtu", "1500"], ns=lab.routers[0])
    lab.exec(["ip", "link", "set", "prev", "mtu", "1500"], ns=lab.routers[1])
    for target in targets:
        cached = lab.exec(["ip", "route", "get", target]).stdout
        assert "mtu 1280" in cached, cached
        refused = lab.exec(["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1400", target], check=False)
        assert refused.returncode != 0, refused.stdout
    for privileged in (True, False):
        found = await measure(lab, targets, privileged)
        for target in targets:
            assert (found[target].mtu, found[target].hop) == (1500, None), found[target]
