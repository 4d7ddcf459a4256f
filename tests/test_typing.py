"""Every documentation example and every program in examples/ passes ``mypy --strict``.

What users copy is what they will type-check: the docs' Python blocks (the ones test_docs.py runs) and the
example programs must need no ``# type: ignore`` and no ``assert x is not None`` the docs do not show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_docs import PYTHON_BLOCKS, ROOT


def test_docs_and_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files: dict[str, str] = {}
    for n, block in enumerate(PYTHON_BLOCKS):
        module = tmp_path / f"block_{n:03d}.py"
        module.write_text(block.code)
        files[str(module)] = block.name
    examples = sorted((ROOT / "examples").glob("*.py"))
    argv = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "c")]
    proc = subprocess.run(
        [*argv, *files, *map(str, examples)], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    report = proc.stdout
    for path, name in files.items():
        report = report.replace(path, name)
    assert proc.returncode == 0, report
