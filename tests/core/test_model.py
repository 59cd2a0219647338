"""The model adapter: per-example terms, flat layout, predictors, and its errors."""

from __future__ import annotations

import logging
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import linear_model, logistic_model
from numpyro.infer.util import log_density

import numpyro_mpe as mpe
from numpyro_mpe.core.model import join_arguments, split_arguments


def regression_with_scale(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 10).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def test_log_joint_matches_numpyro_potential(kidiq, x64):
    X, y = kidiq
    pm = mpe.trace_model(regression_with_scale, X, y)
    theta = pm.init_theta + 0.1
    expected = -numpyro.infer.util.potential_energy(
        regression_with_scale, (X, y), {}, pm.unravel(theta)
    )
    np.testing.assert_allclose(pm.log_joint(theta), expected, rtol=1e-12)
    assert pm.log_lik(theta).shape == (434,)
    assert pm.num_latents == 4 and pm.plate == "data" and pm.observed_sites == ("y",)


def test_weights_remove_examples(kidiq, x64):
    X, y = kidiq
    pm = mpe.trace_model(linear_model, X, y)
    theta = pm.init_theta
    weights = jnp.ones(434).at[:10].set(0.0)
    pm_rest = mpe.trace_model(linear_model, X[10:], y[10:])
    np.testing.assert_allclose(pm.log_joint(theta, weights), pm_rest.log_joint(theta), rtol=1e-12)


def test_flat_order_matches_guide(kidiq, x64):
    X, y = kidiq

    def model(X, y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
        beta = numpyro.sample("beta", dist.Normal(0, 10).expand([3]).to_event(1))
        alpha = numpyro.sample("alpha", dist.Normal(0, 10))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(alpha + X @ beta, sigma), obs=y)

    pm = mpe.trace_model(model, X, y)
    guide = mpe.AutoGaussian(model)
    with numpyro.handlers.seed(rng_seed=0):
        guide._setup_prototype(X, y)
    theta = jnp.arange(5.0)
    assert list(pm.latent_shapes) == ["sigma", "beta", "alpha"]
    unpacked = guide._unpack_latent(theta)
    for name, value in pm.unravel(theta).items():
        np.testing.assert_array_equal(unpacked[name], value)


@pytest.mark.parametrize(
    ("observation", "names"),
    [
        (lambda eta, y: dist.Bernoulli(logits=eta), ("logits",)),
        (lambda eta, y: dist.Bernoulli(probs=jax.nn.sigmoid(eta)), ("probs",)),
        (lambda eta, y: dist.Binomial(5, logits=eta), ("logits",)),
        (lambda eta, y: dist.Poisson(jnp.exp(eta)), ("rate",)),
        (lambda eta, y: dist.NegativeBinomial2(jnp.exp(eta), 3.0), ("mean",)),
        (lambda eta, y: dist.StudentT(4.0, eta, 2.0), ("loc",)),
        (lambda eta, y: dist.Normal(eta, 2.0), ("loc",)),
    ],
)
def test_predictor_rebuilds_the_observation(observation, names, x64):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = rng.integers(0, 2, size=50).astype(float)

    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([2]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", observation(X @ beta, y), obs=y)

    pm = mpe.trace_model(model, X, y)
    assert pm.predictor.names == names
    theta = jnp.array([0.3, -0.2])
    f = pm.predictor.fn(theta)
    assert f.shape == (50, 1)
    np.testing.assert_allclose(pm.predictor.log_lik(f), pm.log_lik(theta), rtol=1e-12)
    if names == ("logits",) or names == ("loc",):
        np.testing.assert_allclose(f[:, 0], X @ theta, rtol=1e-12)


def test_categorical_predictor_is_a_vector(x64):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2))
    y = rng.integers(0, 3, size=40)

    def model(X, y=None):
        weights = numpyro.sample("w", dist.Normal(0, 1).expand([2, 3]).to_event(2))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=X @ weights), obs=y)

    pm = mpe.trace_model(model, X, y)
    theta = jnp.linspace(-1, 1, 6)
    assert pm.predictor.fn(theta).shape == (40, 3)
    np.testing.assert_allclose(
        pm.predictor.log_lik(pm.predictor.fn(theta)), pm.log_lik(theta), rtol=1e-12
    )


