"""Leave-future-out predictive densities from the memory-perturbation equation.

For a model whose examples are time points in time order, the origin ``t`` scores the
next ``M`` observations given the first ``t``:

.. math::

    \\mathrm{elpd}_t = \\log p(y_{t..t+M-1} \\mid y_{0..t-1})
        = \\log p(y_{0..t+M-1}) - \\log p(y_{0..t-1}).

Both terms are log evidences relative to a *base* posterior ``q_b = N(m, S^{-1})``
fitted to the first ``b`` time points (the full fit: ``b = T``). Training on the first
``k`` points instead multiplies ``q_b`` by ``exp(sum_i c_i l_i)`` with ``c_i = [i < b] -
[i < k]`` (``l_i = -log p(y_i | y_{<i}, theta)``): removing the future, or adding a few
points when ``k > b``. With ``l_c = sum_i c_i l_i`` expanded to second order at ``m``
(``l_c(m)``, ``g_c``, ``H_c``), the MPE posterior given the first ``k`` points is

.. math::

    q_k = N\\big(m + C_k^{-1} g_c,\\ C_k^{-1}\\big),\\qquad C_k = S - H_c,

one natural-gradient step (exact division for Gaussian-linear terms), and

.. math::

    F(k) = \\log E_{q_b}\\big[e^{l_c(\\theta)}\\big]
         \\approx l_c(m) + \\tfrac12 \\log\\frac{|S|}{|C_k|}
         + \\tfrac12 g_c^T C_k^{-1} g_c
         \\approx \\log p(y_{<k}) - \\log p(y_{<b}),

``elpd_t = F(t + M) - F(t)``. ``method="cavity"`` (the default) keeps this closed form
(exact when every ``l_i`` is quadratic in the latents: a Gaussian autoregression with
known noise). ``method="is"`` estimates each evidence by importance sampling with the
MPE posterior as the proposal and the exact unnormalised posterior as the target,

.. math::

    \\log p(y_{<k}) \\approx \\log \\frac1S \\sum_{s=1}^{S}
        \\frac{p(\\theta_s)\\, p(y_{<k} \\mid \\theta_s)}{q_k(\\theta_s)},\\qquad
        \\theta_s \\sim q_k,

Pareto-smoothed, with the same standard normal draws for every ``k`` (so that the
errors of ``F(t + M)`` and ``F(t)`` are correlated); for Gaussian-linear terms the ratios
are constant and the result is exact again. Where the Pareto k of either evidence
exceeds ``min(1 - 1/log10(S), 0.7)`` the origin keeps the closed form and is flagged.
The per-example terms enter through prefix sums, so all origins cost one curvature pass
plus, per ``k``, one gradient pass and ``S`` evaluations of the log joint.

Reliability: the Newton decrement ``g^T C_k^{-1} g`` of ``-log p(theta, y_{<k})`` at the
mean of ``q_k`` (``g`` its gradient there: 0 when ``q_k`` is centred at the posterior mode
given the first ``k`` points; one gradient pass per ``k``), and for ``method="is"`` the
Pareto k of the sampled evidences. ``refit="unreliable"`` walks the origins from the
last to the first; at the latest origin whose values are unreliable it refits the
guide's family to the first ``t`` points (Newton from ``q_t``), and that refit becomes
the base of every earlier origin, so removals stay short.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.curvature import (
    GROUPS_PER_BATCH,
    check_hessian_stack,
    per_example_gradients,
    per_example_hessian_diagonals,
    per_example_hessians,
)
from numpyro_mpe.core.gaussian import draws_from_standard_normal, is_dense, precision_solve
from numpyro_mpe.core.model import join_arguments, split_arguments, trace_model
from numpyro_mpe.core.options import check_choice
from numpyro_mpe.core.rows import limit_compilations
from numpyro_mpe.crossval.importance import check_num_samples, check_seed, log_normalizer
from numpyro_mpe.crossval.lfo_window import LFOWindow, check_lfo_window
from numpyro_mpe.crossval.mpe_loo import warn_unless_stationary
from numpyro_mpe.crossval.psis import ParetoKWarning
from numpyro_mpe.crossval.refits import REFIT_TOL, laplace_refit
from numpyro_mpe.crossval.results import ELPDDataMPELFO, ReliabilityWarning
from numpyro_mpe.infer.blr import ConvergenceWarning, check_optimizer_for_guide
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.optim import NaturalGradientOptimizer, newton
from numpyro_mpe.optim.base import check_count, check_number
from numpyro_mpe.perturbation.removal import check_at_most

__all__ = ["LFOTerms", "good_k", "lfo", "lfo_core", "refit_core"]

LFOMethod = Literal["cavity", "is"]
LFORefit = Literal["never", "unreliable"]
LFO_METHODS: tuple[str, ...] = ("cavity", "is")
LFO_REFITS: tuple[str, ...] = ("never", "unreliable")


class LFOTerms(NamedTuple):
    """Log evidences ``log p(y_{<k})`` of ``K`` training lengths ``k`` from one base fit,
    and the full-posterior block densities of ``O`` origins.

    Attributes
    ----------
    log_evidence : jax.Array, shape (K,)
        Closed form: ``F(k)`` plus the base's Laplace evidence ``log p(theta_b, y_{<b}) -
        log q_b(m)``.
    sampled_log_evidence : jax.Array, shape (K,)
        ``log mean_s p(theta_s, y_{<k}) / q_k(theta_s)``, ``theta_s ~ q_k``
        (``method="is"``; the closed form for ``"cavity"``).
    valid : jax.Array of bool, shape (K,)
        ``C_k`` positive definite; elsewhere ``F(k)`` keeps ``S`` in place of ``C_k``.
    decrement : jax.Array, shape (K,)
        Newton decrement of ``-log p(theta, y_{<k})`` at the mean of ``q_k``.
    pareto_k, mcse : jax.Array, shape (K,)
        Of the sampled evidence (``-inf`` and 0 for ``method="cavity"``; ``inf`` where
        ``C_k`` is not positive definite).
    cavity_mean : jax.Array, shape (K, P)
        The mean of ``q_k``: the warm start of a refit at ``k``.
    lppd : jax.Array, shape (K,)
        ``log E_{q_b}[p(y_{t..t+M-1} | theta)]`` (closed form) for ``t`` in ``targets``
        (meaningless for the last ``M``, which are not origins).
    """

    log_evidence: jax.Array
    sampled_log_evidence: jax.Array
    valid: jax.Array
    decrement: jax.Array
    pareto_k: jax.Array
    mcse: jax.Array
    cavity_mean: jax.Array
    lppd: jax.Array


def _prefix(values: jax.Array) -> jax.Array:
    """``(N + 1, ...)`` prefix sums: row ``k`` holds the sum of the first ``k`` rows."""
    return jnp.concatenate([jnp.zeros_like(values[:1]), jnp.cumsum(values, axis=0)])


def _quadratic_evidence(loss, gradient, hessian, precision):
    """``l + 1/2 log|S|/|S - H| + 1/2 g^T (S - H)^-1 g``, ``S - H`` and whether it is
    positive definite; where it is not, ``l + 1/2 g^T S^-1 g`` and ``S``."""
    if is_dense(precision):
        cavity = precision - hessian
        factor = jnp.linalg.cholesky(cavity)
        log_det_ratio = 2 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(precision))))
        log_det_ratio -= 2 * jnp.sum(jnp.log(jnp.diag(factor)))
        valid = jnp.all(jnp.isfinite(factor))
        solved = jax.scipy.linalg.cho_solve((factor, True), gradient)
    else:
        cavity = precision - hessian
        valid = jnp.all(cavity > 0)
        log_det_ratio = jnp.sum(jnp.log(precision) - jnp.log(cavity))
        solved = gradient / cavity
    plug_in = precision_solve(precision, gradient)
    evidence = jnp.where(
        valid,
        loss + 0.5 * log_det_ratio + 0.5 * gradient @ solved,
        loss + 0.5 * gradient @ plug_in,
    )
    return evidence, jnp.where(valid, cavity, precision), valid, jnp.where(valid, solved, plug_in)


def _quadratic_form(offsets, hessian):
    if hessian.ndim == 2:
        return jnp.einsum("sp,pq,sq->s", offsets, hessian, offsets)
    return jnp.sum(offsets**2 * hessian, axis=1)


@partial(
    jax.jit,
    static_argnames=("model", "static", "plate", "method", "num_samples"),
)
def lfo_core(
    mean,
    precision,
    base,
    targets,
    horizon,
    arrays,
    seed,
    *,
    model,
    static,
    plate,
    method,
    num_samples,
) -> LFOTerms:
    """:class:`LFOTerms` for the training lengths ``targets`` ``(K,)`` (the origins are
    the first ``K - horizon`` of them), from a base ``N(mean, precision^-1)`` fitted to
    the first ``base`` time points. Jitted once per model, argument structure, shapes
    and method; the data, the base, the lengths and the horizon are arguments."""
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    dense = is_dense(precision)
    times = jnp.arange(plate_model.num_examples)
    loss = _prefix(-plate_model.log_lik(mean))
    gradient = _prefix(per_example_gradients(plate_model.log_lik, mean))
    hessian = _prefix(
        per_example_hessians(plate_model.log_lik, mean)
        if dense
        else per_example_hessian_diagonals(plate_model.log_lik, mean)
    )
    key = jax.random.PRNGKey(seed)
    standard_normal = jax.random.normal(key, (num_samples, mean.shape[0]), mean.dtype)
    # Laplace evidence of the base, so that every F(k) becomes an absolute log p(y_{<k}).
    base_log_joint = plate_model.log_joint(mean, (times < base).astype(mean.dtype))
    base_evidence = (
        base_log_joint
        - draws_from_standard_normal(jnp.zeros((1, mean.shape[0]), mean.dtype), mean, precision)[
            1
        ][0]
    )

    def at_length(k):
        terms = (loss[base] - loss[k], gradient[base] - gradient[k], hessian[base] - hessian[k])
        evidence, cavity, valid, shift = _quadratic_evidence(*terms, precision)
        cavity_mean = mean + shift

        def log_joint(theta):
            return plate_model.log_joint(theta, (times < k).astype(mean.dtype))

        g = jax.grad(log_joint)(cavity_mean)
        decrement = jnp.where(valid, g @ precision_solve(cavity, g), jnp.inf)
        if method == "cavity":
            return evidence, valid, decrement, cavity_mean, jnp.zeros(1, mean.dtype)
        theta, log_proposal = draws_from_standard_normal(standard_normal, cavity_mean, cavity)
        log_ratios = jax.vmap(log_joint)(theta) - log_proposal
        return evidence, valid, decrement, cavity_mean, jnp.where(valid, log_ratios, 0.0)

    evidence, valid, decrement, cavity_mean, log_ratios = jax.lax.map(
        at_length, targets, batch_size=GROUPS_PER_BATCH
    )
    evidence = evidence + base_evidence
    if method == "cavity":
        sampled = evidence
        pareto_k, mcse = jnp.full_like(evidence, -jnp.inf), jnp.zeros_like(evidence)
    else:
        sampled, pareto_k, mcse = log_normalizer(log_ratios.T, num_samples)
        pareto_k = jnp.where(valid, pareto_k, jnp.inf)

    def block_density(t):
        end = jnp.minimum(t + horizon, plate_model.num_examples)
        tilted = (loss[t] - loss[end], gradient[t] - gradient[end], hessian[t] - hessian[end])
        return _quadratic_evidence(*tilted, precision)[0]

    lppd = jax.vmap(block_density)(targets)
    return LFOTerms(evidence, sampled, valid, decrement, pareto_k, mcse, cavity_mean, lppd)


class _Origins(NamedTuple):
    """Per-origin values, filled from the last origin back."""

    elpd: np.ndarray
    decrement: np.ndarray
    pareto_k: np.ndarray
    base: np.ndarray
    unreliable: np.ndarray


def _checked_lfo_options(method, refit, decrement_threshold, num_steps, num_samples, seed):
    check_choice("method", method, LFO_METHODS)
    check_choice("refit", refit, LFO_REFITS)
    check_number("decrement_threshold", decrement_threshold, 0.0)
    check_count("num_steps", num_steps, 1)
    check_at_most("num_steps", num_steps)
    check_num_samples(num_samples)
    check_seed(seed)


def lfo(
    model: Callable,
    guide: AutoGaussian,
    params: dict,
    *args: Any,
    min_train: int,
    horizon: int = 1,
    method: LFOMethod = "cavity",
    refit: LFORefit = "never",
    plate: str | None = None,
    decrement_threshold: float = 0.1,
    optimizer: NaturalGradientOptimizer | None = None,
    num_steps: int = 20,
    num_samples: int = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> ELPDDataMPELFO:
    """Leave-future-out predictive densities ``log p(y_{t..t+M-1} | y_{0..t-1})`` by MPE.

    The model's plate of examples must hold the time points in time order, with the
    likelihood of ``y_t`` given the past (lagged values as data, or latent states as
    global latents), as in :mod:`numpyro_mpe.time_series`. No refit is made unless
    ``refit="unreliable"`` asks for them.

    Parameters
    ----------
    model, guide, params
        The model, its :class:`AutoGaussian` and params fitted to all ``T`` time points.
    *args, **kwargs
        The model's arguments (the whole series).
    min_train : int
        ``L``, in ``1..T-1``: the first origin trains on the first ``L`` time points.
    horizon : int
        ``M >= 1``: each origin scores the next ``M`` time points jointly; the origins
        are ``t = L, ..., T - M`` (ArviZ's ``lfo_cv`` convention).
    method : {"cavity", "is"}
        The closed form (exact for Gaussian-linear terms; the cost of one MPE-LOO call),
        or importance-sampled evidences (``num_samples`` common draws from each MPE
        posterior; exact for Gaussian-linear terms too, and it also corrects the
        Gaussian family's error, at ``num_samples`` evaluations of the log joint per
        origin: ``O(S T^2)`` in all).
    refit : {"never", "unreliable"}
        ``"unreliable"``: refit the guide's family (Newton, at most ``num_steps`` steps)
        at the latest unreliable origin, make that fit the base of the earlier origins,
        and go on. Unreliable means an MPE step that is off (a Newton decrement above
        ``decrement_threshold``, or an MPE precision that is not positive definite)
        and, for ``"is"``, not corrected by the sampling (Pareto k above
        ``min(1 - 1/log10(num_samples), 0.7)``).
    plate : str, optional
        The time plate.
    decrement_threshold : float
        Above it an origin's Newton decrement is unreliable (default 0.1, as for
        leave-group-out).
    optimizer : NaturalGradientOptimizer, optional
        For the refits; ``numpyro_mpe.optim.newton(tol=1e-15)`` by default.
    num_steps, num_samples, seed : int
        Most Newton steps per refit; importance draws; their seed.

    Returns
    -------
    ELPDDataMPELFO
        An ArviZ ``ELPDDataLFO`` (``kind="lfo_cv"``): ``elpd_i`` over the origins (the
        plate's coordinate), ``p_lfo_i`` (full-posterior block density minus
        ``elpd_i``), ``refits`` and ``n_refits``, per-origin ``newton_decrement``,
        ``pareto_k`` (``"is"``) and ``base`` (the training length of the fit each origin
        was computed from: ``T`` for the full fit). ``az.compare`` accepts it beside
        other LFO results with the same ``min_train`` and ``horizon``.

    Warns
    -----
    ReliabilityWarning
        ``method="cavity"``, ``refit="never"``: origins whose Newton decrement exceeds
        ``decrement_threshold`` or whose MPE precision is not positive definite. Also
        when the params are not a fit to these data (as :func:`numpyro_mpe.loo`).
    ParetoKWarning
        ``method="is"``: with ``refit="never"``, origins where the MPE step is off and
        the importance sampling did not correct it (a refit would); and, whatever
        ``refit``, origins whose Pareto k is too high although their MPE posteriors hold
        (the Gaussian family is at fault: more draws, or NUTS refits).
    ConvergenceWarning
        Refits that did not converge within ``num_steps``.

    Raises
    ------
    ValueError, TypeError
        Before any work: ``min_train`` outside ``1..T-1``, ``horizon < 1``, no origin
        left, a series with masked (missing) time points, NaN in the data (named by
        argument), a model without a plate, an unknown ``method`` or ``refit``, bad
        counts, a guide that is not an :class:`AutoGaussian`.
    """
    _checked_lfo_options(method, refit, decrement_threshold, num_steps, num_samples, seed)
    if not isinstance(guide, AutoGaussian):
        raise TypeError(f"lfo works with an AutoGaussian guide; got {type(guide).__name__}")
    if optimizer is not None:
        check_optimizer_for_guide(optimizer, guide, where="lfo")
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    window = check_lfo_window(min_train, horizon, plate_model)
    dense = guide.covariance == "dense"
    if dense:
        check_hessian_stack(
            plate_model.num_examples + 1,
            plate_model.num_latents,
            plate_model.init_theta.dtype.itemsize,
            what="lfo's per-example Hessians",
            advice="use a diagonal guide",
        )
    mean, precision = guide.checked_mean_precision(params, plate_model.num_latents, where="lfo")
    arrays, static = split_arguments(args, kwargs)
    core_options = {
        "model": model,
        "static": static,
        "plate": plate_model.plate,
        "method": method,
        "num_samples": num_samples if method == "is" else 1,
    }
    stationary_options = {name: core_options[name] for name in ("model", "static", "plate")}
    warn_unless_stationary(
        mean, precision, arrays, window.num_times, stationary_options, where="lfo"
    )
    start = time.perf_counter()
    values, lppd, refits, converged = _walk_origins(
        plate_model,
        window,
        (mean, precision),
        arrays,
        seed,
        core_options,
        refit=refit,
        threshold=decrement_threshold,
        good_k=good_k(num_samples) if method == "is" else None,
        refit_options={
            "model": model,
            "static": static,
            "plate": plate_model.plate,
            "optimizer": newton(tol=REFIT_TOL) if optimizer is None else optimizer,
            "covariance": guide.covariance,
            "num_steps": num_steps,
        },
    )
    if not all(converged):
        failed = [int(t) for t, ok in zip(refits, converged, strict=True) if not ok]
        warnings.warn(
            f"lfo: {len(failed)} of {len(refits)} refits did not converge in "
            f"num_steps={num_steps} (origins {failed[:5]}); raise num_steps",
            ConvergenceWarning,
            stacklevel=2,
        )
    warned = _warn_unreliable(window, values, method, decrement_threshold, num_samples)
    return ELPDDataMPELFO.from_origins(
        window,
        values.elpd,
        np.asarray(lppd),
        dim=plate_model.plate,
        refits=np.asarray(refits, dtype=int),
        newton_decrement=values.decrement,
        pareto_k=values.pareto_k if method == "is" else None,
        base=values.base,
        method=method,
        covariance=guide.covariance,
        decrement_threshold=decrement_threshold,
        warning=warned,
        good_k=good_k(num_samples) if method == "is" else None,
        n_samples=num_samples if method == "is" else 0,
        seconds=time.perf_counter() - start,
    )


def good_k(num_samples: int) -> float:
    """The Pareto k threshold of ``num_samples`` draws, ``min(1 - 1 / log10(S), 0.7)``."""
    return min(1 - 1 / np.log10(num_samples), 0.7)


@partial(
    jax.jit, static_argnames=("model", "static", "plate", "optimizer", "covariance", "num_steps")
)
def refit_core(
    start, length, arrays, *, model, static, plate, optimizer, covariance, num_steps
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(mean, precision, converged)``: the guide's family refitted (``optimizer`` from
    ``start``, at most ``num_steps`` steps) to the first ``length`` time points. Jitted
    once per model, argument structure, shapes and settings."""
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    weights = (jnp.arange(plate_model.num_examples) < length).astype(start.dtype)
    return laplace_refit(plate_model, optimizer, start, covariance, num_steps, weights)


