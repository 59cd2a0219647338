"""The integration rules behind loo (``numpyro_mpe.core.quadrature``): Gauss-Hermite, the
adaptive 9-node rule, and overflow safety (``K > 3``: ``test_laplace_qmc.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import numpyro_mpe.core.quadrature as quadrature
from numpyro_mpe.core.model import Predictor


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
        result = quadrature.log_predictive(quadratic_predictor(0.5), mean, cov)
        expected = closed_form(0.5, np.asarray(mean), 0.3)
        np.testing.assert_allclose(result, expected, rtol=tolerance)


def test_singular_covariance_is_integrated_along_its_range(x64):
    mean = jnp.zeros((2, 2))
    cov = jnp.broadcast_to(jnp.array([[0.5, 0.0], [0.0, 0.0]]), (2, 2, 2))
    result = quadrature.log_predictive(quadratic_predictor(1.0), mean, cov)
    expected = closed_form(1.0, np.zeros((2, 1)), 0.5) + closed_form(1.0, np.zeros((2, 1)), 0.0)
    np.testing.assert_allclose(result, expected, rtol=1e-8)


def test_overflowing_shift_falls_back_to_log_sum_exp(x64):
    """The density at the mean is e^-5000 times that at some nodes: the shifted sum
    overflows and the running log-sum-exp gives the same quadrature, finite."""
    mean = jnp.zeros((1, 1))
    cov = jnp.full((1, 1, 1), 400.0)
    result = quadrature.log_predictive(quadratic_predictor(100.0), mean, cov)
    x, w = np.polynomial.hermite.hermgauss(quadrature.GAUSS_HERMITE_POINTS[1])
    f = np.sqrt(2.0) * 20.0 * x
    terms = -0.5 * (f - 100.0) ** 2 - 0.5 * np.log(2 * np.pi) + np.log(w / np.sqrt(np.pi))
    expected = terms.max() + np.log(np.sum(np.exp(terms - terms.max())))
    assert np.isfinite(result[0])
    np.testing.assert_allclose(result[0], expected, rtol=1e-12)


def bernoulli_predictor(y) -> Predictor:
    y = jnp.asarray(y)

    def log_lik(f):
        return dist.Bernoulli(logits=f[:, 0]).log_prob(y)

    return Predictor(fn=None, log_lik=log_lik, names=("logits",), observed=y, noise_variance=None)


def poisson_predictor(y) -> Predictor:
    y = jnp.asarray(y)

    def log_lik(f):
        return dist.Poisson(jnp.exp(f[:, 0])).log_prob(y)

    return Predictor(fn=None, log_lik=log_lik, names=("rate",), observed=y, noise_variance=None)


def twenty_nodes(predictor, mean, variance):
    """The 20-node rule, its node loop rolled as in ``log_predictive``'s fallback (unrolled,
    the compiled sums may differ in the last bit)."""
    root = jnp.sqrt(jnp.asarray(variance))[:, None, None]
    return quadrature.gauss_hermite(predictor, jnp.asarray(mean)[:, None], root, unroll=False)


VARIANCES = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 4.0)


@pytest.mark.parametrize(
    "predictor, means, expected_accepted",
    [
        (
            bernoulli_predictor(np.tile([0.0, 1.0], 50)),
            np.linspace(-6, 6, 100),
            [True, True, True, True, False, False],
        ),
        # Counts up to 24 at rates up to e^3.5: the likelihood's own width in f is down to
        # 0.2, so only the smallest variance is accepted.
        (
            poisson_predictor(np.arange(100) % 25),
            np.linspace(-1, 3.5, 100),
            [True, False, False, False, False, False],
        ),
    ],
)
def test_nine_node_rule_is_taken_only_where_it_matches_twenty_nodes(
    x64, predictor, means, expected_accepted
):
    """Bernoulli and Poisson at predictive variances from 1e-4 to 4: where the 9-node
    rule's embedded estimate accepts it, it equals the 20-node rule to 1e-9 in log
    density (measured: 2.4e-13 at most); where it does not, the result is the 20-node
    rule's."""
    # Jitted (as loo runs them): op by op, the six variances took 25 s.
    embedded = jax.jit(lambda m, v: quadrature.embedded_gauss_hermite(predictor, m, v, ()))
    reference_rule = jax.jit(lambda m, v: twenty_nodes(predictor, m, v))
    adaptive = jax.jit(lambda m, v: quadrature.log_predictive(predictor, m, v))
    accepted = []
    for variance in VARIANCES:
        variances = jnp.full(means.shape, variance)
        (nine,), accurate = embedded(jnp.asarray(means), variances)
        reference = reference_rule(jnp.asarray(means), variances)
        result = adaptive(jnp.asarray(means)[:, None], variances[:, None, None])
        if jnp.all(accurate):
            np.testing.assert_allclose(nine, reference, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(result, nine)
        else:
            np.testing.assert_array_equal(result, reference)
        np.testing.assert_allclose(nine[accurate], reference[accurate], rtol=0, atol=1e-9)
        accepted.append(bool(jnp.all(accurate)))
    assert accepted == expected_accepted


def test_full_data_density_reweighted_from_the_cavity_nodes(x64):
    """``lppd_i`` from the cavity's nodes (importance-reweighted) equals its own 20-node
    integral to 1e-9; an example with zero variance (one the latents do not move) gives
    ``log p(y_i | f_i)`` exactly in both."""
    y = np.tile([0.0, 1.0, 1.0], 20)
    predictor = bernoulli_predictor(y)
    f = jnp.asarray(np.linspace(-4, 4, 60))
    variance = jnp.asarray(np.linspace(0, 0.02, 60))
    curvature = jax.nn.sigmoid(f) * jax.nn.sigmoid(-f)
    gradient = jax.nn.sigmoid(f) - jnp.asarray(y)
    cavity = variance / (1 - curvature * variance)
    cavity_mean = f + cavity * gradient
    elpd, lppd = quadrature.log_predictive_pair(
        predictor, cavity_mean[:, None], cavity[:, None, None], f[:, None], variance[:, None, None]
    )
    (_, _), accurate = quadrature.embedded_gauss_hermite(
        predictor, cavity_mean, cavity, ((f, variance),)
    )
    assert jnp.all(accurate)  # the shared-node path is the one tested
    np.testing.assert_allclose(elpd, twenty_nodes(predictor, cavity_mean, cavity), atol=1e-9)
    np.testing.assert_allclose(lppd, twenty_nodes(predictor, f, variance), atol=1e-9)
    point = dist.Bernoulli(logits=f[0]).log_prob(y[0])
    assert elpd[0] == point and lppd[0] == point


def test_reweighting_is_refused_when_the_cavity_is_much_wider(x64):
    """Reliability near 1 (cavity variance 100 times the full-data one, far off its
    mean): the shared nodes cannot integrate the narrow full-data Gaussian, the
    estimate says so, and each density is integrated on its own."""
    predictor = bernoulli_predictor([1.0])
    f, variance = jnp.array([0.5]), jnp.array([0.01])
    cavity_mean, cavity = jnp.array([-2.0]), jnp.array([1.0])
    (_, _), accurate = quadrature.embedded_gauss_hermite(
        predictor, cavity_mean, cavity, ((f, variance),)
    )
    assert not jnp.any(accurate)
    elpd, lppd = quadrature.log_predictive_pair(
        predictor, cavity_mean[:, None], cavity[:, None, None], f[:, None], variance[:, None, None]
    )
    np.testing.assert_array_equal(
        lppd, quadrature.log_predictive(predictor, f[:, None], variance[:, None, None])
    )
    np.testing.assert_allclose(lppd, twenty_nodes(predictor, f, variance), atol=1e-9)
    np.testing.assert_array_equal(
        elpd, quadrature.log_predictive(predictor, cavity_mean[:, None], cavity[:, None, None])
    )


def test_adaptive_rule_in_float32():
    """float32: tolerance 100 eps (1.2e-5); accepted at small variance, within 2e-5 of
    the float64 20-node rule."""
    means = np.linspace(-5, 5, 64)
    y = np.tile([0.0, 1.0], 32)
    (nine,), accurate = quadrature.embedded_gauss_hermite(
        bernoulli_predictor(y.astype(np.float32)),
        jnp.asarray(means, jnp.float32),
        jnp.full(64, 1e-3, jnp.float32),
        (),
    )
    assert nine.dtype == jnp.float32 and jnp.all(accurate)
    with jax.enable_x64(True):
        reference = twenty_nodes(bernoulli_predictor(y), means, np.full(64, 1e-3))
    np.testing.assert_allclose(nine, reference, atol=2e-5)
