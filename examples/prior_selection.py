"""Choosing a prior scale without refits: MPE-LOO vs brute-force LOO vs a test set.

The R loo package's ``voice`` data (126 recordings, 312 acoustic features, a binary
label) is a p >> n logistic regression where the prior scale ``tau`` of the
coefficients decides everything. A fixed split keeps 30 recordings aside. For each
``tau`` on a grid, :func:`numpyro_mpe.select_prior` makes one warm-started Laplace fit
and an MPE-LOO pass; the example compares that curve with brute-force LOO (a Laplace
refit without each training example, :func:`numpyro_mpe.exact_loo`) and with the mean
log predictive density of the 30 held-out recordings.

Run ``python examples/prior_selection.py`` (writes ``docs/prior_selection.png``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import numpyro_mpe as mpe
from numpyro_mpe.datasets import load_voice
from numpyro_mpe.tools.prior_selection import plot_prior_selection, select_prior


def sparse_logistic(X, y=None, tau=1.0):
    """``y ~ Bernoulli(logit^-1(b0 + X beta))``, ``beta ~ N(0, tau^2)``, ``b0 ~ N(0, 2.5)``."""
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 2.5))
    beta = numpyro.sample("beta", dist.Normal(0.0, tau).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=intercept + X @ beta), obs=y)


def voice_split(num_features: int | None = None, num_test: int = 30, seed: int = 0):
    """Standardised (non-constant) features and labels, split into ``(train, test)`` pairs."""
    voice = load_voice()
    X = voice.X[:, :num_features]
    X = X[:, X.std(0) > 0]
    X = (X - X.mean(0)) / X.std(0)
    y = voice.y
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:num_test], order[num_test:]
    return (X[train], y[train]), (X[test], y[test])


def test_log_predictive(guide, params, X, y, num_samples: int = 4000) -> float:
    """Mean over test examples of ``log E_q[p(y_j | x_j, theta)]`` (Monte Carlo)."""
    draws = guide.sample_posterior(jax.random.PRNGKey(1), params, sample_shape=(num_samples,))
    logits = draws["intercept"][:, None] + draws["beta"] @ X.T
    log_lik = dist.Bernoulli(logits=logits).log_prob(y)
    return float(jnp.mean(jax.scipy.special.logsumexp(log_lik, 0) - np.log(num_samples)))


def run(num_features: int | None = None, grid=None, *, refits: bool = True) -> dict:
    """Sweep ``tau``; return the selection, the brute-force and test curves, timings."""
    grid = np.logspace(-2, 1.5, 15) if grid is None else np.asarray(grid)
    (X, y), (X_test, y_test) = voice_split(num_features)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Small tau: a few influential recordings; reported per value in the result.
        warnings.simplefilter("ignore", mpe.ReliabilityWarning)
        selection = select_prior(sparse_logistic, "tau", grid, X, y)
    mpe_seconds = time.perf_counter() - start
    guide = selection.guide
    test = [test_log_predictive(guide, p, X_test, y_test) for p in selection.params]
    brute, refit_seconds = None, None
    if refits:
        start = time.perf_counter()
        brute = [
            mpe.exact_loo(sparse_logistic, guide, params, X, y, tau=np.asarray(tau)).elpd / len(y)
            for tau, params in zip(grid, selection.params, strict=True)
        ]
        refit_seconds = time.perf_counter() - start
    return {
        "selection": selection,
        "test": np.array(test),
        "brute_force": None if brute is None else np.array(brute),
        "mpe_seconds": mpe_seconds,
        "refit_seconds": refit_seconds,
        "num_train": len(y),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-features", type=int, default=None)
    parser.add_argument(
        "--out", default=str(Path(__file__).parents[1] / "docs" / "prior_selection.png")
    )
    options = parser.parse_args(argv)
    mpe.enable_compilation_cache()  # off with NUMPYRO_MPE_COMPILATION_CACHE=off
    with jax.enable_x64(True):
        result = run(options.num_features)
    selection = result["selection"]
    print(f"{'tau':>8} {'MPE-LOO':>9} {'brute':>9} {'test':>9}  (mean log predictive)")
    for v, tau in enumerate(selection.values):
        print(
            f"{tau:8.3g} {selection.elpd[v] / result['num_train']:9.4f} "
            f"{result['brute_force'][v]:9.4f} {result['test'][v]:9.4f}"
        )
    best = int(np.argmax(result["brute_force"]))
    print(
        f"best tau: MPE-LOO {selection.best_value:.3g}, brute force "
        f"{selection.values[best]:.3g}, test {selection.values[np.argmax(result['test'])]:.3g}; "
        f"MPE {result['mpe_seconds']:.1f} s, refits {result['refit_seconds']:.1f} s"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_prior_selection(
        selection,
        {"brute-force LOO": result["brute_force"], "held-out test": result["test"]},
    )
    ax.set_title("voice: prior scale of 312 logistic coefficients")
    ax.figure.tight_layout()
    ax.figure.savefig(options.out, dpi=120)
    plt.close(ax.figure)
    print(f"figure: {options.out}")
    return result


if __name__ == "__main__":
    main()