def test_latent_scale_joins_the_predictor(kidiq, x64):
    pm = mpe.trace_model(regression_with_scale, *kidiq)
    assert pm.predictor.names == ("loc", "scale")
    assert pm.predictor.noise_variance is None
    assert mpe.trace_model(linear_model, *kidiq).predictor.noise_variance is not None


def test_plate_is_selected_by_name(x64):
    def model(y_a, y_b):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("a", y_a.shape[0]):
            numpyro.sample("ya", dist.Normal(mu, 1), obs=y_a)
        with numpyro.plate("b", y_b.shape[0]):
            numpyro.sample("yb", dist.Normal(mu, 1), obs=y_b)

    y_a, y_b = jnp.zeros(4), jnp.ones(4)
    with pytest.raises(mpe.ModelError, match=r"in different plates: 'ya' in plates \['a'\]"):
        mpe.trace_model(model, y_a, y_b)
    pm = mpe.trace_model(model, y_a, y_b, plate="b")
    assert pm.observed_sites == ("yb",)
    # 'ya' is outside the chosen plate: part of the never-removed term.
    np.testing.assert_allclose(pm.log_prior(jnp.zeros(1)), -0.5 * np.log(2 * np.pi) * 5)
    with pytest.raises(mpe.ModelError, match="no observed site is inside plate 'c'"):
        mpe.trace_model(model, y_a, y_b, plate="c")


# --- errors, raised before any fitting -------------------------------------------


def test_nested_plates_choose_the_outer_one(x64):
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1).expand([3]).to_event(1))
        with numpyro.plate("data", y.shape[0], dim=-2), numpyro.plate("features", 3, dim=-1):
            numpyro.sample("y", dist.Normal(mu, 1), obs=y)

    y = jnp.arange(12.0).reshape(4, 3)
    pm = mpe.trace_model(model, y)
    assert pm.plate == "data" and pm.num_examples == 4 and pm.predictor is None
    theta = jnp.array([0.5, -0.5, 1.0])
    expected = dist.Normal(theta, 1).log_prob(y).sum(axis=1)
    np.testing.assert_allclose(pm.log_lik(theta), expected, rtol=1e-12)
    columns = mpe.trace_model(model, y, plate="features")
    np.testing.assert_allclose(
        columns.log_lik(theta), dist.Normal(theta, 1).log_prob(y).sum(axis=0), rtol=1e-12
    )


def test_error_no_observed_site_in_a_plate():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(mu, 1).expand([3]).to_event(1), obs=y)

    with pytest.raises(mpe.ModelError, match=r"no observed site is inside a plate.*'y'"):
        mpe.trace_model(model, jnp.zeros(3))


def test_error_no_observed_site_at_all():
    def model():
        numpyro.sample("mu", dist.Normal(0, 1))

    with pytest.raises(mpe.ModelError, match="no observed site"):
        mpe.trace_model(model)


def test_error_discrete_latent():
    def model(y):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        with numpyro.plate("data", 3):
            numpyro.sample("y", dist.Normal(z, 1), obs=y)

    with pytest.raises(mpe.ModelError, match="latent site 'z' is discrete"):
        mpe.trace_model(model, jnp.zeros(3))


def test_error_plates_of_different_sizes():
    def model(y_a, y_b):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("a", 3):
            numpyro.sample("ya", dist.Normal(mu, 1), obs=y_a)
        with numpyro.plate("b", 5):
            numpyro.sample("yb", dist.Normal(mu, 1), obs=y_b)

    with pytest.raises(
        mpe.ModelError, match=r"plates of different sizes: 'ya' in plates \['a'\] \(sizes \[3\]\)"
    ):
        mpe.trace_model(model, jnp.zeros(3), jnp.zeros(5))


