"""Minibatch BLR: O(B) gathered batches, the weighted fallback, epochs, batch order."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import logistic_model

import numpyro_mpe as mpe
from numpyro_mpe.core.model import split_arguments
from numpyro_mpe.core.rows import MinibatchPlan
from numpyro_mpe.infer.blr import negative_log_joint
from numpyro_mpe.infer.minibatch import minibatch_indices


def _iblr_blr(model=logistic_model):
    guide = mpe.AutoGaussian(model, covariance="diag")
    return mpe.BLR(model, guide, mpe.optim.iblr(0.1, beta2=0.99, hess_init=0.1, mc_samples=4))


def test_standard_model_gathers_the_batch_rows(wells, x64):
    X, y = wells
    rows_seen = []

    def model(X, y=None):
        rows_seen.append(X.shape[0])
        logistic_model(X, y)

    blr = _iblr_blr(model)
    state = blr.init(jax.random.PRNGKey(0), X, y, batch_size=256)
    assert state.minibatch == MinibatchPlan("gather", 3020, (True, True))
    rows_seen.clear()
    state, info = blr.update(state, X, y, batch_size=256)
    # Compiling the step traced the model on the 256 rows of a batch only: O(B) per step.
    assert rows_seen and set(rows_seen) == {256}
    assert state.minibatch.path == "gather" and np.isfinite(info.loss)

    # The gathered loss is the prior plus N / B times the batch's log likelihood.
    arrays, static = split_arguments((X, y), {})
    key, step, theta = jax.random.PRNGKey(5), 7, jnp.array([0.1, -0.3, 0.4])
    loss_fn, _ = negative_log_joint(model, None, static, arrays, (key, step, 256), state.minibatch)
    plate_model = mpe.trace_model(logistic_model, X, y)
    members = np.asarray(minibatch_indices(key, step, 256, 3020))
    expected = (
        plate_model.log_prior(theta) + 3020 / 256 * plate_model.log_lik(theta)[members].sum()
    )
    np.testing.assert_allclose(loss_fn(theta), -expected, rtol=1e-12)


def _plate_size_argument_model(n, X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", n):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def _centering_model(X, y=None):
    # X's rows are per example, but its column means use all of them: not per example.
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        logits = (X - X.mean(0)) @ beta
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_plate_size_argument_model, "does not follow their leading axis|fails on a slice"),
        (_centering_model, "not per example"),
    ],
)
def test_fallback_to_weights_when_the_model_does_not_subsample(wells, x64, model, reason):
    X, y = wells
    # The plate size argument is a Python int: static, so the slice cannot change it.
    args = (3020, X[:, 1:], y) if model is _plate_size_argument_model else (X[:, 1:], y)
    blr = _iblr_blr(model)
    result = blr.run(jax.random.PRNGKey(0), 12, *args, batch_size=1000, progress_bar=False)
    assert result.state.minibatch.path == "weights"
    assert result.state.minibatch.num_examples == 3020
    assert re.search(reason, result.state.minibatch.reason)
    assert len(result.losses) == 12 and np.all(np.isfinite(result.losses))


@pytest.mark.parametrize("optimizer", ["iblr", "online_newton"])
def test_gathered_and_weighted_paths_reach_the_same_posterior(wells, x64, optimizer):
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model, covariance="diag")
    if optimizer == "iblr":
        opt = mpe.optim.iblr(0.3, beta2=0.99, hess_init=0.1, mc_samples=4)
    else:
        opt = mpe.optim.online_newton(0.2, covariance="diag")
    blr = mpe.BLR(logistic_model, guide, opt)
    key = jax.random.PRNGKey(0)
    gathered_state = blr.init(key, X, y, batch_size=302)
    weighted_state = gathered_state._replace(
        minibatch=MinibatchPlan("weights", 3020, (True, True), "forced by the test")
    )
    runs = [
        blr.run(key, 150, X, y, batch_size=302, init_state=state, progress_bar=False)
        for state in (gathered_state, weighted_state)
    ]
    assert [run.state.minibatch.path for run in runs] == ["gather", "weights"]
    # Same batches (same permutations), same noise draws: the two losses differ only in
    # the order of float64 sums (N / B * sum over the batch against a weighted dot over
    # all N), ~1e-16 relative per step; over 150 steps of a contracting iteration the
    # difference stayed below 1e-13 (measured), 1e-9 leaves a wide margin.
    for name in ("auto_loc", "auto_precision"):
        np.testing.assert_allclose(runs[0].params[name], runs[1].params[name], rtol=1e-9)
    np.testing.assert_allclose(runs[0].losses, runs[1].losses, rtol=1e-9)


def test_epochs_set_the_number_of_steps(wells, x64):
    X, y = wells
    blr = _iblr_blr()
    key = jax.random.PRNGKey(0)
    # iblr never stops early: 2 epochs of ceil(3020 / 1000) = 4 batches.
    result = blr.run(key, None, X, y, batch_size=1000, epochs=2, progress_bar=False)
    assert len(result.losses) == 8 and int(result.state.step) == 8
    # Without batch_size an epoch is one full-batch step (3 steps: the precision average
    # has not settled, and BLR.run says so).
    with pytest.warns(mpe.ConvergenceWarning, match="has not settled after 3 steps"):
        result = blr.run(key, None, X, y, epochs=3, progress_bar=False)
    assert len(result.losses) == 3 and result.state.minibatch is None


def test_every_example_is_seen_each_epoch():
    key = jax.random.PRNGKey(3)
    indices = jax.jit(minibatch_indices, static_argnums=(2, 3))
    for num_examples, batch_size in [(12, 4), (10, 4), (7, 7), (1, 1), (3020, 302)]:
        steps_per_epoch = -(-num_examples // batch_size)
        epochs = []
        for epoch in range(2):
            batches = [
                np.asarray(indices(key, step, batch_size, num_examples))
                for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
            ]
            for batch in batches:
                assert len(set(batch.tolist())) == batch_size  # distinct within a batch
            order = np.concatenate(batches)
            # Every example once, then the last batch filled up from the epoch's start.
            assert sorted(order[:num_examples].tolist()) == list(range(num_examples))
            np.testing.assert_array_equal(order[num_examples:], order[: len(order) - num_examples])
            epochs.append(order)
        if num_examples > 2:
            assert not np.array_equal(epochs[0], epochs[1])  # a fresh order each epoch


def test_batch_membership_is_uniform():
    """Over many keys each example, and each pair, is in the first batch as often as for
    a uniformly random subset (a check of the pseudorandom permutation's quality)."""
    num_examples, batch_size, num_keys = 64, 8, 4000
    keys = jax.random.split(jax.random.PRNGKey(1), num_keys)
    batches = np.asarray(
        jax.jit(jax.vmap(lambda k: minibatch_indices(k, 0, batch_size, num_examples)))(keys)
    )
    counts = np.bincount(batches.ravel(), minlength=num_examples)
    p = batch_size / num_examples
    z = (counts - num_keys * p) / np.sqrt(num_keys * p * (1 - p))
    assert np.max(np.abs(z)) < 4.5  # 64 binomial z-scores: max |z| > 4.5 has p ~ 4e-4
    indicator = np.zeros((num_keys, num_examples))
    np.put_along_axis(indicator, batches, 1.0, axis=1)
    pairs = (indicator.T @ indicator)[~np.eye(num_examples, dtype=bool)]
    expected = num_keys * p * (batch_size - 1) / (num_examples - 1)  # 55.6
    # Pair counts are ~Poisson(55.6): their mean is exact, their spread is Poisson's.
    assert pairs.mean() == pytest.approx(expected, rel=1e-12)
    assert 0.8 < pairs.std() / np.sqrt(expected) < 1.2
    assert pairs.max() < expected + 6 * np.sqrt(expected)


def test_minibatch_input_errors(wells, x64):
    X, y = wells
    blr = _iblr_blr()
    key = jax.random.PRNGKey(0)
    for bad in (0, -1, 3021):
        with pytest.raises(ValueError, match=rf"batch_size must be in \[1, 3020\], got {bad}"):
            blr.run(key, 5, X, y, batch_size=bad, progress_bar=False)
    state = blr.init(key, X, y)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 3020\], got 5000"):
        blr.update(state, X, y, batch_size=5000)
    with pytest.raises(ValueError, match="epochs must be at least 1, got 0"):
        blr.run(key, None, X, y, batch_size=100, epochs=0, progress_bar=False)
    with pytest.raises(ValueError, match=r"pass num_steps or epochs, not both .*epochs=2"):
        blr.run(key, 10, X, y, batch_size=100, epochs=2, progress_bar=False)
    with pytest.raises(ValueError, match="num_steps is None: pass num_steps"):
        blr.run(key, None, X, y, batch_size=100, progress_bar=False)
