"""Network models written as plain sample sites, Flax linen, Flax nnx and Equinox
modules (``numpyro.contrib.module``): the same Gaussian over the same weights gives the
same ``loo``, ``sensitivity`` and ``perturb`` whichever way the model is written."""

from __future__ import annotations

import re
from pathlib import Path

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from models import mom_work_design
from numpyro.contrib.module import random_eqx_module, random_flax_module, random_nnx_module

import numpyro_mpe as mpe
from numpyro_mpe import optim

NETWORKS_DOC = Path(__file__).resolve().parents[2] / "docs" / "networks.md"
HIDDEN, CLASSES, FEATURES = 5, 4, 4
PRIOR = dist.Normal(0.0, 1.0)


def plain(X, y=None):
    w1 = numpyro.sample("w1", PRIOR.expand([FEATURES, HIDDEN]).to_event(2))
    b1 = numpyro.sample("b1", PRIOR.expand([HIDDEN]).to_event(1))
    w2 = numpyro.sample("w2", PRIOR.expand([HIDDEN, CLASSES]).to_event(2))
    b2 = numpyro.sample("b2", PRIOR.expand([CLASSES]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        logits = jnp.tanh(X @ w1 + b1) @ w2 + b2
        numpyro.sample("y", dist.Categorical(logits=logits), obs=y)


class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        hidden = linen.Dense(HIDDEN, name="hidden")(x)
        return linen.Dense(CLASSES, name="out")(jnp.tanh(hidden))


def flax_linen(X, y=None):
    net = random_flax_module("net", LinenMLP(), prior=PRIOR, input_shape=(1, FEATURES))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=net(X)), obs=y)


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


NNX_MLP = NnxMLP(nnx.Rngs(0))
EQX_MLP = eqx.nn.MLP(FEATURES, CLASSES, HIDDEN, 1, activation=jnp.tanh, key=jax.random.key(0))


def flax_nnx(X, y=None):
    net = random_nnx_module("net", NNX_MLP, prior=PRIOR)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=net(X)), obs=y)


def equinox(X, y=None):
    net = random_eqx_module("net", EQX_MLP, prior=PRIOR)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=jax.vmap(net)(X)), obs=y)


def site_values(model, weights: dict) -> dict:
    """The plain model's ``w1, b1, w2, b2`` under the module's site names (Equinox
    stores ``(out, in)`` weights, Flax ``(in, out)`` kernels)."""
    if model is plain:
        return weights
    if model is equinox:
        return {
            "net/layers[0].weight": weights["w1"].T,
            "net/layers[0].bias": weights["b1"],
            "net/layers[1].weight": weights["w2"].T,
            "net/layers[1].bias": weights["b2"],
        }
    return {
        "net/hidden.kernel": weights["w1"],
        "net/hidden.bias": weights["b1"],
        "net/out.kernel": weights["w2"],
        "net/out.bias": weights["b2"],
    }


def flat(model, weights: dict, X, y) -> np.ndarray:
    """``site_values`` flattened in the model's latent order."""
    shapes = mpe.trace_model(model, X, y).latent_shapes
    values = site_values(model, weights)
    assert {name: np.shape(values[name]) for name in shapes} == shapes
    return np.concatenate([np.ravel(values[name]) for name in shapes])


@pytest.fixture(scope="module")
def gaussian():
    """``(X, y, mean, precision)`` of the plain model as site dicts: a point and a
    positive diagonal precision that differ per coordinate, so a misplaced weight shows."""
    X, y = mom_work_design()
    rng = np.random.default_rng(0)
    shapes = {"w1": (FEATURES, HIDDEN), "b1": (HIDDEN,), "w2": (HIDDEN, CLASSES), "b2": (CLASSES,)}
    mean = {name: 0.5 * rng.normal(size=shape) for name, shape in shapes.items()}
    precision = {name: rng.uniform(20, 80, size=shape) for name, shape in shapes.items()}
    return X, y, mean, precision


@pytest.mark.parametrize("model", [flax_linen, flax_nnx, equinox])
def test_modules_give_the_plain_models_numbers(gaussian, model, x64):
    X, y, mean, precision = gaussian
    results = {}
    for form in (plain, model):
        guide = mpe.AutoGaussian(form, covariance="diag")
        params = guide.params_from_mean_precision(
            flat(form, mean, X, y), flat(form, precision, X, y)
        )
        # prepare_loo: these params are not a fit, and loo would say so.
        prepared = mpe.prepare_loo(form, guide, X, y)
        sens = mpe.sensitivity(form, guide, params, X, y)
        removed = guide.mean_precision(mpe.perturb(form, guide, params, [7, 300], X, y))
        results[form] = (
            np.asarray(prepared(params).elpd_i),
            np.asarray(sens.mahalanobis),
            np.asarray(sens.prediction_shift),
            np.sort(np.asarray(removed[0])),
        )
    for ours, theirs in zip(results[plain], results[model], strict=True):
        np.testing.assert_allclose(theirs, ours, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model", [flax_linen, flax_nnx])
def test_default_iblr_fits_flax_modules(model):
    # float32 and the optimizer's defaults, with minibatches, as a network user runs it
    # (the Equinox form: the documented snippet below; plain sites: the rest of the suite).
    X, y = mom_work_design()
    guide = mpe.AutoGaussian(model, covariance="diag")
    blr = mpe.BLR(model, guide, optim.iblr(0.05))
    result = blr.run(jax.random.PRNGKey(0), 300, X, y, batch_size=64, progress_bar=False)
    elpd = mpe.prepare_loo(model, guide, X, y)(result.params).elpd
    # 434 children, 4 classes: the prior predictive's log score is about -434 log 4 =
    # -602; the network learns mom_work from the kid's and mother's scores a little.
    assert -600 < elpd < -500, elpd


def test_documented_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", NETWORKS_DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:  # the second uses the first's fit
        exec(compile(block, "docs/networks.md", "exec"), namespace)
    # Wells' logistic regression on the same three inputs scores about -1960; the
    # network, fitted by 1000 minibatch steps, about as well.
    elpd = namespace["elpd"]
    assert -2000 < elpd.elpd < -1930, elpd.elpd
    sens = namespace["sens"]
    assert sens.shift.shape == (3020, 41) and np.all(np.isfinite(sens.mahalanobis))
    assert sens.names[0] == "net/layers[0].weight[0,0]"
    # The held-out examples are the first three training ones: removing example t moves
    # its own prediction by J_t delta_t, the prediction shift of the plain call, and
    # raises its loss (g_t^T (S - H_t)^-1 g_t > 0): every example helps itself.
    influence = namespace["test_influence"]
    assert influence.test_loss_shift.shape == (3020, 3)
    own = np.arange(3)
    np.testing.assert_allclose(
        influence.test_prediction_shift[own, own], sens.prediction_shift[:3], rtol=1e-4
    )
    assert np.all(np.asarray(influence.test_loss_shift)[own, own] > 0)
    assert namespace["helpful"].shape == (5,)
