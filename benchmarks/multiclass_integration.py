"""Accuracy and cost of ``loo``'s integration rule for ten classes, on the digits models.

Two models of scikit-learn's digits (1797 images of 8 x 8 pixels scaled to [0, 1]; 70%
for training, seed 0), in float64: softmax regression (``P = 650``, dense Newton) and a
tanh MLP ``64 -> 32 -> 10`` (``P = 2410``, diagonal iBLR, 1200 minibatch steps, the fit of
``network_sensitivity.py``). For each training example, ``loo`` integrates
``p(y_i | f)`` against its cavity ``N(f_i + V_i^{\\i} e_i, V_i^{\\i})`` over the ten
logits ``f``. Compared, per example, against two references:

- ``Monte Carlo``: 10^6 plain draws of the cavity (and their standard error);
- ``Sobol'``: the rule of ``numpyro_mpe.core.laplace_qmc`` (defensive Laplace mixture)
  with 2 x 2^19 points from two other scrambles; half their difference estimates its
  error, and only examples where that estimate is below 1e-4 are scored against it.

Rules timed in the same process (jitted, warm): the Laplace quasi-Monte Carlo rule that
``loo`` uses (4096 points), and the former baseline, 2048 plain Monte Carlo draws with a
fixed key.

Usage::

    python benchmarks/multiclass_integration.py            # both models (about 15 min)
    python benchmarks/multiclass_integration.py --quick    # 40 examples, 2^16-draw references
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from network_sensitivity import BATCH_SIZE, LEARNING_RATE, digits, make_mlp
from scipy.special import ndtri
from scipy.stats import qmc

import numpyro_mpe
from numpyro_mpe import optim
from numpyro_mpe.core.curvature import likelihood_curvature, prediction_space_covariances
from numpyro_mpe.core.gaussian import covariance_root
from numpyro_mpe.core.laplace_qmc import laplace_quasi_monte_carlo
from numpyro_mpe.core.quadrature import log_predictive

MLP_STEPS = 1200
BASELINE_DRAWS = 2048


def softmax_regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(0, 1).expand([X.shape[1], 10]).to_event(2))
    b = numpyro.sample("b", dist.Normal(0, 1).expand([10]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=X @ w + b), obs=y)


def fitted(name: str, X, y):
    """``(model, mean, precision)`` of the named model fitted on ``X, y``."""
    if name == "softmax regression":
        model, optimizer, steps, batch = softmax_regression, optim.newton(), 30, None
        guide = numpyro_mpe.AutoGaussian(model)
    else:
        model = make_mlp(32)
        guide = numpyro_mpe.AutoGaussian(model, covariance="diag")
        optimizer = optim.iblr(optax.cosine_decay_schedule(LEARNING_RATE, MLP_STEPS))
        steps, batch = MLP_STEPS, BATCH_SIZE
    blr = numpyro_mpe.BLR(model, guide, optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MLP's short fit is not stationary
        result = blr.run(jax.random.PRNGKey(0), steps, X, y, batch_size=batch, progress_bar=False)
    mean, precision = guide.mean_precision(result.params)
    return model, mean, precision


def cavities(model, mean, precision, X, y):
    """The predictor and each example's cavity mean ``(N, 10)`` and covariance
    ``(N, 10, 10)``, as ``loo`` forms them (the path without row slicing)."""
    predictor = numpyro_mpe.trace_model(model, X, y).predictor
    f = predictor.fn(mean)
    e, lam = likelihood_curvature(predictor, f)
    v, cavity, reliability = prediction_space_covariances(predictor.fn, mean, precision, lam)
    valid = (reliability < 1.0)[:, None, None]
    cavity = jnp.where(valid, 0.5 * (cavity + jnp.swapaxes(cavity, 1, 2)), v)
    return predictor, f + jnp.einsum("nkl,nl->nk", cavity, e), cavity


def monte_carlo_reference(predictor, mean, cov, draws, chunk=2**14):
    root = covariance_root(cov)
    evaluate = jax.jit(
        lambda z: jnp.exp(
            jax.vmap(predictor.log_lik, 1, 1)(mean[:, None] + jnp.einsum("nkl,ql->nqk", root, z))
        )
    )
    first = second = 0.0
    for step in range(draws // chunk):
        values = evaluate(jax.random.normal(jax.random.PRNGKey(step + 1), (chunk, 10)))
        first, second = first + values.sum(1), second + (values**2).sum(1)
    average = first / draws
    return np.log(average), np.sqrt((second / draws - average**2) / draws) / average


def sobol_reference(predictor, mean, cov, log2_points):
    """Two scrambles (seeds 1 and 2) of the rule with ``2^log2_points`` points each."""
    estimates = []
    for seed in (1, 2):
        points = ndtri(qmc.Sobol(10, scramble=True, seed=seed).random_base2(log2_points))
        rule = jax.jit(
            lambda m, c, points=points: laplace_quasi_monte_carlo(predictor, m, c, points)
        )
        estimates.append(np.asarray(rule(mean, cov)))
    first, second = estimates
    return np.logaddexp(first, second) - np.log(2), np.abs(first - second) / 2


def baseline_rule(predictor, mean, cov):
    root = covariance_root(cov)
    z = jax.random.normal(jax.random.PRNGKey(0), (BASELINE_DRAWS, mean.shape[1]), mean.dtype)
    f = mean[:, None] + jnp.einsum("nkl,ql->nqk", root, z)
    return jax.nn.logsumexp(jax.vmap(predictor.log_lik, 1, 1)(f), 1) - np.log(BASELINE_DRAWS)


def timed(fn, repeats=3):
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        value = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, np.asarray(value)


def errors(estimate, reference, scored):
    error = np.abs(estimate - reference)[scored]
    return (
        f"{error.max():.1e} | {np.quantile(error, 0.99):.1e} | {np.median(error):.1e} "
        f"| {np.sum(error > 1e-3)}"
    )


def run(name, X, y, count, draws, log2_points):
    model, mean, precision = fitted(name, X, y)
    predictor, cavity_mean, cavity = cavities(model, mean, precision, X, y)
    indices = np.arange(len(y)) if count is None else np.arange(count)
    predictor = numpyro_mpe.trace_model(model, X[indices], y[indices]).predictor
    cavity_mean, cavity = cavity_mean[indices], cavity[indices]
    rule_fn = jax.jit(lambda m, c: log_predictive(predictor, m, c))
    baseline_fn = jax.jit(lambda m, c: baseline_rule(predictor, m, c))
    rule_time, rule = timed(lambda: rule_fn(cavity_mean, cavity))
    base_time, base = timed(lambda: baseline_fn(cavity_mean, cavity))
    start = time.perf_counter()
    mc, mc_error = monte_carlo_reference(predictor, cavity_mean, cavity, draws)
    sobol, sobol_error = sobol_reference(predictor, cavity_mean, cavity, log2_points)
    reference_time = time.perf_counter() - start
    reliable = sobol_error < 1e-4
    everything = np.ones(len(indices), bool)
    largest = np.linalg.eigvalsh(np.asarray(cavity)).max(1)
    print(
        f"\n### {name}: N = {len(indices)}, P = {mean.shape[0]}; cavity covariances' "
        f"largest eigenvalue: median {np.median(largest):.1f}, max {largest.max():.1f}; "
        f"references {reference_time:.0f} s\n"
    )
    print(
        f"Monte Carlo reference ({draws} draws): its standard error median "
        f"{np.median(mc_error):.1e}, max {mc_error.max():.1e}. Sobol' reference "
        f"(2 x 2^{log2_points} points): error estimate below 1e-4 for "
        f"{reliable.sum()} of {len(indices)} (max {sobol_error.max():.1e}).\n"
    )
    print("| rule | seconds | vs | max error | 99% | median | > 1e-3 |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, seconds, values in (
        ("Laplace QMC, 4096 points", rule_time, rule),
        (f"plain Monte Carlo, {BASELINE_DRAWS} draws", base_time, base),
    ):
        print(f"| {label} | {seconds:.3f} | Sobol' | {errors(values, sobol, reliable)} |")
        print(f"| | | Monte Carlo | {errors(values, mc, everything)} |")
    print(f"\nLaplace QMC / plain Monte Carlo time: {rule_time / base_time:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 examples, small references")
    parser.add_argument("--models", nargs="+", default=["softmax regression", "MLP"])
    options = parser.parse_args()
    count, draws, log2_points = (40, 2**16, 14) if options.quick else (None, 2**20, 19)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")
    with jax.enable_x64(True):
        X, y = digits()
        for name in options.models:
            run(name, X.astype(np.float64), y, count, draws, log2_points)


if __name__ == "__main__":
    main()
