"""Documented code runs: the README snippet and the examples/ scripts (fast settings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest
from models import nuts_lfo_reference

from numpyro_mpe import ParetoKWarning

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str):
    """``examples/{name}.py`` as a module (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


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
    example = load_example("wells_loo")
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
    example = load_example("generalisation_during_training")
    plot = tmp_path / "generalisation.png"
    out = example.main(["--steps", "200", "--checkpoints", "8", "--plot", str(plot)])
    assert len(out["steps"]) == 8 and out["steps"][-1] == 200
    assert np.corrcoef(out["mpe_loo"], out["test_lpd"])[0, 1] > 0.8
    # Same scale: both are per-example log densities of the same posterior.
    assert np.max(np.abs(out["mpe_loo"] - out["test_lpd"])) < 0.03
    assert plot.stat().st_size > 10_000


@pytest.mark.slow
def test_lfo_lake_huron_example(tmp_path, x64, capsys):
    """Leave-future-out on Lake Huron (AR(4), L = 20, M = 1) with 300 + 300 NUTS draws.
    Measured: MPE-LFO with refits where unreliable -92.87 (3 refits), 0.16 from the
    stored NUTS reference (4 x 2500 draws, -92.71; at most 0.38 at an origin) and 0.53
    from the run's own 300-draw NUTS refits (-92.34); PSIS-LFO -92.55 (2 refits);
    Laplace refits -94.55; MPE-LFO without refits -82.98, its Pareto k above the
    threshold at 64 of 78 origins. About 60 s on 2 loaded cores, most of it compilation."""
    matplotlib.use("Agg")
    example = load_example("lfo_lake_huron")
    plot = tmp_path / "lfo.png"
    out = example.main(["--num-samples", "300", "--num-warmup", "300", "--plot", str(plot)])
    rows = {row["name"]: row for row in out["rows"]}
    reference = nuts_lfo_reference("lake_huron", 1)
    refitted = rows["MPE-LFO, refits where unreliable"]
    # Deterministic given the seed: 0.16 in the total and at most 0.38 at an origin
    # (1934, the first one computed from the full fit) measured.
    assert abs(refitted["elpd"] - reference.sum()) < 0.5
    per_origin = out["results"]["MPE-LFO, refits where unreliable"][0].elpd_i.values
    assert np.max(np.abs(per_origin - reference)) < 0.6
    # Against 300 NUTS draws per origin (Monte Carlo error about 0.4 in the total).
    assert abs(refitted["diff"]) < 1.0
    assert abs(rows["NUTS refits"]["elpd"] - reference.sum()) < 1.0
    assert abs(rows["PSIS-LFO (NUTS)"]["elpd"] - reference.sum()) < 1.0
    assert 1 <= refitted["refits"] <= 10
    assert rows["MPE-LFO, no refits"]["refits"] == 0
    assert rows["NUTS refits"]["refits"] == rows["Laplace refits"]["refits"] == 78
    assert 1 <= rows["PSIS-LFO (NUTS)"]["refits"] <= 10
    # Warnings are recorded per estimate: the no-refit run's Pareto k flags, no refit
    # that failed to converge.
    never_warnings = rows["MPE-LFO, no refits"]["warnings"]
    assert any(m.startswith("ParetoKWarning") for m in never_warnings)
    assert not any("ConvergenceWarning" in m for row in rows.values() for m in row["warnings"])
    assert plot.stat().st_size > 10_000
    assert "MPE-LFO, refits where unreliable" in capsys.readouterr().out
    # The refits: each is the base of its own origin and of the earlier ones until the
    # next; off the bases every origin is reliable (its MPE step holds, or its sampling
    # corrected it); where nothing was refitted both runs agree to the last digit.
    never = out["results"]["MPE-LFO, no refits"][0]
    refits = out["results"]["MPE-LFO, refits where unreliable"][0]
    origins, bases = refits.elpd_i["time"].values, refits.base.values
    assert set(bases) == {98, *refits.refits} and np.all(bases >= origins)
    sampled = refits.pareto_k.values <= refits.good_k
    near = refits.newton_decrement.values <= 0.1
    assert np.all((sampled | near)[bases != origins])
    later = origins > refits.refits.max()
    assert later.sum() > 30
    np.testing.assert_array_equal(refits.elpd_i.values[later], never.elpd_i.values[later])
    assert any("at 34 of 78 origins removing the future" in m for m in never_warnings)
    # docs/lfo.md's snippet computes the same estimate.
    (block,) = python_blocks(ROOT / "docs" / "lfo.md")
    namespace: dict = {}
    try:  # the snippet switches float64 on, process-wide
        with pytest.warns(ParetoKWarning, match="although their MPE posteriors are the La"):
            exec(compile(block, "docs/lfo.md", "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", False)
    assert namespace["result"].elpd == pytest.approx(refitted["elpd"], abs=1e-9)


# 20 minibatch steps from the curvature start are far from a fit, which loo says.
@pytest.mark.filterwarnings("ignore:loo. the params are not a fit")
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
