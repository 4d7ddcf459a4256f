"""Every program in examples/ is run here, as a user would run it, against loopback or a namespace lab.

Command-line examples run as subprocesses (``python examples/X.py ...`` from the repository root) with
numeric output, so no name is ever looked up outside a lab namespace. The web backend is served by uvicorn
in a thread of this process (so its ICMP sockets can be counted in /proc/self/fd) with name lookups
replaced by a fake resolver; the Textual app runs headless under Textual's pilot.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from textual.widgets import DataTable

from lab import Lab
from netns import icmp_socket_count, quiet_namespace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MTR_COLUMNS = [
    "Hop",
    "Address",
    "Hostname",
    "Sent",
    "Recv",
    "Loss %",
    "Last",
    "Avg",
    "Best",
    "Worst",
    "StDev",
    "Javg",
]
ALL_EXAMPLES = ["ping", "traceroute", "multiping", "mtr", "web_backend", "tui"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual and uvicorn run on asyncio


def run_example(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python examples/NAME.py ARGS`` from the repository root; stdout is a pipe, not a terminal."""
    return subprocess.run(
        [sys.executable, f"examples/{name}.py", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def load_example(name: str) -> ModuleType:
    """Import examples/NAME.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"icmpx_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Rows of a plain mtr table keyed by hop number, each split on whitespace."""
    return {cells[0]: cells for line in stdout.splitlines() if (cells := line.split()) and cells[0].isdigit()}


# ------------------------------------------------------------------------------------ every example


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_has_a_usage_line_and_help(name: str) -> None:
    module_doc = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8").split('"""')[1]
    assert f"usage: python examples/{name}.py" in module_doc
    proc = run_example(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert f"usage: python examples/{name}.py" in proc.stdout  # the docstring is the description


# ------------------------------------------------------------------- ping, traceroute, multiping, mtr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ping_prints_each_echo_and_a_summary(host: str) -> None:
    proc = run_example("ping", host, "-c", "3", "-i", "0.05")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"PING {host} ({host})"
    echoes = [line for line in lines if " bytes from " in line]
    assert [line.split("icmp_seq=")[1].split()[0] for line in echoes] == ["1", "2", "3"]
    assert all(f"bytes from {host}: " in line and line.endswith(" ms") for line in echoes)
    assert f"--- {host} ping statistics ---" in lines
    assert "3 packets transmitted, 3 received, 0% packet loss" in lines
    assert any(line.startswith("rtt min/avg/max/stdev = ") for line in lines)


def test_ping_bad_argument_is_reported_before_sending() -> None:
    proc = run_example("ping", "127.0.0.1", "-c", "0")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "error: count must be at least 1" in proc.stderr


@pytest.mark.lab
def test_ping_reports_echoes_nobody_answered() -> None:
    """In a namespace where the kernel ignores echo requests: a line per lost echo, 100% loss, exit 1."""
    with quiet_namespace() as ns:
        argv = [sys.executable, "examples/ping.py", "127.0.0.1", "-c", "2", "-i", "0.05", "-W", "0.3"]
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert "no answer for icmp_seq=1 (timeout)" in lines
    assert "no answer for icmp_seq=2 (timeout)" in lines
    assert "2 packets transmitted, 0 received, 100% packet loss" in lines
    assert not any(line.startswith("rtt ") for line in lines)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_traceroute_prints_one_line_per_hop(host: str) -> None:
    proc = run_example("traceroute", host, "-n", "-q", "2", "-m", "5", "-W", "1")
    assert proc.returncode == 0, proc.stderr
    header, *hops = proc.stdout.splitlines()
    assert header == f"traceroute to {host} ({host}), 5 hops max"
    assert len(hops) == 1  # loopback is one hop away
    cells = hops[0].split()
    assert cells[:2] == ["1", host]
    assert cells.count("ms") == 2  # one RTT per probe


def test_multiping_rows_in_input_order(tmp_path: Path) -> None:
    hosts_file = tmp_path / "hosts.txt"
    hosts_file.write_text("# loopback targets\n127.0.0.3\n\n127.0.0.4  # another\n", encoding="utf-8")
    hosts = ["127.0.0.1", "::1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
    proc = run_example("multiping", *hosts[:3], "-f", str(hosts_file), "-c", "2", "-i", "0.05")
    assert proc.returncode == 0, proc.stderr
    *rows, summary = proc.stdout.splitlines()
    assert [row.split()[0] for row in rows] == hosts
    assert all("xmt/rcv/%loss = 2/2/0%, min/avg/max = " in row for row in rows)
    assert summary == "5 hosts, 5 alive, 0 not answering"


def test_multiping_stream_prints_every_host() -> None:
    hosts = [f"127.0.1.{i}" for i in range(1, 21)] + ["::1"]
    proc = run_example("multiping", *hosts, "-c", "2", "-i", "0.05", "--stream")
    assert proc.returncode == 0, proc.stderr
    *rows, summary = proc.stdout.splitlines()
    assert sorted(row.split()[0] for row in rows) == sorted(hosts)  # completion order, each once
    assert all(" : xmt/rcv/%loss = 2/2/0%" in row for row in rows)
    assert summary == f"{len(hosts)} hosts, {len(hosts)} alive, 0 not answering"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_mtr_to_a_pipe_prints_one_final_table(host: str) -> None:
    proc = run_example("mtr", host, "-c", "3", "-i", "0.05", "-W", "1", "-n")
    assert proc.returncode == 0, proc.stderr
    title, header, *hops = proc.stdout.splitlines()
    assert title == f"mtr to {host} ({host}), 3 cycles"
    assert re.split(r"\s{2,}", header.strip()) == MTR_COLUMNS
    assert len(hops) == 1
    cells = hops[0].split()  # -n: the Hostname column is empty
    assert cells[:5] == ["1", host, "3", "3", "0.0"]
    assert len(cells) == 11
    assert all(float(ms) >= 0 for ms in cells[5:])


@pytest.mark.lab
def test_mtr_in_a_lab_names_every_router(make_lab: Callable[..., Lab]) -> None:
    """8 kernel routers, router 3 silent; names come from the lab's hosts file (reverse DNS on)."""
    lab = make_lab(8, silent=(3,))
    for target, hop_addr in ((lab.target4, lab.hop4), (lab.target6, lab.hop6)):
        argv = [sys.executable, str(EXAMPLES / "mtr.py"), target, "-c", "5", "-i", "0.2", "-W", "1"]
        proc = lab.exec(argv, check=False)  # inside the client namespace
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == f"mtr to {target} ({target}), 5 cycles"
        rows = table_rows(proc.stdout)
        assert sorted(rows, key=int) == [str(k) for k in range(1, 10)]
        for k in (1, 2, 4, 5, 6, 7, 8, 9):
            assert rows[str(k)][1:6] == [hop_addr(k), lab.hostname(k), "5", "5", "0.0"], rows[str(k)]
        assert rows["3"][1:5] == ["???", "5", "0", "100.0"]  # silent: no address, no name, no times


# ----------------------------------------------------------------------------------------- web backend


def _fake_getaddrinfo(real: Callable[..., Any], asked: list[str]) -> Callable[..., Any]:
    """getaddrinfo for address literals only: any name is recorded and reported unknown, never sent."""

    def getaddrinfo(host: str | bytes | None, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else host
        try:
            ipaddress.ip_address(text or "")
        except ValueError:
            asked.append(str(text))
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kwargs)

    return getaddrinfo


def _no_reverse_dns(*args: Any, **kwargs: Any) -> Any:
    raise socket.gaierror(socket.EAI_NONAME, "reverse DNS is off in these tests")


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """examples/web_backend.py served by uvicorn on 127.0.0.1 (a free port) in a thread of this process.

    Yields the base URL and the list of names the app tried to resolve (none leaves this process)."""
    asked: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(socket.getaddrinfo, asked))
    monkeypatch.setattr(socket, "getnameinfo", _no_reverse_dns)
    app = load_example("web_backend").create_app(timeout=2.0)
    # loop="asyncio": with uvloop installed, uvicorn's "auto" would pick it, and uvloop resolves names in
    # libuv, past the patched socket.getaddrinfo (a lookup that could leave the machine).
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", loop="asyncio"))
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # the lifespan (which opens the icmpx client) has run
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start in 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", asked
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
        assert not thread.is_alive()


def shape(doc: Any) -> Any:
    """A JSON document's structure: keys and types, lists by their first element."""
    if isinstance(doc, dict):
        return {key: shape(value) for key, value in doc.items()}
    if isinstance(doc, list):
        return [shape(doc[0])] if doc else []
    return "number" if isinstance(doc, int | float) and not isinstance(doc, bool) else type(doc).__name__


def cli_json(*args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "icmpx", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


@pytest.mark.anyio
async def test_web_backend_200_concurrent_pings_share_one_socket(web: tuple[str, list[str]]) -> None:
    url, asked = web
    before = icmp_socket_count()
    hosts = [f"127.1.{i // 100}.{i % 100 + 1}" for i in range(200)]
    answers: dict[str, httpx.Response] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def get(host: str) -> None:
            answers[host] = await http.get(f"/ping/{host}", params={"count": 1})

        async with anyio.create_task_group() as tasks:
            for host in hosts:
                tasks.start_soon(get, host)
        assert icmp_socket_count() == before + 1  # the app's one IPv4 socket, opened on first use
        assert (await http.get("/ping/::1", params={"count": "2", "interval": "0.05"})).status_code == 200
        assert icmp_socket_count() == before + 2  # and one IPv6 socket
        stats = (await http.get("/stats")).json()

    for host in hosts:
        assert answers[host].status_code == 200, answers[host].text
        doc = answers[host].json()
        assert (doc["target"], doc["addr"]) == (host, host)
        assert [(r["seq"], r["error"], r["from"]) for r in doc["results"]] == [(1, None, host)]
        assert (doc["stats"]["sent"], doc["stats"]["received"], doc["stats"]["loss_pct"]) == (1, 1, 0.0)
    assert stats["sockets"] == 2
    assert stats["sent"] == stats["replies"] == 202
    assert asked == []  # address literals never reach the resolver
    assert shape(doc) == shape(cli_json("ping", "127.0.0.1", "-c", "1", "-n"))  # the CLI's --json document


@pytest.mark.anyio
async def test_web_backend_traceroute_and_errors(web: tuple[str, list[str]]) -> None:
    url, asked = web
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        trace = await http.get("/traceroute/127.0.0.1", params={"probes": 2, "max_hops": 5})
        zero = await http.get("/ping/127.0.0.1", params={"count": 0})
        words = await http.get("/ping/127.0.0.1", params={"count": "many"})
        probes = await http.get("/traceroute/127.0.0.1", params={"probes": 11})
        unknown = await http.get("/ping/no-such-host.invalid")

    assert trace.status_code == 200, trace.text
    doc = trace.json()
    assert (doc["target"], doc["addr"], doc["reached"]) == ("127.0.0.1", "127.0.0.1", True)
    assert len(doc["hops"]) == 1
    hop = doc["hops"][0]
    assert (hop["ttl"], hop["addr"], hop["addrs"], hop["hostname"]) == (1, "127.0.0.1", ["127.0.0.1"], None)
    assert len(hop["rtts_ms"]) == 2
    assert all(rtt >= 0 for rtt in hop["rtts_ms"])
    assert shape(doc) == shape(cli_json("traceroute", "127.0.0.1", "-n", "-q", "2", "-m", "5"))

    for bad, word in ((zero, "count"), (words, "count"), (probes, "probes")):
        assert bad.status_code == 400
        assert word in bad.json()["error"]
    assert unknown.status_code == 404
    assert "no-such-host.invalid" in unknown.json()["error"]
    assert asked == ["no-such-host.invalid"]


# ------------------------------------------------------------------------------------------------- tui


@pytest.mark.anyio
async def test_tui_shows_a_live_mtr_table() -> None:
    app = load_example("tui").MtrApp("127.0.0.1", interval=0.05, timeout=1.0, resolve_dns=False)

    def hop1() -> list[str] | None:
        table = app.query_one(DataTable)
        return [str(cell) for cell in table.get_row("1")] if "1" in table.rows else None

    async with app.run_test() as pilot:
        with anyio.fail_after(10):  # wait on the table itself, bounded
            while (row := hop1()) is None or int(row[3]) < 2:
                await pilot.pause(0.02)
        assert row[:3] == ["1", "127.0.0.1", ""]
        assert int(row[4]) >= 2  # Recv
        assert app.report is not None
        assert app.report.cycle >= 2
        assert "127.0.0.1" in app.sub_title
        assert "cycle" in app.sub_title
        await pilot.press("q")
    assert app.return_code == 0


@pytest.mark.anyio
async def test_tui_exits_with_the_error_of_a_bad_argument() -> None:
    app = load_example("tui").MtrApp("127.0.0.1", interval=0.05, max_hops=0, resolve_dns=False)
    async with app.run_test() as pilot:
        with anyio.fail_after(10):
            while app.return_code is None:
                await pilot.pause(0.02)
    assert app.return_code == 2
