"""The GPU check's flow (benchmarks/device_check.py), run on the CPU with a small model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_device_check_runs_the_lossless_suite_and_the_step_table_on_the_cpu():
    done = subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--device", "cpu", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "lossless suite on cpu: PASSED" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("| engine step |")]
    assert len(table) == 4  # b in (1, 4) x q in (1, 3)
