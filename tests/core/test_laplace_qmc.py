"""The integration rule for ``K > 3`` predictor components
(``numpyro_mpe.core.laplace_qmc``): exact on Gaussian likelihoods, against 2^20-draw
Monte Carlo on softmax and on a likelihood that is not log-concave, float32, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_mpe.core import quadrature
from numpyro_mpe.core.laplace_qmc import LAPLACE_QMC_POINTS, laplace_quasi_monte_carlo
from numpyro_mpe.core.model import Predictor


def predictor(log_lik) -> Predictor:
    return Predictor(
        fn=None, log_lik=log_lik, names=("logits",), observed=None, noise_variance=None
    )


def random_covariances(rng, count, dim, scale):
    factors = rng.normal(size=(count, dim, dim)) * np.sqrt(scale / dim)
    return np.einsum("nij,nkj->nik", factors, factors)


def monte_carlo(log_lik, mean, cov, draws=2**20, chunk=2**15):
    """``log E[p(y_i | f)]`` and its standard error from ``draws`` plain Monte Carlo draws."""
    root = np.linalg.cholesky(cov + 1e-12 * np.eye(cov.shape[1]))
    evaluate = jax.jit(
        lambda z: jnp.exp(
            jax.vmap(log_lik, 1, 1)(mean[:, None] + jnp.einsum("nkl,ql->nqk", root, z))
        )
    )
    first = second = 0.0
    for step in range(draws // chunk):
        z = jax.random.normal(jax.random.PRNGKey(step), (chunk, mean.shape[1]), jnp.float64)
        values = evaluate(z)
        first, second = first + values.sum(1), second + (values**2).sum(1)
    average = first / draws
    return np.log(average), np.sqrt((second / draws - average**2) / draws) / average


def test_exact_for_gaussian_likelihoods(x64):
    """``log int N(c; f, I) N(f; m, C) df = log N(c; m, I + C)``: the Laplace component
    is the integrand itself, so ``w = c (h + 1)`` and the control variate leaves ``c``
    (measured relative error 7e-14, singular covariances included, through the jitter of
    their Cholesky factors). With the observation 60 away (densities near e^-3000, weights
    over thousands of orders of magnitude) the streamed log-sum-exp does not overflow."""
    rng = np.random.default_rng(0)
    for dim, center in ((4, 0.5), (7, 0.5), (5, 60.0)):
        mean = rng.normal(size=(5, dim))
        cov = random_covariances(rng, 5, dim, 2.0)
        cov[0] = 0.0
        cov[1] = np.outer(np.ones(dim), np.ones(dim))  # rank one

        def log_lik(f, center=center, dim=dim):
            return -0.5 * jnp.sum((f - center) ** 2, 1) - 0.5 * dim * np.log(2 * np.pi)

        result = quadrature.log_predictive(predictor(log_lik), jnp.asarray(mean), jnp.asarray(cov))
        total = cov + np.eye(dim)
        residual = center - mean
        expected = -0.5 * (
            np.linalg.slogdet(2 * np.pi * total)[1]
            + np.einsum("ni,ni->n", residual, np.linalg.solve(total, residual[..., None])[..., 0])
        )
        np.testing.assert_allclose(result, expected, rtol=1e-12)


def softmax_cavities(rng, count, dim):
    """Ten-class cavities like those of the digits models: the label's logit 2 to 5 above
    the others, or below them (misclassified), covariances with eigenvalues up to about 8."""
    labels = rng.integers(0, dim, count)
    mean = rng.normal(size=(count, dim))
    margin = np.where(np.arange(count) % 4 == 0, -2.0, rng.uniform(2, 5, count))
    mean[np.arange(count), labels] += margin
    return labels, mean, random_covariances(rng, count, dim, 4.0)


def categorical(labels):
    def log_lik(f):
        return jnp.take_along_axis(f, labels[:, None], 1)[:, 0] - jax.nn.logsumexp(f, 1)

    return log_lik


@pytest.mark.slow
def test_softmax_against_monte_carlo(x64):
    """Ten classes, 12 examples with cavities wider than those of digits softmax
    regression, a quarter misclassified: within 2e-3 plus 4 standard errors of 2^20 Monte
    Carlo draws (measured: 3.1e-3 at most, 5.3 standard errors at most, the draws' own
    standard error reaching 2.6e-3 on the misclassified examples). The old rule, 2048 plain
    Monte Carlo draws, is off by up to 5e-2 here. On the digits models, against a
    2^20-point reference, the largest error is 8.1e-4 over 1257 examples
    (``benchmarks/multiclass_integration.py``)."""
    rng = np.random.default_rng(1)
    labels, mean, cov = softmax_cavities(rng, 12, 10)
    log_lik = categorical(jnp.asarray(labels))
    expected, standard_error = monte_carlo(log_lik, jnp.asarray(mean), jnp.asarray(cov))
    result = quadrature.log_predictive(predictor(log_lik), jnp.asarray(mean), jnp.asarray(cov))
    assert np.all(np.abs(result - expected) <= 4 * standard_error + 2e-3)


def test_not_log_concave_likelihood(x64):
    """Cauchy observations (not log-concave; its curvature is negative in the tails) of
    four components, the cavity mean 3 scales from the data: the step-size search keeps
    Newton's method rising, the clipped curvature keeps the proposal proper, and the
    prior component bounds the weights: within 2e-4 plus 4 standard errors of 2^20
    Monte Carlo draws (measured: 1.2 standard errors at most; without the prior
    component, 15)."""
    rng = np.random.default_rng(2)
    observed = jnp.asarray(rng.normal(size=(6, 4)))
    mean = observed + 3.0
    cov = jnp.asarray(random_covariances(rng, 6, 4, 1.0))

    def log_lik(f):
        return jnp.sum(-jnp.log(np.pi) - jnp.log1p((f - observed) ** 2), 1)

    expected, standard_error = monte_carlo(log_lik, mean, cov)
    result = quadrature.log_predictive(predictor(log_lik), mean, cov)
    assert np.all(np.abs(result - expected) <= 4 * standard_error + 2e-4)


def test_masked_examples_integrate_to_one_and_float32():
    """An example whose likelihood is 1 everywhere (masked out) gets exactly log 1 = 0.
    Float32 agrees with float64 to 2e-3 (measured: 4.6e-4 on the misclassified example,
    1e-4 elsewhere; with eigenvector roots, which turn the points where eigenvalues
    nearly coincide, it was 5.5e-3)."""
    rng = np.random.default_rng(3)
    labels, mean, cov = softmax_cavities(rng, 6, 10)
    mask = jnp.asarray([True, True, True, False, True, True])
    base = categorical(jnp.asarray(labels))

    def log_lik(f):
        return jnp.where(mask, base(f), 0.0)

    result = laplace_quasi_monte_carlo(
        predictor(log_lik), jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)
    )
    assert result.dtype == jnp.float32
    assert abs(float(result[3])) < 1e-6
    with jax.enable_x64(True):
        double = laplace_quasi_monte_carlo(predictor(log_lik), jnp.asarray(mean), jnp.asarray(cov))
    np.testing.assert_allclose(result, double, atol=2e-3)
    assert LAPLACE_QMC_POINTS == 4096


def test_points_must_be_a_power_of_two_of_the_right_width():
    labels, mean, cov = softmax_cavities(np.random.default_rng(4), 2, 5)
    rule = predictor(categorical(jnp.asarray(labels)))
    for points in (np.zeros((6, 5)), np.zeros((8, 4)), np.zeros((2, 5))):
        with pytest.raises(ValueError, match=r"points must be \(Q, 5\) with Q a power of 2"):
            laplace_quasi_monte_carlo(rule, jnp.asarray(mean), jnp.asarray(cov), points)
