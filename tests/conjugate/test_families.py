"""Exact MPE for conjugate exponential families, against closed-form refits in float64.

Every reference below refits the posterior on the data without example ``i`` from its
counts / sums (numpy loops, Python's ``math.lgamma``) and
evaluates that posterior's predictive density at ``y_i``; the module instead divides the
full posterior by example ``i``'s natural-parameter contribution, for all ``i`` at once.
"""

from __future__ import annotations

import math

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import data_csv, data_json, linear_model, logistic_model

import numpyro_mpe as mpe
from numpyro_mpe.conjugate.guide import (
    AutoConjugate,
    conjugate_loo,
    conjugate_perturb,
    trace_conjugate,
)
from numpyro_mpe.core.model import ModelError
from numpyro_mpe.datasets import load_wells

EXACT_RTOL = 1e-10
# float32 against float64: the sums of statistics carry a relative rounding error of
# ~1e-7 each; the count families' predictives are differences of log-gamma values of the
# totals (~eps * |log Gamma(total)| absolute) and the NIG rate b is a difference of sums
# of y^2 / 2. Measured max relative error of elpd_i: bball 2.8e-5, wells 1.5e-7, Kline
# 3.0e-5, GLM Poisson 1.8e-4, mom_work 2.5e-7, eight schools 5.9e-8, kidiq NIG 1.3e-5.
FLOAT32_RTOL = 1e-4


# ----------------------------------------------------------------------------------------
# Models (NumPyro, as a user writes them).
# ----------------------------------------------------------------------------------------


def beta_binomial(at_bats, hits=None):
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    with numpyro.plate("players", at_bats.shape[0]):
        numpyro.sample("hits", dist.Binomial(at_bats, probs=p), obs=hits)


def beta_bernoulli(num, switched=None):
    p = numpyro.sample("p", dist.Beta(2.0, 3.0))
    with numpyro.plate("households", num):
        numpyro.sample("switched", dist.Bernoulli(probs=p), obs=switched)


def gamma_poisson(exposure, tools=None):
    lam = numpyro.sample("lam", dist.Gamma(2.0, 0.5))
    with numpyro.plate("cultures", exposure.shape[0]):
        numpyro.sample("tools", dist.Poisson(exposure * lam), obs=tools)


def gamma_poisson_plain(num, counts=None):
    lam = numpyro.sample("lam", dist.Exponential(0.1))
    with numpyro.plate("years", num):
        numpyro.sample("counts", dist.Poisson(lam), obs=counts)


def dirichlet_categorical(num, work=None):
    p = numpyro.sample("p", dist.Dirichlet(jnp.array([1.0, 2.0, 1.0, 0.5])))
    with numpyro.plate("mothers", num):
        numpyro.sample("work", dist.Categorical(probs=p), obs=work)


def pooled_normal(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    with numpyro.plate("schools", sigma.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def nig_regression(X, y=None):
    s2 = numpyro.sample("s2", dist.InverseGamma(2.0, 200.0))
    prior_scale = jnp.sqrt(s2) * jnp.array([10.0, 3.0, 3.0])
    beta = numpyro.sample(
        "beta", dist.Normal(jnp.array([80.0, 0.0, 0.0]), prior_scale).to_event(1)
    )
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, jnp.sqrt(s2)), obs=y)


# ----------------------------------------------------------------------------------------
# Data and independent closed-form refits: predictive(keep, i) = log p(y_i | y[keep]).
# ----------------------------------------------------------------------------------------


gammaln = np.vectorize(math.lgamma)  # the references use Python's log-gamma, not jax's


def betaln(a, b):
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def _student_t(z, df, scale2):
    return float(
        gammaln((df + 1) / 2)
        - gammaln(df / 2)
        - 0.5 * np.log(df * np.pi * scale2)
        - (df + 1) / 2 * np.log1p(z**2 / (df * scale2))
    )


def bball():
    table = data_csv("rstanarm/rstanarm_bball1970.csv")
    n, y = table["AB"].astype(int), table["Hits"].astype(int)

    def predictive(keep, i):
        a, b = 1.0 + y[keep].sum(), 1.0 + (n - y)[keep].sum()
        log_choose = gammaln(n[i] + 1.0) - gammaln(y[i] + 1.0) - gammaln(n[i] - y[i] + 1.0)
        return float(log_choose + betaln(a + y[i], b + n[i] - y[i]) - betaln(a, b))

    return beta_binomial, (n, y), predictive, len(y)


