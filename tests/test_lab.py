"""The namespace lab itself: topology, silent hops, loss, reverse DNS, unprivileged runs, teardown.

These use only system tools (traceroute, iputils ping) and plain sockets, never icmpx, so a
failure here is the lab's fault, not the library's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import lab as lab_module
from lab import NOBODY, Lab, LabError, User, lab_chain

MakeLab = Callable[..., Lab]

HERE = Path(__file__).resolve().parent


def traceroute(lab: Lab, family: int) -> list[str]:
    """Hop addresses ("*" for silence) of an ICMP traceroute from the client to the target."""
    target = lab.target4 if family == 4 else lab.target6
    argv = ["traceroute", f"-{family}", "-I", "-n", "-q", "1", "-w", "1", target]
    out = lab.exec(argv, timeout=60).stdout
    hops: list[str] = []
    for line in out.splitlines()[1:]:  # first line: "traceroute to ..."
        m = re.match(r"\s*(\d+)\s+(\S+)", line)
        assert m, f"unexpected traceroute line {line!r} in:\n{out}"
        assert int(m.group(1)) == len(hops) + 1, out
        hops.append(m.group(2))
    return hops


def ping_counts(lab: Lab, dst: str, count: int, interval: float) -> tuple[int, int]:
    """(transmitted, received) of an iputils ping from the client."""
    # No -w: with a deadline iputils counts *replies* towards -c and keeps sending.
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", dst]
    out = lab.exec(argv, check=False, timeout=30).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


# ------------------------------------------------------------------------- topology


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_traceroute_sees_every_router_then_the_target(lab8: Lab, family: int) -> None:
    expected = lab8.hops4() if family == 4 else lab8.hops6()
    assert len(expected) == 9
    assert expected[-1] == (lab8.target4 if family == 4 else lab8.target6)
    assert lab8.target4 == "198.18.9.2"
    assert lab8.target6 == "2001:db8:9::2"
    assert traceroute(lab8, family) == expected


@pytest.mark.lab
def test_silent_router_shows_a_star_and_the_others_answer(make_lab: MakeLab) -> None:
    lab = make_lab(8, silent=(3,))
    for family, expected in ((4, lab.hops4()), (6, lab.hops6())):
        expected[2] = "*"
        assert traceroute(lab, family) == expected


@pytest.mark.lab
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_ping_with_ttl_k_gets_time_exceeded_from_router_k(lab8: Lab, k: int) -> None:
    out4 = lab8.exec(["ping", "-n", "-c", "1", "-W", "2", "-t", str(k), lab8.target4], check=False)
    assert out4.returncode == 1, out4
    assert f"From {lab8.hop4(k)} icmp_seq=1 Time to live exceeded" in out4.stdout, out4

    out6 = lab8.exec(["ping", "-6", "-n", "-c", "1", "-W", "2", "-t", str(k), lab8.target6],
                     check=False)  # fmt: skip
    assert out6.returncode == 1, out6
    assert f"From {lab8.hop6(k)} icmp_seq=1 Time exceeded: Hop limit" in out6.stdout, out6


@pytest.mark.lab
def test_ping_with_ttl_n_plus_1_reaches_the_target(lab8: Lab) -> None:
    for family, dst in ((4, lab8.target4), (6, lab8.target6)):
        out = lab8.exec(["ping", f"-{family}", "-n", "-c", "1", "-W", "2", "-t", "9", dst])
        assert f"64 bytes from {dst}: icmp_seq=1 ttl=56" in out.stdout, out


@pytest.mark.lab
def test_unknown_lab_address_is_unreachable_not_a_loop(lab8: Lab) -> None:
    out = lab8.exec(["ping", "-n", "-c", "1", "-W", "2", "198.18.250.1"], check=False)
    assert out.returncode != 0
    assert "From 198.18.1.2 icmp_seq=1 Destination Net Unreachable" in out.stdout, out


# ------------------------------------------------------------------------- names


REVERSE = """
import json, socket, sys
out = {}
for addr in sys.argv[1:]:
    out[addr] = [
        socket.gethostbyaddr(addr)[0],
        socket.getnameinfo((addr, 0), socket.NI_NAMEREQD)[0],
    ]
