"""Natural-gradient optimizers of the Bayesian learning rule, as ``init`` / ``update`` pairs.

An optimizer is a :class:`NaturalGradientOptimizer`: ``init(mean, loss_fn)`` builds a
typed state and ``update(state, loss_fn)`` takes one step, where ``loss_fn(theta)`` is the
total loss ``L(theta) = l_0(theta) + sum_i l_i(theta)`` (or, with minibatches, an unbiased
estimate of it: the prior plus ``N / B`` times the batch's likelihood terms).
``mean_precision(state, covariance)`` reads the Gaussian ``N(m, S^-1)`` off the state, so
MPE works at any iteration.

Stochastic optimizers (:func:`iblr`) take extra keyword-only inputs:
``init(mean, loss_fn, *, num_examples=None)`` and
``update(state, loss_fn, *, rng_key)``. :class:`~numpyro_mpe.BLR` passes each keyword
that the optimizer's function names in its signature, so deterministic optimizers keep
the plain two-argument form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
    "IBLRInfo",
    "IBLRState",
    "NaturalGradientOptimizer",
    "NewtonInfo",
    "NewtonState",
    "OnlineNewtonInfo",
    "OnlineNewtonState",
    "VONInfo",
    "VONState",
    "iblr",
    "iblr_dense_precision_update",
    "iblr_precision_update",
    "newton",
    "online_newton",
    "von",
]


class NewtonState(NamedTuple):
    """State of :func:`newton`, everything evaluated at ``mean``.

    Attributes
    ----------
    mean : jax.Array, shape (P,)
    loss : jax.Array, shape ()
        ``L(mean)``.
    gradient : jax.Array, shape (P,)
        ``grad L(mean)``.
    hessian : jax.Array, shape (P, P)
        ``hess L(mean)``, the Laplace precision at convergence.
    damping : jax.Array, shape ()
        Levenberg-Marquardt damping for the next step (0: a plain Newton step).
    """

    mean: jax.Array
    loss: jax.Array
    gradient: jax.Array
    hessian: jax.Array
    damping: jax.Array


class NewtonInfo(NamedTuple):
    """Diagnostics of one :func:`newton` step.

    Attributes
    ----------
    loss : jax.Array
        ``L`` at the new mean.
    decrement : jax.Array
        Newton decrement ``g^T H^-1 g / 2`` at the new mean (the predicted decrease of
        ``L`` still to come; NaN-free: ``inf`` where ``H`` is not positive definite).
    converged : jax.Array
        ``decrement < tol``.
    accepted : jax.Array
        Whether a step decreasing ``L`` was found.
    """

    loss: jax.Array
    decrement: jax.Array
    converged: jax.Array
    accepted: jax.Array


class NaturalGradientOptimizer(NamedTuple):
    """An ``init`` / ``update`` pair (optax-style) over a Gaussian's natural parameters.

    Attributes
    ----------
    init : callable
        ``init(mean, loss_fn) -> state``.
    update : callable
        ``update(state, loss_fn) -> (state, info)``; ``info.loss`` and
        ``info.converged`` are always present.
    mean_precision : callable
        ``mean_precision(state, covariance) -> (m, S)`` for ``covariance`` in
        ``{"dense", "diag"}``.
    """

    init: Callable
    update: Callable
    mean_precision: Callable


def _value_grad_hessian(loss_fn: Callable, theta: jax.Array):
    loss, gradient = jax.value_and_grad(loss_fn)(theta)
    return loss, gradient, jax.hessian(loss_fn)(theta)


def _newton_decrement(gradient: jax.Array, hessian: jax.Array) -> jax.Array:
    cholesky = jnp.linalg.cholesky(hessian)
    step = jax.scipy.linalg.cho_solve((cholesky, True), gradient)
    decrement = 0.5 * jnp.dot(gradient, step)
    return jnp.where(jnp.isfinite(decrement), decrement, jnp.inf)


def newton(
    *, tol: float = 1e-10, max_damping_steps: int = 30, damping_factor: float = 10.0
) -> NaturalGradientOptimizer:
    """Full-batch Newton's method with exact Hessians: the BLR with ``rho = 1``.

    Each step solves ``(H + mu I) delta = -g`` with ``mu = 0`` first (a plain Newton
    step, exact in one step for a Gaussian-linear model) and, when that step does not
    decrease ``L`` or ``H + mu I`` is not positive definite, raises ``mu`` by
    ``damping_factor`` (Levenberg-Marquardt) until it does. At the fixed point
    ``grad L(m) = 0`` and the precision is ``S = hess L(m)`` (dense) or its diagonal
    (diag): the Laplace posterior.

    Parameters
    ----------
    tol : float
        Converged when the Newton decrement ``g^T H^-1 g / 2`` is below ``tol``.
    max_damping_steps : int
        Most damping increases tried in one step.
    damping_factor : float
        Factor by which the damping grows after a rejected step (and shrinks after an
        accepted one).

    Returns
    -------
    NaturalGradientOptimizer
    """
    if not damping_factor > 1:
        raise ValueError(f"damping_factor must exceed 1, got {damping_factor}")

    def init(mean: ArrayLike, loss_fn: Callable) -> NewtonState:
        mean = jnp.asarray(mean)
        loss, gradient, hessian = _value_grad_hessian(loss_fn, mean)
        return NewtonState(mean, loss, gradient, hessian, jnp.zeros((), mean.dtype))

    def update(state: NewtonState, loss_fn: Callable) -> tuple[NewtonState, NewtonInfo]:
        eye = jnp.eye(state.mean.shape[0], dtype=state.mean.dtype)
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(state.hessian))), 1.0)

        def candidate(damping):
            cholesky = jnp.linalg.cholesky(state.hessian + damping * eye)
            step = -jax.scipy.linalg.cho_solve((cholesky, True), state.gradient)
            new_mean = state.mean + step
            new_loss = loss_fn(new_mean)
            ok = jnp.all(jnp.isfinite(step)) & jnp.isfinite(new_loss)
            return new_mean, new_loss, ok & (new_loss <= state.loss)

        def cond(carry):
            _, _, accepted, tries, _ = carry
            return (~accepted) & (tries < max_damping_steps)

        def body(carry):
            _, _, _, tries, damping = carry
            damping = jnp.where(damping > 0, damping * damping_factor, 1e-8 * scale)
            new_mean, new_loss, accepted = candidate(damping)
            return new_mean, new_loss, accepted, tries + 1, damping

        new_mean, new_loss, accepted = candidate(state.damping)
        new_mean, new_loss, accepted, _, damping = jax.lax.while_loop(
            cond, body, (new_mean, new_loss, accepted, 0, state.damping)
        )
        new_state = jax.lax.cond(
            accepted,
            lambda: NewtonState(
                new_mean,
                *_value_grad_hessian(loss_fn, new_mean),
                damping / damping_factor,
            ),
            lambda: state,
        )
        # A damped step below this size is a plain Newton step for all practical purposes.
        new_state = new_state._replace(
            damping=jnp.where(new_state.damping < 1e-12 * scale, 0.0, new_state.damping)
        )
        decrement = _newton_decrement(new_state.gradient, new_state.hessian)
        info = NewtonInfo(
            loss=new_state.loss,
            decrement=decrement,
            converged=(decrement < tol) | ~accepted,
            accepted=accepted,
        )
        return new_state, info

    def mean_precision(state: NewtonState, covariance: str):
        if covariance == "dense":
            return state.mean, state.hessian
        return state.mean, jnp.diag(state.hessian)

    return NaturalGradientOptimizer(init=init, update=update, mean_precision=mean_precision)


_COVARIANCES = ("dense", "diag")


def _learning_rate(lr: float | Callable, step: jax.Array) -> jax.Array:
    """``lr`` itself, or ``lr(step)`` for a schedule (optax-style, ``step`` from 0)."""
    return jnp.asarray(lr(step) if callable(lr) else lr)


def _check_lr(lr: float | Callable) -> None:
    if not callable(lr) and not 0 < lr <= 1:
        raise ValueError(f"lr must be in (0, 1] or a schedule, got {lr}")


def _dense_or_diag(precision: jax.Array, covariance: str) -> jax.Array:
    """A ``(P, P)`` or ``(P,)`` precision in the form the guide's ``covariance`` needs."""
    if covariance == "dense":
        return precision if precision.ndim == 2 else jnp.diag(precision)
    return jnp.diag(precision) if precision.ndim == 2 else precision


