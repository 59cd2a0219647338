"""The options of ``loo``: values that were refused or silently ignored, now read right.

The refusals (strings, None, NaN, negative numbers for the numeric options) are rows of
``tests/test_bad_inputs.py``; here are the valid inputs they must not catch.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import laplace_fit

import numpyro_mpe as mpe


def small_logistic(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


@pytest.fixture(scope="module")
def small_fit():
    rng = np.random.default_rng(3)
    X = np.c_[np.ones(30), rng.normal(size=30)]
    y = (rng.random(30) < 0.4).astype(float)
    with jax.enable_x64(True):
        guide, result = laplace_fit(small_logistic, X, y, num_steps=20)
    return X, y, guide, result.params


def test_empty_importance_selects_no_example(small_fit, x64):
    """``importance=[]`` (an empty list is a float array to numpy) samples nothing: the
    cavity values, exactly; it was refused as "not an integer array"."""
    X, y, guide, params = small_fit
    cavity = mpe.loo(small_logistic, guide, params, X, y)
    none_sampled = mpe.loo(small_logistic, guide, params, X, y, method="is", importance=[])
    np.testing.assert_array_equal(none_sampled.elpd_i.values, cavity.elpd_i.values)


def test_numpy_scalars_are_accepted_for_numeric_options(small_fit, x64):
    """A threshold and a seed read from numpy arrays (np.float64, np.int64) are numbers:
    the same result as Python ones (to the last bit: the same computation)."""
    X, y, guide, params = small_fit
    options = {"method": "is", "importance": [0, 5], "num_samples": 200}
    python = mpe.loo(
        small_logistic, guide, params, X, y, reliability_threshold=0.5, seed=3, **options
    )
    numpy = mpe.loo(
        small_logistic,
        guide,
        params,
        X,
        y,
        reliability_threshold=np.float64(0.5),
        seed=np.int64(3),
        **options,
    )
    np.testing.assert_array_equal(numpy.elpd_i.values, python.elpd_i.values)