def wells():
    y = load_wells().switch

    def predictive(keep, i):
        a, b = 2.0 + y[keep].sum(), 3.0 + (1 - y[keep]).sum()
        return float(np.log(a / (a + b)) if y[i] == 1 else np.log(b / (a + b)))

    return beta_bernoulli, (len(y), y), predictive, len(y)


def kline():
    table = data_csv("loo/loo_Kline.csv")
    exposure, y = np.log(table["population"]), table["total_tools"]

    def predictive(keep, i):
        a, b = 2.0 + y[keep].sum(), 0.5 + exposure[keep].sum()
        e = exposure[i]
        nb = gammaln(a + y[i]) - gammaln(a) - gammaln(y[i] + 1)
        return float(nb + a * np.log(b / (b + e)) + y[i] * np.log(e / (b + e)))

    return gamma_poisson, (exposure, y), predictive, len(y)


def glm_poisson():
    y = np.asarray(data_json("posteriordb/GLM_Poisson_Data.json")["C"], float)

    def predictive(keep, i):
        a, b = 1.0 + y[keep].sum(), 0.1 + keep.sum()
        nb = gammaln(a + y[i]) - gammaln(a) - gammaln(y[i] + 1)
        return float(nb + a * np.log(b / (b + 1)) + y[i] * np.log(1 / (b + 1)))

    return gamma_poisson_plain, (len(y), y), predictive, len(y)


def mom_work():
    y = np.asarray(data_json("posteriordb/kidiq_with_mom_work.json")["mom_work"]) - 1

    def predictive(keep, i):
        alpha = np.array([1.0, 2.0, 1.0, 0.5]) + np.bincount(y[keep], minlength=4)
        return float(np.log(alpha[y[i]] / alpha.sum()))

    return dirichlet_categorical, (len(y), y), predictive, len(y)


def eight_schools():
    data = data_json("posteriordb/eight_schools.json")
    y, sigma = np.asarray(data["y"], float), np.asarray(data["sigma"], float)

    def predictive(keep, i):
        precision = 1 / 25 + np.sum(1 / sigma[keep] ** 2)
        mean = np.sum(y[keep] / sigma[keep] ** 2) / precision
        variance = sigma[i] ** 2 + 1 / precision
        return float(-0.5 * np.log(2 * np.pi * variance) - (y[i] - mean) ** 2 / (2 * variance))

    return pooled_normal, (sigma, y), predictive, len(y)


def kidiq():
    data = data_json("posteriordb/kidiq.json")
    mom_hs, mom_iq = np.asarray(data["mom_hs"], float), np.asarray(data["mom_iq"], float)
    X = np.stack([np.ones_like(mom_hs), mom_hs, (mom_iq - 100) / 10], axis=1)
    y = np.asarray(data["kid_score"], float)
    m0, precision0 = np.array([80.0, 0.0, 0.0]), np.diag(1 / np.array([10.0, 3.0, 3.0]) ** 2)

    def predictive(keep, i):
        precision = precision0 + X[keep].T @ X[keep]
        mean = np.linalg.solve(precision, precision0 @ m0 + X[keep].T @ y[keep])
        a = 2.0 + keep.sum() / 2
        b = 200.0 + 0.5 * (y[keep] @ y[keep] + m0 @ precision0 @ m0 - mean @ precision @ mean)
        leverage = X[i] @ np.linalg.solve(precision, X[i])
        return _student_t(y[i] - X[i] @ mean, 2 * a, b / a * (1 + leverage))

    return nig_regression, (X, y), predictive, len(y)


CASES = {
    "beta_binomial_bball": bball,
    "beta_bernoulli_wells": wells,
    "gamma_poisson_kline": kline,
    "gamma_poisson_glm": glm_poisson,
    "dirichlet_mom_work": mom_work,
    "normal_eight_schools": eight_schools,
    "nig_kidiq": kidiq,
}


def reference_loo(predictive, n):
    everything = np.ones(n, bool)
    elpd = np.array([predictive(np.arange(n) != i, i) for i in range(n)])
    lppd = np.array([predictive(everything, i) for i in range(n)])
    return elpd, lppd


