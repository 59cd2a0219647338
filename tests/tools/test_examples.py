"""Documented code runs: the README snippet and the examples/ scripts (fast settings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


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


def test_generalisation_during_training_example(tmp_path, x64):
    """MPE-LOO from training data tracks the held-out log predictive density across
    iBLR checkpoints (measured Pearson correlation 0.93 with 200 steps, 8 checkpoints;
    the full run, 1500 steps, is in docs)."""
    matplotlib.use("Agg")
    path = ROOT / "examples" / "generalisation_during_training.py"
    spec = importlib.util.spec_from_file_location("generalisation", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plot = tmp_path / "generalisation.png"
    out = example.main(["--steps", "200", "--checkpoints", "8", "--plot", str(plot)])
    assert len(out["steps"]) == 8 and out["steps"][-1] == 200
    assert np.corrcoef(out["mpe_loo"], out["test_lpd"])[0, 1] > 0.8
    # Same scale: both are per-example log densities of the same posterior.
    assert np.max(np.abs(out["mpe_loo"] - out["test_lpd"])) < 0.03
    assert plot.stat().st_size > 10_000


def test_checkpoints_record_mpe_loo_by_default(wells, x64):
    from conftest import logistic_model

    import numpyro_mpe as mpe

    X, y = wells
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    blr = mpe.BLR(logistic_model, guide, mpe.optim.iblr(0.2, beta2=0.99, hess_init=0.1))
    result = blr.run(
        jax.random.PRNGKey(0), 20, X, y, batch_size=500, checkpoints=[5, 20], progress_bar=False
    )
    assert sorted(result.checkpoints) == [5, 20]
    assert isinstance(result.checkpoints[20], mpe.ELPDDataMPE)
    # The last checkpoint is MPE-LOO at the returned params (the model traced once).
    direct = mpe.loo(logistic_model, guide, result.params, X, y)
    np.testing.assert_array_equal(result.checkpoints[20].elpd_i, direct.elpd_i)
    with pytest.raises(ValueError, match=r"checkpoint steps must be in \[1, 20\], got \[25\]"):
        blr.run(jax.random.PRNGKey(0), 20, X, y, checkpoints=[25], progress_bar=False)
