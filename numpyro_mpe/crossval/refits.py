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
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.infer import MCMC, NUTS, init_to_value

from numpyro_mpe.core.curvature import prediction_space_covariances
from numpyro_mpe.core.gaussian import (
    draws_from_standard_normal,
    is_dense,
    log_density,
    precision_solve,
)
from numpyro_mpe.core.model import PlateModel, trace_model
from numpyro_mpe.core.options import REFIT_METHODS, RefitMethod, check_choice
from numpyro_mpe.core.quadrature import log_predictive
from numpyro_mpe.crossval.groups import group_codes
from numpyro_mpe.crossval.importance import check_seed, log_normalizer
from numpyro_mpe.crossval.psis import ParetoKWarning
from numpyro_mpe.crossval.results import ELPDDataRefit, make_refit_elpd_data
from numpyro_mpe.infer.blr import ConvergenceWarning, check_optimizer_for_guide
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.optim import NaturalGradientOptimizer, newton
from numpyro_mpe.perturbation.removal import check_at_most

__all__ = ["REFIT_TOL", "exact_loo", "laplace_refit", "minimize", "tilted_log_ratios"]

# Refits are the reference: a Newton decrement of 1e-10 per refit still moves a sum over
# 3020 wells refits by 8e-5 (measured), so converge further (quadratic: one more step).
REFIT_TOL = 1e-15
#: A Newton decrement below which a step that does not lower the loss ends a refit.
_STALLED_DECREMENT = 1e-10


def minimize(optimizer, loss, start, covariance, num_steps):
    """Run ``optimizer`` on ``loss`` from ``start`` until it converges (at most
    ``num_steps``); return its Gaussian ``(mean, precision)`` and whether it converged."""

    def keep_going(carry):
        _, stopped, _, steps, _ = carry
        return ~stopped & (steps < num_steps)

    def step(carry):
        state, _, _, steps, previous_loss = carry
        state, info = optimizer.update(state, loss)
        converged = stopped = info.converged
        if not hasattr(info, "decrement"):
            return state, stopped, converged, steps + 1, previous_loss
        # A predicted decrease below the loss's float resolution cannot be realised:
        # converged as far as the dtype allows. The refit still runs on to tol.
        eps = jnp.finfo(info.loss.dtype).eps
        resolution = 10 * eps * jnp.maximum(1.0, jnp.abs(info.loss))
        converged = converged | (info.decrement <= resolution)
        # A step that does not lower the loss, the decrement below newton()'s default tol:
        # rounding inside the loss hides the rest (Lake Huron's AR(4), levels near 579 ft:
        # the decrement stalls at 3.6e-13 while steps wander in the last digit). Stop.
        stalled = (info.loss >= previous_loss) & (info.decrement <= _STALLED_DECREMENT)
        return state, stopped | stalled, converged | stalled, steps + 1, info.loss

    state = optimizer.init(start, loss)
    no_loss = jnp.asarray(jnp.inf, jnp.result_type(start))
    initial = (state, jnp.array(False), jnp.array(False), 0, no_loss)
    state, _, converged, _, _ = jax.lax.while_loop(keep_going, step, initial)
    return (*optimizer.mean_precision(state, covariance), converged)


