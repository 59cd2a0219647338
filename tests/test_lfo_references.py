"""The stored leave-future-out references (``tests/references``, written by
``benchmarks/lfo_references.py``) are complete and consistent: one row per forecast origin
``t = L..T-M`` (L = 20) for each horizon, finite values, a small Monte Carlo error, and the
simulated Poisson series is what ``simulate_poisson_ar`` draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from numpyro_mpe.datasets import load_lake_huron
from numpyro_mpe.time_series import simulate_poisson_ar

REFERENCES = Path(__file__).resolve().parent / "references"
MIN_TRAIN = 20
HORIZONS = (1, 4)
# The references' MCSE per origin (delta method, 10,000 NUTS draws) is about 0.001 to
# 0.01; 0.05 is the most a reference may carry and still check an elpd_t to 0.1.
MAX_MCSE = 0.05


def _table(name: str) -> np.ndarray:
    return np.genfromtxt(REFERENCES / name, delimiter=",", names=True)


def _series() -> np.ndarray:
    return _table("poisson_ar_series.csv")


CASES = {
    "lfo_lake_huron_nuts.csv": lambda: load_lake_huron().level.size,
    "lfo_poisson_ar_nuts.csv": lambda: _series().size,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_row_per_origin_and_horizon(name):
    table = _table(name)
    num_times = CASES[name]()
    assert table.dtype.names == ("origin", "horizon", "elpd", "mcse")
    assert sorted(set(table["horizon"].astype(int))) == list(HORIZONS)
    for horizon in HORIZONS:
        rows = table[table["horizon"] == horizon]
        expected = np.arange(MIN_TRAIN, num_times - horizon + 1)
        np.testing.assert_array_equal(rows["origin"], expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_are_finite_with_small_mcse(name):
    table = _table(name)
    assert np.isfinite(table["elpd"]).all()
    assert np.isfinite(table["mcse"]).all()
    assert (table["mcse"] > 0).all()
    assert table["mcse"].max() < MAX_MCSE, table[np.argmax(table["mcse"])]


def test_the_poisson_series_is_what_simulate_poisson_ar_draws():
    series = _series()
    np.testing.assert_array_equal(series["t"], np.arange(100))
    np.testing.assert_array_equal(
        simulate_poisson_ar(100, 0.5, [0.6], seed=2026), series["y"].astype(float)
    )