def test_error_nan_in_argument():
    X = np.ones((5, 2))
    X[3, 1] = np.nan
    with pytest.raises(
        mpe.ModelError, match=r"positional argument 0 contains nan at index \(3, 1\)"
    ):
        mpe.trace_model(logistic_model, X, np.ones(5))
    with pytest.raises(mpe.ModelError, match=r"argument 'y' contains inf at index \(2,\)"):
        mpe.trace_model(logistic_model, np.ones((5, 2)), y=np.array([0, 1, np.inf, 0, 1.0]))


def test_error_nan_in_observed_value():
    def model(n):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("data", n):
            numpyro.sample("y", dist.Normal(mu, 1), obs=jnp.array([0.0, jnp.nan, 1.0]))

    with pytest.raises(mpe.ModelError, match=r"observed site 'y' contains nan at index \(1,\)"):
        mpe.trace_model(model, 3)


def test_error_model_fails_to_trace():
    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([3]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)

    with pytest.raises(mpe.ModelError, match=r"failed to trace after site 'beta'.*TypeError"):
        mpe.trace_model(model, np.ones((4, 2)), np.ones(4))


def test_error_local_latent():
    def model(y):
        with numpyro.plate("data", 3):
            z = numpyro.sample("z", dist.Normal(0, 1))
            numpyro.sample("y", dist.Normal(z, 1), obs=y)

    with pytest.raises(mpe.ModelError, match="latent site 'z' is local to plate 'data'"):
        mpe.trace_model(model, jnp.zeros(3))


def test_error_subsampled_plate():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("data", 10, subsample_size=4) as idx:
            numpyro.sample("y", dist.Normal(mu, 1), obs=y[idx])

    with pytest.raises(mpe.ModelError, match="plate 'data' is subsampled"):
        mpe.trace_model(model, jnp.zeros(10))


def test_model_is_not_mutated_and_log_density_agrees(wells, x64):
    X, y = wells
    pm = mpe.trace_model(logistic_model, X, y)
    theta = jnp.array([0.1, -0.5, 0.4])
    joint, _ = log_density(logistic_model, (X, y), {}, {"beta": theta})
    np.testing.assert_allclose(pm.log_joint(theta), joint, rtol=1e-12)


# --- masked observations ----------------------------------------------------------


def masked_regression(X, y, observed=True):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([2]).to_event(1))
    with numpyro.plate("data", X.shape[0]), numpyro.handlers.mask(mask=observed):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def test_masked_examples_are_recorded_with_zero_terms(x64):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(12, 2))
    y = rng.integers(0, 2, size=12).astype(float)
    observed = np.arange(12) % 4 != 0
    y[~observed] = -1.0  # a placeholder outside the support, where masked, is no error
    pm = mpe.trace_model(masked_regression, X, y, observed=observed)
    np.testing.assert_array_equal(pm.observed_mask, observed)
    theta = jnp.array([0.4, -0.3])
    log_lik = pm.log_lik(theta)
    np.testing.assert_array_equal(log_lik[~observed], 0.0)
    expected = dist.Bernoulli(logits=X[observed] @ theta).log_prob(y[observed])
    np.testing.assert_allclose(log_lik[observed], expected, rtol=1e-12)
    # The predictor carries the mask: its log likelihood and its curvature are 0 there.
    np.testing.assert_array_equal(pm.predictor.mask, observed)
    np.testing.assert_allclose(pm.predictor.log_lik(pm.predictor.fn(theta)), log_lik, rtol=1e-12)
    assert mpe.trace_model(masked_regression, X, np.abs(y)).observed_mask is None
    y[1] = 2.0  # an example that counts: its value is checked
    with pytest.raises(mpe.ModelError, match=r"'y' has value 2\.0 at index \(1,\), outside"):
        mpe.trace_model(masked_regression, X, y, observed=observed)