def _walk_origins(
    plate_model, window: LFOWindow, base_fit, arrays, seed, core_options, **options
) -> tuple[_Origins, jax.Array, list[int], list[bool]]:
    """Fill every origin from the last back, from the full fit or the latest refit."""
    origins = window.origins
    count = origins.size
    floats = (np.empty(count) for _ in range(3))
    values = _Origins(*floats, np.empty(count, int), np.empty(count, bool))
    targets = np.arange(window.min_train, window.num_times + 1)
    base, (mean, precision) = window.num_times, base_fit
    refits, converged, lppd = [], [], None
    last = count - 1  # the latest origin not yet filled
    while last >= 0:
        inputs = (mean, precision, base, targets, window.horizon, arrays, seed)
        limit_compilations(lfo_core, inputs, core_options)
        terms = jax.device_get(lfo_core(*inputs, **core_options))
        lppd = terms.lppd[:count] if lppd is None else lppd
        at = origins - window.min_train  # position of k = t among the targets
        ahead = at + window.horizon
        decrement = np.maximum(terms.decrement[ahead], terms.decrement[at])
        pareto_k = np.maximum(terms.pareto_k[ahead], terms.pareto_k[at])
        valid = terms.valid[ahead] & terms.valid[at]
        closed_form = terms.log_evidence[ahead] - terms.log_evidence[at]
        # Far: the MPE posteriors are not the Laplace posteriors of the truncated data.
        unreliable = ~valid | ~(decrement <= options["threshold"])
        if options["good_k"] is None:
            elpd = closed_form
        else:
            # Never trade the closed form for an estimate with worse diagnostics. Where
            # the sampling fails but q_t is the truncated Laplace posterior, a refit
            # would give the same Gaussian: only the Gaussian family is at fault there.
            sampled = pareto_k <= options["good_k"]
            sampled_elpd = terms.sampled_log_evidence[ahead] - terms.sampled_log_evidence[at]
            elpd = np.where(sampled, sampled_elpd, closed_form)
            unreliable &= ~sampled
        unreliable &= origins != base  # a refit's own origin is as good as refits get
        flagged = np.flatnonzero(unreliable[: last + 1])
        first = int(flagged[-1]) + 1 if options["refit"] == "unreliable" and flagged.size else 0
        new_values = (elpd, decrement, pareto_k, base, unreliable)
        for field, new in zip(values, new_values, strict=True):
            field[first : last + 1] = np.broadcast_to(new, (count,))[first : last + 1]
        if first == 0:
            break
        last = first - 1
        position = int(origins[last] - window.min_train)
        start = terms.cavity_mean[position] if terms.valid[position] else mean
        refit_inputs = (jnp.asarray(start), int(origins[last]), arrays)
        limit_compilations(refit_core, refit_inputs, options["refit_options"])
        mean, precision, ok = refit_core(*refit_inputs, **options["refit_options"])
        base = int(origins[last])
        refits.append(base)
        converged.append(bool(ok))
    return values, lppd, refits, converged


