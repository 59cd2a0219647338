"""Influence of each training example on held-out examples (``sensitivity(..., test=...)``):
the exact refit difference in the conjugate case, ``J_t delta_i`` and ``g_t^T delta_i``
for a network (rows streamed and not) and for a model without a predictor, and bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import linear_model
from models import mom_work_design
from test_sensitivity import mlp_gaussian, mom_work_mlp, two_observed_sites, two_sites_gaussian

import numpyro_mpe as mpe
from numpyro_mpe.perturbation import sensitivity as sensitivity_module
from numpyro_mpe.perturbation.sensitivity import sensitivity


def test_conjugate_refits_move_test_predictions_exactly(kidiq_fit):
    """Linear regression, known noise: removing example ``i`` moves the posterior mean by
    the exact ``delta_i``, so a test prediction moves by ``x_t^T delta_i`` exactly, and its
    loss ``(y_t - x_t^T m)^2 / (2 sigma^2)`` to first order by ``g_t^T delta_i``."""
    X, y, guide, result = kidiq_fit
    sigma, prior_scale = 18.0, 10.0  # linear_model's defaults
    X_test, y_test = X[:3] + np.array([0.0, 0.0, 0.5]), y[:3] + 4.0
    sens = sensitivity(linear_model, guide, result.params, X, y, test=(X_test, y_test))

    def posterior_mean(keep):
        precision = X[keep].T @ X[keep] / sigma**2 + np.eye(3) / prior_scale**2
        return np.linalg.solve(precision, X[keep].T @ y[keep] / sigma**2)

    full = posterior_mean(np.ones(len(y), bool))
    loss_gradients = -(y_test - X_test @ full)[:, None] * X_test / sigma**2  # (M, P)
    assert sens.test_prediction_shift.shape == (len(y), 3, 1)
    for i in (0, 7, 433):
        shift = posterior_mean(np.arange(len(y)) != i) - full
        np.testing.assert_allclose(
            sens.test_prediction_shift[i, :, 0], X_test @ shift, rtol=1e-8, atol=1e-11
        )
        np.testing.assert_allclose(
            sens.test_loss_shift[i], loss_gradients @ shift, rtol=1e-8, atol=1e-12
        )


@pytest.mark.parametrize("covariance", ["dense", "diag"])
def test_network_test_shifts_from_the_removal_steps(x64, covariance, monkeypatch):
    """A tanh network (``K = 4``): ``J_t delta_i`` and ``g_t^T delta_i`` against the brute
    force from ``delta_i`` and full test Jacobians; the same numbers when the training
    rows are not streamed (the full-Jacobian path)."""
    X, y = mom_work_design()
    guide, params, _ = mlp_gaussian(X, y, covariance)
    mean = np.asarray(guide.mean_precision(params)[0])
    X_test, y_test = X[:5] * 1.1, (y[:5] + 1) % 4
    sens = sensitivity(mom_work_mlp, guide, params, X, y, test=(X_test, y_test))
    test_model = mpe.trace_model(mom_work_mlp, X_test, y_test)
    jacobian = np.asarray(jax.jacfwd(test_model.predictor.fn)(mean))  # (M, K, P)
    loss_gradients = -np.asarray(jax.jacfwd(test_model.log_lik)(mean))  # (M, P)
    shift = np.asarray(sens.shift)
    np.testing.assert_allclose(
        sens.test_prediction_shift,
        np.einsum("mkp,np->nmk", jacobian, shift),
        rtol=1e-9,
        atol=1e-13,
    )
    np.testing.assert_allclose(
        sens.test_loss_shift, shift @ loss_gradients.T, rtol=1e-9, atol=1e-13
    )
    monkeypatch.setattr(sensitivity_module, "DIRECTIONS_PER_STEP", 100)
    whole = sensitivity(mom_work_mlp, guide, params, X, y, test=(X_test, y_test))
    np.testing.assert_allclose(whole.test_loss_shift, sens.test_loss_shift, rtol=1e-10, atol=1e-15)
    # A removal that raises the test loss (positive) helps that test example: the first
    # order change of -log p(y_t | m + delta_i) agrees with the exact one to O(delta^2).
    i, t = np.unravel_index(np.abs(sens.test_loss_shift).argmax(), sens.test_loss_shift.shape)
    exact = -(test_model.log_lik(mean + shift[i])[t] - test_model.log_lik(mean)[t])
    assert abs(exact - sens.test_loss_shift[i, t]) < 0.1 * abs(exact)


def test_test_loss_shift_without_a_predictor(kidiq, x64):
    """Two observed sites: no predictor, so no test prediction shift; the test loss
    shift is ``g_t^T delta_i`` with the exact-Hessian shifts."""
    X, y = kidiq
    x = X[:60, 2] - X[:60, 2].mean()
    guide, params, mean = two_sites_gaussian(x, y[:60])
    test = (x[:4] + 0.3, y[:4] - 2.0)
    sens = sensitivity(two_observed_sites, guide, params, x, y[:60], test=test)
    assert sens.test_prediction_shift is None
    loss_gradients = -np.asarray(
        jax.jacfwd(mpe.trace_model(two_observed_sites, *test).log_lik)(mean)
    )
    np.testing.assert_allclose(
        sens.test_loss_shift, np.asarray(sens.shift) @ loss_gradients.T, rtol=1e-9, atol=1e-12
    )
    plain = sensitivity(two_observed_sites, guide, params, x, y[:60])
    assert plain.test_loss_shift is None and plain.test_prediction_shift is None


def test_bad_test_arguments_are_refused_before_any_work(x64, monkeypatch):
    X, y = mom_work_design()
    guide, params, _ = mlp_gaussian(X, y, "diag")
    with pytest.raises(TypeError, match="test must be a tuple of the model's positional"):
        sensitivity(mom_work_mlp, guide, params, X, y, test=[X[:2], y[:2]])
    with pytest.raises(TypeError, match="test_kwargs must be a dict, got list"):
        sensitivity(mom_work_mlp, guide, params, X, y, test=(X[:2], y[:2]), test_kwargs=[])
    with pytest.raises(
        ValueError,
        match=r"test arguments give the latents \{'w1': \(4, 4\).* training ones \{'w1': \(4, 3\)",
    ):
        sensitivity(
            mom_work_mlp, guide, params, X, y, test=(X[:2], y[:2]), test_kwargs={"hidden": 4}
        )
    monkeypatch.setattr(sensitivity_module, "MAX_SHIFT_BYTES", 1000)
    with pytest.raises(ValueError, match=r"test shifts \(434 x 2 x 4\) would take"):
        sensitivity(mom_work_mlp, guide, params, X, y, test=(X[:2], y[:2]))
    monkeypatch.setattr(sensitivity_module, "MAX_SHIFT_BYTES", 2**30)
    monkeypatch.setattr(sensitivity_module, "MAX_HESSIAN_BYTES", 1000)
    with pytest.raises(ValueError, match=r"test examples' Jacobians \(2 x 4 x 31\) would take"):
        sensitivity(mom_work_mlp, guide, params, X, y, test=(X[:2], y[:2]))
