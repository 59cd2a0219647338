"""Online Newton: the BLR with the delta method and a step size ``rho``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from numpyro_mpe.core.curvature import gradient_hessian
from numpyro_mpe.core.options import COVARIANCES, Covariance, check_choice
from numpyro_mpe.optim.base import (
    NaturalGradientOptimizer,
    cached_by_settings,
    check_loss_fn,
    check_lr,
    check_mean,
    check_number,
    check_precision_init,
    check_state,
    dense_or_diag,
    initial_precision,
    learning_rate,
)

__all__ = ["OnlineNewtonInfo", "OnlineNewtonState", "online_newton"]


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


@cached_by_settings
def online_newton(
    lr: float | Callable = 1.0,
    *,
    covariance: Covariance = "dense",
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
        Initial ``S`` (a scalar, ``(P,)`` or, for dense, ``(P, P)``), positive (definite)
        and finite, else ``ValueError`` here (its shape against ``P`` in ``init``); by
        default the Hessian (or its diagonal) at the initial mean.
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
    check_lr(lr)
    check_choice("covariance", covariance, COVARIANCES)
    check_number("tol", tol, 0.0, closed=True)
    check_number("rtol", rtol, 0.0, closed=True)
    check_precision_init(precision_init, covariance)

    def curvature(loss_fn: Callable, mean: jax.Array):
        return gradient_hessian(loss_fn, mean, dense=covariance == "dense")

    def init(
        mean: ArrayLike,
        loss_fn: Callable,
        *,
        rng_key: jax.Array | None = None,
        num_examples: int | None = None,
        gauss_newton_fn: Callable | None = None,
    ) -> OnlineNewtonState:
        del rng_key, num_examples, gauss_newton_fn
        mean = check_mean(mean, "online_newton.init")
        check_loss_fn(loss_fn, "online_newton.init", mean)
        if precision_init is None:
            precision = curvature(loss_fn, mean)[1]
        else:
            precision = initial_precision(precision_init, mean, covariance, "online_newton.init")
        return OnlineNewtonState(mean, precision, jnp.zeros((), jnp.int32))

    def update(
        state: OnlineNewtonState,
        loss_fn: Callable,
        *,
        rng_key: jax.Array | None = None,
        num_examples: int | None = None,
        gauss_newton_fn: Callable | None = None,
    ) -> tuple[OnlineNewtonState, OnlineNewtonInfo]:
        del rng_key, num_examples, gauss_newton_fn
        check_state(state, OnlineNewtonState, "online_newton.update", covariance=covariance)
        check_loss_fn(loss_fn, "online_newton.update")
        rho = learning_rate(lr, state.step).astype(state.mean.dtype)
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

    def mean_precision(state: OnlineNewtonState, covariance: Covariance):
        check_state(state, OnlineNewtonState, "online_newton.mean_precision")
        return state.mean, dense_or_diag(state.precision, covariance)

    return NaturalGradientOptimizer(
        init,
        update,
        mean_precision,
        covariance=covariance,
        reports_convergence=True,
        lr=lr,
        max_lr=1.0,
        name="online_newton",
    )
