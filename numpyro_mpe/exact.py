"""Brute-force leave-one-out by refitting without each example, for validation.

``exact_loo`` is the reference MPE-LOO is checked against. With ``method="laplace"``
each refit is the guide's Gaussian family fitted by Newton to the weighted log joint
(the left-out example's weight set to 0), warm-started from the full fit and vectorised
over examples in batches; its predictive density uses the same integration rule as
:func:`numpyro_mpe.loo`, so the difference between the two is the LOO-approximation
error alone. With ``method="nuts"`` each refit is a NUTS run (small ``N`` only), which
adds the Gaussian-approximation error to the comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.infer import MCMC, NUTS, init_to_value

from numpyro_mpe.arviz import ELPDDataRefit, make_refit_elpd_data
from numpyro_mpe.gaussian import is_dense, precision_solve
from numpyro_mpe.guide import AutoGaussian
from numpyro_mpe.loo import _log_predictive
from numpyro_mpe.model import PlateModel, trace_model
from numpyro_mpe.optim import NaturalGradientOptimizer, newton

__all__ = ["exact_loo"]

_METHODS = ("laplace", "nuts")
# Refits are the reference: a Newton decrement of 1e-10 per refit still moves a sum over
# 3020 wells refits by 8e-5 (measured), so converge further (quadratic: one more step).
_REFIT_TOL = 1e-15


def _laplace_refit(plate_model, optimizer, mean, covariance, num_steps, index):
    weights = jnp.ones(plate_model.num_examples, mean.dtype).at[index].set(0.0)

    def loss(theta):
        return -plate_model.log_joint(theta, weights)

    def keep_going(carry):
        _, converged, steps = carry
        return ~converged & (steps < num_steps)

    def step(carry):
        state, _, steps = carry
        state, info = optimizer.update(state, loss)
        return state, info.converged, steps + 1

    initial = (optimizer.init(mean, loss), jnp.array(False), 0)
    state, _, _ = jax.lax.while_loop(keep_going, step, initial)
    return optimizer.mean_precision(state, covariance)


def _predictive_moments(predictor, mean, precision, index):
    """Mean ``(K,)`` and covariance ``(K, K)`` of ``f_index`` under ``N(mean, precision^-1)``."""

    def f_i(theta):
        return predictor.fn(theta)[index]

    jacobian = jax.jacfwd(f_i)(mean)
    return f_i(mean), jacobian @ precision_solve(precision, jacobian.T)


def _monte_carlo_log_predictive(plate_model, mean, precision, index, rng_key, num_samples):
    """``log E_{N(mean, precision^-1)}[p(y_index | theta)]`` with ``num_samples`` draws."""
    draws = jax.random.normal(rng_key, (num_samples, mean.shape[0]), mean.dtype)
    if is_dense(precision):
        cholesky = jnp.linalg.cholesky(precision)
        offsets = jax.scipy.linalg.solve_triangular(cholesky.T, draws.T, lower=False).T
    else:
        offsets = draws / jnp.sqrt(precision)
    log_lik = jax.lax.map(lambda theta: plate_model.log_lik(theta)[index], mean + offsets)
    return jax.scipy.special.logsumexp(log_lik) - jnp.log(num_samples)


def _laplace_refit_loo(plate_model, optimizer, mean, precision, covariance, indices, options):
    predictor = plate_model.predictor
    rng_key = jax.random.PRNGKey(options["seed"])
    indices = jnp.asarray(indices)

    def batched(fn):
        return jax.lax.map(fn, indices, batch_size=options["batch_size"])

    def refit(index):
        return _laplace_refit(
            plate_model, optimizer, mean, covariance, options["num_steps"], index
        )

    @jax.jit
    def with_predictor():
        def moments(index):
            refit_mean, refit_precision = refit(index)
            loo_moments = _predictive_moments(predictor, refit_mean, refit_precision, index)
            return loo_moments, _predictive_moments(predictor, mean, precision, index)

        (loo_f, loo_cov), (full_f, full_cov) = batched(moments)
        # _log_predictive works on all N examples at once: fill the refitted rows in.
        n, k = plate_model.num_examples, loo_f.shape[1]
        f = jnp.zeros((n, k), mean.dtype)
        cov = jnp.broadcast_to(jnp.eye(k, dtype=mean.dtype), (n, k, k))
        elpd = _log_predictive(predictor, f.at[indices].set(loo_f), cov.at[indices].set(loo_cov))
        lppd = _log_predictive(predictor, f.at[indices].set(full_f), cov.at[indices].set(full_cov))
        return elpd[indices], lppd[indices]

    @jax.jit
    def without_predictor():
        def densities(index):
            refit_mean, refit_precision = refit(index)
            return tuple(
                _monte_carlo_log_predictive(
                    plate_model, m, s, index, rng_key, options["num_samples"]
                )
                for m, s in ((refit_mean, refit_precision), (mean, precision))
            )

        return batched(densities)

    return with_predictor() if predictor is not None else without_predictor()


def _nuts_loo(plate_model: PlateModel, mean, indices, options):
    """Sequential NUTS refits over the flat unconstrained theta (one compile)."""

    def weighted_model(weights):
        theta = numpyro.sample(
            "theta", dist.ImproperUniform(dist.constraints.real_vector, (), mean.shape)
        )
        numpyro.factor("log_joint", plate_model.log_joint(theta, weights))

    mcmc = MCMC(
        NUTS(weighted_model, init_strategy=init_to_value(values={"theta": mean})),
        num_warmup=options["num_warmup"],
        num_samples=options["num_samples"],
        progress_bar=False,
    )
    log_lik_draws = jax.jit(jax.vmap(plate_model.log_lik))
    rng_key = jax.random.PRNGKey(options["seed"])
    mcmc.run(rng_key, jnp.ones(plate_model.num_examples, mean.dtype))
    full = np.asarray(log_lik_draws(mcmc.get_samples()["theta"]))
    num = full.shape[0]
    lppd = jax.scipy.special.logsumexp(full[:, indices], axis=0) - np.log(num)
    elpd = np.empty(len(indices))
    for position, index in enumerate(indices):
        weights = jnp.ones(plate_model.num_examples, mean.dtype).at[index].set(0.0)
        mcmc.run(jax.random.fold_in(rng_key, int(index)), weights)
        draws = log_lik_draws(mcmc.get_samples()["theta"])[:, index]
        elpd[position] = float(jax.scipy.special.logsumexp(draws) - np.log(num))
    return elpd, np.asarray(lppd)


def exact_loo(
    model: Callable,
    guide: AutoGaussian,
    params: dict,
    *args: Any,
    method: str = "laplace",
    indices: ArrayLike | None = None,
    optimizer: NaturalGradientOptimizer | None = None,
    num_steps: int = 20,
    batch_size: int = 32,
    num_samples: int = 2000,
    num_warmup: int = 1000,
    seed: int = 0,
    plate: str | None = None,
    **kwargs: Any,
) -> ELPDDataRefit:
    """Leave-one-out predictive densities by refitting without each example.

    Parameters
    ----------
    model, guide, params
        The model and its fitted :class:`AutoGaussian` (the warm start, and the family
        refitted by ``method="laplace"``).
    *args, **kwargs
        The model's arguments.
    method : {"laplace", "nuts"}
        Gaussian refits of the guide's family (Newton from the full fit until it
        converges, at most ``num_steps`` steps), or NUTS refits (``num_warmup`` +
        ``num_samples`` draws each; small ``N``).
    indices : array_like of int, optional
        Refit only these examples (a subsample); all by default.
    optimizer : NaturalGradientOptimizer, optional
        For ``method="laplace"``; ``numpyro_mpe.optim.newton(tol=1e-15)`` by default.
    batch_size : int
        Refits vectorised together (memory grows linearly with it).
    num_samples : int
        Monte Carlo draws: of each NUTS refit, or of the Gaussian when the model has no
        predictor.
    seed : int
        Seed of every random draw.

    Returns
    -------
    ELPDDataRefit
        ``elpd_i`` over the refitted examples (coordinate: their indices), ``p`` from
        the full fit's ``lppd_i`` computed the same way; accepted by ``az.compare``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    n = plate_model.num_examples
    indices = np.arange(n) if indices is None else np.atleast_1d(np.asarray(indices))
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
        raise ValueError(f"indices must be a 1-d integer array, got {indices.dtype}")
    bad = (indices < 0) | (indices >= n)
    if bad.any():
        raise ValueError(f"index {indices[bad][0]} is out of range for {n} examples")
    mean, precision = guide.mean_precision(params)
    options = {
        "num_steps": num_steps,
        "batch_size": batch_size,
        "num_samples": num_samples,
        "num_warmup": num_warmup,
        "seed": seed,
    }
    start = time.perf_counter()
    if method == "laplace":
        elpd, lppd = _laplace_refit_loo(
            plate_model,
            newton(tol=_REFIT_TOL) if optimizer is None else optimizer,
            mean,
            precision,
            guide.covariance,
            indices,
            options,
        )
    else:
        elpd, lppd = _nuts_loo(plate_model, mean, indices, options)
    elpd, lppd = jax.block_until_ready((elpd, lppd))
    return make_refit_elpd_data(
        elpd,
        lppd,
        dim=plate_model.plate,
        method=method,
        n_samples=num_samples if method == "nuts" else 0,
        coords=indices,
        seconds=time.perf_counter() - start,
    )
