"""Predicting generalisation during training: MPE-LOO from the iBLR state, per checkpoint.

Wells data (3020 households), split 80 / 20 at random (seed 0). A logistic regression on
standardised distance, arsenic, education and association is trained with diagonal iBLR
on minibatches of the training split. At chosen steps, ``BLR.run(checkpoints=...)``
computes MPE-LOO from the optimizer's current mean and precision (training data only,
no extra Hessian pass), and the script also computes the held-out log predictive density
of the same posterior. Both are per example, so they are on one scale: MPE-LOO should
track the held-out curve without seeing the held-out data.

Run: ``python examples/generalisation_during_training.py [--plot FILE.png]``; a test runs
it with few steps (``tests/tools/test_examples.py``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import numpyro_mpe as mpe
from numpyro_mpe.datasets import load_wells


def model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def held_out_lpd(mean, precision, X, y, points: int = 20) -> float:
    """Mean of ``log int p(y_j | f) N(f; x_j m, x_j S^-1 x_j) df`` over held-out rows."""
    variance = (
        (X**2) @ (1.0 / precision)
        if precision.ndim == 1
        else jnp.einsum("np,pq,nq->n", X, jnp.linalg.inv(precision), X)
    )
    nodes, weights = np.polynomial.hermite.hermgauss(points)
    logits = (X @ mean)[:, None] + jnp.sqrt(2 * variance)[:, None] * nodes
    log_lik = y[:, None] * logits - jnp.logaddexp(0.0, logits)
    lpd = jax.scipy.special.logsumexp(log_lik, b=weights / np.sqrt(np.pi), axis=1)
    return float(jnp.mean(lpd))


def split_data(seed: int = 0, test_fraction: float = 0.2):
    wells = load_wells()
    columns = [wells.dist / 100, wells.arsenic, wells.educ / 4, wells.assoc]
    features = np.stack(columns, 1)
    features = (features - features.mean(0)) / features.std(0)
    X = np.concatenate([np.ones((len(features), 1)), features], 1)
    order = np.random.default_rng(seed).permutation(len(X))
    cut = round(len(X) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return X[train], wells.switch[train], X[test], wells.switch[test]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--checkpoints", type=int, default=14, help="how many (log-spaced)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--plot", metavar="PATH", help="save the figure here")
    options = parser.parse_args(argv)
    mpe.enable_compilation_cache()  # off with NUMPYRO_MPE_COMPILATION_CACHE=off

    X_train, y_train, X_test, y_test = split_data()

    def learning_rate(step):
        return 0.3 / (1.0 + step / 100.0)

    guide = mpe.AutoGaussian(model, covariance="diag")
    blr = mpe.BLR(model, guide, mpe.optim.iblr(learning_rate, beta2=0.995, hess_init=0.1))
    steps = sorted({int(s) for s in np.geomspace(2, options.steps, options.checkpoints)})
    held_out = {}
    # The model is traced once; each checkpoint then runs only the compiled MPE-LOO.
    loo_at = mpe.prepare_loo(model, guide, X_train, y_train)

    def checkpoint(params, step):
        mean, precision = guide.mean_precision(params)
        held_out[step] = held_out_lpd(mean, precision, X_test, y_test)
        elpd = loo_at(params)
        return elpd.elpd / elpd.n_data_points

    result = blr.run(
        jax.random.PRNGKey(0),
        options.steps,
        X_train,
        y_train,
        batch_size=options.batch_size,
        checkpoints=steps,
        checkpoint_fn=checkpoint,
        progress_bar=False,
    )
    mpe_loo = np.array([result.checkpoints[step] for step in steps])
    test_lpd = np.array([held_out[step] for step in steps])
    print("step   MPE-LOO/N (train)   held-out lpd/N")
    for step, loo_value, test_value in zip(steps, mpe_loo, test_lpd, strict=True):
        print(f"{step:5d}   {loo_value:17.4f}   {test_value:14.4f}")
    if options.plot:
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, mpe_loo, "o-", label="MPE-LOO per example (training data only)")
        ax.plot(steps, test_lpd, "s--", label="held-out log predictive density per example")
        ax.set_xscale("log")
        ax.set_xlabel("iBLR step")
        ax.set_ylabel("nats per example")
        ax.set_title("Wells: predicting generalisation during training")
        ax.legend(loc="center right")
        figure.tight_layout()
        figure.savefig(options.plot, dpi=120)
        plt.close(figure)
    return {"steps": steps, "mpe_loo": mpe_loo, "test_lpd": test_lpd}


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