class OnlineNewtonState(NamedTuple):
    """State of :func:`online_newton`: the BLR iterate ``q = N(mean, precision^-1)``.

    Attributes
    ----------
    mean : jax.Array, shape (P,)
    precision : jax.Array, shape (P, P) or (P,)
        ``S`` (dense) or its diagonal (diag), always that of the current ``mean``'s step.
    step : jax.Array, shape ()
        Number of updates taken (the argument of a learning-rate schedule).
    """

    mean: jax.Array
    precision: jax.Array
    step: jax.Array


class OnlineNewtonInfo(NamedTuple):
    """Diagnostics of one :func:`online_newton` step.

    Attributes
    ----------
    loss : jax.Array
        ``L`` at the new mean.
    decrement : jax.Array
        ``g^T S^-1 g / 2`` with ``g`` the gradient at the old mean and ``S`` the new
        precision (``inf`` where it is not finite).
    converged : jax.Array
        ``decrement < tol`` and the precision changed by at most ``rtol`` (relative).
    """

    loss: jax.Array
    decrement: jax.Array
    converged: jax.Array


def online_newton(
    lr: float | Callable = 1.0,
    *,
    covariance: str = "dense",
    precision_init: ArrayLike | None = None,
    tol: float = 1e-10,
    rtol: float = 1e-8,
) -> NaturalGradientOptimizer:
    """Online Newton: the BLR with the delta method and step size ``lr``.

    In natural parameters ``lambda = (S m, -S/2)`` the BLR step
    ``lambda <- (1 - rho) lambda - rho * sum_j g~_j`` with the delta-method natural
    gradient ``sum_j g~_j = (g - H m, H / 2)`` (``g = grad L(m)``, ``H = hess L(m)``, prior
    included) reads, in mean-precision form,

    .. math::

        S_{t+1} = (1 - \\rho) S_t + \\rho H(m_t), \\qquad
        m_{t+1} = m_t - \\rho S_{t+1}^{-1} g(m_t),

    (the new precision in the mean step: ``S_{t+1} m_{t+1} = (1 - rho) S_t m_t - rho (g -
    H m_t)``). With ``covariance="diag"`` ``H`` is replaced by its diagonal. With ``rho = 1``
    and the full-batch loss the iterates are those of :func:`newton` without damping. The
    fixed point is the Laplace posterior (``g = 0``, ``S = H``). No damping or line search:
    ``S`` must stay positive definite, which holds for convex losses.

    Parameters
    ----------
    lr : float or callable
        ``rho`` in ``(0, 1]``, or a schedule ``step -> rho``.
    covariance : {"dense", "diag"}
        Full Hessian ``(P, P)`` or its diagonal ``(P,)``.
    precision_init : array_like, optional
        Initial ``S`` (a scalar, ``(P,)`` or, for dense, ``(P, P)``); by default the
        Hessian (or its diagonal) at the initial mean.
    tol, rtol : float
        Converged when ``g^T S^-1 g / 2 < tol`` and ``max |S_new - S| <= rtol max |S_new|``.

    Returns
    -------
    NaturalGradientOptimizer

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> opt = online_newton(0.5)
    >>> loss_fn = lambda theta: 0.5 * jnp.sum((theta - 1.0) ** 2)
    >>> state = opt.init(jnp.zeros(2), loss_fn)
    >>> for _ in range(60):
    ...     state, info = opt.update(state, loss_fn)
    >>> bool(jnp.allclose(state.mean, 1.0))
    True
    """
    _check_lr(lr)
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}")

    def curvature(loss_fn: Callable, mean: jax.Array):
        gradient = jax.grad(loss_fn)(mean)
        hessian = jax.hessian(loss_fn)(mean)
        return gradient, hessian if covariance == "dense" else jnp.diag(hessian)

    def init(mean: ArrayLike, loss_fn: Callable) -> OnlineNewtonState:
        mean = jnp.asarray(mean)
        size = mean.shape[0]
        if precision_init is None:
            precision = curvature(loss_fn, mean)[1]
        else:
            precision = jnp.asarray(precision_init, mean.dtype)
            if covariance == "dense" and precision.ndim < 2:
                precision = jnp.diag(jnp.broadcast_to(precision, (size,)))
            elif covariance == "diag":
                precision = jnp.broadcast_to(precision, (size,))
        return OnlineNewtonState(mean, precision, jnp.zeros((), jnp.int32))

    def update(
        state: OnlineNewtonState, loss_fn: Callable
    ) -> tuple[OnlineNewtonState, OnlineNewtonInfo]:
        rho = _learning_rate(lr, state.step).astype(state.mean.dtype)
        gradient, hessian = curvature(loss_fn, state.mean)
        precision = (1 - rho) * state.precision + rho * hessian
        if covariance == "dense":
            cholesky = jnp.linalg.cholesky(precision)
            direction = jax.scipy.linalg.cho_solve((cholesky, True), gradient)
        else:
            direction = gradient / precision
        mean = state.mean - rho * direction
        decrement = 0.5 * jnp.dot(gradient, direction)
        decrement = jnp.where(jnp.isfinite(decrement), decrement, jnp.inf)
        change = jnp.max(jnp.abs(precision - state.precision))
        converged = (decrement < tol) & (change <= rtol * jnp.max(jnp.abs(precision)))
        info = OnlineNewtonInfo(loss=loss_fn(mean), decrement=decrement, converged=converged)
        return OnlineNewtonState(mean, precision, state.step + 1), info

    def mean_precision(state: OnlineNewtonState, covariance: str):
        return state.mean, _dense_or_diag(state.precision, covariance)

    return NaturalGradientOptimizer(init=init, update=update, mean_precision=mean_precision)


# At the end: numpyro_mpe.iblr and numpyro_mpe.von import the helpers above.
from numpyro_mpe.iblr import (  # noqa: E402
    IBLRInfo,
    IBLRState,
    iblr,
    iblr_dense_precision_update,
    iblr_precision_update,
)
from numpyro_mpe.von import VONInfo, VONState, von  # noqa: E402
