"""Brute-force refits (exact_loo): closed forms, NUTS refits, subsets, errors."""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import data_json, linear_model
from models import closed_form_loo, eight_schools_centered, eight_schools_closed_form

import numpyro_mpe as mpe


def test_laplace_refits_equal_closed_form(kidiq_fit):
    X, y, guide, result = kidiq_fit
    refits = mpe.exact_loo(linear_model, guide, result.params, X, y)
    np.testing.assert_allclose(refits.elpd_i.values, closed_form_loo(X, y), rtol=1e-10)
    assert "elpd_loo_refit" in str(refits) and refits.seconds > 0
    mpe_loo = mpe.loo(linear_model, guide, result.params, X, y)
    np.testing.assert_allclose(refits.p, mpe_loo.p, rtol=1e-8)


def test_subset_of_refits(kidiq_fit):
    X, y, guide, result = kidiq_fit
    refits = mpe.exact_loo(linear_model, guide, result.params, X, y, indices=[5, 400])
    np.testing.assert_array_equal(refits.elpd_i.coords["data"].values, [5, 400])
    np.testing.assert_allclose(refits.elpd_i.values, closed_form_loo(X, y)[[5, 400]], rtol=1e-10)


def test_refits_without_predictor_use_monte_carlo(kidiq_fit):
    """Two observed sites per example, so the refit's predictive is a Monte Carlo
    average over the refitted Gaussian (2000 draws: relative error ~ 1e-3)."""
    X, y, _, _ = kidiq_fit

    def doubled(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 10.0).expand([3]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("a", dist.Normal(X @ beta, 18.0), obs=y)
            numpyro.sample("b", dist.Normal(X @ beta, 18.0), obs=y)

    guide = mpe.AutoGaussian(doubled)
    result = mpe.BLR(doubled, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 10, X, y, progress_bar=False
    )
    indices = [0, 1, 2]
    refits = mpe.exact_loo(doubled, guide, result.params, X, y, indices=indices)
    exact = mpe.loo(doubled, guide, result.params, X, y).elpd_i.values[indices]
    np.testing.assert_allclose(refits.elpd_i.values, exact, rtol=2e-3)


@pytest.mark.slow
def test_nuts_refits_match_closed_form_eight_schools(x64):
    data = data_json("posteriordb/eight_schools.json")
    sigma, y = np.asarray(data["sigma"], float), np.asarray(data["y"], float)
    guide = mpe.AutoGaussian(eight_schools_centered)
    result = mpe.BLR(eight_schools_centered, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 10, sigma, y, progress_bar=False
    )
    refits = mpe.exact_loo(
        eight_schools_centered,
        guide,
        result.params,
        sigma,
        y,
        method="nuts",
        num_samples=2000,
        num_warmup=500,
    )
    exact = np.empty(8)
    for j in range(8):
        mean, precision = eight_schools_closed_form(sigma, y, (np.arange(8) != j) * 1.0)
        variance = sigma[j] ** 2 + np.linalg.inv(precision)[j + 1, j + 1]
        exact[j] = -0.5 * (np.log(2 * np.pi * variance) + (y[j] - mean[j + 1]) ** 2 / variance)
    # Monte Carlo error of a log mean of 2000 correlated draws: a few hundredths.
    np.testing.assert_allclose(refits.elpd_i.values, exact, atol=0.05)


def test_exact_loo_errors(kidiq_fit):
    X, y, guide, result = kidiq_fit
    with pytest.raises(ValueError, match="method must be one of"):
        mpe.exact_loo(linear_model, guide, result.params, X, y, method="exact")
    with pytest.raises(ValueError, match="index 434 is out of range for 434 examples"):
        mpe.exact_loo(linear_model, guide, result.params, X, y, indices=[434])
    with pytest.raises(ValueError, match="indices must be a 1-d integer array"):
        mpe.exact_loo(linear_model, guide, result.params, X, y, indices=[0.5])