# ----------------------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_loo_equals_closed_form_refits(case, x64):
    model, args, predictive, n = CASES[case]()
    guide = AutoConjugate(model)
    params = guide.posterior_params(*args)
    result = conjugate_loo(model, guide, params, *args)
    elpd, lppd = reference_loo(predictive, n)
    np.testing.assert_allclose(result.elpd_i.values, elpd, rtol=EXACT_RTOL)
    np.testing.assert_allclose(result.lppd_i.values, lppd, rtol=EXACT_RTOL)
    assert result.elpd == pytest.approx(elpd.sum(), rel=EXACT_RTOL)
    assert result.method == "conjugate" and result.covariance == "conjugate"
    assert np.all(result.reliability.values == 0)


@pytest.mark.parametrize("case", CASES)
def test_perturb_equals_posterior_of_the_rest(case, x64):
    model, args, _, n = CASES[case]()
    guide = AutoConjugate(model)
    params = guide.posterior_params(*args)
    removed = np.arange(0, n, 3)
    keep = np.setdiff1d(np.arange(n), removed)
    rest = tuple(a[keep] if np.ndim(a) else len(keep) for a in args)
    expected = guide.posterior_params(*rest)
    mask = np.isin(np.arange(n), removed)
    for remove, weights in (
        (removed, None),
        (mask, None),
        (None, np.isin(np.arange(n), keep) * 1.0),
    ):
        perturbed = conjugate_perturb(model, guide, params, remove, *args, weights=weights)
        for name, value in expected.items():
            np.testing.assert_allclose(perturbed[name], value, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_removing_everything_returns_the_prior(case, x64):
    model, args, _, n = CASES[case]()
    guide = AutoConjugate(model)
    params = guide.posterior_params(*args)
    prior = trace_conjugate(model, *args).prior_natural
    emptied = conjugate_perturb(model, guide, params, np.arange(n), *args)
    for got, want in zip(guide.natural_params(emptied), prior, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


def test_prior_values_and_natural_parameters(x64):
    model, args, _, n = kidiq()
    guide = AutoConjugate(model)
    emptied = conjugate_perturb(model, guide, guide.posterior_params(*args), np.arange(n), *args)
    np.testing.assert_allclose(emptied["auto_loc"], [80.0, 0.0, 0.0], atol=1e-8)
    np.testing.assert_allclose(emptied["auto_precision"], np.diag([0.01, 1 / 9, 1 / 9]), atol=1e-9)
    assert float(emptied["auto_concentration"]) == pytest.approx(2.0, rel=1e-12)
    assert float(emptied["auto_rate"]) == pytest.approx(200.0, rel=1e-8)
    model, args, _, _ = bball()
    params = AutoConjugate(model).posterior_params(*args)
    n_at_bats, hits = args
    assert float(params["auto_concentration1"]) == 1.0 + hits.sum()
    assert float(params["auto_concentration0"]) == 1.0 + (n_at_bats - hits).sum()
    eta = AutoConjugate(model).natural_params(params)
    assert float(eta[0]) == hits.sum() and float(eta[1]) == (n_at_bats - hits).sum()


def test_predictive_samples_the_posterior(x64):
    model, (n_at_bats, hits), _, _ = bball()
    guide = AutoConjugate(model)
    params = guide.posterior_params(n_at_bats, hits)
    predictive = numpyro.infer.Predictive(
        model, guide=guide, params=params, num_samples=4000, return_sites=["p", "hits"]
    )
    draws = predictive(jax.random.PRNGKey(0), n_at_bats)  # no observations needed
    a, b = float(params["auto_concentration1"]), float(params["auto_concentration0"])
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert draws["p"].shape == (4000,) and draws["hits"].shape == (4000, len(hits))
    assert abs(float(draws["p"].mean()) - a / (a + b)) < 4 * sd / np.sqrt(4000)

    model, (X, y), _, _ = kidiq()
    guide = AutoConjugate(model)
    params = guide.posterior_params(X, y)
    draws = numpyro.infer.Predictive(
        model, guide=guide, params=params, num_samples=2000, return_sites=["s2", "beta", "y"]
    )(jax.random.PRNGKey(1), X)
    assert draws["beta"].shape == (2000, 3) and draws["y"].shape == (2000, len(y))
    mean_s2 = float(params["auto_rate"]) / (float(params["auto_concentration"]) - 1)
    assert float(draws["s2"].mean()) == pytest.approx(mean_s2, rel=0.03)
    np.testing.assert_allclose(draws["beta"].mean(0), params["auto_loc"], atol=0.3)
    samples = guide.sample_posterior(jax.random.PRNGKey(2), params, X, y, sample_shape=(5, 2))
    assert samples["beta"].shape == (5, 2, 3) and samples["s2"].shape == (5, 2)


def test_sample_posterior_draws_from_the_params_given(x64):
    """``params={}`` once drew from the data's posterior (the guide's initial value); the
    draws come from the params given, which are checked first."""
    model, (n_at_bats, hits), _, _ = bball()
    guide = AutoConjugate(model)
    params = {"auto_concentration1": jnp.asarray(2.0), "auto_concentration0": jnp.asarray(8.0)}
    draws = guide.sample_posterior(jax.random.PRNGKey(3), params, n_at_bats, sample_shape=(4000,))
    sd = math.sqrt(2.0 * 8.0 / (10.0**2 * 11.0))
    # Monte Carlo: 4 standard errors of the mean of 4000 draws of Beta(2, 8) (mean 0.2).
    assert abs(float(draws["p"].mean()) - 0.2) < 4 * sd / math.sqrt(4000)
    with pytest.raises(ValueError, match=r"params \[\] are not AutoConjugate params"):
        guide.sample_posterior(jax.random.PRNGKey(3), {}, n_at_bats, hits)


def test_params_checks_hold_under_jit(x64):
    """Traced params are checked for keys, dtypes and shapes only (their values are
    unknown), so the conversions still compile."""
    guide = AutoConjugate(bball()[0])
    params = jax.jit(lambda eta: guide.params_from_natural("beta", eta))((1.0, 2.0))
    assert float(params["auto_concentration1"]) == 2.0
    assert float(params["auto_concentration0"]) == 3.0
    eta = jax.jit(guide.natural_params)(params)
    np.testing.assert_allclose([float(e) for e in eta], [1.0, 2.0], rtol=EXACT_RTOL)


def test_compare_beside_psis_loo(x64):
    model, (num, y), _, _ = wells()
    guide = AutoConjugate(model)
    params = guide.posterior_params(num, y)
    exact = conjugate_loo(model, guide, params, num, y)
    p = np.asarray(
        guide.sample_posterior(jax.random.PRNGKey(0), params, num, y, sample_shape=(2000,))["p"]
    )
    log_lik = y * np.log(p)[:, None] + (1 - y) * np.log1p(-p)[:, None]
    tree = az.from_dict(
        {"posterior": {"p": p[None]}, "log_likelihood": {"switched": log_lik[None]}}
    )
    psis = az.loo(tree)
    table = az.compare({"conjugate": exact, "psis": psis}, round_to="none")
    assert set(table.index) == {"conjugate", "psis"}
    assert float(table.loc["conjugate", "elpd"]) == pytest.approx(exact.elpd, rel=1e-12)
    # 2000 posterior draws of one parameter: PSIS is within Monte Carlo error of exact.
    assert abs(psis.elpd - exact.elpd) < 0.05


def test_float32_is_close_to_float64():
    results32 = {}
    for case in ("beta_binomial_bball", "beta_bernoulli_wells", "nig_kidiq"):
        model, args, _, _ = CASES[case]()
        guide = AutoConjugate(model)
        params = guide.posterior_params(*args)
        assert all(value.dtype == jnp.float32 for value in params.values())
        result = conjugate_loo(model, guide, params, *args)
        results32[case] = result.elpd_i.values
    with jax.enable_x64(True):
        for case, values in results32.items():
            model, args, predictive, n = CASES[case]()
            elpd, _ = reference_loo(predictive, n)
            np.testing.assert_allclose(values, elpd, rtol=FLOAT32_RTOL)


def test_improper_cavity_names_the_example(x64):
    model, args, _, n = bball()
    guide = AutoConjugate(model)
    prior = conjugate_perturb(model, guide, guide.posterior_params(*args), np.arange(n), *args)
    with pytest.raises(ValueError, match="cavity of example 0 of plate 'players' is improper"):
        conjugate_loo(model, guide, prior, *args)
    with pytest.raises(ValueError, match="improper beta posterior"):
        conjugate_perturb(model, guide, prior, [1], *args)


def _normal_with_unknown_scale(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _logit_bernoulli(y):
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=p), obs=y)


def _bernoulli(y):
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Bernoulli(probs=p), obs=y)


