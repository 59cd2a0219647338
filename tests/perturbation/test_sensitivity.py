"""Per-example sensitivity: MPE mean and prediction shifts against perturb and refits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import laplace_fit, linear_model
from models import mom_work_design

import numpyro_mpe as mpe
from numpyro_mpe.core import curvature
from numpyro_mpe.core.curvature import likelihood_curvature
from numpyro_mpe.perturbation import sensitivity as sensitivity_module
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


def two_sites_gaussian(x, y):
    """``(guide, params, mean)`` for :func:`two_observed_sites`: any Gaussian will do (no
    fit needed; sensitivity and perturb apply the same MPE formula at ``(m, S)``); here
    ``S`` is the Hessian of the negative log joint at ``m``."""
    guide = mpe.AutoGaussian(two_observed_sites)
    plate_model = mpe.trace_model(two_observed_sites, x, y)
    mean = np.array([85.0, 5.0, np.log(18.0)])
    precision = -jax.jit(jax.hessian(plate_model.log_joint))(mean)
    return guide, guide.params_from_mean_precision(mean, precision), mean


def test_sensitivity_without_predictor(kidiq, x64):
    X, y = kidiq
    x = X[:60, 2] - X[:60, 2].mean()
    guide, params, mean = two_sites_gaussian(x, y[:60])
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
    # Without a predictor the dense family needs the (N, P, P) Hessians.
    with pytest.raises(ValueError, match=r"per-example Hessians .* \(434 x 3\^2\) exceed"):
        sensitivity(two_site_linear_model, mpe.AutoGaussian(two_site_linear_model), params, X, y)
    # With one, only the Jacobian rows: no limit applies.
    assert sensitivity(linear_model, guide, params, X, y).shift.shape == (434, 3)
    # The same limit, in the same words, for loo's parameter-space form and for groups.
    with pytest.raises(ValueError, match=r"per-example Hessians .* \(434 x 3\^2\) exceed"):
        mpe.loo(two_site_linear_model, guide, params, X, y)
    with pytest.raises(ValueError, match=r"per-group Hessians .* \(434 x 3\^2\) exceed"):
        mpe.loo(linear_model, guide, params, X, y, groups=np.arange(434))


# --------------------------------------------------------------------------- report


def mom_work_mlp(X, y=None, hidden=3):
    """A tanh network with ``hidden`` units on the mom_work classes (``K = 4``): a
    predictor that is not linear in ``theta``, ``P = 7 hidden + 4``."""
    w1 = numpyro.sample("w1", dist.Normal(0, 1).expand([X.shape[1], hidden]).to_event(2))
    b1 = numpyro.sample("b1", dist.Normal(0, 1).expand([hidden]).to_event(1))
    w2 = numpyro.sample("w2", dist.Normal(0, 1).expand([hidden, 4]).to_event(2))
    b2 = numpyro.sample("b2", dist.Normal(0, 1).expand([4]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=jnp.tanh(X @ w1 + b1) @ w2 + b2), obs=y)


def mlp_gaussian(X, y, covariance):
    """A Gaussian for the network (no fit needed: any ``(m, S)`` will do, as for
    ``perturb``): a point near the origin and the prior plus the Gauss-Newton matrix
    there, ``S = I + sum_i J_i^T Lambda_i J_i`` (its diagonal for ``"diag"``)."""
    plate_model = mpe.trace_model(mom_work_mlp, X, y)
    mean = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (plate_model.num_latents,))
    jacobian = jax.jacfwd(plate_model.predictor.fn)(mean)
    _, lam = likelihood_curvature(plate_model.predictor, plate_model.predictor.fn(mean))
    precision = np.eye(mean.size) + np.einsum("nkp,nkl,nlq->pq", jacobian, lam, jacobian)
    if covariance == "diag":
        precision = np.diag(precision)
    guide = mpe.AutoGaussian(mom_work_mlp, covariance=covariance)
    return guide, guide.params_from_mean_precision(mean, precision), plate_model


@pytest.mark.parametrize("covariance", ["dense", "diag"])
def test_network_shift_is_the_gauss_newton_removal(x64, covariance, monkeypatch):
    X, y = mom_work_design()
    guide, params, plate_model = mlp_gaussian(X, y, covariance)
    mean, precision = (np.asarray(a) for a in guide.mean_precision(params))
    sens = sensitivity(mom_work_mlp, guide, params, X, y)
    # Brute force: delta_i = (S - J_i^T Lambda_i J_i)^-1 J_i^T e_i from the full Jacobian.
    f = plate_model.predictor.fn(mean)
    e, lam = (np.asarray(a) for a in likelihood_curvature(plate_model.predictor, f))
    jacobian = np.asarray(jax.jacfwd(plate_model.predictor.fn)(mean))  # (N, K, P)
    curvature_i = np.einsum("nkp,nkl,nlq->npq", jacobian, lam, jacobian)
    gradients = np.einsum("nkp,nk->np", jacobian, e)
    if covariance == "dense":
        expected = np.linalg.solve(precision[None] - curvature_i, gradients[..., None])[..., 0]
        inverse = np.linalg.inv(precision)
        v = np.einsum("nkp,pq,nlq->nkl", jacobian, inverse, jacobian)
    else:
        expected = gradients / (precision - np.diagonal(curvature_i, axis1=1, axis2=2))
        v = np.einsum("nkp,p,nlp->nkl", jacobian, 1 / precision, jacobian)
    assert not np.asarray(sens.first_order).any()
    np.testing.assert_allclose(sens.shift, expected, rtol=1e-9, atol=1e-13)
    prediction = np.einsum("nkp,np->nk", jacobian, expected)
    np.testing.assert_allclose(sens.prediction_shift, prediction, rtol=1e-9, atol=1e-13)
    if covariance == "dense":
        # ... which is loo's cavity mean shift V_i (I - Lambda_i V_i)^-1 e_i.
        eye = np.eye(4)
        cavity_shift = np.einsum(
            "nkl,nl->nk", v, np.linalg.solve(eye - lam @ v, e[..., None])[..., 0]
        )
        np.testing.assert_allclose(sens.prediction_shift, cavity_shift, rtol=1e-9, atol=1e-13)
    standardized = expected / np.asarray(sens.posterior_sd)
    largest = np.abs(standardized).argmax(axis=1)
    np.testing.assert_array_equal(sens.largest_coordinate, largest)
    np.testing.assert_allclose(
        sens.largest_standardized_shift, standardized[np.arange(len(y)), largest], rtol=1e-9
    )
    # P = 25 > 8: the rows came one example at a time; the full-Jacobian form (models
    # that cannot be sliced by example) gives the same numbers.
    monkeypatch.setattr(sensitivity_module, "DIRECTIONS_PER_STEP", 100)
    streamed = sensitivity(mom_work_mlp, guide, params, X, y)
    np.testing.assert_allclose(streamed.shift, sens.shift, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(streamed.mahalanobis, sens.mahalanobis, rtol=1e-12)


def test_summaries_without_the_shift_arrays(x64):
    X, y = mom_work_design()
    guide, params, _ = mlp_gaussian(X, y, "diag")
    kept = sensitivity(mom_work_mlp, guide, params, X, y)
    summary = sensitivity(mom_work_mlp, guide, params, X, y, keep_shifts=False)
    assert summary.shift is None and summary.standardized_shift is None
    for name in ("mahalanobis", "max_abs_standardized_shift", "prediction_shift"):
        np.testing.assert_allclose(getattr(summary, name), getattr(kept, name), rtol=1e-12)
    np.testing.assert_array_equal(summary.largest_coordinate, kept.largest_coordinate)


def test_default_drops_shift_arrays_above_the_limit(kidiq, x64, monkeypatch):
    X, y = kidiq
    guide, result = laplace_fit(linear_model, X, y, covariance="diag")
    monkeypatch.setattr(sensitivity_module, "MAX_SHIFT_BYTES", 434 * 3 * 8 - 1)
    assert sensitivity(linear_model, guide, result.params, X, y).shift is None
    kept = sensitivity(linear_model, guide, result.params, X, y, keep_shifts=True)
    assert kept.shift.shape == (434, 3)


def fixed_size_softmax(X, y=None, size=434):
    """Its plate's size is a number, not ``X.shape[0]``: it cannot run on a slice of rows."""
    weights = numpyro.sample("w", dist.Normal(0, 1).expand([X.shape[1], 4]).to_event(2))
    with numpyro.plate("data", size):
        numpyro.sample("y", dist.Categorical(logits=X @ weights), obs=y)


def test_unsliceable_model_with_a_huge_jacobian_is_refused(x64, monkeypatch):
    X, y = mom_work_design()
    guide = mpe.AutoGaussian(fixed_size_softmax, covariance="diag")
    params = guide.params_from_mean_precision(np.zeros(16), np.ones(16))
    plain = sensitivity(fixed_size_softmax, guide, params, X, y)  # the full-Jacobian form
    assert plain.shift.shape == (434, 16)
    monkeypatch.setattr(sensitivity_module, "MAX_HESSIAN_BYTES", 1000)
    with pytest.raises(ValueError, match=r"cannot be run on a slice .* \(434 x 4 x 16\)"):
        sensitivity(fixed_size_softmax, guide, params, X, y)
