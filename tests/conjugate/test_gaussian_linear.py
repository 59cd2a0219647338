"""Exactness in the conjugate (Gaussian-linear) case, float64, against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import data_json, linear_model
from models import (
    PRIOR_SCALE,
    SIGMA,
    closed_form_loo,
    closed_form_posterior,
    eight_schools_centered,
    eight_schools_closed_form,
)

import numpyro_mpe as mpe


def test_newton_is_exact_in_one_step(kidiq_fit):
    X, y, guide, result = kidiq_fit
    mean, precision = closed_form_posterior(X, y)
    # One Newton step lands on the optimum; the second only confirms convergence.
    assert len(result.losses) <= 2
    np.testing.assert_allclose(result.params["auto_loc"], mean, rtol=1e-10)
    np.testing.assert_allclose(result.params["auto_precision"], precision, rtol=1e-10)
    eta1, eta2 = guide.natural_params(result.params)
    np.testing.assert_allclose(eta1, precision @ mean, rtol=1e-10)
    np.testing.assert_allclose(eta2, -precision / 2, rtol=1e-12)


def test_perturb_equals_closed_form_posterior_without_examples(kidiq_fit):
    X, y, guide, result = kidiq_fit
    for remove in ([7], [0, 5, 433], np.arange(434) % 3 == 0):
        keep = np.ones(len(y), bool)
        keep[np.asarray(remove) if not isinstance(remove, np.ndarray) else remove] = False
        params = mpe.perturb(linear_model, guide, result.params, remove, X, y)
        mean, precision = closed_form_posterior(X, y, keep)
        np.testing.assert_allclose(params["auto_loc"], mean, rtol=1e-8)
        np.testing.assert_allclose(params["auto_precision"], precision, rtol=1e-8)


def test_perturb_with_partial_weights_is_exact(kidiq_fit):
    X, y, guide, result = kidiq_fit
    weights = np.linspace(0.0, 1.0, len(y))
    params = mpe.perturb(linear_model, guide, result.params, None, X, y, weights=weights)
    precision = (X.T * weights) @ X / SIGMA**2 + np.eye(3) / PRIOR_SCALE**2
    mean = np.linalg.solve(precision, (X.T * weights) @ y / SIGMA**2)
    np.testing.assert_allclose(params["auto_loc"], mean, rtol=1e-8)
    np.testing.assert_allclose(params["auto_precision"], precision, rtol=1e-8)


def test_conjugate_perturb_reads_weights_and_masks_alike(kidiq, x64):
    """AutoConjugate: the 0/1 pattern that removes as a mask removes as weights' zeros;
    a float array as ``remove`` is refused rather than read either way."""
    X, y = kidiq
    guide = mpe.AutoConjugate(linear_model)
    params = guide.posterior_params(X, y)
    keep = np.arange(len(y)) % 4 != 0
    expected_mean, expected_precision = closed_form_posterior(X, y, keep)
    by_mask = mpe.perturb(linear_model, guide, params, ~keep, X, y)
    by_weights = mpe.perturb(linear_model, guide, params, None, X, y, weights=keep * 1.0)
    for got in (by_mask, by_weights):
        np.testing.assert_allclose(got["auto_loc"], expected_mean, rtol=1e-8)
        np.testing.assert_allclose(got["auto_precision"], expected_precision, rtol=1e-8)
    with pytest.raises(TypeError, match="remove must be integer indices or a boolean mask"):
        mpe.perturb(linear_model, guide, params, keep * 1.0, X, y)
    with pytest.raises(TypeError, match="not both"):
        mpe.perturb(linear_model, guide, params, [0], X, y, weights=keep * 1.0)
    # [] removes nothing: the same posterior, to the rounding of natural <-> mean form.
    unchanged = mpe.perturb(linear_model, guide, params, [], X, y)
    for name, value in params.items():
        np.testing.assert_allclose(unchanged[name], value, rtol=1e-12)


def test_conjugate_group_labels_are_checked_against_the_examples(kidiq, x64):
    X, y = kidiq
    guide = mpe.AutoConjugate(linear_model)
    params = guide.posterior_params(X, y)
    groups = np.arange(len(y)) % 5
    by_group = mpe.perturb(linear_model, guide, params, [1, 3], X, y, groups=groups)
    by_index = mpe.perturb(linear_model, guide, params, np.isin(groups, [1, 3]), X, y)
    np.testing.assert_allclose(by_group["auto_loc"], by_index["auto_loc"], rtol=1e-12)
    # Labels shorter than the data: named as the groups' shape, not as a mask's.
    with pytest.raises(
        ValueError, match=r"groups must hold one label per example, shape \(434,\)"
    ):
        mpe.perturb(linear_model, guide, params, [1], X, y, groups=groups[:10])
    mixed = groups.astype(object)
    mixed[groups == 0] = "zero"
    with pytest.raises(TypeError, match="groups mixes label types"):
        mpe.perturb(linear_model, guide, params, [1], X, y, groups=mixed)


@pytest.mark.parametrize("method", ["cavity", "paper"])
def test_loo_equals_exact_loo(kidiq_fit, method):
    X, y, guide, result = kidiq_fit
    exact = closed_form_loo(X, y)
    elpd = mpe.loo(linear_model, guide, result.params, X, y, method=method)
    if method == "cavity":
        np.testing.assert_allclose(elpd.elpd_i.values, exact, rtol=1e-8)
        assert elpd.elpd == pytest.approx(exact.sum(), rel=1e-10)
    else:
        # The paper's plug-in keeps the full-data covariance: close, not exact.
        assert np.max(np.abs(elpd.elpd_i.values - exact)) < 0.01
    assert elpd.elpd_i.dims == ("data",)


def test_loo_without_predictor_is_exact(kidiq, x64):
    """Two observed sites per example: no predictor, so the parameter-space form."""
    X, y = kidiq

    def split_model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, PRIOR_SCALE).expand([3]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, SIGMA), obs=y)
            numpyro.sample("y_copy", dist.Normal(X @ beta, SIGMA), obs=y)

    guide = mpe.AutoGaussian(split_model)
    result = mpe.BLR(split_model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 10, X, y, progress_bar=False
    )
    assert mpe.trace_model(split_model, X, y).predictor is None
    elpd = mpe.loo(split_model, guide, result.params, X, y)
    assert elpd.method == "laplace"
    # Closed form: the example's two copies are removed together.
    exact = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        precision = 2 * X[keep].T @ X[keep] / SIGMA**2 + np.eye(3) / PRIOR_SCALE**2
        mean = np.linalg.solve(precision, 2 * X[keep].T @ y[keep] / SIGMA**2)
        covariance = SIGMA**2 * np.eye(2) + X[i] @ np.linalg.solve(precision, X[i])
        residual = np.full(2, y[i] - X[i] @ mean)
        exact[i] = -0.5 * (
            np.linalg.slogdet(2 * np.pi * covariance)[1]
            + residual @ np.linalg.solve(covariance, residual)
        )
    np.testing.assert_allclose(elpd.elpd_i.values, exact, rtol=1e-8)


def test_eight_schools_tau_fixed_is_exact(x64):
    data = data_json("posteriordb/eight_schools.json")
    sigma, y = np.asarray(data["sigma"], float), np.asarray(data["y"], float)
    guide = mpe.AutoGaussian(eight_schools_centered)
    result = mpe.BLR(eight_schools_centered, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 10, sigma, y, progress_bar=False
    )
    exact_loo = np.empty(8)
    for j in range(8):
        keep = (np.arange(8) != j).astype(float)
        mean, precision = eight_schools_closed_form(sigma, y, keep)
        params = mpe.perturb(eight_schools_centered, guide, result.params, [j], sigma, y)
        np.testing.assert_allclose(params["auto_loc"], mean, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(params["auto_precision"], precision, rtol=1e-8, atol=1e-12)
        variance = sigma[j] ** 2 + np.linalg.inv(precision)[j + 1, j + 1]
        exact_loo[j] = -0.5 * (np.log(2 * np.pi * variance) + (y[j] - mean[j + 1]) ** 2 / variance)
    elpd = mpe.loo(eight_schools_centered, guide, result.params, sigma, y)
    np.testing.assert_allclose(elpd.elpd_i.values, exact_loo, rtol=1e-8)


def test_diagonal_family_division(x64):
    """Diag family: the precision after removal is exact (S - diag H_j, the refit's
    diagonal); the mean moves by the first-order step (S - diag H_j)^-1 g_j, which is
    not the refit's mean because the prior couples mu and theta (see docs/math.md)."""
    data = data_json("posteriordb/eight_schools.json")
    sigma, y = np.asarray(data["sigma"], float), np.asarray(data["y"], float)
    guide = mpe.AutoGaussian(eight_schools_centered, covariance="diag")
    blr = mpe.BLR(eight_schools_centered, guide, mpe.optim.newton())
    result = blr.run(jax.random.PRNGKey(0), 10, sigma, y, progress_bar=False)
    mean = result.params["auto_loc"]
    for j in (0, 3):
        params = mpe.perturb(eight_schools_centered, guide, result.params, [j], sigma, y)
        keep = (np.arange(8) != j).astype(float)
        _, precision = eight_schools_closed_form(sigma, y, keep)
        np.testing.assert_allclose(params["auto_precision"], np.diag(precision), rtol=1e-10)
        step = np.zeros(9)
        step[j + 1] = (mean[j + 1] - y[j]) / sigma[j] ** 2 / np.diag(precision)[j + 1]
        np.testing.assert_allclose(params["auto_loc"], mean + step, rtol=1e-10)


def test_diag_family_fixed_point(kidiq_fit):
    X, y, _, result = kidiq_fit
    guide = mpe.AutoGaussian(linear_model, covariance="diag")
    fit = mpe.BLR(linear_model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 10, X, y, progress_bar=False
    )
    np.testing.assert_allclose(fit.params["auto_loc"], result.params["auto_loc"], rtol=1e-10)
    np.testing.assert_allclose(
        fit.params["auto_precision"], jnp.diag(result.params["auto_precision"]), rtol=1e-10
    )
