"""Start-up time of the command line beside empty anyio and asyncio programs, measured with hyperfine.

    python bench/startup.py            # --runs 30 --json

Three commands, each run by the venv's interpreter directly (no ``uv run`` in front), bytecode cached:

- ``python -m icmpx ping 127.0.0.1 -c 1 -n``: a whole one-echo ping on loopback;
- ``python EMPTY_ANYIO``: ``anyio.run()`` of a coroutine that does nothing (the floor of an anyio program);
- ``python EMPTY_ASYNCIO``: ``asyncio.run()`` of the same (the floor of any asyncio program).

The gap between the first two is what icmpx itself costs a command; issue 14 asks for at most 20 ms.
Needs ``hyperfine`` (apt-get install hyperfine) and an ICMP socket (root, or ping sockets open).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import worker_env

EMPTY_ANYIO = "import anyio\n\n\nasync def main() -> None:\n    pass\n\n\nanyio.run(main)\n"
EMPTY_ASYNCIO = "import asyncio\n\n\nasync def main() -> None:\n    pass\n\n\nasyncio.run(main())\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (default 30)")
    parser.add_argument("--json", action="store_true", help="print the means as one JSON document")
    args = parser.parse_args()
    if shutil.which("hyperfine") is None:
        parser.error("hyperfine is not installed (apt-get install hyperfine)")
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        anyio_prog, asyncio_prog = Path(tmp, "empty_anyio.py"), Path(tmp, "empty_asyncio.py")
        anyio_prog.write_text(EMPTY_ANYIO)
        asyncio_prog.write_text(EMPTY_ASYNCIO)
        commands = {
            "icmpx ping -c 1 -n": f"{python} -m icmpx ping 127.0.0.1 -c 1 -n",
            "empty anyio.run()": f"{python} {anyio_prog}",
            "empty asyncio.run()": f"{python} {asyncio_prog}",
        }
        export = Path(tmp, "hyperfine.json")
        subprocess.run(
            ["hyperfine", "-N", "--warmup", "5", "--runs", str(args.runs), "--export-json", str(export),
             *(arg for name, command in commands.items() for arg in ("-n", name, command))],
            check=True, env=worker_env(), stdout=subprocess.DEVNULL if args.json else None,
        )  # fmt: skip
        results = json.loads(export.read_text())["results"]
    means = {r["command"]: (r["mean"] * 1000, r["stddev"] * 1000) for r in results}
    if args.json:
        print(json.dumps({name: {"mean_ms": m, "stddev_ms": s} for name, (m, s) in means.items()}))
    else:
        for name, (mean, stddev) in means.items():
            print(f"{name:22} {mean:7.1f} ms ± {stddev:.1f}")
        gap = means["icmpx ping -c 1 -n"][0] - means["empty anyio.run()"][0]
        print(f"icmpx ping over an empty anyio program: {gap:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
