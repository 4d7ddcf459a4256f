"""The blocking `Client` is typed as `AsyncClient` is, and the result types behave as values.

The signature test is what keeps the two clients in step: a keyword added to an `AsyncClient` method (or to
its constructor) fails here until the `Client` method takes it too.
"""

from __future__ import annotations

import inspect
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import icmpx

ROOT = Path(__file__).resolve().parent.parent

# AsyncClient's lifecycle methods and their blocking twins; every other public method has the same name.
_LIFECYCLE = {"__aenter__": "__enter__", "__aexit__": "__exit__", "aclose": "close"}


def _public_methods(cls: type) -> set[str]:
    lifecycle = {*_LIFECYCLE, *_LIFECYCLE.values()}
    return {
        name
        for name, value in vars(cls).items()
        if (not name.startswith("_") or name in lifecycle)
        and (callable(value) or isinstance(value, property))
    }


def _sync_return(annotation: str) -> str:
    """What the blocking twin of an async method returns: ``AsyncGenerator[X, None]`` -> ``Iterator[X]``."""
    match = re.fullmatch(r"AsyncGenerator\[(.+), None\]", annotation)
    return f"Iterator[{match.group(1)}]" if match else annotation


def test_every_async_method_has_a_blocking_twin() -> None:
    expected = {_LIFECYCLE.get(name, name) for name in _public_methods(icmpx.AsyncClient)}
    missing = expected - _public_methods(icmpx.Client)
    assert not missing, f"Client lacks {sorted(missing)}"


@pytest.mark.parametrize(
    "name",
    sorted(name for name in _public_methods(icmpx.AsyncClient) if name not in _LIFECYCLE),
)
def test_client_method_signature_equals_async_client(name: str) -> None:
    async_attr = getattr(icmpx.AsyncClient, name)
    sync_attr = getattr(icmpx.Client, name)
    if isinstance(async_attr, property):
        assert isinstance(sync_attr, property)
        assert inspect.signature(sync_attr.fget).return_annotation == (
            inspect.signature(async_attr.fget).return_annotation
        )
        return
    async_sig, sync_sig = inspect.signature(async_attr), inspect.signature(sync_attr)
    assert list(sync_sig.parameters.values()) == list(async_sig.parameters.values())
    assert sync_sig.return_annotation == _sync_return(async_sig.return_annotation)


def test_client_constructor_takes_async_client_keywords_and_a_backend() -> None:
    async_params = list(inspect.signature(icmpx.AsyncClient).parameters.values())
    sync_params = list(inspect.signature(icmpx.Client).parameters.values())
    assert sync_params[:-1] == async_params
    assert sync_params[-1].name == "backend"
    assert sync_params[-1].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_misspelt_keyword_is_a_type_error_naming_client() -> None:
    with pytest.raises(TypeError, match=r"Client\.__init__\(\) got an unexpected keyword argument 'timeot'"):
        icmpx.Client(timeot=1.5)  # type: ignore[call-arg]
    client = icmpx.Client()
    with pytest.raises(TypeError, match=r"Client\.ping\(\) got an unexpected keyword argument 'cuont'"):
        client.ping("127.0.0.1", cuont=3)  # type: ignore[call-arg]
    assert client._portal is None  # nothing was started for the bad call
    client.close()


def test_unknown_backend_is_a_value_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of 'asyncio', 'trio', not 'nope'"):
        icmpx.Client(backend="nope")


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "c"),
         str(program)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_mypy_strict_catches_misspelt_keywords_and_passes_the_documented_pattern(tmp_path: Path) -> None:
    typos = _mypy(
        tmp_path,
        """
        import icmpx

        with icmpx.Client(timeot=1.5) as client:
            client.ping("127.0.0.1", cuont=3)
            client.traceroute("127.0.0.1", max_hop=3)
            icmpx.ErrorKind.TIMEOT
        """,
    )
    assert typos.returncode == 1, typos.stdout
    for word in ("timeot", "cuont", "max_hop", "TIMEOT"):
        assert word in typos.stdout, typos.stdout
    good = _mypy(
        tmp_path,
        """
        import icmpx

        with icmpx.Client(timeout=1.5) as client:
            for result in client.ping("127.0.0.1", count=3, interval=0.2):
                if result.error or result.reply is None:
                    print(result.position, result.error)
                else:
                    print(result.position, result.reply.rtt * 1000.0, "us")
                if result.ok:
                    print(result.rtt)
                if result.error == "timeout":
                    print("lost")
                if result.error is icmpx.ErrorKind.ADMIN_PROHIBITED:
                    print("filtered")
            hops: tuple[icmpx.Hop, ...] = client.traceroute("127.0.0.1").hops
            for report in client.mtr("127.0.0.1", cycles=1, interval=0.1):
                print(report.hops[-1].avg_rtt, report.hops[-1].avg)
        """,
    )
    assert good.returncode == 0, good.stdout


