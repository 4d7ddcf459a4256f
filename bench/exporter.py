"""icmpx exporter beside Debian's prometheus-smokeping-prober: CPU, memory, scrape time and loss.

    sudo uv run python bench/exporter.py                      # 100, 1,000 and 10,000 targets, 60 s each
    sudo uv run python bench/exporter.py --sizes 100 --seconds 20 --json
    sudo uv run python bench/exporter.py --sizes 100000 --interval 10 --only icmpx

Each exporter runs alone (one after the other, never both at once: the machine has 2 cores) as its own
process, probing N loopback targets (127.1.0.1, 127.1.0.2, …: every 127/8 address answers) once per
``--interval`` seconds each. After a warm-up of two intervals, the window of ``--seconds`` is measured:

- **cores**: the process's CPU time (user + system, /proc/PID/stat) over the window, divided by its length;
- **RSS MB**: resident memory at the end of the window (VmRSS);
- **scrape s**: the median wall time of three ``GET /metrics`` at the end (the body read in full);
- **loss**: ``1 - Δresponses / Δrequests`` over the window (from the scrape before it to the first one
  after it), from each exporter's own counters
  (icmpx: ``icmpx_requests_total`` / ``icmpx_responses_total``; smokeping_prober: ``smokeping_requests_total``
  / ``smokeping_response_duration_seconds_count``), summed over the targets.

The load average at the start and end of each run is printed beside it: other work on the machine shows.
smokeping_prober is installed with apt when missing (``prometheus-smokeping-prober``). Needs root (raw
sockets for smokeping_prober's ``--privileged``; icmpx uses whatever it may open).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMOKEPING = "prometheus-smokeping-prober"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    tool: str
    targets: int
    startup_s: float | None
    interval: float
    seconds: float
    cores: float
    rss_mb: float
    scrape_s: float
    scrape_mb: float
    requests: int
    responses: int
    loss: float | None
    load_before: str
    load_after: str
    foreign_per_s: float | None = None
    """icmpx only: other programs' ICMP packets its raw socket read per second (a raw ICMP socket gets a
    copy of every ICMP packet of the host: other pings on the machine cost it CPU)."""
    error: str | None = None


def loopback_targets(n: int) -> list[str]:
    """127.1.0.1 … : n distinct loopback addresses (none ending in .0 or .255)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        b, c, d = (i >> 16) & 255, (i >> 8) & 255, i & 255
        i += 1
        if d in (0, 255):
            continue
        out.append(f"127.{1 + b}.{c}.{d}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(url: str, timeout: float = 300) -> tuple[float, str]:
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read().decode()
    return time.monotonic() - start, body


def sums(body: str, requests: str, responses: str) -> tuple[int, int]:
    req = resp = 0.0
    for line in body.splitlines():
        if line.startswith(requests + "{"):
            req += float(line.rpartition(" ")[2])
        elif line.startswith(responses + "{"):
            resp += float(line.rpartition(" ")[2])
    return int(req), int(resp)


def counter(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class NotUp(Exception):
    pass


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until ``url`` answers (the exporter serves its first scrape)."""
    start = time.monotonic()
    while time.monotonic() < start + timeout:
        if proc.poll() is not None:
            raise NotUp(f"the exporter exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.2)
    raise NotUp(f"no answer on {url} after {timeout:g} s")


def run_one(
    tool: str,
    hosts: list[str],
    interval: float,
    seconds: float,
    work: Path,
    startup_timeout: float,
    socket_kind: str = "auto",
) -> Result:
    port = free_port()
    if tool == "icmpx":
        config = work / "icmpx.yml"
        lines = ["targets:", "  - interval: " + repr(interval), "    hosts:"]
        lines += [f"      - {h}" for h in hosts]
        config.write_text("\n".join(lines) + "\n")
        argv = [sys.executable, "-m", "icmpx", "exporter", "--config", str(config)]
        argv += ["--listen", f"127.0.0.1:{port}", "--privileged", socket_kind]
        names = ("icmpx_requests_total", "icmpx_responses_total")
    else:
        config = work / "smokeping.yml"
        lines = ["targets:", "  - interval: " + f"{interval}s", "    network: ip4", "    hosts:"]
        lines += [f"      - {h}" for h in hosts]
        config.write_text("\n".join(lines) + "\n")
        argv = [
            SMOKEPING,
            "--privileged",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        argv += ["--log.level=warn"]
        names = ("smokeping_requests_total", "smokeping_response_duration_seconds_count")
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        try:
            startup = wait_up(url, proc, startup_timeout)
        except NotUp as exc:
            nan = float("nan")
            now = load()
            return Result(
                tool, len(hosts), None, interval, 0, nan, nan, nan, nan, 0, 0, None, now, now, error=str(exc)
            )
        time.sleep(2 * interval + 1)  # warm-up: every target probed twice before the window
        load_before = load()
        _t, body = scrape(url)
        req0, resp0 = sums(body, *names)
        foreign0 = counter(body, "icmpx_engine_foreign_total")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        memory = rss_mb(proc.pid)
        times, size = [], 0
        for i in range(3):
            elapsed, body = scrape(url)
            times.append(elapsed)
            size = len(body)
            if i == 0:
                # The counters of the first scrape after the window: a scrape right after another one
                # finds replies still unread (the exporter was busy formatting), and they would look lost.
                req1, resp1 = sums(body, *names)
                foreign1 = counter(body, "icmpx_engine_foreign_total")
        load_after = load()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # The window's CPU, without the three scrapes at its end.
    requests, responses = req1 - req0, resp1 - resp0
    return Result(
        tool=tool,
        targets=len(hosts),
        startup_s=round(startup, 2),
        interval=interval,
        seconds=round(t1 - t0, 1),
        cores=round((cpu1 - cpu0) / (t1 - t0), 3),
        rss_mb=round(memory, 1),
        scrape_s=round(statistics.median(times), 3),
        scrape_mb=round(size / 1e6, 1),
        requests=requests,
        responses=responses,
        loss=round(1 - responses / requests, 4) if requests else None,
        load_before=load_before,
        load_after=load_after,
        foreign_per_s=round((foreign1 - foreign0) / (t1 - t0)) if tool == "icmpx" else None,
    )


def ensure_smokeping() -> None:
    if shutil.which(SMOKEPING):
        return
    print(f"installing {SMOKEPING} with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", SMOKEPING], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="target counts (default 100,1000,10000)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between echoes to a target")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    parser.add_argument(
        "--startup-timeout", type=float, default=300.0, help="seconds to wait for a first scrape"
    )
    parser.add_argument(
        "--icmpx-socket",
        choices=("auto", "raw", "dgram"),
        default="auto",
        help="icmpx's --privileged (default auto): a raw socket reads every ICMP packet of the host, a ping "
        "socket only its own (dgram needs net.ipv4.ping_group_range to admit root's group)",
    )
    parser.add_argument("--only", choices=("icmpx", "smokeping"), help="run one exporter only")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/exporter.py needs root (raw sockets for smokeping_prober)")
    tools = [args.only] if args.only else ["icmpx", "smokeping"]
    if "smokeping" in tools:
        ensure_smokeping()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="icmpx-exporter-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            hosts = loopback_targets(size)
            for tool in tools:
                result = run_one(
                    tool,
                    hosts,
                    args.interval,
                    args.seconds,
                    Path(tmp),
                    args.startup_timeout,
                    args.icmpx_socket,
                )
                results.append(result)
                # Progress on stderr with --json, the table itself without.
                print(
                    f"{tool:10} {size:>7} targets: up in {result.startup_s} s, {result.cores:6.3f} cores  "
                    f"{result.rss_mb:7.1f} MB  scrape {result.scrape_s:7.3f} s ({result.scrape_mb} MB)  "
                    f"loss {result.loss}  [{result.requests} requests; load {result.load_before} -> "
                    f"{result.load_after}]"
                    + (f" foreign {result.foreign_per_s}/s" if result.foreign_per_s is not None else "")
                    + (f"  FAILED: {result.error}" if result.error else ""),
                    file=sys.stderr if args.json else sys.stdout,
                    flush=True,
                )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
