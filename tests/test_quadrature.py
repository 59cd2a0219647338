"""The integration rules behind loo: Gauss-Hermite, Monte Carlo, and overflow safety."""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np

from numpyro_mpe.model import Predictor

loo_module = sys.modules["numpyro_mpe.loo"]


def quadratic_predictor(center: float) -> Predictor:
    def log_lik(f):
        return -0.5 * jnp.sum((f - center) ** 2, axis=1) - 0.5 * f.shape[1] * jnp.log(2 * jnp.pi)

    return Predictor(fn=None, log_lik=log_lik, names=("loc",), observed=None, noise_variance=None)


def closed_form(center, mean, variance):
    # log int N(center; f, 1) N(f; mean, variance) df per component.
    total = variance + 1.0
    return np.sum(-0.5 * np.log(2 * np.pi * total) - 0.5 * (center - mean) ** 2 / total, -1)


def test_gauss_hermite_accuracy_for_gaussian_integrands(x64):
    """Not a polynomial, so not exact: at variance 0.3 the relative error is below 1e-9
    with 20 nodes (K = 1), 1e-8 with 12^2 (K = 2) and 3e-7 with 8^3 (K = 3)."""
    for k, tolerance in ((1, 1e-9), (2, 1e-8), (3, 3e-7)):
        mean = jnp.linspace(-1, 1, 5 * k).reshape(5, k)
        cov = jnp.broadcast_to(0.3 * jnp.eye(k), (5, k, k))
        result = loo_module._log_predictive(quadratic_predictor(0.5), mean, cov)
        expected = closed_form(0.5, np.asarray(mean), 0.3)
        np.testing.assert_allclose(result, expected, rtol=tolerance)


def test_monte_carlo_rule_beyond_three_components(x64):
    mean = jnp.zeros((3, 4))
    cov = jnp.broadcast_to(0.2 * jnp.eye(4), (3, 4, 4))
    result = loo_module._log_predictive(quadratic_predictor(0.3), mean, cov)
    # 2048 fixed draws: relative error ~ 1e-3 here.
    np.testing.assert_allclose(result, closed_form(0.3, np.asarray(mean), 0.2), rtol=5e-3)


def test_singular_covariance_is_integrated_along_its_range(x64):
    mean = jnp.zeros((2, 2))
    cov = jnp.broadcast_to(jnp.array([[0.5, 0.0], [0.0, 0.0]]), (2, 2, 2))
    result = loo_module._log_predictive(quadratic_predictor(1.0), mean, cov)
    expected = closed_form(1.0, np.zeros((2, 1)), 0.5) + closed_form(1.0, np.zeros((2, 1)), 0.0)
    np.testing.assert_allclose(result, expected, rtol=1e-8)


def test_overflowing_shift_falls_back_to_log_sum_exp(x64):
    """The density at the mean is e^-5000 times that at some nodes: the shifted sum
    overflows and the running log-sum-exp gives the same quadrature, finite."""
    mean = jnp.zeros((1, 1))
    cov = jnp.full((1, 1, 1), 400.0)
    result = loo_module._log_predictive(quadratic_predictor(100.0), mean, cov)
    x, w = np.polynomial.hermite.hermgauss(loo_module._GAUSS_HERMITE_POINTS[1])
    f = np.sqrt(2.0) * 20.0 * x
    terms = -0.5 * (f - 100.0) ** 2 - 0.5 * np.log(2 * np.pi) + np.log(w / np.sqrt(np.pi))
    expected = terms.max() + np.log(np.sum(np.exp(terms - terms.max())))
    assert np.isfinite(result[0])
    np.testing.assert_allclose(result[0], expected, rtol=1e-12)