out["forward"] = sorted({ai[4][0] for ai in socket.getaddrinfo("target.lab.test", None)})
print(json.dumps(out))
"""


@pytest.mark.lab
@pytest.mark.parametrize("user", ["root", "nobody"])
def test_reverse_dns_in_the_client_names_every_hop(lab8: Lab, user: User) -> None:
    hops = range(1, lab8.n_routers + 2)
    addrs = [lab8.hop4(k) for k in hops] + [lab8.hop6(k) for k in hops]
    addrs += ["198.18.4.1", "2001:db8:4::1", lab8.client4, lab8.client6]  # the other sides
    out = json.loads(lab8.python(REVERSE, args=addrs, user=user).stdout)
    for k in hops:
        name = lab8.hostname(k)
        assert out[lab8.hop4(k)] == [name, name]
        assert out[lab8.hop6(k)] == [name, name]
    assert lab8.hostname(3) == "r3.lab.test"
    assert lab8.hostname(9) == "target.lab.test"
    assert out["198.18.4.1"] == ["r3.lab.test"] * 2  # router 3's interface towards router 4
    assert out["2001:db8:4::1"] == ["r3.lab.test"] * 2
    assert out[lab8.client4] == ["client.lab.test"] * 2
    assert out["forward"] == sorted([lab8.target4, lab8.target6])


@pytest.mark.lab
def test_lab_namespaces_resolve_locally_only(lab8: Lab) -> None:
    for ns in lab8.nodes:
        resolv = lab8.exec(["cat", "/etc/resolv.conf"], ns=ns).stdout
        assert resolv.split() == ["nameserver", "127.0.0.1"]
    # Nothing listens on 127.0.0.1:53 in the namespace: an unknown name fails at once.
    code = "import socket\ntry: socket.getaddrinfo('nowhere.invalid', None)\nexcept OSError: print('ok')"
    assert lab8.python(code, timeout=20).stdout.strip() == "ok"


# ------------------------------------------------------------------------- unprivileged


@pytest.mark.lab
def test_nobody_has_no_capabilities_and_cannot_gain_any(lab8: Lab) -> None:
    status = lab8.exec(["cat", "/proc/self/status"], user="nobody").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split() == [str(NOBODY)] * 4
    assert fields["Gid"].split() == [str(NOBODY)] * 4
    assert fields["Groups"].strip() == ""
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(fields[cap], 16) == 0, cap
    assert fields["NoNewPrivs"].strip() == "1"


@pytest.mark.lab
def test_nobody_runs_this_very_interpreter(lab8: Lab) -> None:
    """Not some other Python: with an untraversable interpreter directory the dynamic loader
    can fall back to the system libpython, which "works" with a different stdlib."""
    code = (
        "import importlib.util, json, sys, anyio\n"
        "spec = importlib.util.find_spec('icmpx')\n"
        "print(json.dumps([sys.version, sys.prefix, sys.base_prefix, anyio.__name__,"
        " spec and spec.origin]))"
    )
    version, prefix, base_prefix, anyio_name, icmpx_origin = json.loads(
        lab8.python(code, user="nobody").stdout
    )
    assert (version, prefix, base_prefix) == (sys.version, sys.prefix, sys.base_prefix)
    assert anyio_name == "anyio"
    assert icmpx_origin is not None
    assert Path(icmpx_origin).resolve().is_relative_to(HERE.parent / "src")
    assert lab_module.nobody_blockers() == []


SOCKETS = """
import errno, json, socket
out = {}
for fam, proto in (("v4", socket.IPPROTO_ICMP), ("v6", socket.IPPROTO_ICMPV6)):
    af = socket.AF_INET if fam == "v4" else socket.AF_INET6
    for kind, typ in (("dgram", socket.SOCK_DGRAM), ("raw", socket.SOCK_RAW)):
        try:
            socket.socket(af, typ, proto).close()
            out[fam + "-" + kind] = "ok"
        except OSError as e:
            out[fam + "-" + kind] = errno.errorcode[e.errno]
