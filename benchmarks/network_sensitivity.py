"""Per-example sensitivity, MPE-LOO and the report of a network, against gradient passes.

A tanh MLP ``64 -> H -> 10`` on scikit-learn's digits (1797 images of 8 x 8 pixels,
scaled to [0, 1]; 70% for training, seed 0), fitted by diagonal iBLR with minibatches
of 64 and a cosine-decayed step size from 0.05. Timed in the same process, each warm
(compiled) unless said, in seconds and as a ratio to the baseline:

- baseline: one pass of per-example gradients over the training set, ``vmap(grad)`` of
  each example's loss, jitted (the cost unit of the memory-perturbation paper);
- ``loo``: ``numpyro_mpe.loo`` (first call, then warm);
- ``sensitivity``: ``numpyro_mpe.sensitivity`` (first call, then warm);
- ``report``: ``numpyro_mpe.report`` to an HTML file (first call: includes its PSIS
  from Laplace draws and the ``perturb`` of the most influential examples).

Usage::

    python benchmarks/network_sensitivity.py                 # H = 16 and 32, 1200 steps
    python benchmarks/network_sensitivity.py --hidden 64 --steps 2000
    python benchmarks/network_sensitivity.py --quick         # H = 4, 300 examples
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from sklearn.datasets import load_digits

import numpyro_mpe
from numpyro_mpe import optim

NUM_CLASSES = 10
BATCH_SIZE = 64
LEARNING_RATE = 0.05  # cosine-decayed to 0 over the run


def digits(num_train: int | None = None):
    """Training inputs ``(N, 64)`` in [0, 1] and labels ``(N,)``: a seeded 70% split."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order] / 16.0, y[order]
    n = int(0.7 * len(y)) if num_train is None else num_train
    return X[:n].astype(np.float32), y[:n].astype(np.int32)


def make_mlp(hidden: int):
    def mlp(X, y=None):
        w1 = numpyro.sample("w1", dist.Normal(0, 1).expand([X.shape[1], hidden]).to_event(2))
        b1 = numpyro.sample("b1", dist.Normal(0, 1).expand([hidden]).to_event(1))
        w2 = numpyro.sample("w2", dist.Normal(0, 1).expand([hidden, NUM_CLASSES]).to_event(2))
        b2 = numpyro.sample("b2", dist.Normal(0, 1).expand([NUM_CLASSES]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            logits = jnp.tanh(X @ w1 + b1) @ w2 + b2
            numpyro.sample("y", dist.Categorical(logits=logits), obs=y)

    return mlp


def gradient_pass(model):
    """A jitted function: per-example gradients ``(N, P)`` of ``-log p(y_i | theta)``,
    each from the model run on that example alone."""

    def loss(theta, x, label):
        row = numpyro_mpe.trace_model(model, x[None], label[None], with_predictor=False)
        return -row.log_lik(theta)[0]

    return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, value = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        value = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, value


def run(hidden: int, steps: int, num_train: int | None) -> None:
    X, y = digits(num_train)
    model = make_mlp(hidden)
    guide = numpyro_mpe.AutoGaussian(model, covariance="diag")
    schedule = optax.cosine_decay_schedule(LEARNING_RATE, steps)
    blr = numpyro_mpe.BLR(model, guide, optim.iblr(schedule))
    fit_time, result = timed(
        lambda: blr.run(
            jax.random.PRNGKey(0), steps, X, y, batch_size=BATCH_SIZE, progress_bar=False
        )
    )
    params = result.params
    mean = params[guide.loc_name]
    grads = gradient_pass(model)
    base, _ = timed(lambda: grads(mean, jnp.asarray(X), jnp.asarray(y)), repeats=5)
    rows = [("per-example gradient pass", base)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Reliability warnings of a short fit
        cold, loo = timed(lambda: numpyro_mpe.loo(model, guide, params, X, y).elpd_i.values)
        warm, _ = timed(lambda: numpyro_mpe.loo(model, guide, params, X, y).elpd_i.values, 3)
        rows += [("loo, first call", cold), ("loo", warm)]
        cold, _ = timed(lambda: numpyro_mpe.sensitivity(model, guide, params, X, y).mahalanobis)
        warm, sens = timed(
            lambda: numpyro_mpe.sensitivity(model, guide, params, X, y).mahalanobis, 3
        )
        rows += [("sensitivity, first call", cold), ("sensitivity", warm)]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "report.html"
            cold, _ = timed(lambda: numpyro_mpe.report(model, guide, params, X, y, path=path))
        rows.append(("report, first call", cold))
    size = mean.shape[0]
    print(
        f"\n### MLP 64-{hidden}-10, N = {len(y)}, P = {size}, {jnp.asarray(X).dtype}; "
        f"fit ({steps} iBLR steps) {fit_time:.1f} s; elpd_loo {float(np.sum(loo)):.1f}, "
        f"largest Mahalanobis shift {float(jnp.max(sens)):.3g}\n"
    )
    print("| step | seconds | / gradient pass |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="H = 4, 300 examples, 50 steps")
    options = parser.parse_args()
    if options.quick:
        options.hidden, options.steps, options.num_train = [4], 50, 300
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")
    for hidden in options.hidden:
        run(hidden, options.steps, options.num_train)


if __name__ == "__main__":
    main()
