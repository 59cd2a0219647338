"""The options of ``loo``: values that were refused or silently ignored, now read right.

The refusals (strings, None, NaN, negative numbers for the numeric options) are rows of
``tests/test_bad_inputs.py``; here are the valid inputs they must not catch.
"""

from __future__ import annotations

import numpy as np
from conftest import logistic_model

import numpyro_mpe as mpe


def test_empty_importance_selects_no_example(small_logistic_fit, x64):
    """``importance=[]`` (an empty list is a float array to numpy) samples nothing: the
    cavity values, exactly; it was refused as "not an integer array"."""
    X, y, guide, fit = small_logistic_fit
    params = fit.params
    cavity = mpe.loo(logistic_model, guide, params, X, y)
    none_sampled = mpe.loo(logistic_model, guide, params, X, y, method="is", importance=[])
    np.testing.assert_array_equal(none_sampled.elpd_i.values, cavity.elpd_i.values)


def test_numpy_scalars_are_accepted_for_numeric_options(small_logistic_fit, x64):
    """A threshold and a seed read from numpy arrays (np.float64, np.int64) are numbers:
    the same result as Python ones (to the last bit: the same computation)."""
    X, y, guide, fit = small_logistic_fit
    params = fit.params
    options = {"method": "is", "importance": [0, 5], "num_samples": 200}
    python = mpe.loo(
        logistic_model, guide, params, X, y, reliability_threshold=0.5, seed=3, **options
    )
    numpy = mpe.loo(
        logistic_model,
        guide,
        params,
        X,
        y,
        reliability_threshold=np.float64(0.5),
        seed=np.int64(3),
        **options,
    )
    np.testing.assert_array_equal(numpy.elpd_i.values, python.elpd_i.values)
