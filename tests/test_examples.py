"""Documented code runs: the README snippet and the examples/ scripts (fast settings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jax
import matplotlib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_snippet_runs(capsys):
    (block,) = python_blocks(ROOT / "README.md")
    # The snippet switches float64 on, process-wide: run it and switch back.
    try:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", False)
    assert namespace["elpd"].elpd < 0
    assert namespace["draws"]["y"].shape == (1000, 3020)
    assert "elpd_loo_mpe" in capsys.readouterr().out


def test_wells_example(tmp_path, x64):
    matplotlib.use("Agg")
    spec = importlib.util.spec_from_file_location("wells_loo", ROOT / "examples" / "wells_loo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plot = tmp_path / "wells.png"
    out = example.main(["--refits", "40", "--plot", str(plot)])
    assert out["table"].loc["MPE-LOO", "max_abs_diff"] < 1e-4
    assert plot.stat().st_size > 10_000
    assert len(out["influence"]) == 5 and all(np.isfinite(s) for _, s in out["influence"])