def test_observed_mask_from_distribution_mask_and_events(x64):
    """``Distribution.mask`` counts as handlers.mask; an example counts when any of its
    observed values does (nested plates, events, several observed sites)."""
    mask = np.array([[True, False], [False, False], [False, True]])

    def model(y, z):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("data", 3):
            numpyro.sample("y", dist.Normal(mu, 1).expand([3, 2]).mask(mask).to_event(1), obs=y)
            numpyro.sample("z", dist.Normal(mu, 1).mask(np.array([False, False, True])), obs=z)

    pm = mpe.trace_model(model, jnp.zeros((3, 2)), jnp.ones(3))
    np.testing.assert_array_equal(pm.observed_mask, [True, False, True])
    assert pm.predictor is None  # two observed sites: the parameter-space form
    np.testing.assert_array_equal(pm.log_lik(jnp.array([0.3]))[1], 0.0)


def test_error_every_example_masked():
    with pytest.raises(mpe.ModelError, match="every example of plate 'data' is masked out"):
        mpe.trace_model(masked_regression, np.ones((3, 2)), np.ones(3), observed=np.zeros(3, bool))


@pytest.mark.parametrize("observation", [dist.Bernoulli(0.5), dist.Normal(0.0, 1.0)])
def test_error_obs_mask_names_handlers_mask(observation):
    def model(y, observed):
        shift = numpyro.sample("shift", dist.Normal(0, 1))
        with numpyro.plate("data", y.shape[0]):
            fn = dist.Normal(shift, 1.0) if isinstance(observation, dist.Normal) else observation
            numpyro.sample("y", fn, obs=y, obs_mask=observed)

    with pytest.raises(
        mpe.ModelError,
        match=r"site 'y' uses obs_mask=.*latent site 'y_unobserved'.*numpyro\.handlers\.mask",
    ):
        mpe.trace_model(model, jnp.zeros(4), jnp.array([True, False, True, True]))


# --- observed values, y=None, empty latents, arguments ------------------------------


@pytest.mark.parametrize(
    ("observation", "y", "message"),
    [
        (lambda eta: dist.Bernoulli(logits=eta), [0.0, 1, 2, 0], r"value 2\.0 at index \(2,\)"),
        (lambda eta: dist.Bernoulli(logits=eta), [0, 0.5, 1, 0], r"value 0\.5 at index \(1,\)"),
        (lambda eta: dist.Poisson(jnp.exp(eta)), [3, 0, 1.5, 2], r"value 1\.5 at index \(2,\)"),
        (lambda eta: dist.Binomial(5, logits=eta), [1, 6, 2, 0], r"value 6 at index \(1,\)"),
        (
            lambda eta: dist.Exponential(jnp.exp(eta)),
            [1, 2, 3, -1.0],
            r"value -1\.0 at index \(3,\)",
        ),
    ],
)
def test_error_observed_value_outside_support(observation, y, message):
    def model(y):
        eta = numpyro.sample("eta", dist.Normal(0, 1))
        with numpyro.plate("data", 4):
            numpyro.sample("y", observation(eta), obs=y)

    with pytest.raises(mpe.ModelError, match=rf"observed site 'y' has {message}, outside the"):
        mpe.trace_model(model, np.asarray(y))