def _warn_unreliable(window, values: _Origins, method, threshold, num_samples) -> bool:
    """Warn about the origins left unreliable; whether any was."""
    total = window.origins.size
    fixable = int(np.sum(values.unreliable))
    if fixable:
        sampling = " and the importance sampling did not correct it" if method == "is" else ""
        warnings.warn(
            f"lfo: at {fixable} of {total} origins removing the future moves the "
            f"posterior beyond what one MPE step captures (Newton decrement above "
            f"{threshold}, or an improper MPE posterior){sampling}; use "
            "refit='unreliable' (Newton refits at those origins only)",
            ParetoKWarning if method == "is" else ReliabilityWarning,
            stacklevel=3,
        )
    if method != "is":
        return bool(fixable)
    highest = good_k(num_samples)
    limited = int(np.sum(~(values.pareto_k <= highest) & ~values.unreliable))
    if limited:
        warnings.warn(
            f"lfo: {limited} of {total} origins have Pareto k above {highest:.2f} although "
            "their MPE posteriors are the Laplace ones: they keep the closed form, whose "
            "error is the Gaussian family's (a refit would not change it); raise "
            "num_samples, or compare with exact_lfo(method='nuts')",
            ParetoKWarning,
            stacklevel=3,
        )
    return bool(fixable or limited)
