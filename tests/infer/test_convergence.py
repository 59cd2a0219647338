"""What ``BLR.run`` and ``exact_loo`` say about runs that did not converge, and the
driver's argument errors (raised before any work)."""

from __future__ import annotations

import re

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import logistic_model
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta

import numpyro_mpe as mpe
from numpyro_mpe import optim

KEY = jax.random.PRNGKey(0)


def _small_logistic():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(60), rng.normal(size=60)])
    y = (rng.random(60) < 0.5).astype(float)
    return X, y


def flat_prior_logistic(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1e4).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def model_with_a_plate_argument(X, y=None, plate="data"):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate(plate, X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def test_newton_out_of_steps_warns_and_says_so(x64):
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    with pytest.warns(mpe.ConvergenceWarning, match=r"not converged after 1 of num_steps=1"):
        fit = blr.run(KEY, 1, X * 5, y, progress_bar=False)
    assert not fit.converged
    # Enough steps: converged, and no warning (filterwarnings = error).
    assert blr.run(KEY, 50, X, y, progress_bar=False).converged


def test_float32_newton_counts_float_resolution_as_converged():
    X, y = (np.asarray(a, np.float32) for a in _small_logistic())
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.online_newton())
    fit = blr.run(KEY, 200, X, y, progress_bar=False)
    assert fit.converged and fit.losses.dtype == np.float32


def test_diverging_iblr_warns(x64):
    X, y = _small_logistic()
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    blr = mpe.BLR(logistic_model, guide, optim.iblr(lr=optax.constant_schedule(1e6)))
    with pytest.warns(mpe.ConvergenceWarning, match=r"the loss rose from \d.* to .*diverging"):
        fit = blr.run(KEY, 30, X, y, progress_bar=False)
    assert not fit.converged


def test_an_unsettled_precision_average_warns(x64):
    """iBLR and VON with draws average their precision over the steps: on a full batch,
    BLR.run warns, naming the optimizer, while the initial value still shows (weight
    above 1/2, or a pull above 5% from the estimates' average) or the Monte Carlo error
    is above 10%. Measured here: default iblr is silent from 30 steps (diag) or 100
    (dense) on, von(0.01) from 100."""
    X, y = _small_logistic()
    cases = [
        (optim.iblr(0.1), 10, r"weight 0.349 and shifts it by 1\d\.\d%"),
        (optim.iblr(0.1, covariance="dense"), 30, r"Monte Carlo standard error is about 15"),
        (optim.iblr(0.1, beta2=0.99999, hess_init=1.0), 100, r"carries weight 0.999 and"),
        (optim.von(0.01, covariance="diag"), 30, r"carries weight 0.74 and shifts it by 1"),
    ]
    for optimizer, num_steps, message in cases:
        guide = mpe.AutoGaussian(logistic_model, covariance=optimizer.covariance)
        blr = mpe.BLR(logistic_model, guide, optimizer)
        name = f"optim.{optimizer.name}"
        with pytest.warns(
            mpe.ConvergenceWarning, match=rf"{name} has not settled after {num_steps} steps: .*"
        ) as record:
            fit = blr.run(KEY, num_steps, X, y, progress_bar=False)
        assert re.search(message, str(record[0].message)), str(record[0].message)
        assert not fit.converged
    # Long enough: silent (filterwarnings = error). Minibatch runs are not checked, as
    # for the not-converged warning.
    blr = mpe.BLR(
        logistic_model, mpe.AutoGaussian(logistic_model, covariance="diag"), optim.iblr(0.1)
    )
    blr.run(KEY, 300, X, y, progress_bar=False)
    blr.run(KEY, 10, X, y, batch_size=20, progress_bar=False)


def test_a_negative_schedule_is_refused_before_the_run(x64):
    X, y = _small_logistic()
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    schedule = optax.linear_schedule(0.5, -0.5, 10)
    for optimizer, allowed in (
        (optim.iblr(lr=schedule), r"\(0, inf\)"),
        (optim.online_newton(lr=schedule, covariance="diag"), r"\(0, 1\]"),
    ):
        blr = mpe.BLR(logistic_model, guide, optimizer)
        with pytest.raises(
            ValueError, match=rf"lr schedule gives -?0 at step 5, outside {allowed}"
        ):
            blr.run(KEY, 20, X, y, progress_bar=False)


def test_separable_data_under_a_flat_prior_warns(x64):
    X = np.column_stack([np.ones(60), np.r_[-np.ones(30), np.ones(30)]])
    y = np.r_[np.zeros(30), np.ones(30)]
    blr = mpe.BLR(flat_prior_logistic, mpe.AutoGaussian(flat_prior_logistic), optim.newton())
    with pytest.warns(mpe.ConvergenceWarning) as record:
        blr.run(KEY, 60, X, y, progress_bar=False)
    messages = " ".join(str(w.message) for w in record)
    assert "60 of 60 examples are fitted with probability above 1 - 1e-08" in messages
    assert "the data look separable" in messages