def laplace_refit(plate_model, optimizer, mean, covariance, num_steps, weights):
    """Newton from ``mean`` on the log joint with per-example ``weights`` ``(N,)``:
    ``(mean, precision, converged)``."""

    def loss(theta):
        return -plate_model.log_joint(theta, weights)

    return minimize(optimizer, loss, mean, covariance, num_steps)


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
        weights = jnp.ones(plate_model.num_examples, mean.dtype).at[index].set(0.0)
        return laplace_refit(
            plate_model, optimizer, mean, covariance, options["num_steps"], weights
        )

    @jax.jit
    def with_predictor():
        def moments(index):
            refit_mean, refit_precision, converged = refit(index)
            loo_moments = _predictive_moments(predictor, refit_mean, refit_precision, index)
            return loo_moments, _predictive_moments(predictor, mean, precision, index), converged

        (loo_f, loo_cov), (full_f, full_cov), converged = batched(moments)
        # log_predictive works on all N examples at once: fill the refitted rows in.
        n, k = plate_model.num_examples, loo_f.shape[1]
        f = jnp.zeros((n, k), mean.dtype)
        cov = jnp.broadcast_to(jnp.eye(k, dtype=mean.dtype), (n, k, k))
        elpd = log_predictive(predictor, f.at[indices].set(loo_f), cov.at[indices].set(loo_cov))
        lppd = log_predictive(predictor, f.at[indices].set(full_f), cov.at[indices].set(full_cov))
        return elpd[indices], lppd[indices], converged

    @jax.jit
    def without_predictor():
        def densities(index):
            refit_mean, refit_precision, converged = refit(index)
            return *(
                _monte_carlo_log_predictive(
                    plate_model, m, s, index, rng_key, options["num_samples"]
                )
                for m, s in ((refit_mean, refit_precision), (mean, precision))
            ), converged

        return batched(densities)

    return with_predictor() if predictor is not None else without_predictor()


def tilted_log_ratios(log_lik, indicator, base_mean, base_precision, z, *, optimizer, num_steps):
    """Log importance ratios ``(S,)`` of ``p(y_B | theta) N(theta; base_mean,
    base_precision^-1)`` to the Laplace approximation of that tilted density (its mode
    by Newton from ``base_mean``, then its Hessian), at the draws of standard normals
    ``z`` ``(S, P)``: their log mean is the block's log density, exact (equal ratios)
    when ``log p(y_B | theta)`` is quadratic."""
    precision = base_precision if is_dense(base_precision) else jnp.diag(base_precision)

    def negative_log_tilted(theta):
        offset = theta - base_mean
        return -jnp.dot(indicator, log_lik(theta)) + 0.5 * offset @ precision @ offset

    mode, tilted_precision, _ = minimize(
        optimizer, negative_log_tilted, base_mean, "dense", num_steps
    )
    theta, log_proposal = draws_from_standard_normal(z, mode, tilted_precision)
    log_base = log_density(theta, base_mean, precision)
    return jax.vmap(log_lik)(theta) @ indicator + log_base - log_proposal


def _tilted_log_evidence(
    log_lik, indicator, base_mean, base_precision, rng_key, *, optimizer, num_steps, num_samples
):
    """``log int p(y_G | theta) N(theta; base_mean, base_precision^-1) dtheta`` by
    :func:`tilted_log_ratios` with ``num_samples`` draws; the estimate and the Pareto k
    of the ratios."""
    z = jax.random.normal(rng_key, (num_samples, base_mean.shape[0]), base_mean.dtype)
    log_ratios = tilted_log_ratios(
        log_lik, indicator, base_mean, base_precision, z, optimizer=optimizer, num_steps=num_steps
    )
    log_mean, pareto_k, _ = log_normalizer(log_ratios[:, None], num_samples)
    return log_mean[0], pareto_k[0]


