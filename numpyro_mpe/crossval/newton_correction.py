"""Newton-corrected leave-out posteriors for blocks that one MPE step cannot remove.

Removing a large block ``B`` (a class, a long stretch of a series) can move the posterior
by several sd: the MPE cavity mean is then far from the mode of ``L_{-B}(theta) = -log
p(theta) - sum_{i not in B} log p(y_i | theta)``, which its Newton decrement ``g^T H^{-1}
g`` there says. :func:`leave_out_laplace` takes damped Newton steps on ``L_{-B}`` from
the cavity mean to its mode ``m_r``, with ``S_r = hess L_{-B}(m_r)``: the Laplace
posterior ``r = N(m_r, S_r^{-1})`` of a refit without the block; then the mode ``c`` of
the tilted density ``p(y_B | theta) r(theta)``, where ``l_B = -log p(y_B | theta)`` is
expanded to second order (``l_B(c)``, ``gamma``, ``H_c``). :func:`laplace_log_density`
integrates ``exp(-Q_c) r`` exactly (``delta = m_r - c``, ``beta = gamma + H_c delta``):

.. math::

    \\log p(y_B \\mid y_{-B}) \\approx -l_B(c) - \\gamma^T\\delta - \\tfrac12 \\delta^T H_c
        \\delta + \\tfrac12 \\log\\frac{|S_r|}{|S_r + H_c|}
        + \\tfrac12 \\beta^T (S_r + H_c)^{-1} \\beta ,

and gives the tilted Gaussian ``t = N(m_r - (S_r + H_c)^{-1} beta, (S_r + H_c)^{-1})``,
the proposal of an importance-sampled correction ``log E_t[exp(Q_c - l_B)]``. With the
one-step cavity as ``r`` and ``c = m`` this is the MPE closed form of
:mod:`numpyro_mpe.crossval.groups`, which calls this module for the groups whose
one-step decrement exceeds :data:`CORRECTION_THRESHOLD`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "CORRECTION_THRESHOLD",
    "CORRECTION_TOL",
    "MAX_NEWTON_STEPS",
    "LeaveOutLaplace",
    "group_decrement_message",
    "laplace_log_density",
    "leave_out_laplace",
]

#: One-step Newton decrement above which a group is corrected (the warning level).
CORRECTION_THRESHOLD = 0.1
#: The corrected groups' Newton steps stop below this decrement. On the kidiq LOCO a
#: decrement of 1.6e-3 still leaves 0.7 nats, 1.9e-7 leaves 0.008 (measured).
CORRECTION_TOL = 1e-8
#: Most Newton steps toward each corrected group's mode (and toward its tilted mode).
MAX_NEWTON_STEPS = 10


class LeaveOutLaplace(NamedTuple):
    """A block's leave-out Laplace posterior ``r = N(mean, precision^-1)`` and the
    expansion of the block's loss ``l_B`` at the mode of ``p(y_B | theta) r(theta)``.

    Attributes
    ----------
    mean : jax.Array, shape (P,)
        Mode of ``L_{-B}`` (after ``steps`` Newton steps).
    precision : jax.Array, shape (P, P) or (P,)
        ``hess L_{-B}(mean)`` (its diagonal for the diagonal family).
    steps : jax.Array, shape (), int32
        Newton steps taken toward ``mean``.
    decrement : jax.Array, shape ()
        ``g^T H^{-1} g`` of ``L_{-B}`` at ``mean`` (dense ``H``).
    center : jax.Array, shape (P,)
        Mode of the tilted density ``exp(-l_B(theta)) r(theta)``.
    loss, gradient, hessian : jax.Array, shapes (), (P,), (P, P) or (P,)
        ``l_B``, its gradient and its Hessian (diagonal for the diagonal family) at
        ``center``.
    """

    mean: jax.Array
    precision: jax.Array
    steps: jax.Array
    decrement: jax.Array
    center: jax.Array
    loss: jax.Array
    gradient: jax.Array
    hessian: jax.Array


class _NewtonPoint(NamedTuple):
    """Where a Newton search stopped: ``mean`` ``(P,)`` and the loss, its gradient and its
    Hessian there; the steps taken and ``g^T H^-1 g``."""

    mean: jax.Array
    loss: jax.Array
    gradient: jax.Array
    hessian: jax.Array
    steps: jax.Array
    decrement: jax.Array


def _newton_to_mode(loss_fn, start, *, max_steps: int, tol: float) -> _NewtonPoint:
    """Damped Newton on ``loss_fn`` from ``start`` until ``g^T H^-1 g`` is below ``tol``
    (or the loss's float resolution ``10 eps max(1, |L|)``) or ``max_steps`` accepted
    steps (at most ``2 max_steps + 1`` evaluations). The decrement returned is ``g^T (H +
    mu I)^-1 g`` with the damping ``mu`` of the next step (0 but after refused steps).

    Each step solves ``(H + mu I) d = -g``; a step that does not lower the loss is
    refused and ``mu`` raised (from ``1e-8 max|H_pp|``, x10 each time; Levenberg-
    Marquardt, as :func:`numpyro_mpe.optim.newton`), and lowered x10 after an accepted
    one. The loss, gradient and Hessian are evaluated (and traced) in one place: at each
    candidate, which is how a refusal is found.
    """
    size = start.shape[0]
    eye = jnp.eye(size, dtype=start.dtype)

    def value_and_gradient(theta):  # forward over reverse: one trace for all three
        loss, gradient = jax.value_and_grad(loss_fn)(theta)
        return gradient, (loss, gradient)

    def iterate(carry):
        point, candidate, damping, evaluations, _ = carry
        hessian, (loss, gradient) = jax.jacfwd(value_and_gradient, has_aux=True)(candidate)
        better = jnp.isfinite(loss) & (loss <= point.loss)
        steps = point.steps + (evaluations > 0).astype(jnp.int32)
        moved = _NewtonPoint(candidate, loss, gradient, hessian, steps, point.decrement)
        point = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), moved, point)
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(point.hessian))), 1.0)
        damping = jnp.where(
            better,
            jnp.where(damping > 1e-7 * scale, damping / 10, 0.0),
            jnp.where(damping > 0, 10 * damping, 1e-8 * scale),
        )
        # One factorisation: the next step, and the decrement g^T H^-1 g when mu = 0.
        factor = jnp.linalg.cholesky(point.hessian + damping * eye)
        step = jax.scipy.linalg.cho_solve((factor, True), point.gradient)
        decrement = point.gradient @ step
        decrement = jnp.where(jnp.isfinite(decrement), decrement, jnp.inf)
        point = point._replace(decrement=decrement)
        evaluations = evaluations + 1
        # Below the loss's float resolution a step cannot lower it any more (float32).
        resolution = 10 * jnp.finfo(start.dtype).eps * jnp.maximum(1.0, jnp.abs(point.loss))
        done = (
            (((decrement < tol) | (decrement <= resolution)) & (damping == 0))
            | (point.steps >= max_steps)
            | (evaluations > 2 * max_steps)
            | ~jnp.isfinite(point.loss)
        )
        return point, point.mean - step, damping, evaluations, done

    initial = _NewtonPoint(
        start,
        jnp.asarray(jnp.inf, start.dtype),
        jnp.zeros_like(start),
        jnp.zeros((size, size), start.dtype),
        jnp.zeros((), jnp.int32),
        jnp.asarray(jnp.inf, start.dtype),
    )
    carry = (
        initial,
        start,
        jnp.zeros((), start.dtype),
        jnp.zeros((), jnp.int32),
        jnp.array(False),
    )
    return jax.lax.while_loop(lambda carry: ~carry[-1], iterate, carry)[0]


def leave_out_laplace(
    log_prior: Callable,
    log_lik: Callable,
    kept: jax.Array,
    block: jax.Array,
    start: jax.Array,
    tilted_start: jax.Array,
    *,
    dense: bool,
    max_steps: int = MAX_NEWTON_STEPS,
    tol: float = CORRECTION_TOL,
) -> LeaveOutLaplace:
    """The leave-block-out Laplace posterior by Newton, and the Laplace point of the
    block's density under it.

    With ``L_{-B}(theta) = -log p(theta) - kept^T log p(y | theta)`` and ``l_B(theta) =
    -block^T log p(y | theta)``: damped Newton steps on ``L_{-B}`` from ``start`` (the MPE
    cavity mean) give ``r = N(m_r, S_r^{-1})``, ``S_r = hess L_{-B}(m_r)``; Newton steps
    on ``l_B(theta) + (theta - m_r)^T S_r (theta - m_r) / 2`` from ``tilted_start`` (the
    full-data mean) give the tilted mode ``c``, where ``l_B`` is expanded. Each loop stops
    when ``g^T H^-1 g < tol`` or after ``max_steps``; every step is one gradient and
    Hessian pass over the data. Both loops are one traced Newton loop (compiled once).

    Parameters
    ----------
    log_prior : callable
        ``theta (P,) -> ()``, ``log p(theta)``.
    log_lik : callable
        ``theta (P,) -> (N,)``, ``log p(y_i | theta)``.
    kept, block : jax.Array, shape (N,)
        Weights of the examples kept (``1 - block`` for leave-group-out) and of the block
        whose density is wanted.
    start, tilted_start : jax.Array, shape (P,)
    dense : bool
        False for the diagonal family: ``S_r`` and ``H_c`` are then diagonals ``(P,)``
        (the steps still use the full Hessian).
    max_steps : int
    tol : float

    Returns
    -------
    LeaveOutLaplace
        The Gaussian integral of ``exp(-Q_c) r`` then gives ``log int p(y_B | theta)
        r(theta) dtheta`` (the module's formula).
    """
    size = start.shape[0]

    def anchored(theta, anchor, anchor_precision):
        offset = theta - anchor
        if dense:
            return 0.5 * offset @ anchor_precision @ offset
        return 0.5 * jnp.sum(anchor_precision * offset**2)

    def phase(loss_terms, phase_start):
        prior_weight, weights, anchor, anchor_precision = loss_terms

        def loss_fn(theta):
            return (
                -prior_weight * log_prior(theta)
                - jnp.dot(weights, log_lik(theta))
                + anchored(theta, anchor, anchor_precision)
            )

        point = _newton_to_mode(loss_fn, phase_start, max_steps=max_steps, tol=tol)
        precision = point.hessian if dense else jnp.diagonal(point.hessian)
        tilted_terms = (jnp.zeros_like(prior_weight), block, point.mean, precision)
        return tilted_terms, point

    curvature_shape = (size, size) if dense else (size,)
    leave_out_terms = (
        jnp.ones((), start.dtype),
        kept,
        jnp.zeros_like(start),
        jnp.zeros(curvature_shape, start.dtype),
    )
    _, points = jax.lax.scan(phase, leave_out_terms, jnp.stack([start, tilted_start]))
    mean = points.mean[0]
    precision = points.hessian[0] if dense else jnp.diagonal(points.hessian[0])
    decrement = points.decrement[0]
    if not dense:
        decrement = jnp.sum(points.gradient[0] ** 2 / precision)
    # The tilted loss minus the anchor: l_B and its derivatives at the tilted mode.
    center = points.mean[1]
    offset = center - mean
    hessian = points.hessian[1] - (precision if dense else jnp.diag(precision))
    return LeaveOutLaplace(
        mean=mean,
        precision=precision,
        steps=points.steps[0],
        decrement=decrement,
        center=center,
        loss=points.loss[1] - anchored(center, mean, precision),
        gradient=points.gradient[1] - (precision @ offset if dense else precision * offset),
        hessian=hessian if dense else jnp.diagonal(hessian),
    )


def laplace_log_density(
    expansion: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    laplace_mean: jax.Array,
    laplace_precision: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``log int exp(-Q_c(theta)) N(theta; m_r, S_r^{-1}) dtheta`` for ``G`` blocks, and
    the tilted Gaussian ``t`` proportional to ``exp(-Q_c) r``.

    ``Q_c(theta) = l(c) + gamma^T (theta - c) + (theta - c)^T H_c (theta - c) / 2``; with
    ``delta = m_r - c`` and ``beta = gamma + H_c delta`` the integral is the module's
    formula (exact: both factors are Gaussian in ``theta``).

    Parameters
    ----------
    expansion : tuple
        ``(c, l(c), gamma, H_c)``: shapes ``(G, P)``, ``(G,)``, ``(G, P)`` and ``(G, P,
        P)``, or ``(G, P)`` for diagonal curvature.
    laplace_mean : jax.Array, shape (G, P)
        ``m_r``.
    laplace_precision : jax.Array, shape (G, P, P) or (G, P)
        ``S_r`` (diagonal with a diagonal ``H_c``).

    Returns
    -------
    log_density : jax.Array, shape (G,)
        NaN where ``S_r`` or ``S_r + H_c`` is not positive definite.
    tilted_mean : jax.Array, shape (G, P)
        ``m_r - (S_r + H_c)^{-1} beta`` (``c`` when ``c`` is the tilted mode).
    tilted_precision : jax.Array, shape (G, P, P) or (G, P)
        ``S_r + H_c``.
    """
    center, loss, gradient, hessian = expansion
    delta = laplace_mean - center
    tilted_precision = laplace_precision + hessian
    if hessian.ndim == 3:
        curved = jnp.einsum("gpq,gq->gp", hessian, delta)
        beta = gradient + curved
        laplace_factor = jnp.linalg.cholesky(laplace_precision)
        tilted_factor = jnp.linalg.cholesky(tilted_precision)
        solved = jax.scipy.linalg.cho_solve((tilted_factor, True), beta[..., None])[..., 0]
        half_log_det_ratio = jnp.sum(
            jnp.log(jnp.diagonal(laplace_factor, axis1=-2, axis2=-1))
            - jnp.log(jnp.diagonal(tilted_factor, axis1=-2, axis2=-1)),
            -1,
        )
    else:
        curved = hessian * delta
        beta = gradient + curved
        solved = beta / tilted_precision
        half_log_det_ratio = 0.5 * jnp.sum(jnp.log(laplace_precision / tilted_precision), -1)
    value = (
        -loss
        - jnp.sum(gradient * delta, -1)
        - 0.5 * jnp.sum(delta * curved, -1)
        + half_log_det_ratio
        + 0.5 * jnp.sum(beta * solved, -1)
    )
    return value, laplace_mean - solved, tilted_precision


def group_decrement_message(
    decrement: ArrayLike,
    newton_steps: ArrayLike,
    corrected_decrement: ArrayLike,
    *,
    threshold: float = CORRECTION_THRESHOLD,
) -> str | None:
    """The :class:`~numpyro_mpe.ReliabilityWarning` text about large groups, or None.

    Parameters
    ----------
    decrement, newton_steps, corrected_decrement : array_like, shape (G,)
        :class:`GroupLOO`'s ``newton_decrement``, ``newton_steps`` and
        ``corrected_decrement``.
    threshold : float
        The one-step decrement above which a group is reported.

    Returns
    -------
    str or None
        None when no group's one-step decrement exceeds ``threshold``.
    """
    decrement = np.asarray(decrement, dtype=float)
    steps = np.asarray(newton_steps)
    final = np.asarray(corrected_decrement, dtype=float)
    far = ~(decrement <= threshold)
    if not far.any():
        return None
    said = (
        f"{int(far.sum())} of {far.size} groups have a Newton decrement above {threshold} "
        f"(max {_largest(decrement[far]):.3g}): removing them moves the posterior beyond "
        "what one MPE step captures"
    )
    corrected = far & (steps > 0)
    if corrected.any():
        said += (
            f"; {int(corrected.sum())} were corrected by {steps[corrected].min()}-"
            f"{steps[corrected].max()} Newton steps to the leave-group-out Laplace posterior"
        )
    unreliable = far & ~(corrected & (final < CORRECTION_TOL))
    if not unreliable.any():
        return said
    if not corrected.any():
        return (
            f"{said}; their leave-group-out values are unreliable (refit them: "
            "exact_loo(..., groups=...))"
        )
    return (
        f"{said}; for {int(unreliable.sum())} the decrement is still above "
        f"{CORRECTION_TOL:g} (max {_largest(final[unreliable]):.3g}; float32 stops near "
        "1e-4, and some groups need more than the steps allowed): their values may be off "
        "by tenths of a nat or more (use float64, or refit them: exact_loo(..., groups=...))"
    )


def _largest(values: np.ndarray) -> float:
    """The largest value, NaN when none is a number (no warning)."""
    numbers = values[~np.isnan(values)]
    return float(numbers.max()) if numbers.size else float("nan")
