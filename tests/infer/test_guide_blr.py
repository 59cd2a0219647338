"""AutoGaussian as a numpyro guide, the BLR driver, Newton, and input errors."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import data_json, logistic_model
from numpyro.infer import Predictive

import numpyro_mpe as mpe
from numpyro_mpe.crossval.mpe_loo import loo_core
from numpyro_mpe.infer.blr import blr_update
from numpyro_mpe.perturbation.perturb import perturb_core


def test_predictive_reproduces_mean_and_covariance(wells_fit):
    X, _, guide, result = wells_fit
    num_samples = 20_000
    draws = Predictive(
        logistic_model,
        guide=guide,
        params=result.params,
        num_samples=num_samples,
        return_sites=["beta", "y"],
    )(jax.random.PRNGKey(1), X)
    beta = np.asarray(draws["beta"])
    mean = np.asarray(result.params["auto_loc"])
    covariance = np.linalg.inv(result.params["auto_precision"])
    sd = np.sqrt(np.diag(covariance))
    # Monte Carlo: the mean's standard error is sd / sqrt(n); allow 4 of them.
    np.testing.assert_allclose(beta.mean(0), mean, atol=4 * sd.max() / np.sqrt(num_samples))
    # Covariance: relative standard error of a variance is sqrt(2 / n) ~ 1%; allow 5%.
    np.testing.assert_allclose(np.cov(beta.T), covariance, rtol=0.05, atol=0.05 * sd.max() ** 2)
    assert draws["y"].shape == (num_samples, 3020)


def test_sample_posterior_median_quantiles(wells_fit):
    _, _, guide, result = wells_fit
    samples = guide.sample_posterior(jax.random.PRNGKey(2), result.params, sample_shape=(4000,))
    assert samples["beta"].shape == (4000, 3)
    np.testing.assert_allclose(guide.median(result.params)["beta"], result.params["auto_loc"])
    sd = np.sqrt(np.diag(np.linalg.inv(result.params["auto_precision"])))
    quantiles = guide.quantiles(result.params, [0.1587, 0.5, 0.8413])["beta"]
    np.testing.assert_allclose(quantiles[1], result.params["auto_loc"], rtol=1e-12)
    np.testing.assert_allclose(quantiles[2] - quantiles[0], 2 * sd, rtol=1e-3)
    posterior = guide.get_posterior(result.params)
    np.testing.assert_allclose(
        posterior.covariance_matrix, np.linalg.inv(result.params["auto_precision"]), rtol=1e-10
    )


def test_sample_posterior_of_a_fresh_guide_draws_from_the_params(x64):
    """A guide that has not seen the model is set up from the arguments given (once an
    AttributeError), and ``params={}`` is refused (once it drew from the initial
    Gaussian); the draws are those of ``N(m, S^-1)`` held in ``params``."""
    X = np.stack([np.ones(6), np.linspace(-1.0, 1.0, 6)], axis=1)
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    guide = mpe.AutoGaussian(logistic_model)
    mean = jnp.array([0.5, -1.0])
    precision = jnp.array([[4.0, 1.0], [1.0, 2.0]])
    params = guide.params_from_mean_precision(mean, precision)
    num_samples = 20_000
    beta = np.asarray(
        guide.sample_posterior(jax.random.PRNGKey(0), params, X, y, sample_shape=(num_samples,))[
            "beta"
        ]
    )
    covariance = np.linalg.inv(precision)
    sd = np.sqrt(np.diag(covariance))
    # Monte Carlo: 4 standard errors of the mean; the covariance within 5% (the relative
    # standard error of a variance is sqrt(2 / n) = 1%).
    np.testing.assert_allclose(beta.mean(0), mean, atol=4 * sd.max() / np.sqrt(num_samples))
    np.testing.assert_allclose(np.cov(beta.T), covariance, rtol=0.05, atol=0.05 * sd.max() ** 2)
    with pytest.raises(ValueError, match=r"sample_posterior: params lack \['auto_loc'"):
        guide.sample_posterior(jax.random.PRNGKey(0), {}, X, y)


def test_params_checks_hold_under_jit(x64):
    """Traced params are checked for keys, dtypes and shapes only."""
    guide = mpe.AutoGaussian(logistic_model)
    params = guide.params_from_mean_precision(jnp.array([0.5, -1.0]), 2.0 * jnp.eye(2))
    loc = jax.jit(lambda p: guide.get_posterior(p).mean)(params)
    np.testing.assert_allclose(loc, [0.5, -1.0], rtol=1e-12)
    back = jax.jit(guide.params_from_natural)(*guide.natural_params(params))
    np.testing.assert_allclose(back["auto_precision"], 2.0 * np.eye(2), rtol=1e-12)


def test_nearly_symmetric_precision_is_accepted():
    """Rounding-level asymmetry (float32, 1e-7 relative) is below the 1e-6 tolerance."""
    guide = mpe.AutoGaussian(logistic_model)
    precision = np.array([[1.0, 0.3], [0.3 + 1e-7, 1.0]], np.float32)
    _, checked = guide.checked_mean_precision(
        {"auto_loc": np.zeros(2, np.float32), "auto_precision": precision}
    )
    assert checked.dtype == jnp.float32


def test_diag_guide_and_constrained_sites(kidiq, x64):
    X, y = kidiq

    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 10).expand([3]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(30.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)

    guide = mpe.AutoGaussian(model, covariance="diag")
    result = mpe.BLR(model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 50, X, y, progress_bar=False
    )
    assert result.params["auto_precision"].shape == (4,)
    draws = Predictive(
        model, guide=guide, params=result.params, num_samples=1000, return_sites=["sigma"]
    )(jax.random.PRNGKey(0), X)
    assert np.all(draws["sigma"] > 0)
    # The mean of log sigma is the Laplace mode of the unconstrained posterior.
    np.testing.assert_allclose(
        guide.median(result.params)["sigma"], np.exp(result.params["auto_loc"][3]), rtol=1e-12
    )
    elpd = mpe.loo(model, guide, result.params, X, y)
    assert elpd.covariance == "diag" and np.isfinite(elpd.elpd)


def test_natural_params_round_trip(wells_fit):
    _, _, guide, result = wells_fit
    eta1, eta2 = guide.natural_params(result.params)
    back = guide.params_from_natural(eta1, eta2)
    np.testing.assert_allclose(back["auto_loc"], result.params["auto_loc"], rtol=1e-10)
    np.testing.assert_allclose(back["auto_precision"], result.params["auto_precision"])


def test_guide_errors():
    with pytest.raises(ValueError, match="covariance must be one of"):
        mpe.AutoGaussian(logistic_model, covariance="full")
    with pytest.raises(TypeError, match=r"guide must be a numpyro_mpe\.AutoGaussian"):
        mpe.BLR(
            logistic_model, numpyro.infer.autoguide.AutoNormal(logistic_model), mpe.optim.newton()
        )
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    with pytest.raises(
        ValueError, match=r"needs a precision with 1 dimension\(s\), got shape \(3, 3\)"
    ):
        guide.params_from_mean_precision(jnp.zeros(3), jnp.eye(3))


def test_blr_update_does_not_recompile(wells, x64):
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model)
    blr = mpe.BLR(logistic_model, guide, mpe.optim.newton())
    state = blr.init(jax.random.PRNGKey(0), X, y)
    state, _ = blr.update(state, X, y)
    compiled = blr_update._cache_size()
    state, info = blr.update(state, X, y)
    state, info = blr.update(state, X, y * 1.0)
    assert blr_update._cache_size() == compiled
    assert np.isfinite(info.loss)


@pytest.mark.filterwarnings("ignore:loo. the params are not a fit")  # mid-fit or other data
def test_loo_and_perturb_compile_once(wells_fit):
    X, y, guide, result = wells_fit
    mpe.loo(logistic_model, guide, result.params, X, y)
    mpe.perturb(logistic_model, guide, result.params, [1], X, y)
    compiled = (loo_core._cache_size(), perturb_core._cache_size())
    mpe.loo(logistic_model, guide, result.params, X, 1.0 - y)
    mpe.perturb(logistic_model, guide, result.params, [2, 3], X, y)
    assert (loo_core._cache_size(), perturb_core._cache_size()) == compiled


def test_python_number_arguments_are_static(x64):
    def model(n, scale, y=None):
        mu = numpyro.sample("mu", dist.Normal(0, scale))
        with numpyro.plate("data", n):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.arange(5.0)
    guide = mpe.AutoGaussian(model)
    result = mpe.BLR(model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 10, 5, 10.0, y, progress_bar=False
    )
    # Posterior of mu: precision 1/100 + 5, mean sum(y) / precision.
    np.testing.assert_allclose(result.params["auto_precision"], [[5.01]], rtol=1e-12)
    np.testing.assert_allclose(result.params["auto_loc"], [10.0 / 5.01], rtol=1e-12)
    assert np.isfinite(mpe.loo(model, guide, result.params, 5, 10.0, y).elpd)


def test_losses_decrease_and_early_stop(wells, x64):
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model)
    result = mpe.BLR(logistic_model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 100, X, y, progress_bar=False
    )
    losses = np.asarray(result.losses)
    assert len(losses) < 10
    assert np.all(np.diff(losses) <= 1e-9)


def test_newton_damps_a_bad_start(x64):
    """Far from the mode a plain Newton step on a logistic loss overshoots; the
    Levenberg-Marquardt damping keeps every step downhill."""
    data = data_json("posteriordb/nes_logit_data.json")
    X = np.stack([np.ones(data["N"]), np.asarray(data["income"], float)], 1)
    y = np.asarray(data["vote"], float)
    pm = mpe.trace_model(logistic_model, X, y)
    optimizer = mpe.optim.newton()
    loss = jax.jit(lambda theta: -pm.log_joint(theta))
    state = optimizer.init(jnp.array([8.0, -8.0]), loss)
    losses = [float(state.loss)]
    for _ in range(40):
        state, info = optimizer.update(state, loss)
        losses.append(float(info.loss))
        if info.converged:
            break
    assert np.all(np.diff(losses) <= 0)
    assert float(info.decrement) < 1e-10


def test_not_positive_definite_raises(x64):
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        free = numpyro.sample("free", dist.ImproperUniform(dist.constraints.real, (), ()))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu + 0 * free, 1), obs=y)

    guide = mpe.AutoGaussian(model, init_loc_fn=numpyro.infer.init_to_value(values={"free": 0.0}))
    with pytest.raises(mpe.NotPositiveDefiniteError, match="not positive definite"):
        mpe.BLR(model, guide, mpe.optim.newton()).run(
            jax.random.PRNGKey(0), 10, jnp.zeros(5), progress_bar=False
        )


def test_perturb_and_loo_input_errors(wells_fit):
    X, y, guide, result = wells_fit
    with pytest.raises(ValueError, match="index 3020 is out of range for 3020 examples"):
        mpe.perturb(logistic_model, guide, result.params, [3020], X, y)
    with pytest.raises(ValueError, match=r"a boolean mask must have shape \(3020,\)"):
        mpe.perturb(logistic_model, guide, result.params, np.ones(5, bool), X, y)
    weights = np.ones(3020)
    weights[9] = 1.5
    with pytest.raises(ValueError, match=r"weight 1.5 at index 9 is outside \[0, 1\]"):
        mpe.perturb(logistic_model, guide, result.params, None, X, y, weights=weights)
    with pytest.raises(ValueError, match="method must be one of"):
        mpe.loo(logistic_model, guide, result.params, X, y, method="exact")
    with pytest.raises(ValueError, match="reliability_threshold must be in"):
        mpe.loo(logistic_model, guide, result.params, X, y, reliability_threshold=0.0)
    X_bad = np.array(X)
    X_bad[5, 2] = np.inf
    with pytest.raises(mpe.ModelError, match=r"contains inf at index \(5, 2\)"):
        mpe.loo(logistic_model, guide, result.params, X_bad, y)


def test_perturb_removing_everything_that_identifies_a_direction_raises(x64):
    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1e3).expand([2]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, 0.01), obs=y)

    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([1.0, 1.0, 2.0])
    guide = mpe.AutoGaussian(model)
    result = mpe.BLR(model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 5, X, y, progress_bar=False
    )
    params = mpe.perturb(model, guide, result.params, [2], X, y)
    # Only the prior (sd 1e3) is left on beta[1].
    np.testing.assert_allclose(params["auto_precision"][1, 1], 1e-6, rtol=1e-6)


def test_empty_removal_is_the_identity(wells_fit):
    X, y, guide, result = wells_fit
    params = mpe.perturb(logistic_model, guide, result.params, [], X, y)
    np.testing.assert_allclose(params["auto_loc"], result.params["auto_loc"], rtol=1e-12)


def test_run_warns_when_no_step_decreases_the_loss(wells, x64):
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model)
    blr = mpe.BLR(logistic_model, guide, mpe.optim.newton(max_damping_steps=0))
    state = blr.init(jax.random.PRNGKey(0), X, y)
    # A negative damping makes H + mu I indefinite, and no retry is allowed: no step.
    state = state._replace(optim_state=state.optim_state._replace(damping=jnp.array(-1e6)))
    with pytest.warns(mpe.ConvergenceWarning, match="no step decreased the loss"):
        fit = blr.run(jax.random.PRNGKey(0), 5, X, y, init_state=state, progress_bar=False)
    # Newton's info says converged (it stops there), the result does not.
    assert fit.converged is False
    assert blr.run(jax.random.PRNGKey(0), 50, X, y, progress_bar=False).converged is True


@pytest.mark.parametrize("dense", [True, False])
def test_gaussian_draws_and_log_density_match_numpyro(x64, dense):
    from numpyro_mpe.core.gaussian import draws_from_standard_normal, log_density

    mean = np.array([1.0, -2.0, 0.5])
    precision = (
        np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]])
        if dense
        else np.array([2.0, 0.25, 4.0])
    )
    z = np.random.default_rng(0).normal(size=(5, 3))
    theta, log_q = draws_from_standard_normal(z, mean, precision)
    reference = (
        dist.MultivariateNormal(mean, precision_matrix=precision)
        if dense
        else dist.Normal(mean, 1 / np.sqrt(precision)).to_event(1)
    )
    np.testing.assert_allclose(log_q, reference.log_prob(theta), rtol=1e-12)
    np.testing.assert_allclose(log_density(theta, mean, precision), log_q, rtol=1e-12)


@pytest.mark.parametrize(
    ("covariance", "optimizer", "keeps"),
    [
        ("dense", lambda: mpe.optim.iblr(0.1), "diag"),
        ("diag", lambda: mpe.optim.online_newton(0.5), "dense"),
        ("diag", lambda: mpe.optim.von(0.1, covariance="dense"), "dense"),
        ("dense", lambda: mpe.optim.von(0.1, covariance="diag"), "diag"),
    ],
)
def test_guide_and_optimizer_of_different_families_are_refused(covariance, optimizer, keeps):
    """Once silently converted (a dense guide trained by the diagonal iBLR gave a
    diagonal precision labelled dense: elpd_loo -1966.45 against -1968.43 on wells)."""
    guide = mpe.AutoGaussian(logistic_model, covariance=covariance)
    with pytest.raises(ValueError, match=f"optimizer keeps a {keeps} precision .* covariance="):
        mpe.BLR(logistic_model, guide, optimizer())


def test_blr_refuses_what_is_not_an_optimizer():
    with pytest.raises(TypeError, match=r"optimizer must be a numpyro_mpe\.optim optimizer"):
        mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), object())


def test_init_params_warm_start(wells, x64):
    """``BLR.init(init_params=...)`` (as ``SVI.init``) starts at the given mean: from the
    fitted mean, Newton has nothing left to do."""
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model)
    blr = mpe.BLR(logistic_model, guide, mpe.optim.newton())
    fit = blr.run(jax.random.PRNGKey(0), 50, X, y, progress_bar=False)
    state = blr.init(jax.random.PRNGKey(1), X, y, init_params=fit.params)
    np.testing.assert_array_equal(state.optim_state.mean, fit.params["auto_loc"])
    again = blr.run(jax.random.PRNGKey(1), 50, X, y, progress_bar=False, init_state=state)
    assert again.losses.shape == (1,)
    # One more Newton step from the converged mean moves it by float64 rounding only.
    np.testing.assert_allclose(again.params["auto_loc"], fit.params["auto_loc"], atol=1e-10)
    with pytest.raises(ValueError, match="init_params must hold the guide's mean 'auto_loc'"):
        blr.init(jax.random.PRNGKey(1), X, y, init_params={"loc": fit.params["auto_loc"]})
    with pytest.raises(ValueError, match=r"guide latent size \(2,\) differs"):
        blr.init(jax.random.PRNGKey(1), X, y, init_params={"auto_loc": np.zeros(2)})
    # BLR.run takes init_params too (as SVI.run), not with init_state.
    warm = blr.run(jax.random.PRNGKey(1), 50, X, y, progress_bar=False, init_params=fit.params)
    assert warm.losses.shape == (1,)
    with pytest.raises(ValueError, match="pass init_state or init_params, not both"):
        blr.run(jax.random.PRNGKey(1), 5, X, y, init_state=state, init_params=fit.params)


def test_progress_bar_is_silent_when_not_a_terminal(wells, x64, capsys):
    """tqdm's convention: no bar (and no line per step) when stderr is not a TTY, as in
    a log or under pytest; ``progress_bar=False`` turns it off everywhere."""
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    blr = mpe.BLR(logistic_model, guide, mpe.optim.iblr(0.1))
    blr.run(jax.random.PRNGKey(0), 300, X, y)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_params_are_checked_before_use(wells_fit, kidiq, x64):
    """Wrong params are an error naming what is wrong, never a silently wrong number (a
    zero in a diagonal precision was read as 1 by loo; a NaN mean gave a NaN mean)."""
    X, y, guide, result = wells_fit
    mean, precision = guide.mean_precision(result.params)
    diag = mpe.AutoGaussian(logistic_model, covariance="diag")
    diag_params = diag.params_from_mean_precision(mean, np.diag(precision))
    calls = {
        "loo": lambda g, p: mpe.loo(logistic_model, g, p, X, y),
        "perturb": lambda g, p: mpe.perturb(logistic_model, g, p, [0], X, y),
        "sensitivity": lambda g, p: mpe.sensitivity(logistic_model, g, p, X, y),
        "exact_loo": lambda g, p: mpe.exact_loo(logistic_model, g, p, X, y, indices=[0]),
    }
    for where, call in calls.items():
        with pytest.raises(ValueError, match=rf"{where}: params lack \['auto_loc'"):
            call(guide, {})
        with pytest.raises(ValueError, match=f"{where}: params hold a diag precision"):
            call(guide, diag_params)
        with pytest.raises(ValueError, match=f"{where}: params hold a dense precision"):
            call(diag, result.params)
        with pytest.raises(ValueError, match=f"{where}: params hold 2 latents .* P = 3"):
            call(guide, guide.params_from_mean_precision(mean[:2], precision[:2, :2]))
        with pytest.raises(
            ValueError, match=rf"{where}: 'auto_loc' is not finite at index \(1,\)"
        ):
            call(guide, {**result.params, "auto_loc": mean.at[1].set(np.nan)})
        with pytest.raises(
            mpe.NotPositiveDefiniteError, match=rf"{where}: .*auto_precision\[2\] = 0"
        ):
            call(diag, {**diag_params, "auto_precision": jnp.diag(precision).at[2].set(0.0)})
        with pytest.raises(mpe.NotPositiveDefiniteError, match=f"{where}: the precision is not"):
            call(guide, {**result.params, "auto_precision": -precision})
    # Lists are arrays: accepted.
    as_lists = {name: np.asarray(value).tolist() for name, value in result.params.items()}
    np.testing.assert_allclose(
        mpe.loo(logistic_model, guide, as_lists, X, y).elpd,
        mpe.loo(logistic_model, guide, result.params, X, y).elpd,
        rtol=1e-12,
    )


def test_exact_loo_refuses_zero_steps(wells_fit):
    """``num_steps=0`` once returned the full-data densities labelled as refits."""
    X, y, guide, result = wells_fit
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_steps must be a positive integer"):
            mpe.exact_loo(logistic_model, guide, result.params, X, y, num_steps=bad)


class _StepInfo(NamedTuple):
    loss: jax.Array
    converged: jax.Array


def _breaks_at_step_three() -> mpe.optim.NaturalGradientOptimizer:
    """A diagonal optimizer (written to the contract) whose mean turns NaN at step 3."""

    def init(mean, loss_fn, **extras):
        return jnp.asarray(mean), jnp.zeros((), jnp.int32)

    def update(state, loss_fn, **extras):
        mean, step = state
        mean = jnp.where(step + 1 >= 3, jnp.nan, mean - 0.01 * jax.grad(loss_fn)(mean))
        return (mean, step + 1), _StepInfo(loss_fn(mean), jnp.zeros((), bool))

    def mean_precision(state, covariance):
        return state[0], jnp.ones_like(state[0])

    return mpe.optim.NaturalGradientOptimizer(init, update, mean_precision, covariance="diag")


def test_run_stops_at_the_step_where_the_loss_turns_nan(wells, x64):
    """Once, NaN surfaced after all steps as "smallest eigenvalue nan ... run more steps"
    or a LinAlgError; now the step is named, with the last finite loss."""
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    blr = mpe.BLR(logistic_model, guide, _breaks_at_step_three())
    message = r"loss is (nan|inf) after step 3 of 50 \(last finite: .* at step 2\)"
    with pytest.raises(FloatingPointError, match=message):
        blr.run(jax.random.PRNGKey(0), 50, X, y, progress_bar=False, checkpoints=[3])


def test_run_takes_pandas_and_xarray_data(x64):
    """A DataFrame and Series, or xarray DataArrays, are fitted as their numpy values:
    the same params to ``rtol 1e-12`` (the same float64 arrays reach the same steps)."""
    import pandas as pd
    import xarray as xr

    rng = np.random.default_rng(0)
    X = np.stack([np.ones(30), rng.normal(size=30)], axis=1)
    y = (rng.random(30) < 0.5).astype(float)
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), mpe.optim.newton())
    expected = blr.run(jax.random.PRNGKey(0), 20, X, y, progress_bar=False).params
    for data in [
        (pd.DataFrame(X, columns=["one", "x"]), pd.Series(y, name="y")),
        (xr.DataArray(X, dims=("row", "column")), xr.DataArray(y, dims="row")),
    ]:
        params = blr.run(jax.random.PRNGKey(0), 20, *data, progress_bar=False).params
        for name, value in expected.items():
            np.testing.assert_allclose(params[name], value, rtol=1e-12)
