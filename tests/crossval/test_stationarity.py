"""``loo`` asks the data whether the params are a fit to them (the Newton decrement)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import logistic_model

import numpyro_mpe as mpe
from numpyro_mpe import optim


def _data(seed):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(60), rng.normal(size=60)])
    y = (rng.random(60) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0])))).astype(float)
    return X, y


def test_params_of_other_data_are_flagged(x64):
    """Once, params fitted to other data of the same shape gave a wrong LOO silently."""
    X, y = _data(0)
    guide = mpe.AutoGaussian(logistic_model)
    params = mpe.BLR(logistic_model, guide, optim.newton()).run(jax.random.PRNGKey(0), 50, X, y)
    params = params.params
    mpe.loo(logistic_model, guide, params, X, y)  # its own data: silent
    other_X, other_y = _data(1)
    with pytest.warns(mpe.ReliabilityWarning, match=r"not a fit of this model to these data: the"):
        mpe.loo(logistic_model, guide, params, other_X, 1 - other_y)
    # prepare_loo's function (checkpoints during training) does not ask.
    mpe.prepare_loo(logistic_model, guide, other_X, 1 - other_y)(params)


def test_a_converged_iblr_fit_passes(x64):
    """The variational fixed point is not the mode, but within the threshold."""
    X, y = _data(0)
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    fit = mpe.BLR(logistic_model, guide, optim.iblr(0.1)).run(
        jax.random.PRNGKey(0), 1000, X, y, progress_bar=False
    )
    mpe.loo(logistic_model, guide, fit.params, X, y)