def test_support_that_moves_with_the_latents_is_not_checked(x64):
    """``Uniform(0, upper)``: 9 is outside the support at the initial ``upper`` (its
    prior median 2), not outside the model's."""

    def model(y):
        upper = numpyro.sample("upper", dist.Pareto(1.0, 1.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Uniform(0.0, upper), obs=y)

    pm = mpe.trace_model(model, jnp.array([0.5, 9.0]))
    assert pm.predictor is None  # Uniform's bounds have no bijection: parameter space
    upper = jnp.log(jnp.array([9.0]))  # unconstrained: upper = 1 + exp(x) = 10
    np.testing.assert_allclose(pm.log_lik(upper), -np.log(10.0), rtol=1e-12)
    for y in (jnp.array([0, 1, 1]), jnp.array([True, False, True])):
        mpe.trace_model(logistic_model, np.ones((3, 2)), y)  # integers and booleans pass


def test_error_discrete_observation_given_none():
    with pytest.raises(
        mpe.ModelError,
        match=r"site 'y' is discrete, inside plate 'data', and got obs=None.*pass them",
    ):
        mpe.trace_model(logistic_model, np.ones((4, 2)), None)


def test_empty_latent_site_changes_nothing(x64):
    """A latent of shape (0,) holds no parameter: the fit and LOO are those without it."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 2))
    y = rng.integers(0, 2, size=30).astype(float)

    def with_empty(X, y):
        nothing = numpyro.sample("nothing", dist.Normal(0, 1).expand([0]).to_event(1))
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([2]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ beta + nothing.sum()), obs=y)

    def without(X, y):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([2]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)

    results = []
    for model in (with_empty, without):
        guide = mpe.AutoGaussian(model)
        fit = mpe.BLR(model, guide, mpe.optim.newton()).run(
            jax.random.PRNGKey(0), 10, X, y, progress_bar=False
        )
        results.append((fit.params["auto_loc"], mpe.loo(model, guide, fit.params, X, y).elpd))
    # Newton's damped steps stop where the loss no longer decreases in float64 and at
    # its tolerance: the two fits agree to ~1e-8 (measured 4e-8), not to rounding.
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


def test_error_every_latent_empty():
    def model(y):
        nothing = numpyro.sample("nothing", dist.Normal(0, 1).expand([0]).to_event(1))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(nothing.sum(), 1), obs=y)

    with pytest.raises(mpe.ModelError, match=r"every latent site is empty \('nothing' \(0,\)\)"):
        mpe.trace_model(model, jnp.zeros(3))


def test_error_nan_in_pandas_and_bfloat16_arguments():
    import pandas as pd  # installed with arviz

    frame = pd.DataFrame({"one": np.ones(5), "x": [0.1, 0.2, np.nan, 0.4, 0.5]})
    y = np.ones(5)
    with pytest.raises(
        mpe.ModelError, match=r"positional argument 0 column 'x' contains nan at index \(2,\)"
    ):
        mpe.trace_model(logistic_model, frame, y)
    with pytest.raises(mpe.ModelError, match=r"argument 'y' contains nan at index \(2,\)"):
        mpe.trace_model(logistic_model, np.ones((5, 2)), y=frame["x"])
    for missing, dtype in (("nan", "Float64"), ("None", object)):  # nullable, object
        with pytest.raises(mpe.ModelError, match=rf"'y' contains {missing} at index \(1,\)"):
            mpe.trace_model(logistic_model, np.ones((2, 2)), y=pd.Series([1.0, None], dtype=dtype))
    half = jnp.ones((5, 2), jnp.bfloat16).at[3, 1].set(jnp.nan)
    with pytest.raises(
        mpe.ModelError, match=r"positional argument 0 contains nan at index \(3, 1\)"
    ):
        mpe.trace_model(logistic_model, half, y)


@pytest.mark.parametrize(
    "observation",
    [
        lambda loc, c: dist.MultivariateNormal(loc, covariance_matrix=c),
        lambda loc, c: dist.MultivariateNormal(loc, precision_matrix=jnp.linalg.inv(c)),
        lambda loc, c: dist.MultivariateNormal(loc, scale_tril=jnp.linalg.cholesky(c)),
        lambda loc, c: dist.LowRankMultivariateNormal(loc, c[:, :1], jnp.diag(c)),
        lambda loc, c: dist.MultivariateStudentT(5.0, loc, jnp.linalg.cholesky(c)),
    ],
)
def test_multivariate_observation_predictor(observation, x64):
    """``MultivariateNormal`` holds its three parametrisations: rebuilt from one."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 2))
    Y = rng.normal(size=(20, 2))
    covariance = jnp.array([[1.0, 0.3], [0.3, 0.5]])

    def model(X, Y):
        W = numpyro.sample("W", dist.Normal(0, 1).expand([2, 2]).to_event(2))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", observation(X @ W, covariance), obs=Y)

    pm = mpe.trace_model(model, X, Y)
    assert pm.predictor.names == ("loc",)
    theta = jnp.linspace(-1.0, 1.0, 4)
    f = pm.predictor.fn(theta)
    np.testing.assert_allclose(f, X @ theta.reshape(2, 2), rtol=1e-12)
    np.testing.assert_allclose(pm.predictor.log_lik(f), pm.log_lik(theta), rtol=1e-12)


class _CompilationsFrom(logging.Handler):
    """Counts the XLA compilations started (``jax.log_compiles``) while one of
    ``functions`` of ``numpyro_mpe/core/model.py`` is on the stack."""

    def __init__(self, functions: set[str]):
        super().__init__()
        self.functions = functions
        self.compiled = []

    def emit(self, record):
        if not record.getMessage().startswith("Compiling "):
            return
        stack = traceback.extract_stack()
        if any(f.filename.endswith("core/model.py") and f.name in self.functions for f in stack):
            self.compiled.append(record.getMessage()[:80])


def masked_poisson(X, y=None, mask=None):
    b = numpyro.sample("b", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]), numpyro.handlers.mask(mask=mask):
        numpyro.sample("y", dist.Poisson(jnp.exp(X @ b)), obs=y)


