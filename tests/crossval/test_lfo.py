"""MPE leave-future-out (``numpyro_mpe.lfo``): exact on a Gaussian autoregression, within
Monte Carlo error of NUTS refits on a Poisson one, ArviZ's comparison, and bad input. Its
refits on Lake Huron are checked with the example (``tests/tools/test_examples.py``)."""

from __future__ import annotations

import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import laplace_fit
from models import (
    gaussian_ar,
    gaussian_ar_closed_form_lfo,
    nuts_lfo_reference,
    poisson_ar_series,
)

import numpyro_mpe as mpe
from numpyro_mpe.datasets import load_lake_huron
from numpyro_mpe.time_series import poisson_ar_model

LEVEL = load_lake_huron().level


@pytest.fixture(scope="module")
def gaussian_fit():
    with jax.enable_x64(True):
        return laplace_fit(gaussian_ar, jnp.asarray(LEVEL))


@pytest.fixture(scope="module")
def gaussian_lfo(gaussian_fit):
    """MPE-LFO of ``gaussian_ar`` on Lake Huron, L = 20: ``{(method, horizon): result}``."""
    guide, result = gaussian_fit
    with jax.enable_x64(True):
        return {
            (method, horizon): mpe.lfo(
                gaussian_ar,
                guide,
                result.params,
                LEVEL,
                min_train=20,
                horizon=horizon,
                method=method,
            )
            for method, horizon in [("cavity", 1), ("cavity", 4), ("is", 1)]
        }


@pytest.mark.parametrize("horizon", [1, 4])
def test_gaussian_autoregression_is_exact(gaussian_lfo, horizon):
    lfo = gaussian_lfo["cavity", horizon]
    expected = gaussian_ar_closed_form_lfo(LEVEL, 20, horizon)
    np.testing.assert_allclose(lfo.elpd_i.values, expected, rtol=0, atol=1e-8)
    assert lfo.elpd == pytest.approx(expected.sum(), abs=1e-8)
    np.testing.assert_array_equal(lfo.elpd_i["time"].values, np.arange(20, 99 - horizon))
    assert lfo.n_refits == 0 and lfo.kind == "lfo_cv"
    assert float(lfo.newton_decrement.max()) < 1e-12  # every q_t is the exact posterior
    np.testing.assert_array_equal(lfo.base.values, 98)


def test_importance_sampling_keeps_the_exact_answer(gaussian_lfo):
    lfo = gaussian_lfo["is", 1]
    expected = gaussian_ar_closed_form_lfo(LEVEL, 20, 1)
    np.testing.assert_allclose(lfo.elpd_i.values, expected, rtol=0, atol=1e-8)
    assert np.all(lfo.pareto_k.values == -np.inf)  # constant ratios: nothing to fit


def test_float32_is_within_its_precision(gaussian_fit):
    guide, result = gaussian_fit
    params = jax.tree.map(lambda value: jnp.asarray(value, jnp.float32), result.params)
    lfo = mpe.lfo(gaussian_ar, guide, params, LEVEL.astype(np.float32), min_train=20)
    assert lfo.elpd_i.dtype == np.float64  # ArviZ's containers hold float64
    expected = gaussian_ar_closed_form_lfo(LEVEL, 20, 1)
    # float32 prefix sums of per-example Hessians of size ~1/0.49 over 98 terms
    np.testing.assert_allclose(lfo.elpd_i.values, expected, rtol=0, atol=5e-3)


def test_poisson_autoregression_matches_nuts_refits_without_refits(x64):
    """A simulated Poisson AR(1) (T = 100): MPE-LFO with importance sampling needs no
    refit and comes within 0.01 nats of NUTS refits in total for M = 1 and 4
    (measured; tolerance 0.1), within 0.05 at every origin; the closed form alone is
    0.05 and 0.35 off in total."""
    y = poisson_ar_series()
    guide, result = laplace_fit(poisson_ar_model, y)
    for horizon in (1, 4):
        lfo = mpe.lfo(
            poisson_ar_model, guide, result.params, y, min_train=20, horizon=horizon, method="is"
        )
        reference = nuts_lfo_reference("poisson_ar", horizon)
        assert lfo.n_refits == 0
        assert lfo.elpd == pytest.approx(reference.sum(), abs=0.1)
        np.testing.assert_allclose(lfo.elpd_i.values, reference, rtol=0, atol=0.05)


