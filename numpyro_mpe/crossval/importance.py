"""MPE-IS: importance sampling of exact leave-one-out densities with MPE proposals.

The leave-one-out predictive density is a ratio of evidences,

.. math::

    \\log p(y_i \\mid y_{-i}) = \\log \\int p(\\theta, y)\\, d\\theta
        - \\log \\int p(\\theta, y_{-i})\\, d\\theta
      = \\log \\frac{\\sum_s p(\\theta_s, y) / g(\\theta_s)}
                    {\\sum_s p(\\theta_s, y_{-i}) / g(\\theta_s)},
    \\qquad \\theta_s \\sim g,

estimated here on common draws from one proposal ``g`` for both evidences, so that their
Monte Carlo errors largely cancel (an evidence estimated on its own carries an error that
a sum over ``N`` examples multiplies by ``N``). Each sum is Pareto-smoothed (the kernel of
:func:`numpyro_mpe.psis_loo`); an example's Pareto ``k`` is the larger of the two.

Three steps, all started from the fitted Gaussian ``q = N(m, S^-1)``:

1. **Pilot** (:func:`pilot_core`): draws from ``q`` with its covariance inflated by
   :data:`PILOT_INFLATION` estimate the posterior's mean and covariance by importance
   weights; where the pilot's Pareto ``k`` is at most 0.7 the Gaussian ``q*`` with those
   moments replaces ``q`` (moment matching), and the pilot's ``k`` says how far ``q`` is
   from the posterior.
2. **Shared mixture** (:func:`mixture_components`, :func:`shared_mixture_core`): the MPE
   removal at ``q*`` gives each example's leave-one-out Gaussian ``q*_-j``; the proposal
   ``g = 1/2 q* + 1/2 sum_j pi_j q*_-j`` (covariances inflated by
   :data:`MIXTURE_INFLATION`, ``pi_j`` proportional to ``KL(q*_-j || q*)`` over the
   :data:`MAX_COMPONENTS` largest) covers the full posterior and the leave-one-out
   posteriors that move most, and serves every example with the same draws.
3. **Own mixture** (:func:`own_mixture_core`): where the shared proposal's ``k`` is
   above the threshold, the example's own ``g_i = 1/2 q* + 1/2 q*_-i``.

This is the mixture idea of robust leave-one-out importance sampling (Silva & Zanella
2023) with Gaussian components from MPE, and the moment matching of Paananen et al.
(2021) done once for all examples. docs/math.md has the alternatives tried and their
errors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.gaussian import draws_from_standard_normal, is_dense, log_density
from numpyro_mpe.core.model import PlateModel, join_arguments, trace_model
from numpyro_mpe.core.rows import limit_compilations
from numpyro_mpe.crossval.psis import tail_buffers, tail_lengths
from numpyro_mpe.crossval.psis_kernels import psis_columns
from numpyro_mpe.optim.base import check_count
from numpyro_mpe.perturbation.perturb import perturb_mean_precision
from numpyro_mpe.perturbation.removal import check_at_most

__all__ = [
    "MAX_COMPONENTS",
    "MAX_SEED",
    "MIN_IMPORTANCE_DRAWS",
    "MIXTURE_INFLATION",
    "OWN_DRAWS_PER_SAMPLE",
    "PILOT_INFLATION",
    "PROPOSALS",
    "SHARED_DRAWS_PER_SAMPLE",
    "WIDE_INFLATION",
    "ImportanceLOO",
    "MixtureComponents",
    "Pilot",
    "check_num_samples",
    "check_seed",
    "exact_proposal_core",
    "good_pareto_k",
    "importance_loo",
    "log_normalizer",
    "mixture_components",
    "own_mixture_core",
    "pilot_core",
    "run_pilot",
    "shared_mixture_core",
]

#: The fewest importance draws per example (or group): PSIS needs at least two.
MIN_IMPORTANCE_DRAWS = 2

#: The largest seed: ``jax.random.PRNGKey`` takes an int64.
MAX_SEED = 2**63 - 1

#: Covariance inflation of the pilot's proposal (heavier than ``q`` where ``q`` is tight).
PILOT_INFLATION = 1.5

#: Covariance inflation of every component of the mixture proposals.
MIXTURE_INFLATION = 1.2

#: Covariance inflation of the wide component of an example's own proposal.
WIDE_INFLATION = 4.0

#: Draws of an example's own proposal per ``num_samples``.
OWN_DRAWS_PER_SAMPLE = 8

#: The most leave-one-out components in the shared proposal (those of largest KL).
MAX_COMPONENTS = 64

#: Draws of the shared proposal per ``num_samples`` (80,000 for the default 1,000).
SHARED_DRAWS_PER_SAMPLE = 80

#: How each importance-sampled entry's value was estimated (codes of ``proposal``):
#: the shared mixture, the example's own mixture, or a group's correction
#: (:mod:`numpyro_mpe.crossval.groups`).
PROPOSALS = ("shared", "own", "group")

_MAX_BATCH_VALUES = 2**24  # draws x examples held at once by one map step
_MAX_SHARED_VALUES = 2**25  # draws x examples of the shared proposal in one call
_EXACT_SPREAD = 1e-6
_PILOT_DRAWS_PER_SAMPLE = 4
_OWN_CHUNK = 4  # examples per call of own_mixture_core
_MATCH_MAX_K = 0.7


class Pilot(NamedTuple):
    """The pilot of :func:`pilot_core`.

    Attributes
    ----------
    mean : jax.Array, shape (P,)
        ``q*``'s mean: the importance-weighted posterior mean where ``matched``, else ``m``.
    precision : jax.Array, shape (P, P) or (P,)
        ``q*``'s precision, dense or diagonal as the fitted one.
    pareto_k : jax.Array, shape ()
        Pareto ``k`` of the pilot's importance ratios ``p(theta, y) / q(theta)``; ``-inf``
        when ``p(theta, y) / q(theta)`` is constant over the draws (to 1e-6 nats) for the
        fit ``q`` itself: the fit is the exact posterior.
    matched : jax.Array, shape (), bool
        Whether the moments were matched (``-inf < k <= 0.7``, a positive definite
        covariance).
    log_evidence : jax.Array, shape ()
        The pilot's PSIS estimate of ``log int p(theta, y) dtheta`` (exact where ``k`` is
        ``-inf``: every ratio equal, the fitted Gaussian the exact posterior).
    evidence_gap : jax.Array, shape ()
        ``log_evidence - (log p(m, y) - log q(m))``: what the Gaussian's own evidence
        (Laplace's, for a Laplace fit) misses, a global measure of its error.
    """

    mean: jax.Array
    precision: jax.Array
    pareto_k: jax.Array
    matched: jax.Array
    log_evidence: jax.Array
    evidence_gap: jax.Array


class MixtureComponents(NamedTuple):
    """A Gaussian mixture proposal of ``C`` components.

    Attributes
    ----------
    means : jax.Array, shape (C, P)
    factors : jax.Array, shape (C, P, P) or (C, P)
        Lower Cholesky factors ``L_c`` of the precisions ``S_c = L_c L_c^T`` (already
        divided by :data:`MIXTURE_INFLATION`), or the square roots of diagonal ones.
    half_log_dets : jax.Array, shape (C,)
        ``log |S_c| / 2``.
    log_weights : jax.Array, shape (C,)
        Log mixture weights (``-inf`` for an unused component).
    """

    means: jax.Array
    factors: jax.Array
    half_log_dets: jax.Array
    log_weights: jax.Array


class ImportanceLOO(NamedTuple):
    """Result of :func:`importance_loo` for ``M`` examples.

    Attributes
    ----------
    elpd : jax.Array, shape (M,)
        ``log p(y_i | y_-i)`` by Pareto-smoothed importance sampling.
    pareto_k : jax.Array, shape (M,)
        Pareto shape of the estimate kept (the larger of its two sums' ``k``).
    mcse : jax.Array, shape (M,)
        Monte Carlo standard error of each ``elpd_i`` (delta method on the ratio).
    total_mcse : jax.Array, shape ()
        Monte Carlo standard error of the sum of the ``elpd_i`` whose ``k`` is at most
        :func:`good_pareto_k` (the shared draws' errors are correlated across examples:
        the delta method on their sum).
    good_k : jax.Array, shape (M,)
        :func:`good_pareto_k` of the draws behind each estimate.
    proposal : jax.Array, shape (M,), int
        Index into :data:`PROPOSALS`: the shared mixture (0) or the example's own (1).
    pilot_pareto_k : jax.Array, shape ()
        Pareto ``k`` of the pilot (:class:`Pilot`): above 0.7 the fitted Gaussian is far
        from the posterior.
    """

    elpd: jax.Array
    pareto_k: jax.Array
    mcse: jax.Array
    total_mcse: jax.Array
    good_k: jax.Array
    proposal: jax.Array
    pilot_pareto_k: jax.Array


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


def good_pareto_k(num_draws: int) -> float:
    """The Pareto ``k`` threshold for ``num_draws`` draws, ``min(1 - 1 / log10(S), 0.7)``
    (Vehtari et al. 2024).

    >>> round(good_pareto_k(1000), 3)
    0.667
    """
    return float(min(1 - 1 / np.log10(num_draws), 0.7))


def _padded_count(count: int) -> int:
    """The number of examples ``count`` selected examples are padded to: the next of
    ``2^j`` and ``3 * 2^j`` (at most a third more work), so that the number of selected
    examples seldom compiles the cores anew.

    >>> [_padded_count(m) for m in (1, 3, 5, 7, 13, 100)]
    [1, 3, 6, 8, 16, 128]
    """
    power = 1 << max(count - 1, 0).bit_length()
    return 3 * power // 4 if count <= 3 * power // 4 else power


def _map(fn, xs, limit: int):
    """``jax.lax.map(fn, xs)`` in vectorised batches of at most ``limit`` rows, the largest
    size that divides the row count: ``lax.map`` would compile its body a second time for
    a remainder, and vectorise it (loops and all) even for batches of one."""
    rows = jax.tree_util.tree_leaves(xs)[0].shape[0]
    batch = next(b for b in range(max(1, min(limit, rows)), 0, -1) if rows % b == 0)
    return jax.lax.map(fn, xs, batch_size=batch if batch > 1 else None)


def _smoothed(log_ratios: jax.Array, num_samples: int):
    """Pareto-smoothed log ratios ``(S, B)`` (shifted: at most 0), the shift ``(B,)`` and
    the Pareto ``k`` ``(B,)``; ``k = -inf`` where a column's ratios agree to within
    ``1e-6`` nats (an exact proposal leaves no tail to fit)."""
    tail_len = tail_lengths(np.ones(log_ratios.shape[1]), num_samples)
    tail_cap, capacity = tail_buffers(tail_len, num_samples)
    shift = jnp.max(log_ratios, axis=0)
    smoothed, pareto_k = psis_columns(
        log_ratios, jnp.asarray(tail_len), tail_cap=tail_cap, capacity=capacity
    )
    spread = shift - jnp.min(log_ratios, axis=0)
    return smoothed, shift, jnp.where(spread < _EXACT_SPREAD, -jnp.inf, pareto_k)


def log_normalizer(log_ratios: jax.Array, num_samples: int):
    """PSIS estimate of ``log mean_s r_s`` per column, its Pareto k and MCSE.

    ``k = -inf`` where all ratios of a column agree to within ``1e-6`` nats.

    ``log_ratios``: ``(S, B)``. The MCSE is the delta-method standard error of the log of
    the self-normalised mean, ``sqrt(sum_s w_s^2 - 1 / S)`` with ``w`` normalised.
    """
    smoothed, shift, pareto_k = _smoothed(log_ratios, num_samples)
    log_mean = shift + jax.scipy.special.logsumexp(smoothed, axis=0) - jnp.log(num_samples)
    weights = jax.nn.softmax(smoothed, axis=0)
    mcse = jnp.sqrt(jnp.clip(jnp.sum(weights**2, axis=0) - 1.0 / num_samples, 0.0))
    return log_mean, pareto_k, mcse


def _ratio_estimates(log_joint, log_lik, log_proposal, num_samples: int):
    """``log sum_s p(theta_s, y)/g - log sum_s p(theta_s, y_-i)/g`` per column of
    ``log_lik`` ``(S, M)``: ``(elpd, k, mcse)``, each ``(M,)``, and the per-draw terms
    ``a_s - b_si`` ``(S, M)`` of the delta method.

    With ``a`` and ``b_i`` the normalised smoothed weights of the two sums, ``elpd_i`` has
    the delta-method variance ``sum_s (a_s - b_si)^2``, and a sum of ``elpd_i`` over
    columns the variance ``sum_s (sum_i (a_s - b_si))^2``: the draws are common.
    """
    full = (log_joint - log_proposal)[:, None]
    smoothed_full, shift_full, k_full = _smoothed(full, num_samples)
    smoothed_loo, shift_loo, k_loo = _smoothed(full - log_lik, num_samples)
    log_z = shift_full + jax.scipy.special.logsumexp(smoothed_full, axis=0)
    log_z_loo = shift_loo + jax.scipy.special.logsumexp(smoothed_loo, axis=0)
    terms = jax.nn.softmax(smoothed_full, axis=0) - jax.nn.softmax(smoothed_loo, axis=0)
    mcse = jnp.sqrt(jnp.sum(terms**2, axis=0))
    return log_z - log_z_loo, jnp.maximum(k_full, k_loo), mcse, terms


def _is_positive_definite(precision) -> jax.Array:
    if is_dense(precision):
        return jnp.all(jnp.isfinite(jnp.linalg.cholesky(precision)))
    return jnp.all(precision > 0) & jnp.all(jnp.isfinite(precision))


def _factored(means, precisions, log_weights) -> MixtureComponents:
    """:class:`MixtureComponents` from means ``(C, P)``, precisions ``(C, P, P)`` or
    ``(C, P)`` (already inflated) and log weights ``(C,)``."""
    if precisions.ndim == 3:
        factors = jnp.linalg.cholesky(0.5 * (precisions + jnp.swapaxes(precisions, 1, 2)))
        half_log_dets = jnp.sum(jnp.log(jnp.diagonal(factors, axis1=1, axis2=2)), axis=1)
    else:
        factors = jnp.sqrt(precisions)
        half_log_dets = jnp.sum(jnp.log(factors), axis=1)
    return MixtureComponents(means, factors, half_log_dets, log_weights)


def _mixture_log_density(theta, components: MixtureComponents):
    """``log g(theta_s)`` ``(B,)`` of draws ``(B, P)`` under the mixture."""
    offsets = theta[:, None, :] - components.means[None]  # (B, C, P)
    if components.factors.ndim == 3:  # S_c = L_c L_c^T: L_c^T (theta - m_c) is N(0, I)
        whitened = jnp.einsum("bcp,cpq->bcq", offsets, components.factors)
    else:
        whitened = offsets * components.factors[None]
    log_densities = (
        -0.5 * jnp.sum(whitened**2, axis=-1)
        + components.half_log_dets
        - 0.5 * theta.shape[1] * jnp.log(2 * jnp.pi)
    )
    return jax.scipy.special.logsumexp(log_densities + components.log_weights, axis=1)


def _mixture_draws(key, components: MixtureComponents, num_draws: int):
    """``num_draws`` draws ``(S, P)`` of the mixture and their log densities ``(S,)``."""
    key_component, key_normal = jax.random.split(key)
    which = jax.random.categorical(key_component, components.log_weights, shape=(num_draws,))
    num_components, dim = components.means.shape
    z = jax.random.normal(key_normal, (num_draws, dim), components.means.dtype)
    batch = max(1, min(num_draws, _MAX_BATCH_VALUES // (8 * num_components * dim)))

    def draw(inputs):
        index, standard_normal = inputs
        factor = components.factors[index]
        if factor.ndim == 2:
            offset = jax.scipy.linalg.solve_triangular(factor.T, standard_normal, lower=False)
        else:
            offset = standard_normal / factor
        return components.means[index] + offset

    theta = _map(draw, (which, z), batch)
    log_density = _map(lambda t: _mixture_log_density(t[None], components)[0], theta, batch)
    return theta, log_density


def _traced(arrays, model, static, plate) -> PlateModel:
    args, kwargs = join_arguments(arrays, static)
    return trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)


@partial(jax.jit, static_argnames=("model", "static", "plate", "num_draws"))
def pilot_core(mean, precision, arrays, rng_key, *, model, static, plate, num_draws):
    """The pilot (see the module docstring): ``num_draws`` draws of ``N(m, (S /
    PILOT_INFLATION)^-1)`` weighted by ``p(theta, y) / q(theta)``. Returns a :class:`Pilot`."""
    plate_model = _traced(arrays, model, static, plate)
    standard_normal = jax.random.normal(rng_key, (num_draws, mean.shape[0]), mean.dtype)
    theta, log_q = draws_from_standard_normal(standard_normal, mean, precision / PILOT_INFLATION)
    log_joint = _map(plate_model.log_joint, theta, 1024)
    smoothed, shift, pareto_k = _smoothed((log_joint - log_q)[:, None], num_draws)
    log_evidence = shift[0] + jax.scipy.special.logsumexp(smoothed[:, 0]) - jnp.log(num_draws)
    # Ratios to the fit itself all equal (to 1e-6 nats): the fit is the exact posterior
    # (Gaussian-linear terms); k = -inf and the evidence is exact.
    exact_ratios = log_joint - log_density(theta, mean, precision)
    exact = jnp.max(exact_ratios) - jnp.min(exact_ratios) < _EXACT_SPREAD
    pareto_k = jnp.where(exact, -jnp.inf, pareto_k[0])
    log_evidence = jnp.where(exact, jnp.mean(exact_ratios), log_evidence)
    weights = jax.nn.softmax(smoothed[:, 0])
    matched_mean = weights @ theta
    offsets = theta - matched_mean
    if is_dense(precision):
        covariance = offsets.T @ (offsets * weights[:, None])
        matched_precision = jnp.linalg.inv(0.5 * (covariance + covariance.T))
        matched_precision = 0.5 * (matched_precision + matched_precision.T)
    else:
        matched_precision = 1.0 / (weights @ offsets**2)
    matched = (
        ~exact
        & (pareto_k <= _MATCH_MAX_K)
        & _is_positive_definite(matched_precision)
        & jnp.all(jnp.isfinite(matched_mean))
    )
    return Pilot(
        mean=jnp.where(matched, matched_mean, mean),
        precision=jnp.where(matched, matched_precision, precision),
        pareto_k=pareto_k,
        matched=matched,
        log_evidence=log_evidence,
        evidence_gap=log_evidence
        - plate_model.log_joint(mean)
        + log_density(mean[None], mean, precision)[0],
    )


def _removals(plate_model, mean, precision, indices):
    """MPE removal of each example in ``indices`` from ``N(mean, precision^-1)``:
    means ``(M, P)``, precisions ``(M, ...)`` and whether each is positive definite."""

    def removal(index):
        eps = jnp.zeros(plate_model.num_examples, mean.dtype).at[index].set(1.0)
        loo_mean, loo_precision = perturb_mean_precision(mean, precision, plate_model.log_lik, eps)
        return loo_mean, loo_precision, _is_positive_definite(loo_precision)

    return _map(removal, indices, 64)


def _kl_to_base(means, precisions, mean, precision):
    """``KL(N(m_j, S_j^-1) || N(m, S^-1))`` for each ``j`` ``(M,)``."""
    offsets = means - mean
    if is_dense(precision):
        covariances = jnp.linalg.inv(precisions)
        trace = jnp.einsum("pq,jqp->j", precision, covariances)
        quad = jnp.einsum("jp,pq,jq->j", offsets, precision, offsets)
        log_det = jnp.linalg.slogdet(precisions)[1] - jnp.linalg.slogdet(precision)[1]
    else:
        trace = jnp.sum(precision / precisions, axis=1)
        quad = jnp.sum(offsets**2 * precision, axis=1)
        log_det = jnp.sum(jnp.log(precisions), axis=1) - jnp.sum(jnp.log(precision))
    return 0.5 * (trace + quad - mean.shape[0] + log_det)


@partial(jax.jit, static_argnames=("model", "static", "plate", "num_components"))
def mixture_components(mean, precision, arrays, indices, *, model, static, plate, num_components):
    """The shared proposal's components: ``q*`` (weight 1/2) and the ``num_components``
    leave-one-out Gaussians ``q*_-j`` of ``indices`` with the largest ``KL(q*_-j || q*)``
    (weights ``KL / sum KL``, together 1/2; improper ones dropped), covariances inflated
    by :data:`MIXTURE_INFLATION`. Returns :class:`MixtureComponents` of ``1 +
    num_components`` components."""
    plate_model = _traced(arrays, model, static, plate)
    loo_means, loo_precisions, valid = _removals(plate_model, mean, precision, indices)
    kl = _kl_to_base(loo_means, loo_precisions, mean, precision)
    score = jnp.where(valid & jnp.isfinite(kl), jnp.maximum(kl, 0.0), -1.0)
    top_score, top = jax.lax.top_k(score, num_components)
    used = top_score > 0
    share = jnp.where(used, top_score, 0.0) / jnp.maximum(
        jnp.sum(jnp.where(used, top_score, 0.0)), 1e-300
    )
    any_used = jnp.any(used)
    base_weight = jnp.where(any_used, 0.5, 1.0)
    log_weights = jnp.concatenate(
        [jnp.log(base_weight)[None], jnp.where(used, jnp.log(0.5 * share), -jnp.inf)]
    )
    safe = jnp.where(
        used.reshape((-1,) + (1,) * (precision.ndim)), loo_precisions[top], precision[None]
    )
    return _factored(
        jnp.concatenate([mean[None], jnp.where(used[:, None], loo_means[top], mean)]),
        jnp.concatenate([precision[None], safe]) / MIXTURE_INFLATION,
        log_weights,
    )


@partial(jax.jit, static_argnames=("model", "static", "plate", "num_draws", "batch"))
def shared_mixture_core(
    components, arrays, indices, counted, rng_key, *, model, static, plate, num_draws, batch
):
    """``(elpd, k, mcse)`` ``(M,)`` of the examples ``indices`` on ``num_draws`` common
    draws of the mixture ``components`` (:func:`_ratio_estimates`), and the per-draw
    delta-method terms ``(S,)`` of the sum over the examples that are ``counted`` ``(M,)``
    (bool) and whose ``k`` is at most :func:`good_pareto_k`: summed over calls with the
    same key (the same draws), their squares' sum is the variance of that total."""
    plate_model = _traced(arrays, model, static, plate)
    theta, log_proposal = _mixture_draws(rng_key, components, num_draws)

    def terms(t):
        log_lik = plate_model.log_lik(t)
        return plate_model.log_prior(t) + jnp.sum(log_lik), log_lik[indices]

    log_joint, log_lik = _map(terms, theta, batch)
    elpd, pareto_k, mcse, draw_terms = _ratio_estimates(
        log_joint, log_lik, log_proposal, num_draws
    )
    kept = counted & (pareto_k <= good_pareto_k(num_draws))
    return elpd, pareto_k, mcse, jnp.sum(jnp.where(kept, draw_terms, 0.0), axis=1)


@partial(jax.jit, static_argnames=("model", "static", "plate", "num_samples", "batch"))
def own_mixture_core(
    mean, precision, arrays, indices, rng_key, *, model, static, plate, num_samples, batch
):
    """``(elpd, k, mcse)`` ``(M,)`` of each example in ``indices`` from its own proposal
    ``1/3 q* + 1/3 q*_-i + 1/3 q*_-i`` (``q* = N(mean, precision^-1)``; the last with
    its covariance inflated by :data:`WIDE_INFLATION`, the others by
    :data:`MIXTURE_INFLATION`; ``q*`` instead of ``q*_-i`` where the removal's precision
    is not positive definite), ``num_samples`` draws each, independent across examples.
    The wide component covers leave-one-out posteriors that the one MPE step leaves too
    narrow (a high reliability value)."""
    plate_model = _traced(arrays, model, static, plate)
    loo_means, loo_precisions, valid = _removals(plate_model, mean, precision, indices)
    inflation = jnp.array([MIXTURE_INFLATION, MIXTURE_INFLATION, WIDE_INFLATION], mean.dtype)

    def one(inputs):
        index, loo_mean, loo_precision, proper = inputs
        loo_mean = jnp.where(proper, loo_mean, mean)
        loo_precision = jnp.where(proper, loo_precision, precision)
        precisions = jnp.stack([precision, loo_precision, loo_precision])
        components = _factored(
            jnp.stack([mean, loo_mean, loo_mean]),
            precisions / inflation.reshape((3,) + (1,) * precision.ndim),
            jnp.full(3, -jnp.log(3.0), mean.dtype),
        )
        theta, log_proposal = _mixture_draws(
            jax.random.fold_in(rng_key, index), components, num_samples
        )
        log_lik = jax.vmap(plate_model.log_lik)(theta)
        log_joint = jax.vmap(plate_model.log_prior)(theta) + jnp.sum(log_lik, axis=1)
        elpd, k, mcse, _ = _ratio_estimates(
            log_joint, log_lik[:, index][:, None], log_proposal, num_samples
        )
        return elpd[0], k[0], mcse[0]

    return _map(one, (indices, loo_means, loo_precisions, valid), batch)


@partial(jax.jit, static_argnames=("model", "static", "plate", "num_samples", "batch"))
def exact_proposal_core(
    mean,
    precision,
    log_evidence,
    arrays,
    indices,
    rng_key,
    *,
    model,
    static,
    plate,
    num_samples,
    batch,
):
    """``(elpd, k, mcse)`` ``(M,)`` when ``N(mean, precision^-1)`` is the exact posterior
    (the pilot's ratios all equal) and ``log_evidence`` its exact ``log Z``: each
    ``log Z_-i`` from ``num_samples`` draws of the MPE removal ``q_-i``, itself exact for
    Gaussian-linear terms (constant ratios, ``k = -inf``), so that ``elpd_i = log Z -
    log Z_-i`` keeps the closed form's exactness."""
    plate_model = _traced(arrays, model, static, plate)
    loo_means, loo_precisions, valid = _removals(plate_model, mean, precision, indices)

    def one(inputs):
        index, loo_mean, loo_precision, proper = inputs
        standard_normal = jax.random.normal(
            jax.random.fold_in(rng_key, index), (num_samples, mean.shape[0]), mean.dtype
        )
        theta, log_q = draws_from_standard_normal(
            standard_normal,
            jnp.where(proper, loo_mean, mean),
            jnp.where(proper, loo_precision, precision),
        )
        log_lik = jax.vmap(plate_model.log_lik)(theta)
        log_joint = jax.vmap(plate_model.log_prior)(theta) + jnp.sum(log_lik, axis=1)
        log_ratios = (log_joint - log_lik[:, index] - log_q)[:, None]
        log_z_loo, k, mcse = log_normalizer(log_ratios, num_samples)
        return log_evidence - log_z_loo[0], k[0], mcse[0]

    return _map(one, (indices, loo_means, loo_precisions, valid), batch)


def _exact_proposal_loo(pilot, arrays, indices, padded, key, common, num_samples, n):
    """:func:`importance_loo` when the pilot found the fitted Gaussian exact."""
    options = {
        **common,
        "num_samples": num_samples,
        "batch": max(1, min(padded.size, _MAX_BATCH_VALUES // (num_samples * n))),
    }
    inputs = (pilot.mean, pilot.precision, pilot.log_evidence, arrays, padded, key)
    limit_compilations(exact_proposal_core, inputs, options)
    elpd, pareto_k, mcse = (
        np.asarray(v)[: indices.size]
        for v in jax.device_get(exact_proposal_core(*inputs, **options))
    )
    return ImportanceLOO(
        elpd=elpd,
        pareto_k=pareto_k,
        mcse=mcse,
        total_mcse=np.sqrt(np.sum(mcse**2)),
        good_k=np.full(indices.size, good_pareto_k(num_samples)),
        proposal=np.ones(indices.size, np.int8),
        pilot_pareto_k=np.asarray(pilot.pareto_k),
    )


def run_pilot(model, plate_model, arrays, static, mean, precision, *, num_samples, seed) -> Pilot:
    """:func:`pilot_core` with ``4 * num_samples`` draws, compiled within bounds."""
    options = {
        "model": model,
        "static": static,
        "plate": plate_model.plate,
        "num_draws": _PILOT_DRAWS_PER_SAMPLE * num_samples,
    }
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    limit_compilations(pilot_core, (mean, precision, arrays, key), options)
    return pilot_core(mean, precision, arrays, key, **options)


def importance_loo(
    model: Callable,
    plate_model: PlateModel,
    arrays: list,
    static: tuple,
    pilot: Pilot,
    indices: np.ndarray,
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> ImportanceLOO:
    """PSIS leave-one-out with MPE mixture proposals, for the examples in ``indices``.

    First the shared mixture proposal for all of them (``SHARED_DRAWS_PER_SAMPLE *
    num_samples`` common draws), then each example's own proposal where the shared
    ``k`` exceeds :func:`good_pareto_k`; the estimate with the smaller ``k`` is kept.
    When the pilot found the fit exact (``k = -inf``), :func:`exact_proposal_core`.

    Parameters
    ----------
    model : callable
        The NumPyro model.
    plate_model : PlateModel
        From :func:`numpyro_mpe.trace_model` on its arguments.
    arrays, static : list, tuple
        Its arguments, from :func:`~numpyro_mpe.core.model.split_arguments`.
    pilot : Pilot
        From :func:`run_pilot`: ``q*`` and the pilot's Pareto ``k``.
    indices : numpy.ndarray of int, shape (M,)
    num_samples : int
        At least 2: the shared proposal takes ``max(16000, 80 x num_samples)`` draws and
        each own proposal ``8 x num_samples``.
    seed : int

    Returns
    -------
    ImportanceLOO
        Of NumPy arrays (in host memory).
    """
    num_samples = check_num_samples(num_samples)
    indices = np.asarray(indices)
    count = indices.size
    padded = np.resize(indices, _padded_count(count))  # repeats dropped below
    n = plate_model.num_examples
    key = jax.random.PRNGKey(seed)
    common = {"model": model, "static": static, "plate": plate_model.plate}
    num_draws = max(16_000, SHARED_DRAWS_PER_SAMPLE * num_samples)

    if np.isneginf(float(pilot.pareto_k)):
        return _exact_proposal_loo(pilot, arrays, indices, padded, key, common, num_samples, n)
    component_options = {**common, "num_components": min(MAX_COMPONENTS, padded.size)}
    inputs = (pilot.mean, pilot.precision, arrays, padded)
    limit_compilations(mixture_components, inputs, component_options)
    components = mixture_components(*inputs, **component_options)

    chunk = max(1, min(padded.size, _MAX_SHARED_VALUES // num_draws))
    shared_options = {
        **common,
        "num_draws": num_draws,
        "batch": max(1, min(num_draws, _MAX_BATCH_VALUES // (n + chunk))),
    }
    shared_key = jax.random.fold_in(key, 1)
    elpd, pareto_k, mcse, influence = [], [], [], 0.0
    for start in range(0, padded.size, chunk):
        part = np.resize(padded[start : start + chunk], chunk)
        # Padding repeats examples; only each example's first column counts in the total.
        counted = np.arange(start, start + chunk) < count
        inputs = (components, arrays, part, counted, shared_key)
        limit_compilations(shared_mixture_core, inputs, shared_options)
        values = jax.device_get(shared_mixture_core(*inputs, **shared_options))
        for collected, value in zip((elpd, pareto_k, mcse), values[:3], strict=True):
            collected.append(value)
        influence = influence + values[3]
    elpd, pareto_k, mcse = (np.concatenate(v)[:count].copy() for v in (elpd, pareto_k, mcse))
    variance = float(np.sum(np.asarray(influence) ** 2))
    proposal = np.zeros(count, np.int8)
    good_k = np.full(count, good_pareto_k(num_draws))

    redo = np.flatnonzero(~(pareto_k <= good_pareto_k(num_draws)))
    if redo.size:
        own_draws = OWN_DRAWS_PER_SAMPLE * num_samples
        own_options = {
            **common,
            "num_samples": own_draws,
            "batch": max(1, min(_OWN_CHUNK, _MAX_BATCH_VALUES // (own_draws * n))),
        }
        own_key = jax.random.fold_in(key, 2)
        own = []
        # Fixed chunks: however many examples need their own proposal, one compilation.
        for start in range(0, redo.size, _OWN_CHUNK):
            chunk = np.resize(indices[redo[start : start + _OWN_CHUNK]], _OWN_CHUNK)
            inputs = (pilot.mean, pilot.precision, arrays, chunk, own_key)
            limit_compilations(own_mixture_core, inputs, own_options)
            own.append(jax.device_get(own_mixture_core(*inputs, **own_options)))
        own_elpd, own_k, own_mcse = (
            np.concatenate([np.asarray(part[field]) for part in own])[: redo.size]
            for field in range(3)
        )
        better = own_k < pareto_k[redo]
        chosen = redo[better]
        # Independent draws: their errors add in quadrature to the shared draws' (whose
        # total counted only examples with a good k, never those replaced here).
        elpd[chosen] = own_elpd[better]
        pareto_k[chosen] = own_k[better]
        mcse[chosen] = own_mcse[better]
        proposal[chosen] = 1
        good_k[chosen] = good_pareto_k(own_draws)
        counted = better & (own_k <= good_pareto_k(own_draws))
        variance += float(np.sum(own_mcse[counted] ** 2))
    return ImportanceLOO(
        elpd=elpd,
        pareto_k=pareto_k,
        mcse=mcse,
        total_mcse=np.sqrt(variance),
        good_k=good_k,
        proposal=proposal,
        pilot_pareto_k=np.asarray(pilot.pareto_k),
    )
