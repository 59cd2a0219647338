"""The stored exact-LOO references (``tests/references/loo_*_exact.csv``, written by
``benchmarks/loo_references.py``) are complete and consistent, and three examples of each
are recomputed from scratch by the script's own function with fewer draws and another
seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ROOT / "tests" / "references"
CASES = {
    "roaches": ("loo_roaches_exact.csv", 262),
    "breast_cancer": ("loo_breast_cancer_exact.csv", 569),
}
# The references' MCSE per example (delta method, 20,000 or 100,000 draws) is at most
# 0.0075; 0.02 is the most a reference may carry and still check a method to 0.1.
MAX_MCSE = 0.02
# A recomputation and a reference are independent estimates (other seed), each with an
# MCSE from the delta method and k < 0.5 (finite variance, so the error is near normal):
# 5 joint standard errors miss with probability < 1e-6. The floor covers the rounding of
# elpd values near 0 (the CSV keeps 12 significant digits).
Z_TOLERANCE, FLOOR = 5.0, 1e-8


def _script():
    spec = importlib.util.spec_from_file_location(
        "loo_references", ROOT / "benchmarks" / "loo_references.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(name: str) -> np.ndarray:
    return np.genfromtxt(
        REFERENCES / CASES[name][0], delimiter=",", names=True, dtype=None, encoding="utf-8"
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_finite_row_per_example_with_small_mcse_and_k(name):
    table = _table(name)
    assert table.dtype.names == ("index", "elpd_loo", "mcse", "pareto_k", "method")
    np.testing.assert_array_equal(table["index"], np.arange(CASES[name][1]))
    for column in ("elpd_loo", "mcse", "pareto_k"):
        assert np.isfinite(table[column]).all(), column
    # Bernoulli and Poisson probabilities are at most 1 (up to rounding).
    assert (table["elpd_loo"] < 1e-12).all()
    assert (table["mcse"] >= 0).all() and table["mcse"].max() < MAX_MCSE
    assert table["pareto_k"].max() < 0.7
    assert set(table["method"]) == {_script().METHOD}


def test_pareto_k_reads_log_weights_not_log_likelihoods():
    # exp(E / 2) with E ~ Exponential(1) is Pareto with tail index 2: k = 1/2; its
    # reciprocal is bounded: k < 0.
    draws = np.random.default_rng(0).exponential(size=100_000)
    script = _script()
    assert abs(script.pareto_k(draws / 2) - 0.5) < 0.05
    assert script.pareto_k(-draws / 2) < 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_three_examples_recomputed_from_scratch(name, x64):
    script = _script()
    table = _table(name)
    # The example of lowest elpd (the most surprising), of largest MCSE, of largest k, and
    # 0: the first three distinct ones.
    candidates = [
        np.argmin(table["elpd_loo"]),
        np.argmax(table["mcse"]),
        np.argmax(table["pareto_k"]),
        0,
    ]
    indices = list(dict.fromkeys(map(int, candidates)))[:3]
    density = {"roaches": script.roaches_density, "breast_cancer": script.breast_cancer_density}
    settings = script.Settings(num_draws=20_000, max_draws=20_000, batch=5_000)
    results = script.exact_loo(density[name](), indices, seed=2026, settings=settings)
    for index, result in zip(indices, results, strict=True):
        reference, mcse = table["elpd_loo"][index], table["mcse"][index]
        tolerance = Z_TOLERANCE * np.hypot(mcse, result.mcse) + FLOOR
        assert abs(result.elpd - reference) < tolerance, (index, result, reference, mcse)
        assert result.pareto_k < 0.7