@pytest.mark.parametrize("key", [0, None, np.zeros(3, np.uint32), "seed"])
def test_rng_key_must_be_a_key(key):
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    with pytest.raises(TypeError, match=r"BLR.run: rng_key must be a jax PRNG key"):
        blr.run(key, 5, X, y)
    with pytest.raises(TypeError, match=r"BLR.init: rng_key must be a jax PRNG key"):
        blr.init(key, X, y)


def test_typed_keys_are_accepted(x64):
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    assert blr.run(jax.random.key(0), 50, X, y, progress_bar=False).converged


@pytest.mark.parametrize(("name", "value"), [("num_steps", 2.5), ("num_steps", True)])
def test_step_counts_must_be_integers(name, value):
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    with pytest.raises(TypeError, match=rf"{name} must be an integer, got {value!r}"):
        blr.run(KEY, value, X, y)
    with pytest.raises(TypeError, match=rf"epochs must be an integer, got {value!r}"):
        blr.run(KEY, None, X, y, epochs=value)


def test_plate_belongs_to_blr_not_to_run(x64):
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    with pytest.raises(TypeError, match=r"BLR.run got plate='data': the plate of examples"):
        blr.run(KEY, 5, X, y, plate="data")
    with pytest.raises(TypeError, match=r"BLR.init got plate='data': the plate of examples"):
        blr.init(KEY, X, y, plate="data")
    # A model argument named plate goes positionally.
    guide = mpe.AutoGaussian(model_with_a_plate_argument)
    blr = mpe.BLR(model_with_a_plate_argument, guide, optim.newton(), plate="rows")
    assert blr.run(KEY, 50, X, y, "rows", progress_bar=False).converged


def test_newton_refuses_minibatches():
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    with pytest.raises(ValueError, match=r"batch_size=10: this optimizer \(optim.newton\)"):
        blr.run(KEY, 5, X, y, batch_size=10)


def test_exact_loo_names_refits_that_did_not_converge(x64):
    X, y = _small_logistic()
    guide = mpe.AutoGaussian(logistic_model)
    params = mpe.BLR(logistic_model, guide, optim.newton()).run(KEY, 50, X, y).params
    with pytest.warns(mpe.ConvergenceWarning, match=r"exact_loo: \d+ of 3 refits did not "):
        mpe.exact_loo(logistic_model, guide, params, X, y, indices=[0, 1, 2], num_steps=1)
    # Enough steps: silent.
    mpe.exact_loo(logistic_model, guide, params, X, y, indices=[0, 1, 2])


def test_posterior_from_svi_refuses_numpyro_optimizers(x64):
    X, y = _small_logistic()
    svi = SVI(logistic_model, AutoDelta(logistic_model), numpyro.optim.Adam(1e-2), Trace_ELBO())
    state = svi.run(KEY, 5, X, y, progress_bar=False).state
    with pytest.raises(TypeError, match=r"svi.optim is Adam, whose state it cannot read"):
        mpe.posterior_from_svi(svi, state, X, y)
    with pytest.raises(TypeError, match=r"takes a numpyro.infer.SVI first, got function"):
        mpe.posterior_from_svi(logistic_model, state, X, y)


def test_run_arguments_are_checked_before_the_steps(x64):
    X, y = _small_logistic()
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), optim.newton())
    cases = [
        ({"checkpoints": 3}, TypeError, r"checkpoints must be a sequence of steps, e.g."),
        ({"checkpoints": [2.5]}, TypeError, r"a checkpoint step must be an integer, got 2.5"),
        ({"checkpoints": [2], "checkpoint_fn": 3}, TypeError, r"checkpoint_fn must be a funct"),
        ({"init_state": {"step": 0}}, TypeError, r"init_state must be a BLRState .* got dict"),
        ({"init_params": [0.0, 0.0]}, TypeError, r"init_params must be guide params .* list"),
        (
            {"init_params": {"auto_loc": np.array([np.nan, 0.0])}},
            ValueError,
            r"init_params\['auto_loc'\] is not finite at index 0",
        ),
    ]
    for keywords, error, message in cases:
        with pytest.raises(error, match=message):
            blr.run(KEY, 5, X, y, progress_bar=False, **keywords)
    iblr_blr = mpe.BLR(
        logistic_model, mpe.AutoGaussian(logistic_model, covariance="diag"), optim.iblr(0.1)
    )
    with pytest.raises(TypeError, match=r"batch_size must be an integer, got 2.5"):
        iblr_blr.init(KEY, X, y, batch_size=2.5)
