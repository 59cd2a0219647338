"""``prepare_loo``: ``loo`` as a function of the params, traced and checked once."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import linear_model, logistic_model

import numpyro_mpe as mpe
from numpyro_mpe.conjugate.guide import AutoConjugate


@pytest.mark.filterwarnings("ignore:loo. the params are not a fit")  # mid-fit or other data
def test_prepared_equals_loo_at_every_params(wells, x64):
    """Two iterations of one iBLR fit: the prepared function gives ``loo``'s numbers."""
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    blr = mpe.BLR(logistic_model, guide, mpe.optim.iblr(0.2, beta2=0.99, hess_init=0.1))
    loo_at = mpe.prepare_loo(logistic_model, guide, X, y, method="paper")
    state = blr.init(jax.random.PRNGKey(0), X, y, batch_size=500)
    for _ in range(2):
        for _ in range(5):
            state, _ = blr.update(state, X, y, batch_size=500)
        params = blr.get_params(state)
        prepared = loo_at(params)
        direct = mpe.loo(logistic_model, guide, params, X, y, method="paper")
        np.testing.assert_array_equal(prepared.elpd_i, direct.elpd_i)
        np.testing.assert_array_equal(prepared.reliability, direct.reliability)
        assert prepared.p == direct.p and prepared.method == "paper"


def test_prepared_groups_and_conjugate(kidiq_fit):
    X, y, guide, result = kidiq_fit
    groups = np.arange(434) % 5
    grouped = mpe.prepare_loo(linear_model, guide, X, y, groups=groups)(result.params)
    direct = mpe.loo(linear_model, guide, result.params, X, y, groups=groups)
    np.testing.assert_array_equal(grouped.elpd_i, direct.elpd_i)
    conjugate = AutoConjugate(linear_model)
    params = conjugate.posterior_params(X, y)
    np.testing.assert_array_equal(
        mpe.prepare_loo(linear_model, conjugate, X, y)(params).elpd_i,
        mpe.loo(linear_model, conjugate, params, X, y).elpd_i,
    )


def test_prepare_checks_before_any_params(kidiq_fit):
    """Bad options and bad groups fail when preparing, not at the first checkpoint."""
    X, y, guide, _ = kidiq_fit
    with pytest.raises(ValueError, match="method must be one of"):
        mpe.prepare_loo(linear_model, guide, X, y, method="exact")
    with pytest.raises(ValueError, match=r"one label per example, shape \(434,\); got shape"):
        mpe.prepare_loo(linear_model, guide, X, y, groups=np.zeros(3))
    with pytest.raises(ValueError, match="importance must be 'auto', 'poor', 'all' or indices"):
        mpe.prepare_loo(linear_model, guide, X, y, method="is", importance="some")
