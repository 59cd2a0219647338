"""Logistic regression on wells: MPE-LOO against brute-force refits of the same family.

This measures the LOO-approximation error only (MPE against refitting the Laplace
Gaussian without each example). The Gaussian-approximation error (Laplace against the
true posterior) is a separate quantity: see ``test_gaussian_vs_nuts_is_a_separate_error``.
"""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import logistic_model

import numpyro_mpe as mpe

# Measured on 2026-11-28 (float64, dense Laplace, cavity form):
# total |sum MPE - sum refit| = 9.9e-5 and max pointwise error 1.9e-5 over 3020 examples.
TOTAL_TOLERANCE = 2e-3
POINTWISE_TOLERANCE = 1e-3


def refit_loo(X, y, mean, steps=8):
    """Laplace refit without each example (Newton from the full fit), then its
    Gauss-Hermite predictive of the left-out y_i; vectorised over examples."""
    nodes, weights = np.polynomial.hermite.hermgauss(40)
    X, y = jnp.asarray(X), jnp.asarray(y)

    def refit(i):
        keep = jnp.ones(y.shape[0]).at[i].set(0.0)

        def loss(beta):
            logits = X @ beta
            return 0.5 * beta @ beta - jnp.sum(keep * (y * logits - jnp.logaddexp(0, logits)))

        def newton_step(beta, _):
            return beta - jnp.linalg.solve(jax.hessian(loss)(beta), jax.grad(loss)(beta)), None

        beta, _ = jax.lax.scan(newton_step, mean, None, length=steps)
        variance = X[i] @ jnp.linalg.solve(jax.hessian(loss)(beta), X[i])
        logits = X[i] @ beta + jnp.sqrt(2 * variance) * nodes
        log_lik = y[i] * logits - jnp.logaddexp(0, logits)
        return jax.scipy.special.logsumexp(log_lik, b=weights / np.sqrt(np.pi))

    return jax.jit(jax.vmap(refit))(jnp.arange(y.shape[0]))


@pytest.mark.slow
def test_mpe_loo_matches_refits(wells_fit):
    X, y, guide, result = wells_fit
    exact = np.asarray(refit_loo(X, y, result.params["auto_loc"]))
    elpd = mpe.loo(logistic_model, guide, result.params, X, y)
    pointwise = np.abs(elpd.elpd_i.values - exact)
    total = abs(elpd.elpd - exact.sum())
    print(f"wells LOO-approximation error: total {total:.2e}, max pointwise {pointwise.max():.2e}")
    assert total < TOTAL_TOLERANCE
    assert pointwise.max() < POINTWISE_TOLERANCE
    paper = mpe.loo(logistic_model, guide, result.params, X, y, method="paper")
    # The paper's form uses the full-data covariance: larger error, same order.
    assert np.abs(paper.elpd_i.values - exact).max() > pointwise.max()
    assert abs(paper.elpd - exact.sum()) < 0.05


def test_first_order_perturb_matches_refit(wells_fit):
    X, y, guide, result = wells_fit
    params = mpe.perturb(logistic_model, guide, result.params, [0, 1, 2], X, y)
    keep = jnp.ones(y.shape[0]).at[:3].set(0.0)
    pm = mpe.trace_model(logistic_model, X, y)
    refit = mpe.optim.newton()
    loss = jax.jit(lambda theta: -pm.log_joint(theta, keep))
    state = refit.init(result.params["auto_loc"], loss)
    for _ in range(10):
        state, _ = refit.update(state, loss)
    shift_refit = state.mean - result.params["auto_loc"]
    shift_mpe = params["auto_loc"] - result.params["auto_loc"]
    # First order: the step is right to within 1% of its size.
    np.testing.assert_allclose(shift_mpe, shift_refit, rtol=0.01)


def test_reliability_and_arviz_display(wells_fit):
    X, y, guide, result = wells_fit
    elpd = mpe.loo(logistic_model, guide, result.params, X, y)
    assert isinstance(elpd, az.ELPDData)
    assert "elpd_loo_mpe" in str(elpd)
    assert elpd.reliability.shape == (3020,)
    assert 0 < float(elpd.reliability.max()) < 0.05
    np.testing.assert_allclose(elpd.p, float((elpd.lppd_i - elpd.elpd_i).sum()))
    # Published PSIS-LOO for this model (loo vignette): elpd_loo -1968.5 (SE 15.6), p_loo 3.2.
    assert elpd.elpd == pytest.approx(-1968.5, abs=0.3)
    assert elpd.se == pytest.approx(15.6, abs=0.1)
    assert elpd.p == pytest.approx(3.2, abs=0.1)
    with pytest.warns(mpe.ReliabilityWarning, match="3020 of 3020 examples"):
        flagged = mpe.loo(logistic_model, guide, result.params, X, y, reliability_threshold=1e-9)
    assert flagged.warning


def test_compare_accepts_mpe_beside_itself(wells_fit):
    X, y, guide, result = wells_fit
    small = mpe.AutoGaussian(logistic_model)
    X1 = X[:, :2]
    fit1 = mpe.BLR(logistic_model, small, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 30, X1, y, progress_bar=False
    )
    table = az.compare(
        {
            "dist+arsenic": mpe.loo(logistic_model, guide, result.params, X, y),
            "dist": mpe.loo(logistic_model, small, fit1.params, X1, y),
        },
        round_to="none",
    )
    assert list(table.index) == ["dist+arsenic", "dist"]
    assert table.loc["dist", "elpd_diff"] == pytest.approx(-71.7, abs=0.2)


def test_float32_is_close_to_float64(wells, wells_fit):
    _, _, guide64, result64 = wells_fit
    elpd64 = mpe.loo(logistic_model, guide64, result64.params, *wells)
    with jax.enable_x64(False):
        X, y = (jnp.asarray(a, jnp.float32) for a in wells)
        guide = mpe.AutoGaussian(logistic_model)
        result = mpe.BLR(logistic_model, guide, mpe.optim.newton()).run(
            jax.random.PRNGKey(0), 30, X, y, progress_bar=False
        )
        assert result.params["auto_loc"].dtype == jnp.float32
        elpd = mpe.loo(logistic_model, guide, result.params, X, y)
    # float32 accuracy: ~1e-6 relative per term, ~1e-3 on a sum of 3020 terms.
    assert elpd.elpd == pytest.approx(elpd64.elpd, abs=2e-2)
    np.testing.assert_allclose(elpd.elpd_i.values, elpd64.elpd_i.values, atol=1e-4)
