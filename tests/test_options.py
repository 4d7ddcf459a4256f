"""Per-probe options without a network: checking, merging, and the control messages they become."""

from __future__ import annotations

import dataclasses
import pickle
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import icmpx
from icmpx._models import EchoRequestRow
from icmpx._options import ProbeOptions, SendOptions, check_options, merge_options
from icmpx._pmtu import candidate_sizes


def test_no_options_is_none_so_the_default_path_pays_nothing() -> None:
    assert check_options() is None
    assert merge_options(None, None) is None


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"tos": 256}, ValueError, "tos must be between 0 and 255"),
        ({"tos": -1}, ValueError, "tos must be between 0 and 255"),
        ({"tos": True}, TypeError, "tos must be an integer"),
        ({"tos": "0xb8"}, TypeError, "tos must be an integer"),
        ({"mark": 1 << 32}, ValueError, "mark must be between 0 and 4294967295"),
        ({"mark": 1.5}, TypeError, "mark must be an integer"),
        ({"dont_fragment": "maybe"}, ValueError, "dont_fragment must be True, False, 'do', 'dont' or 'want'"),
        ({"dont_fragment": "probe"}, ValueError, "dont_fragment must be"),
        ({"interface": "nosuch0"}, ValueError, "unknown interface 'nosuch0'"),
        ({"interface": ""}, ValueError, "interface must be a network interface name"),
        ({"interface": "x" * 16}, ValueError, "interface must be a network interface name"),
        ({"source": "not-an-address"}, ValueError, "source must be an IPv4 or IPv6 address"),
        ({"source": 7}, TypeError, "source must be an IP address string"),
        ({"source": "198.18.77.1"}, ValueError, "198.18.77.1 is not an address of this host"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(
    kw: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        check_options(**kw)  # type: ignore[arg-type]


def test_dont_fragment_spellings() -> None:
    for word, mode in ((True, "do"), ("do", "do"), (False, "dont"), ("dont", "dont"), ("want", "want")):
        options = check_options(dont_fragment=word)
        assert options is not None
        assert options.dont_fragment == mode


def test_call_options_override_the_clients_one_by_one() -> None:
    base = check_options(interface="lo", tos=4, mark=7)
    call = check_options(tos=0xB8, source="127.0.0.1")
    merged = merge_options(base, call)
    assert merged == ProbeOptions("127.0.0.1", "lo", 0xB8, None, 7, socket.if_nametoindex("lo"))
    assert merge_options(base, None) is base


def test_control_messages_ipv4() -> None:
    options = check_options(source="127.0.0.1", interface="lo", tos=0xB8, dont_fragment=True, mark=42)
    assert options is not None
    built = SendOptions.build(options, v6=False, raw=True, kind="raw")
    ifindex = socket.if_nametoindex("lo")
    assert built.cmsgs == (
        (socket.IPPROTO_IP, 8, struct.pack("=i", ifindex) + socket.inet_aton("127.0.0.1") + bytes(4)),
        (socket.IPPROTO_IP, 1, struct.pack("=i", 0xB8)),
        (socket.SOL_SOCKET, 36, struct.pack("=I", 42)),
    )
    assert built.extra == (2, None)  # IPv4 DF: the IP_PMTUDISC_DO socket


def test_control_messages_ipv6() -> None:
    options = check_options(source="::1", tos=0x10, dont_fragment="do")
    assert options is not None
    raw = SendOptions.build(options, v6=True, raw=True, kind="raw")
    assert raw.cmsgs == (
        (socket.IPPROTO_IPV6, 50, socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("=i", 0)),
        (socket.IPPROTO_IPV6, 67, struct.pack("=i", 0x10)),
        (socket.IPPROTO_IPV6, 62, struct.pack("=i", 1)),  # IPV6_DONTFRAG: per packet, no extra socket
    )
    assert raw.extra is None
    # An IPv6 ping socket takes its source from its bound address: one bound to it.
    dgram = SendOptions.build(options, v6=True, raw=False, kind="dgram")
    assert dgram.extra == (None, "::1")
    assert all(kind != 50 for _level, kind, _data in dgram.cmsgs)


def test_what_a_socket_cannot_do_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match=r"mark needs a raw socket .* dgram IPv4 socket"):
        SendOptions.build(ProbeOptions(mark=1), v6=False, raw=False, kind="dgram")
    with pytest.raises(ValueError, match="source address ::1 cannot send to IPv4 destinations"):
        SendOptions.build(ProbeOptions(source="::1"), v6=False, raw=True, kind="raw")


def test_candidate_sizes_cover_the_open_interval_largest_first() -> None:
    sizes = candidate_sizes(1280, 1500)
    assert sizes == sorted(set(sizes), reverse=True)
    assert sizes[0] == 1500
    assert all(1280 < s <= 1500 for s in sizes)
    assert {1492, 1480, 1400} <= set(sizes)
    assert candidate_sizes(1400, 1400) == []
    assert candidate_sizes(1399, 1400) == [1400]
    # Each round shrinks the interval to a step of about a twelfth: a handful of rounds from 68..65535.
    lo, hi, rounds = 68, 65535, 0
    while lo < hi:
        sizes = candidate_sizes(lo, hi)
        lo = max([s for s in sizes if s <= 1337], default=lo)
        hi = min([s - 1 for s in sizes if s > 1337], default=hi)
        rounds += 1
    assert lo == hi == 1337
    assert rounds <= 5


def test_path_mtu_is_public() -> None:
    assert icmpx.PathMtu.__module__ == "icmpx"
    assert "path_mtu" in dir(icmpx.AsyncClient)
    assert "path_mtu" in dir(icmpx.Client)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(0, 0xFFFF),
    position=st.integers(1, 1000),
    tos=st.one_of(st.none(), st.integers(0, 255)),
    dont_fragment=st.sampled_from([None, "do", "dont", "want", "probe"]),
    mark=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
)
def test_results_build_requests_that_are_the_dataclass_in_every_visible_way(
    seq: int, position: int, tos: int | None, dont_fragment: str | None, mark: int | None
) -> None:
    """echo_result builds each EchoRequest through EchoRequestRow and __class__ assignment (five times
    cheaper): the same object as the constructor makes, options or not."""
    row = EchoRequestRow("::1", 7, seq, 64, 56, position, None, "lo", tos, dont_fragment, mark)
    row.__class__ = icmpx.EchoRequest  # type: ignore[assignment]
    slow = icmpx.EchoRequest(
        addr="::1",
        ident=7,
        seq=seq,
        ttl=64,
        payload_size=56,
        position=position,
        interface="lo",
        tos=tos,
        dont_fragment=dont_fragment,
        mark=mark,
    )
    assert type(row) is icmpx.EchoRequest
    assert row == slow
    assert hash(row) == hash(slow)
    assert repr(row) == repr(slow)
    assert dataclasses.asdict(row) == dataclasses.asdict(slow)  # type: ignore[call-overload]
    assert pickle.loads(pickle.dumps(row)) == slow
    assert not hasattr(row, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.tos = 1  # type: ignore[misc]


def test_the_blocking_client_takes_the_options_and_finds_the_path_mtu() -> None:
    with icmpx.Client(timeout=1, tos=0x10) as client:
        result = client.probe("127.0.0.1", interface="lo", dont_fragment=True)
        assert result.ok
        request = result.request
        assert (request.tos, request.interface, request.dont_fragment) == (0x10, "lo", "do")
        found = client.path_mtu("127.0.0.1")
        assert (found.mtu, found.hop, found.reported) == (65535, None, False)


def test_reply_tos_is_read_from_raw_ipv4_headers_and_reported_elsewhere_once_asked() -> None:
    with icmpx.Client(timeout=1) as client:
        plain4 = client.probe("127.0.0.1")
        plain6 = client.probe("::1")
        marked6 = client.probe("::1", tos=0xB8)
        after6 = client.probe("::1")

    def tos(result: icmpx.EchoResult) -> int | None:
        assert result.reply is not None
        return result.reply.received_packet.ip_header.tos

    assert client.stats.socket_kinds[0] == "raw"  # as root (CI)
    assert tos(plain4) == 0  # the IP header, always
    assert tos(plain6) is None  # not asked yet: the default path pays for no control message
    assert (tos(marked6), tos(after6)) == (0xB8, 0)