def _log_link_poisson(y):
    lam = numpyro.sample("lam", dist.Gamma(1.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Poisson(jnp.exp(lam)), obs=y)


def _nonlinear_normal(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu**2, 1.0), obs=y)


def _hierarchical(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, 1.0))
        numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def _nig_without_scaled_prior(y):
    s2 = numpyro.sample("s2", dist.InverseGamma(2.0, 1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(beta, jnp.sqrt(s2)), obs=y)


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        (_normal_with_unknown_scale, np.ones(5), "prior Normal on 'mu' and prior HalfNormal"),
        (_logit_bernoulli, np.ones(5), "needs probs equal to 'p'.*AutoGaussian"),
        (_log_link_poisson, np.ones(5), "rate a positive known constant times 'lam'"),
        (_nonlinear_normal, np.ones(5), "loc affine in 'mu' and a scale not depending on it"),
        (_hierarchical, np.ones(5), "latent site 'theta' is inside a plate"),
        (
            _nig_without_scaled_prior,
            np.ones(5),
            "prior on 'beta' with covariance proportional to 's2'",
        ),
        (_bernoulli, np.array([0.0, 2.0]), "holds 2.0 at example 1, outside the support"),
    ],
)
def test_unsupported_models_raise(model, data, match, x64):
    with pytest.raises(ModelError, match=match):
        AutoConjugate(model).posterior_params(data)


