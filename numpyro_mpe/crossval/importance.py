"""MPE-IS: the MPE posterior without an example as the proposal of PSIS for its LOO.

For example ``i`` the memory-perturbation equation gives ``q^{\\i} = N(m^{\\i},
(S^{\\i})^{-1})`` (:func:`~numpyro_mpe.perturbation.perturb.perturb_mean_precision`), a
proposal close to the exact leave-one-out posterior. The leave-one-out predictive
density is a ratio of evidences,

.. math::

    \\log p(y_i \\mid y_{-i}) = \\log \\int p(\\theta, y)\\, d\\theta
        - \\log \\int p(\\theta, y_{-i})\\, d\\theta,

each estimated by Pareto-smoothed importance sampling (the kernel of
:func:`numpyro_mpe.psis_loo`): the first from the full-data Gaussian ``q`` (once for all
examples), the second from ``q^{\\i}``. Estimating ``E_{p(theta | y_-i)}[p(y_i | theta)]``
directly from ``q^{\\i}`` would not do: for an outlier the integrand is heavy-tailed under
that proposal even when the ratios' Pareto ``k`` is small. The larger of the two ``k``
says when a proposal is not good enough. Where ``S^{\\i}`` is not positive definite
(reliability >= 1) the full-data Gaussian is the proposal instead. Each example costs
``num_samples`` evaluations of the full log joint, so this is meant for the few examples
MPE-LOO flags.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.gaussian import draws_from_standard_normal, is_dense
from numpyro_mpe.core.model import PlateModel, join_arguments, trace_model
from numpyro_mpe.core.rows import limit_compilations
from numpyro_mpe.crossval.psis import tail_buffers, tail_lengths
from numpyro_mpe.crossval.psis_kernels import psis_columns
from numpyro_mpe.optim.base import check_count
from numpyro_mpe.perturbation.perturb import perturb_mean_precision
from numpyro_mpe.perturbation.removal import check_at_most

__all__ = [
    "MAX_SEED",
    "MIN_IMPORTANCE_DRAWS",
    "ImportanceLOO",
    "check_num_samples",
    "check_seed",
    "importance_core",
    "importance_loo",
    "log_normalizer",
]

#: The fewest importance draws per example (or group): PSIS needs at least two.
MIN_IMPORTANCE_DRAWS = 2

#: The largest seed: ``jax.random.PRNGKey`` takes an int64.
MAX_SEED = 2**63 - 1

_MAX_BATCH_VALUES = 2**24  # draws x examples x batch held at once
_EXACT_SPREAD = 1e-6
_MIN_EVIDENCE_DRAWS = 16_000


class ImportanceLOO(NamedTuple):
    """Result of :func:`importance_loo` for ``M`` examples.

    Attributes
    ----------
    elpd : jax.Array, shape (M,)
        ``log p(y_i | y_-i)`` by Pareto-smoothed importance sampling.
    pareto_k : jax.Array, shape (M,)
        Pareto shape of each example's importance ratios.
    mcse : jax.Array, shape (M,)
        Monte Carlo standard error of each ``log Z_-i`` (independent across examples).
    shared_mcse : jax.Array, shape ()
        Monte Carlo standard error of ``log Z``, shared by every example: over ``M``
        examples it adds ``M * shared_mcse`` to the error of their sum, so the standard
        error of ``sum_i elpd_i`` is ``sqrt(sum_i mcse_i^2) + M * shared_mcse``.
    mpe_proposal : jax.Array, shape (M,)
        True where ``q^{\\i}`` was the proposal, False where the full-data Gaussian was
        (``S^{\\i}`` not positive definite).
    """

    elpd: jax.Array
    pareto_k: jax.Array
    mcse: jax.Array
    shared_mcse: jax.Array
    mpe_proposal: jax.Array


def check_num_samples(num_samples) -> int:
    """``num_samples`` as an ``int``, checked before any work.

    Raises
    ------
    TypeError
        When it is not an integer (a bool or a float such as ``2.5`` or ``1000.0``).
    ValueError
        When it is below :data:`MIN_IMPORTANCE_DRAWS` (2) or above
        :data:`~numpyro_mpe.perturbation.removal.MAX_COUNT`.
    """
    if isinstance(num_samples, bool | np.bool_) or not isinstance(num_samples, int | np.integer):
        raise TypeError(
            f"num_samples must be an integer >= {MIN_IMPORTANCE_DRAWS} (importance draws "
            f"per example); got {num_samples!r} of type {type(num_samples).__name__}"
        )
    if num_samples < MIN_IMPORTANCE_DRAWS:
        raise ValueError(
            f"num_samples must be an integer >= {MIN_IMPORTANCE_DRAWS} (importance draws "
            f"per example; PSIS needs at least {MIN_IMPORTANCE_DRAWS}); got {num_samples}"
        )
    check_at_most("num_samples", num_samples)
    return int(num_samples)


def check_seed(seed) -> int:
    """``seed`` as an ``int``, checked before any work: an integer in ``[0, MAX_SEED]``
    (``TypeError`` for a float, bool or string, ``ValueError`` out of range)."""
    check_count("seed", seed, 0)
    check_at_most("seed", seed, MAX_SEED)
    return int(seed)


def _padded_count(count: int) -> int:
    """The number of examples ``count`` flagged examples are padded to: the next of
    ``2^j`` and ``3 * 2^j`` (at most a third more work), so that the number of flagged
    examples seldom compiles :func:`importance_core` anew.

    >>> [_padded_count(m) for m in (1, 3, 5, 7, 13, 100)]
    [1, 3, 6, 8, 16, 128]
    """
    power = 1 << max(count - 1, 0).bit_length()
    return 3 * power // 4 if count <= 3 * power // 4 else power


def _draws(mean, precision, fallback_mean, fallback_precision, standard_normal):
    """Draws ``(S, P)``, their log density under the Gaussian (or, where its precision is
    not positive definite, the fallback), and whether the Gaussian was used."""
    if is_dense(precision):
        valid = jnp.all(jnp.isfinite(jnp.linalg.cholesky(precision)))
    else:
        valid = jnp.all(precision > 0)
    mean = jnp.where(valid, mean, fallback_mean)
    precision = jnp.where(valid, precision, fallback_precision)
    return (*draws_from_standard_normal(standard_normal, mean, precision), valid)


def log_normalizer(log_ratios: jax.Array, num_samples: int):
    """PSIS estimate of ``log mean_s r_s`` per column, its Pareto k and MCSE.

    ``k = -inf`` where all ratios of a column agree to within ``1e-6`` nats.

    ``log_ratios``: ``(S, B)``. The MCSE is the delta-method standard error of the log of
    the self-normalised mean, ``sqrt(sum_s w_s^2 - 1 / S)`` with ``w`` normalised.
    """
    tail_len = tail_lengths(np.ones(log_ratios.shape[1]), num_samples)
    tail_cap, capacity = tail_buffers(tail_len, num_samples)
    shift = jnp.max(log_ratios, axis=0)
    smoothed, pareto_k = psis_columns(
        log_ratios, jnp.asarray(tail_len), tail_cap=tail_cap, capacity=capacity
    )
    # Ratios equal to within 1e-6 nats (an exact proposal, as for Gaussian-linear terms)
    # leave no tail to fit; the estimate is then exact to that precision: k = -inf.
    spread = shift - jnp.min(log_ratios, axis=0)
    pareto_k = jnp.where(spread < _EXACT_SPREAD, -jnp.inf, pareto_k)
    log_mean = shift + jax.scipy.special.logsumexp(smoothed, axis=0) - jnp.log(num_samples)
    weights = jax.nn.softmax(smoothed, axis=0)
    mcse = jnp.sqrt(jnp.clip(jnp.sum(weights**2, axis=0) - 1.0 / num_samples, 0.0))
    return log_mean, pareto_k, mcse


@partial(
    jax.jit,
    static_argnames=("model", "static", "plate", "num_samples", "full_draws", "batch"),
)
def importance_core(
    mean,
    precision,
    arrays,
    indices,
    rng_key,
    *,
    model,
    static,
    plate,
    num_samples,
    full_draws,
    batch,
):
    """:func:`importance_loo`'s work, jitted once per model, argument structure, array
    shapes and draw counts: the data, the fit, the examples and the key are arguments, so
    a second call with the same shapes compiles nothing."""
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    key_full, key_loo = jax.random.split(rng_key)
    dim = mean.shape[0]

    def log_joint_terms(theta):
        log_lik = jax.vmap(plate_model.log_lik)(theta)  # (S, N)
        return jax.vmap(plate_model.log_prior)(theta) + jnp.sum(log_lik, 1), log_lik

    z = jax.random.normal(key_full, (full_draws, dim), mean.dtype)
    theta, log_q, _ = _draws(mean, precision, mean, precision, z)
    log_joint = jax.lax.map(
        lambda t: log_joint_terms(t[None])[0][0], theta, batch_size=num_samples
    )
    log_z, k_full, mcse_full = log_normalizer((log_joint - log_q)[:, None], full_draws)

    def loo_log_ratios(index):
        eps = jnp.zeros(plate_model.num_examples, mean.dtype).at[index].set(1.0)
        loo_mean, loo_precision = perturb_mean_precision(mean, precision, plate_model.log_lik, eps)
        # Independent draws per example: their Monte Carlo errors add in quadrature
        # over examples, not linearly as common random numbers would.
        standard_normal = jax.random.normal(
            jax.random.fold_in(key_loo, index), (num_samples, dim), mean.dtype
        )
        theta, log_q, valid = _draws(loo_mean, loo_precision, mean, precision, standard_normal)
        log_joint, log_lik = log_joint_terms(theta)
        return log_joint - log_lik[:, index] - log_q, valid

    log_ratios, valid = jax.lax.map(loo_log_ratios, indices, batch_size=batch)
    log_z_loo, k_loo, mcse_loo = log_normalizer(log_ratios.T, num_samples)
    return ImportanceLOO(
        elpd=log_z[0] - log_z_loo,
        pareto_k=jnp.maximum(k_full[0], k_loo),
        mcse=mcse_loo,
        shared_mcse=mcse_full[0],
        mpe_proposal=valid,
    )


def importance_loo(
    model: Callable,
    plate_model: PlateModel,
    arrays: list,
    static: tuple,
    mean: jax.Array,
    precision: jax.Array,
    indices: np.ndarray,
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> ImportanceLOO:
    """PSIS leave-one-out with the MPE proposal, for the examples in ``indices``.

    ``log p(y_i | y_-i) = log Z - log Z_-i`` with the evidences ``Z = int p(theta, y)``
    and ``Z_-i = int p(theta, y_-i)`` each estimated by Pareto-smoothed importance
    sampling: ``Z`` once, from the full-data Gaussian ``q`` (shared by all examples),
    ``Z_-i`` from the MPE posterior ``q^{\\i}``. Each proposal is close to its own
    target, so both estimates are stable; an example's Pareto k is the larger of the two.

    Parameters
    ----------
    model : callable
        The NumPyro model.
    arrays, static : list, tuple
        Its arguments, from :func:`~numpyro_mpe.core.model.split_arguments`.
    plate_model : PlateModel
        From :func:`numpyro_mpe.trace_model` on those arguments.
    mean, precision : jax.Array
        The fitted Gaussian, ``(P,)`` and ``(P, P)`` or ``(P,)``.
    indices : numpy.ndarray of int, shape (M,)
    num_samples : int
        Draws per example (independent across examples), at least 2, and ``max(16000,
        4 * num_samples)`` for the shared ``Z``.
    seed : int

    Returns
    -------
    ImportanceLOO
        Of NumPy arrays (in host memory).
    """
    num_samples = check_num_samples(num_samples)
    indices = np.asarray(indices)
    padded = np.resize(indices, _padded_count(indices.size))  # repeats dropped below
    batch = max(1, min(padded.size, _MAX_BATCH_VALUES // (num_samples * plate_model.num_examples)))
    options = {
        "model": model,
        "static": static,
        "plate": plate_model.plate,
        "num_samples": num_samples,
        "full_draws": max(_MIN_EVIDENCE_DRAWS, 4 * num_samples),
        "batch": batch,
    }
    rng_key = jax.random.PRNGKey(seed)
    limit_compilations(importance_core, (mean, precision, arrays, padded, rng_key), options)
    result = jax.device_get(importance_core(mean, precision, arrays, padded, rng_key, **options))
    # Sliced on the host: an eager slice would compile once per number of examples.
    return result._replace(
        **{
            field: getattr(result, field)[: indices.size]
            for field in ("elpd", "pareto_k", "mcse", "mpe_proposal")
        }
    )