def _group_refit_loo(plate_model, optimizer, mean, precision, covariance, codes, options):
    """Refit without each group; ``log p(y_G | y_-G)`` under each refit, and under the
    full fit, by :func:`_tilted_log_evidence`. Returns ``(elpd, lppd, pareto_k)``
    ``(G,)`` and, with a predictor, each example's ``log p(y_i | y_{-G(i)})`` ``(N,)``."""
    codes = jnp.asarray(codes)
    rng_key = jax.random.PRNGKey(options["seed"])

    @jax.jit
    def all_groups(groups):
        def one(group):
            indicator = (codes == group).astype(mean.dtype)
            refit_mean, refit_precision, converged = laplace_refit(
                plate_model, optimizer, mean, covariance, options["num_steps"], 1.0 - indicator
            )
            key = jax.random.fold_in(rng_key, group)
            sampling = {
                "optimizer": optimizer,
                "num_steps": options["num_steps"],
                "num_samples": options["num_samples"],
            }
            elpd, k_loo = _tilted_log_evidence(
                plate_model.log_lik, indicator, refit_mean, refit_precision, key, **sampling
            )
            lppd, k_full = _tilted_log_evidence(
                plate_model.log_lik, indicator, mean, precision, key, **sampling
            )
            if plate_model.predictor is None:
                example = jnp.zeros(())
            else:
                example = jnp.where(
                    codes == group,
                    _example_log_predictive(plate_model.predictor, refit_mean, refit_precision),
                    0.0,
                )
            return elpd, lppd, jnp.maximum(k_loo, k_full), example, converged

        elpd, lppd, pareto_k, example, converged = jax.lax.map(
            one, groups, batch_size=options["batch_size"]
        )
        example = None if plate_model.predictor is None else jnp.sum(example, 0)
        return elpd, lppd, pareto_k, example, converged

    return all_groups(jnp.arange(int(codes.max()) + 1))


def _warn_unconverged(converged, labels, kind: str, num_steps: int, stacklevel: int) -> None:
    """:class:`ConvergenceWarning` naming the refits that did not converge."""
    failed = ~np.asarray(converged)
    if failed.any():
        named = ", ".join(repr(label.item()) for label in np.asarray(labels)[failed][:5])
        more = " ..." if failed.sum() > 5 else ""
        warnings.warn(
            f"exact_loo: {int(failed.sum())} of {failed.size} refits did not converge in "
            f"num_steps={num_steps} ({kind}s {named}{more}); their densities are not "
            "exact: raise num_steps",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )


def _example_log_predictive(predictor, mean, precision):
    """``log E_{N(mean, precision^-1)}[p(y_i | theta)]`` for every example ``(N,)``."""
    f = predictor.fn(mean)
    zeros = jnp.zeros(f.shape + f.shape[1:], f.dtype)
    covariance = prediction_space_covariances(predictor.fn, mean, precision, zeros)[0]
    return log_predictive(predictor, f, covariance)