def test_unsupported_pair_and_wrong_guide(wells, x64):
    X, y = wells
    with pytest.raises(
        ModelError, match="prior Normal on 'beta' with observation BernoulliLogits"
    ):
        AutoConjugate(logistic_model).posterior_params(X, y)
    model, args, _, _ = bball()
    with pytest.raises(TypeError, match="guide must be an AutoConjugate"):
        conjugate_loo(model, object(), {}, *args)


def test_normal_family_agrees_with_autogaussian_loo(kidiq_fit):
    # Gaussian-linear with known noise: AutoGaussian's cavity LOO is exact too.
    X, y, gaussian_guide, result = kidiq_fit
    guide = AutoConjugate(linear_model)
    params = guide.posterior_params(X, y)
    np.testing.assert_allclose(params["auto_loc"], result.params["auto_loc"], rtol=1e-8)
    exact = conjugate_loo(linear_model, guide, params, X, y)
    cavity = mpe.loo(linear_model, gaussian_guide, result.params, X, y)
    np.testing.assert_allclose(exact.elpd_i.values, cavity.elpd_i.values, rtol=1e-8)


def test_loo_and_perturb_dispatch_to_the_conjugate_posterior(x64):
    """``numpyro_mpe.loo`` / ``perturb`` with an AutoConjugate guide are the exact forms."""
    import numpyro_mpe as mpe

    table = data_csv("rstanarm/rstanarm_bball1970.csv")
    at_bats, hits = table["AB"].astype(float), table["Hits"].astype(float)

    def model(at_bats, hits=None):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        with numpyro.plate("players", at_bats.shape[0]):
            numpyro.sample("hits", dist.Binomial(at_bats, probs=p), obs=hits)

    guide = mpe.AutoConjugate(model)
    params = guide.posterior_params(at_bats, hits)
    result = mpe.loo(model, guide, params, at_bats, hits)
    expected = conjugate_loo(model, guide, params, at_bats, hits)
    np.testing.assert_array_equal(result.elpd_i.values, expected.elpd_i.values)
    assert "exact division" in str(result)
    removed = mpe.perturb(model, guide, params, [0, 3], at_bats, hits)
    concentration1 = 1.0 + hits.sum() - hits[[0, 3]].sum()
    np.testing.assert_allclose(removed["auto_concentration1"], concentration1, rtol=1e-12)


def test_pandas_data_give_the_exact_posterior():
    """Series of at-bats and hits give Beta(1 + hits, 1 + misses), as numpy arrays do
    (integer counts: exact in float32, ``rtol 1e-6``)."""
    import pandas as pd

    at_bats = pd.Series(np.full(10, 45), name="at_bats")
    hits = pd.Series(np.arange(10, 20), name="hits")
    params = mpe.AutoConjugate(beta_binomial).posterior_params(at_bats, hits)
    np.testing.assert_allclose(params["auto_concentration1"], 1.0 + hits.sum(), rtol=1e-6)
    np.testing.assert_allclose(
        params["auto_concentration0"], 1.0 + (at_bats - hits).sum(), rtol=1e-6
    )