def test_observed_values_are_checked_on_the_host():
    """A new data size compiles nothing for the checks of the observed values (support,
    NaN, shape, dtype, masks) nor for ``split_arguments``: they run in numpy. (As jnp
    ops the checks compiled 5 XLA programs per data size for this model, and
    ``split_arguments`` one per array, kept for the life of the process.)"""
    counter = _CompilationsFrom(
        {"_check_observed_values", "_observed_mask", "split_arguments", "_checked_vector"}
    )
    logger = logging.getLogger("jax")

    def check(size):
        rng = np.random.default_rng(size)
        X = np.c_[np.ones(size), rng.normal(size=size)]
        y = rng.poisson(2.0, size=size).astype(float)
        pm = mpe.trace_model(masked_poisson, X, y, mask=np.arange(size) % 4 > 0)
        assert pm.observed_mask.sum() == np.sum(np.arange(size) % 4 > 0)
        split_arguments((X, y), {"mask": np.arange(size) % 4 > 0})
        with pytest.raises(mpe.ModelError, match=r"value 0.5 at index \(1,\)"):
            mpe.trace_model(masked_poisson, X, np.r_[y[:1], 0.5, y[2:]], mask=True)

    check(13)  # compiles what does not depend on N (the error path's latents + 0.5)
    logger.addHandler(counter)
    try:
        with jax.log_compiles():
            for size in (21, 34, 47):  # sizes no other test traces
                check(size)
    finally:
        logger.removeHandler(counter)
    assert counter.compiled == []


@pytest.mark.parametrize("enable_x64", [False, True])
def test_split_arguments_keeps_jax_dtypes(enable_x64):
    """``device_put`` gives the dtypes ``jnp.asarray`` gave: float32 and int32 unless x64
    is enabled; jax arrays pass through untouched."""
    with jax.enable_x64(enable_x64):
        given = jnp.ones(3)
        arrays, static = split_arguments(
            (np.ones((4, 2)), np.arange(4)), {"mask": np.ones(4, bool), "j": given, "k": 3}
        )
        wide = "64" if enable_x64 else "32"
        # Leaves in pytree order: the positional arrays, then kwargs by name (j, mask).
        assert [a.dtype.name for a in arrays[:2] + arrays[3:]] == [
            f"float{wide}",
            f"int{wide}",
            "bool",
        ]
        assert arrays[2] is given
        assert all(isinstance(a, jax.Array) for a in arrays)
        args, kwargs = join_arguments(arrays, static)
        assert kwargs["k"] == 3 and kwargs["j"] is given
        np.testing.assert_array_equal(args[0], np.ones((4, 2)))


