"""Full-batch Newton (Laplace): the BLR with ``rho = 1`` and exact Hessians."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from numpyro_mpe.core.curvature import value_grad_hessian
from numpyro_mpe.core.options import COVARIANCES, Covariance, check_choice
from numpyro_mpe.optim.base import (
    NaturalGradientOptimizer,
    cached_by_settings,
    check_count,
    check_loss_fn,
    check_mean,
    check_number,
    check_state,
    newton_decrement,
)

__all__ = ["NewtonInfo", "NewtonState", "newton"]


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


@cached_by_settings
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
    check_number("damping_factor", damping_factor, 1.0)
    check_number("tol", tol, 0.0, closed=True)
    check_count("max_damping_steps", max_damping_steps, 0)

    def init(
        mean: ArrayLike,
        loss_fn: Callable,
        *,
        rng_key: jax.Array | None = None,
        num_examples: int | None = None,
        gauss_newton_fn: Callable | None = None,
    ) -> NewtonState:
        del rng_key, num_examples, gauss_newton_fn
        mean = check_mean(mean, "newton.init")
        check_loss_fn(loss_fn, "newton.init", mean)
        loss, gradient, hessian = value_grad_hessian(loss_fn, mean)
        return NewtonState(mean, loss, gradient, hessian, jnp.zeros((), mean.dtype))

    def update(
        state: NewtonState,
        loss_fn: Callable,
        *,
        rng_key: jax.Array | None = None,
        num_examples: int | None = None,
        gauss_newton_fn: Callable | None = None,
    ) -> tuple[NewtonState, NewtonInfo]:
        del rng_key, num_examples, gauss_newton_fn
        check_state(state, NewtonState, "newton.update")
        check_loss_fn(loss_fn, "newton.update")
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
                *value_grad_hessian(loss_fn, new_mean),
                damping / damping_factor,
            ),
            lambda: state,
        )
        # A damped step below this size is a plain Newton step for all practical purposes.
        new_state = new_state._replace(
            damping=jnp.where(new_state.damping < 1e-12 * scale, 0.0, new_state.damping)
        )
        decrement = newton_decrement(new_state.gradient, new_state.hessian)
        info = NewtonInfo(
            loss=new_state.loss,
            decrement=decrement,
            converged=(decrement < tol) | ~accepted,
            accepted=accepted,
        )
        return new_state, info

    def mean_precision(state: NewtonState, covariance: Covariance):
        check_state(state, NewtonState, "newton.mean_precision")
        check_choice("covariance", covariance, COVARIANCES)
        if covariance == "dense":
            return state.mean, state.hessian
        return state.mean, jnp.diag(state.hessian)

    return NaturalGradientOptimizer(
        init=init,
        update=update,
        mean_precision=mean_precision,
        reports_convergence=True,
        full_batch_only=True,
    )
