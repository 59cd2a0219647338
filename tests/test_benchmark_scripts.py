"""The accelerator scripts of ``benchmarks/`` run end to end at tiny sizes on CPU, so that
they cannot rot between the sessions that have a GPU (each in its own process: they
switch float64 on for the whole process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, settings: str) -> str:
    """Run ``benchmarks/<name>`` with ``settings`` in a fresh process; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *settings.split()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_gpu_psis_runs_at_a_tiny_size():
    stdout = run_script("gpu_psis.py", "--sizes 200 --draws 100 --dtypes float32 float64")
    # The cross-check of the device against the CPU backend, then one row per dtype.
    assert "cpu vs cpu, float64, 200 obs x 400 draws" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| float")]
    assert [row.split("|")[1:4] for row in rows] == [
        [" float32 ", " 200 ", " 400 "],
        [" float64 ", " 200 ", " 400 "],
    ]


def test_gpu_mpe_runs_at_a_tiny_size():
    # float64 at the size of the cross-check reuses its compiled programs.
    stdout = run_script("gpu_mpe.py", "--sizes 200 --check-size 200 --dtypes float32 float64")
    # The cross-check of the device against the CPU backend, then one row per dtype.
    check = next(line for line in stdout.splitlines() if line.startswith("cpu vs cpu"))
    assert check.startswith("cpu vs cpu, float64, 200 obs: max |diff| mean 0.00e+00")
    rows = [line for line in stdout.splitlines() if line.startswith("| float")]
    assert [row.split("|")[1:3] for row in rows] == [
        [" float32 ", " 200 "],
        [" float64 ", " 200 "],
    ]
    # A finite elpd per row: elpd_loo_mpe of 200 examples, each below 0.
    elpds = [float(row.split("|")[7]) for row in rows]
    assert all(-200 * 5 < elpd < 0 for elpd in elpds)