# ------------------------------------------------------------------------------------ result types


def test_results_are_hashable_values_with_tuples() -> None:
    with icmpx.Client(timeout=1.0) as client:
        trace = client.traceroute("127.0.0.1", probes=2)
        (report,) = list(client.mtr("127.0.0.1", cycles=1, interval=0.1))
    assert isinstance(trace.hops, tuple)
    assert isinstance(trace.hops[0].addrs, tuple)
    assert isinstance(trace.hops[0].probes, tuple)
    assert isinstance(trace.hops[0].rtts, tuple)
    assert {trace, trace.hops[0]}  # hash() works on every level
    assert isinstance(report.hops, tuple)
    assert isinstance(report.hops[0].addrs, tuple)
    assert hash(report) == hash(pickle.loads(pickle.dumps(report)))


def test_error_is_a_str_compatible_enum() -> None:
    with icmpx.Client(timeout=0.3) as client:
        result = client.probe("127.0.0.1")
    assert result.error is None
    assert result.ok
    timeout = icmpx.ErrorKind("timeout")
    assert timeout is icmpx.ErrorKind.TIMEOUT
    assert isinstance(timeout, str)
    assert timeout == "timeout"
    assert str(timeout) == "timeout"
    # A message without a member of its own is still an ErrorKind, equal to its text.
    odd = icmpx.ErrorKind("unreachable-code-42")
    assert isinstance(odd, icmpx.ErrorKind)
    assert odd == "unreachable-code-42"
    assert pickle.loads(pickle.dumps(odd)) == odd
    with pytest.raises(AttributeError):
        icmpx.ErrorKind.TIMEOT  # type: ignore[attr-defined]  # noqa: B018


def test_error_kinds_cover_every_name_the_parser_gives() -> None:
    from icmpx import _wire

    members = {kind.value for kind in icmpx.ErrorKind}
    for v6 in (False, True):
        for icmp_type in range(256):
            for code in range(17):
                name = _wire.error_name(v6, icmp_type, code)
                if name is None or re.search(r"(code|type)-\d+", name):
                    continue  # echo replies; unassigned messages (not members, still ErrorKind values)
                assert name in members, name


def test_public_classes_say_they_live_in_icmpx() -> None:
    for name in icmpx.__all__:
        obj = getattr(icmpx, name)
        if isinstance(obj, type):
            assert obj.__module__ == "icmpx", name
    assert repr(icmpx.Hop(ttl=1, addr=None)).startswith("Hop(")
    assert str(icmpx.EchoResult).endswith("'icmpx.EchoResult'>")


def test_old_names_are_aliases() -> None:
    assert icmpx.MalformedPacket is icmpx.MalformedPacketError
    assert icmpx.Client.socket_kind is icmpx.Client.open_socket
    assert icmpx.AsyncClient.socket_kind is icmpx.AsyncClient.open_socket
    hop = icmpx.MtrHop(
        ttl=1, addr="127.0.0.1", addrs=("127.0.0.1",), hostname=None, sent=2, received=2, loss_pct=0.0,
        last_rtt=1.0, min_rtt=0.5, avg_rtt=0.75, max_rtt=1.0, stdev_rtt=0.3, jitter=0.5,
    )  # fmt: skip
    assert (hop.last, hop.best, hop.avg, hop.worst, hop.stdev, hop.javg) == (1.0, 0.5, 0.75, 1.0, 0.3, 0.5)


def test_ping_positions_count_from_one_beside_the_wire_sequence() -> None:
    with icmpx.Client(timeout=1.0) as client:
        results = client.ping("127.0.0.1", count=3, interval=0.01)
        single = client.probe("::1")
    assert [r.position for r in results] == [1, 2, 3]
    assert [r.request.position for r in results] == [1, 2, 3]
    assert single.position == 1
    seqs = [r.request.seq for r in results]
    assert len(set(seqs)) == 3  # the wire sequences: random, distinct (see EchoRequest.seq)


def test_iter_traceroute_yields_the_hops_traceroute_returns() -> None:
    with icmpx.Client(timeout=1.0) as client:
        whole = client.traceroute("::1", probes=2, max_hops=5)
        hops = list(client.iter_traceroute("::1", probes=2, max_hops=5))
        with pytest.raises(ValueError, match="probes"):
            client.iter_traceroute("::1", probes=0)  # checked at the call, before any iteration
    assert [(h.ttl, h.addr, h.addrs, len(h.probes)) for h in hops] == [
        (h.ttl, h.addr, h.addrs, len(h.probes)) for h in whole.hops
    ]
    assert all(p.error is None for h in hops for p in h.probes)