def test_log_joint_takes_lists_and_checks_shapes(x64):
    """Lists for ``theta`` and ``weights`` give what arrays give; a scalar weight, which
    ``jnp.dot`` broadcast into an ``(N,)`` result, is refused."""
    rng = np.random.default_rng(1)
    X = np.c_[np.ones(10), rng.normal(size=10)]
    y = (rng.random(10) < 0.5).astype(float)
    pm = mpe.trace_model(logistic_model, X, y)
    theta, weights = [0.3, -0.2], [1.0] * 9 + [0.0]
    expected = pm.log_joint(jnp.asarray(theta), jnp.asarray(weights))
    np.testing.assert_allclose(pm.log_joint(theta, weights), expected, rtol=1e-12)
    assert jnp.shape(expected) == ()
    with pytest.raises(ValueError, match=r"weights must have shape \(N,\) = \(10,\)"):
        pm.log_joint(theta, 1.0)


# --------------------------------------------------------------------------- careless inputs


def normal_regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def test_pandas_and_xarray_arguments_give_the_numpy_terms():
    # Was: DataFrame @ tracer failed with TracerArrayConversionError, a Series or DataArray
    # obs failed inside jnp.where. float32 (x64 off, the default): the same float32
    # numbers either way, so the terms agree to float32 rounding (rtol 1e-6).
    import pandas as pd
    import xarray as xr

    rng = np.random.default_rng(0)
    X = np.stack([np.ones(6), rng.normal(size=6)], axis=1)
    y = rng.normal(size=6)
    theta = jnp.array([0.2, -0.3, 0.1])
    expected = mpe.trace_model(normal_regression, X, y)
    for arguments in [
        (pd.DataFrame(X, columns=["one", "x"]), pd.Series(y, index=np.arange(10, 16))),
        (xr.DataArray(X, dims=("obs", "feature")), xr.DataArray(y, dims="obs")),
    ]:
        pm = mpe.trace_model(normal_regression, *arguments)
        assert pm.predictor is not None and pm.predictor.names == expected.predictor.names
        np.testing.assert_allclose(pm.log_lik(theta), expected.log_lik(theta), rtol=1e-6)
        np.testing.assert_allclose(pm.log_prior(theta), expected.log_prior(theta), rtol=1e-6)


def penalised_mean(y):
    m = numpyro.sample("m", dist.Normal(0, 1))
    numpyro.factor("penalty", -(m**2))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(m, 1), obs=y)


def test_factor_outside_the_plates_joins_the_prior(x64):
    # Was: "observed sites are in different plates" for a numpyro.factor penalty.
    y = np.array([0.5, -1.0, 2.0])
    pm = mpe.trace_model(penalised_mean, y)
    assert pm.plate == "data" and pm.observed_sites == ("y",)
    m = 0.3
    normal = -0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(pm.log_prior(jnp.array([m])), normal - m**2 / 2 - m**2, rtol=1e-12)
    np.testing.assert_allclose(pm.log_lik(jnp.array([m])), normal - (y - m) ** 2 / 2, rtol=1e-12)
    # the same as naming the plate
    named = mpe.trace_model(penalised_mean, y, plate="data")
    np.testing.assert_allclose(named.log_prior(jnp.array([m])), pm.log_prior(jnp.array([m])))


def test_an_observed_value_broadcast_along_the_plate_is_refused():
    with pytest.raises(mpe.ModelError, match=r"got a value of shape \(\) \(positional arg"):
        mpe.trace_model(normal_regression, np.ones((5, 2)), 1.0)
    # one example: a scalar is its one value
    assert mpe.trace_model(normal_regression, np.ones((1, 2)), np.array([1.0])).num_examples == 1


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (1e300, r"argument 'y' holds 1e\+300 at index \(2,\), beyond the range of float32"),
        (1e-300, r"argument 'y' holds 1e-300 at index \(2,\), below the smallest float32"),
    ],
)
def test_values_float32_cannot_hold_are_refused(value, pattern):
    # Was: 1e300 became inf in float32 and log_lik returned -inf silently.
    y = np.array([0.5, -1.0, value, 2.0])
    with pytest.raises(mpe.ModelError, match=pattern):
        mpe.trace_model(normal_regression, np.ones((4, 2)), y=y)
    with jax.enable_x64(True):  # float64 holds them
        assert mpe.trace_model(normal_regression, np.ones((4, 2)), y=y).num_examples == 4