def _exact_group_loo(plate_model, guide, params, labels, codes, optimizer, options):
    mean, precision = guide.checked_mean_precision(
        params, plate_model.num_latents, where="exact_loo"
    )
    start = time.perf_counter()
    elpd, lppd, pareto_k, example_elpd, converged = jax.block_until_ready(
        _group_refit_loo(
            plate_model,
            newton(tol=REFIT_TOL) if optimizer is None else optimizer,
            mean,
            precision,
            guide.covariance,
            codes,
            options,
        )
    )
    _warn_unconverged(converged, labels, "group", options["num_steps"], stacklevel=4)
    high = np.asarray(pareto_k) > 0.7
    if high.any():
        warnings.warn(
            f"exact_loo: the importance sampling of {int(high.sum())} group densities has "
            f"Pareto k above 0.7 (group {labels[np.argmax(high)].item()!r} first); raise "
            "num_samples or do not use them as a reference",
            ParetoKWarning,
            stacklevel=3,
        )
    return make_refit_elpd_data(
        elpd,
        lppd,
        dim="group",
        method="laplace",
        coords=labels,
        seconds=time.perf_counter() - start,
        groups=(plate_model.plate, codes, example_elpd),
        observed=plate_model.observed_mask,
    )


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
    method: RefitMethod = "laplace",
    indices: ArrayLike | None = None,
    optimizer: NaturalGradientOptimizer | None = None,
    num_steps: int = 20,
    batch_size: int = 32,
    num_samples: int = 2000,
    num_warmup: int = 1000,
    seed: int = 0,
    plate: str | None = None,
    groups: ArrayLike | None = None,
    **kwargs: Any,
) -> ELPDDataRefit:
    """Leave-one-out predictive densities by refitting without each example.

    With ``groups``, leave-one-group-out: refit without each whole group.

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
    num_steps : int
        Most optimizer steps per Laplace refit, at least 1 and at most ``2**31 - 1``
        (``ValueError`` otherwise; likewise ``num_samples`` and ``num_warmup``).
    batch_size : int
        Refits vectorised together (memory grows linearly with it).
    num_samples : int
        Monte Carlo draws: of each NUTS refit, or of the Gaussian when the model has no
        predictor.
    seed : int
        Seed of every random draw, an integer in ``[0, 2**63 - 1]``.
    groups : array_like, shape (N,), optional
        A group label per example (``method="laplace"`` only): ``log p(y_G | y_-G)`` per
        group, each under the Gaussian refitted without the group, by importance
        sampling (``num_samples`` draws) from the Laplace approximation of ``p(y_G |
        theta) q_-G(theta)`` (exact when the group's log likelihood is quadratic).

    Returns
    -------
    ELPDDataRefit
        ``elpd_i`` over the refitted examples (coordinate: their indices; with
        ``groups``, the group labels), ``p`` from the full fit's ``lppd_i`` computed the
        same way; accepted by ``az.compare``.

    Warns
    -----
    ParetoKWarning
        With ``groups``, when the importance sampling of some group's density has Pareto
        ``k > 0.7``: that reference value is not to be trusted.
    ConvergenceWarning
        When some Laplace refits did not converge within ``num_steps`` (naming them):
        their densities are not exact.
    """
    check_choice("method", method, REFIT_METHODS)
    if not isinstance(guide, AutoGaussian):
        raise TypeError(
            f"exact_loo refits an AutoGaussian's family; got guide {type(guide).__name__} "
            "(AutoConjugate's loo is exact already)"
        )
    if optimizer is not None:
        check_optimizer_for_guide(optimizer, guide, where="exact_loo")
    counts = (
        ("num_steps", num_steps),
        ("batch_size", batch_size),
        ("num_samples", num_samples),
        ("num_warmup", num_warmup),
    )
    for name, value in counts:
        # num_steps=0 once returned the full-data densities labelled as refits.
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if name != "batch_size":  # a larger batch is cut to the examples
            check_at_most(name, value)
    check_seed(seed)
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    n = plate_model.num_examples
    options = {
        "num_steps": num_steps,
        "batch_size": batch_size,
        "num_samples": num_samples,
        "num_warmup": num_warmup,
        "seed": seed,
    }
    if groups is not None:
        if method != "laplace" or indices is not None:
            raise ValueError("groups works with method='laplace' and without indices")
        labels, codes = group_codes(groups, n)
        return _exact_group_loo(plate_model, guide, params, labels, codes, optimizer, options)
    if indices is None:
        # Masked examples are not examples: nothing is observed there to predict.
        mask = plate_model.observed_mask
        indices = np.arange(n) if mask is None else np.flatnonzero(mask)
    else:
        indices = np.atleast_1d(np.asarray(indices))
        if indices.size == 0:
            raise ValueError("indices is empty: name at least one example to refit")
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
        raise ValueError(
            f"indices must be a 1-d integer array, got {indices.dtype} of shape {indices.shape}"
        )
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"index {values[counts > 1][0]} is repeated in indices")
    bad = (indices < 0) | (indices >= n)
    if bad.any():
        raise ValueError(f"index {indices[bad][0]} is out of range for {n} examples")
    mean, precision = guide.checked_mean_precision(
        params, plate_model.num_latents, where="exact_loo"
    )
    start = time.perf_counter()
    if method == "laplace":
        elpd, lppd, converged = _laplace_refit_loo(
            plate_model,
            newton(tol=REFIT_TOL) if optimizer is None else optimizer,
            mean,
            precision,
            guide.covariance,
            indices,
            options,
        )
        _warn_unconverged(converged, indices, "example", num_steps, stacklevel=3)
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