def test_arviz_compares_lfo_results_of_the_same_window(gaussian_lfo):
    first, second = gaussian_lfo["cavity", 1], gaussian_lfo["is", 1]
    table = azs.compare({"cavity": first, "is": second})
    # ArviZ's table rounds to rcParams["stats.round_to"] significant figures.
    assert table.loc["cavity", "elpd"] == pytest.approx(first.elpd, abs=1)
    assert table.loc["is", "elpd_diff"] == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="same forecast_horizon and min_observations"):
        azs.compare({"one": first, "four": gaussian_lfo["cavity", 4]})
    assert "Minimum training observations: 20" in str(first)


def _no_plate(y):
    mean = numpyro.sample("mean", dist.Normal(579, 5))
    numpyro.sample("y", dist.Normal(mean, 1).expand([y.shape[0]]).to_event(1), obs=y)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"min_train": 0}, ValueError, r"min_train must be at least 1, got 0"),
        ({"min_train": 98}, ValueError, r"min_train must be in 1..T-1 = 1..97 .* got 98"),
        ({"min_train": 20.0}, TypeError, r"min_train must be an integer, got 20.0"),
        ({"horizon": 0}, ValueError, r"horizon must be at least 1, got 0"),
        ({"horizon": True}, TypeError, r"horizon must be an integer, got True"),
        ({"min_train": 95, "horizon": 4}, ValueError, r"95 \+ 4 exceeds the 98 time points"),
        ({"method": "paper"}, ValueError, r"method must be one of \('cavity', 'is'\)"),
        ({"refit": "always"}, ValueError, r"refit must be one of \('never', 'unreliable'\)"),
        ({"decrement_threshold": -1}, ValueError, r"decrement_threshold must be in"),
        ({"num_samples": 1}, ValueError, r"num_samples"),
        ({"seed": -1}, ValueError, r"seed must be at least 0"),
    ],
)
def test_bad_options_are_refused_before_any_work(gaussian_fit, overrides, error, match, x64):
    guide, result = gaussian_fit
    options = {"min_train": 20} | overrides
    with pytest.raises(error, match=match):
        mpe.lfo(gaussian_ar, guide, result.params, LEVEL, **options)


def test_bad_series_and_models_are_refused(gaussian_fit, x64):
    guide, result = gaussian_fit
    gap = LEVEL.copy()
    gap[40] = np.nan
    with pytest.raises(mpe.ModelError, match=r"argument 'y' contains nan"):
        mpe.lfo(gaussian_ar, guide, result.params, y=gap, min_train=20)
    with pytest.raises(mpe.ModelError, match=r"plate"):
        mpe.lfo(_no_plate, mpe.AutoGaussian(_no_plate), {}, LEVEL, min_train=20)
    with pytest.raises(TypeError, match=r"AutoGaussian guide; got AutoConjugate"):
        mpe.lfo(gaussian_ar, mpe.AutoConjugate(gaussian_ar), {}, LEVEL, min_train=20)


def test_a_masked_time_point_is_a_gap_in_the_series(x64):
    def masked_ar(y, observed):
        w = numpyro.sample("w", dist.Normal(0, 2))
        with numpyro.plate("time", y.shape[0]), numpyro.handlers.mask(mask=observed):
            numpyro.sample("y", dist.Normal(579.0 + w, 1.0), obs=y)

    observed = np.ones(98, bool)
    observed[50] = False
    guide, result = laplace_fit(masked_ar, LEVEL, observed)
    with pytest.raises(ValueError, match=r"missing values: time 50 of plate 'time'"):
        mpe.lfo(masked_ar, guide, result.params, LEVEL, observed, min_train=20)