print(json.dumps(out))
"""

ECHO = """
import socket, struct, sys
dst = sys.argv[1]
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.settimeout(5)
s.sendto(struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0, 7) + b"icmpx-lab", (dst, 0))
data, addr = s.recvfrom(1500)
print(data[0], struct.unpack("!H", data[6:8])[0], addr[0], data[8:].decode())
"""


def socket_results(lab: Lab) -> dict[str, str]:
    result: dict[str, str] = json.loads(lab.python(SOCKETS, user="nobody").stdout)
    return result


@pytest.mark.lab
def test_nobody_gets_ping_sockets_only_while_the_range_is_open(make_lab: MakeLab) -> None:
    lab = make_lab(1)  # ping_group_range open by default
    assert lab.read_sysctl("net.ipv4.ping_group_range").split() == ["0", "2147483647"]
    assert socket_results(lab) == {
        "v4-dgram": "ok", "v6-dgram": "ok", "v4-raw": "EPERM", "v6-raw": "EPERM",
    }  # fmt: skip
    # ... and the ping socket really works, end to end, in both families.
    for dst, reply_type in ((lab.target4, 0), (lab.target6, 129)):
        out = lab.python(ECHO, user="nobody", args=[dst]).stdout.split()
        assert out == [str(reply_type), "7", dst, "icmpx-lab"]

    lab.set_ping_group_range(1, 0)
    assert socket_results(lab) == {
        "v4-dgram": "EACCES", "v6-dgram": "EACCES", "v4-raw": "EPERM", "v6-raw": "EPERM",
    }  # fmt: skip
    lab.set_ping_group_range(NOBODY, NOBODY)
    assert socket_results(lab)["v6-dgram"] == "ok"


@pytest.mark.lab
def test_closed_range_at_creation_and_root_keeps_raw_sockets(make_lab: MakeLab) -> None:
    lab = make_lab(1, ping_group_range=(1, 0))
    assert socket_results(lab)["v4-dgram"] == "EACCES"
    root = json.loads(lab.python(SOCKETS).stdout)
    assert root["v4-raw"] == root["v6-raw"] == "ok"


@pytest.mark.lab
def test_iputils_ping_as_nobody_needs_the_ping_socket(make_lab: MakeLab) -> None:
    """no_new_privs: ping's file capability (if any) gives nobody nothing."""
    lab = make_lab(1)
    for family, dst in ((4, lab.target4), (6, lab.target6)):
        argv = ["ping", f"-{family}", "-n", "-c", "1", "-W", "2", dst]
        ok = lab.exec(argv, user="nobody", check=False)
        assert ok.returncode == 0, ok
    lab.set_ping_group_range(1, 0)
    denied = lab.exec(["ping", "-n", "-c", "1", "-W", "2", lab.target4], user="nobody",
                      check=False)  # fmt: skip
    assert denied.returncode == 2, denied
    assert "Operation not permitted" in denied.stderr, denied


# ------------------------------------------------------------------------- loss, prefixes


@pytest.mark.lab
def test_random_loss_at_one_router(make_lab: MakeLab) -> None:
    # 50% of forwarded packets dropped each way: a round trip survives 25% of the time
    # (expected 75 of 100 lost, standard deviation 4.3: the band below is > 4.5 sigma wide).
    lab = make_lab(3, loss={2: 50})
    sent, received = ping_counts(lab, lab.target4, count=100, interval=0.005)
    assert sent == 100
    assert 5 <= received <= 50, (sent, received)
    # Router 1 is before the lossy router: nothing is lost on the way to it.
    assert ping_counts(lab, lab.hop4(1), count=20, interval=0.005) == (20, 20)


