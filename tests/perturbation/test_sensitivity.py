"""Per-example sensitivity: MPE mean and prediction shifts against perturb and refits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import laplace_fit, linear_model

import numpyro_mpe as mpe
from numpyro_mpe.core import curvature
from numpyro_mpe.perturbation.sensitivity import latent_names, sensitivity


@pytest.mark.parametrize("covariance", ["dense", "diag"])
def test_sensitivity_equals_perturb(kidiq, x64, covariance):
    X, y = kidiq
    guide, result = laplace_fit(linear_model, X, y, covariance=covariance)
    sens = sensitivity(linear_model, guide, result.params, X, y)
    mean, precision = guide.mean_precision(result.params)
    for i in (0, 17, 433):
        perturbed = mpe.perturb(linear_model, guide, result.params, [i], X, y)
        # Same formula, different code path (one removed example, dense Hessian of the
        # removed loss): agreement to rounding, far inside 1e-8.
        np.testing.assert_allclose(
            np.asarray(guide.mean_precision(perturbed)[0]) - np.asarray(mean),
            sens.shift[i],
            rtol=1e-8,
            atol=1e-12,
        )
    assert not np.asarray(sens.first_order).any()
    variance = np.diag(np.linalg.inv(precision)) if covariance == "dense" else 1 / precision
    np.testing.assert_allclose(sens.posterior_sd, np.sqrt(variance), rtol=1e-10)


def test_sensitivity_equals_closed_form_refit(kidiq_fit):
    X, y, guide, result = kidiq_fit
    sigma, prior_scale = 18.0, 10.0  # linear_model's defaults

    def posterior_mean(keep):
        precision = X[keep].T @ X[keep] / sigma**2 + np.eye(X.shape[1]) / prior_scale**2
        return np.linalg.solve(precision, X[keep].T @ y[keep] / sigma**2)

    sens = sensitivity(linear_model, guide, result.params, X, y)
    full = posterior_mean(np.ones(len(y), bool))
    for i in (0, 5, 111, 400):
        keep = np.arange(len(y)) != i
        # Conjugate case: MPE is exact posterior division. The Newton mean agrees with the
        # closed form to ~1e-12 absolute, hence the atol on shifts of size ~1e-2.
        np.testing.assert_allclose(
            sens.shift[i], posterior_mean(keep) - full, rtol=1e-8, atol=1e-10
        )
    # Summaries are consistent with the shift.
    _, precision = guide.mean_precision(result.params)
    shift = np.asarray(sens.shift)
    np.testing.assert_allclose(
        sens.mahalanobis, np.sqrt(np.einsum("np,pq,nq->n", shift, precision, shift)), rtol=1e-10
    )
    np.testing.assert_allclose(
        sens.max_abs_standardized_shift,
        np.abs(shift / np.asarray(sens.posterior_sd)).max(axis=1),
        rtol=1e-12,
    )
    # The Normal's predictor is the location X beta, linear: J_i delta_i = X_i delta_i.
    np.testing.assert_allclose(
        sens.prediction_shift[:, 0], np.einsum("np,np->n", X, shift), rtol=1e-10, atol=1e-12
    )
    assert sens.names == ("beta[0]", "beta[1]", "beta[2]")
    assert sens.plate == "data"


def two_observed_sites(x, y):
    """Two observed sites in the plate: no single predictor, the parameter-space form."""
    a = numpyro.sample("a", dist.Normal(80, 20))
    b = numpyro.sample("b", dist.Normal(0, 20))
    sigma = numpyro.sample("sigma", dist.HalfNormal(30))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)
        numpyro.sample("y_again", dist.Normal(a, 50.0), obs=y)


def test_sensitivity_without_predictor(kidiq, x64):
    X, y = kidiq
    x = X[:60, 2] - X[:60, 2].mean()
    # Any Gaussian will do (no fit needed): sensitivity and perturb apply the same MPE
    # formula at (m, S); here S is the Hessian of the negative log joint at m.
    guide = mpe.AutoGaussian(two_observed_sites)
    plate_model = mpe.trace_model(two_observed_sites, x, y[:60])
    mean = np.array([85.0, 5.0, np.log(18.0)])
    precision = -jax.jit(jax.hessian(plate_model.log_joint))(mean)
    params = guide.params_from_mean_precision(mean, precision)
    sens = sensitivity(two_observed_sites, guide, params, x, y[:60])
    assert sens.prediction_shift is None
    assert sens.names == ("a", "b", "sigma")
    perturbed = mpe.perturb(two_observed_sites, guide, params, [3], x, y[:60])
    np.testing.assert_allclose(
        np.asarray(guide.mean_precision(perturbed)[0]) - np.asarray(mean),
        sens.shift[3],
        rtol=1e-8,
        atol=1e-12,
    )


def test_latent_names_follow_model_site_order():
    assert latent_names({"sigma": (), "beta": (2,), "L": (2, 2)}) == (
        "sigma",
        "beta[0]",
        "beta[1]",
        "L[0,0]",
        "L[0,1]",
        "L[1,0]",
        "L[1,1]",
    )


def two_site_linear_model(X, y=None):
    """``linear_model`` with its observation split into two sites: no predictor, so
    ``loo`` takes the parameter-space form."""
    beta = numpyro.sample("beta", dist.Normal(0, 10.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, 18.0), obs=y)
        numpyro.factor("extra", jnp.zeros(X.shape[0]))


def test_sensitivity_refuses_huge_hessians(kidiq, x64, monkeypatch):
    # x64: kidiq's float64 arrays; under float32 jax's C++ jit cache has been seen to hand
    # a float32 executable these float64 buffers after earlier tests toggled x64.
    X, y = kidiq
    guide = mpe.AutoGaussian(linear_model)
    params = guide.params_from_mean_precision(np.zeros(3), np.eye(3))  # checked before use
    monkeypatch.setattr(curvature, "MAX_HESSIAN_BYTES", 100)
    with pytest.raises(ValueError, match=r"per-example Hessians .* \(434 x 3\^2\) exceed"):
        sensitivity(linear_model, guide, params, X, y)
    # The same limit, in the same words, for loo's parameter-space form and for groups.
    with pytest.raises(ValueError, match=r"per-example Hessians .* \(434 x 3\^2\) exceed"):
        mpe.loo(two_site_linear_model, guide, params, X, y)
    with pytest.raises(ValueError, match=r"per-group Hessians .* \(434 x 3\^2\) exceed"):
        mpe.loo(linear_model, guide, params, X, y, groups=np.arange(434))


# --------------------------------------------------------------------------- report