@pytest.mark.lab
def test_target_local_prefixes_answer_on_every_address(make_lab: MakeLab) -> None:
    lab = make_lab(2, target_local4=["198.18.200.0/24"], target_local6=["2001:db8:aa::/64"])
    for dst in ("198.18.200.77", "198.18.200.254", "2001:db8:aa::77", "2001:db8:aa::ffff"):
        out = lab.exec(["ping", "-n", "-c", "1", "-W", "2", dst]).stdout
        assert f"64 bytes from {dst}: icmp_seq=1 ttl=62" in out, out


def test_lab_refuses_addresses_outside_the_lab_ranges() -> None:
    # Validation happens before anything is created: no root needed.
    with (
        pytest.raises(ValueError, match="outside the lab address space"),
        lab_chain(2, target_local4=["192.0.2.0/24"]),
    ):
        pass
    with (
        pytest.raises(ValueError, match="overlaps lab link"),
        lab_chain(2, target_local6=["2001:db8:2::/48"]),
    ):
        pass
    with pytest.raises(ValueError, match="router 9 does not exist"), lab_chain(8, silent=(9,)):
        pass


# ------------------------------------------------------------------------- teardown


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def assert_gone(names: list[str]) -> None:
    assert not set(names) & netns_names()
    for name in names:
        assert not (lab_module.NETNS_ETC / name).exists()


@pytest.mark.lab
def test_teardown_removes_everything() -> None:
    with lab_chain(2) as lab:
        names = lab.nodes
        assert len(names) == 4
        assert set(names) <= netns_names()
        for name in names:
            assert (lab_module.NETNS_ETC / name / "hosts").is_file()
        sleeper = lab.popen(["sleep", "600"], ns=lab.target)
    assert sleeper.returncode is not None  # killed and reaped
    assert_gone(names)


@pytest.mark.lab
def test_teardown_when_the_body_raises() -> None:
    class Boom(Exception):
        pass

    names: list[str] = []

    def body() -> None:
        with lab_chain(1) as lab:
            names.extend(lab.nodes)
            lab.popen(["sleep", "600"], ns=lab.routers[0])
            raise Boom

    with pytest.raises(Boom):
        body()
    assert len(names) == 3
    assert_gone(names)


@pytest.mark.lab
def test_teardown_when_setup_fails_half_way(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fail(self: Lab) -> None:
        seen.extend(self.nodes)
        assert set(self.nodes) <= netns_names()
        raise LabError("injected failure")

    monkeypatch.setattr(Lab, "_wait_settled", fail)
    with pytest.raises(LabError, match="injected failure"), lab_chain(3):
        pytest.fail("the body must not run")
    assert len(seen) == 5
    assert_gone(seen)


# ------------------------------------------------------------------------- conftest rules


def test_require_lab_turns_every_skip_into_a_failure(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp_path / "lab.py").write_text((HERE / "lab.py").read_text())
    (tmp_path / "netns.py").write_text((HERE / "netns.py").read_text())  # conftest imports it
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_runtime_skip():
                pytest.skip("no frobnicator")

            @pytest.mark.skip(reason="marked away")
            def test_marked_skip():
                pass

            @pytest.mark.xfail(reason="known", strict=True)
            def test_xfail():
                assert False

            def test_pass():
                pass
            """
        )
    )
    (tmp_path / "test_module_skip.py").write_text(
        "import pytest\npytest.skip('whole module', allow_module_level=True)\n"
    )

    def run(require: str) -> str:
        env = {**os.environ, "ICMPX_REQUIRE_LAB": require}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:asyncio",
             "--continue-on-collection-errors", "-rA", str(tmp_path)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    relaxed = run("0")
    assert re.search(r"1 passed, 3 skipped, 1 xfailed", relaxed), relaxed

    strict = run("1")
    assert re.search(r"1 failed, 1 passed, 1 xfailed, 2 errors", strict), strict
    assert "forbids skips: Skipped: no frobnicator" in strict
    assert "forbids skips: Skipped: marked away" in strict
    assert "forbids skips: Skipped: whole module" in strict
