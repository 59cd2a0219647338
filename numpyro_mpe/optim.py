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


def iblr_precision_update(
    precision: ArrayLike, precision_estimate: ArrayLike, rate: ArrayLike
) -> jax.Array:
    """The improved-BLR precision step, positive for any (even negative) estimate.

    .. math::

        s' = s + \\beta G + \\frac{\\beta^2}{2} \\frac{G^2}{s}
           = \\frac{s}{2} \\left(1 + \\left(1 + \\beta G / s\\right)^2\\right),
        \\qquad G = \\hat s - s,

    elementwise (Lin, Schmidt & Khan 2020; IVON's ``h`` update with ``beta = 1 - beta2``,
    written for the total precision ``s = N (h + delta / N)``). The second form shows
    ``s' >= s / 2 > 0`` whenever ``s > 0``, whatever ``s_hat``.

    Parameters
    ----------
    precision : array_like, shape (P,)
        ``s > 0``.
    precision_estimate : array_like, shape (P,)
        ``s_hat``, any real values.
    rate : array_like
        ``beta`` in ``[0, 1]``.

    Returns
    -------
    jax.Array, shape (P,)
    """
    precision = jnp.asarray(precision)
    relative = 1 + rate * (jnp.asarray(precision_estimate) - precision) / precision
    return 0.5 * precision * (1 + relative**2)


def iblr_dense_precision_update(
    precision: ArrayLike, precision_estimate: ArrayLike, rate: ArrayLike
) -> jax.Array:
    """The full-covariance improved-BLR precision step, positive definite for any estimate.

    .. math::

        S' = S + \\beta G + \\frac{\\beta^2}{2} G S^{-1} G
           = \\frac{1}{2} S + \\frac{1}{2} (S + \\beta G) S^{-1} (S + \\beta G),
        \\qquad G = \\hat S - S

    (Lin, Schmidt & Khan 2020), the matrix form of :func:`iblr_precision_update`. The
    second form, computed here as ``(S + B^T B) / 2`` with ``B = L^-1 (S + beta G)`` and
    ``S = L L^T``, shows ``S' >= S / 2`` (Loewner order) whenever ``S`` is positive
    definite and ``S_hat`` symmetric, whatever its eigenvalues; the result is exactly
    symmetric.

    Parameters
    ----------
    precision : array_like, shape (P, P)
        ``S``, symmetric positive definite.
    precision_estimate : array_like, shape (P, P)
        ``S_hat``, any real matrix (its symmetric part is used).
    rate : array_like
        ``beta`` in ``[0, 1]``.

    Returns
    -------
    jax.Array, shape (P, P)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> new = iblr_dense_precision_update(jnp.eye(2), jnp.array([[-5.0, 3.0], [3.0, 1.0]]), 0.5)
    >>> bool(jnp.all(jnp.linalg.eigvalsh(new) >= 0.5))
    True
    """
    precision = jnp.asarray(precision)
    precision = 0.5 * (precision + precision.T)
    estimate = jnp.asarray(precision_estimate, precision.dtype)
    estimate = 0.5 * (estimate + estimate.T)
    shifted = precision + rate * (estimate - precision)
    cholesky = jnp.linalg.cholesky(precision)
    whitened = jax.scipy.linalg.solve_triangular(cholesky, shifted, lower=True)
    new = 0.5 * (precision + whitened.T @ whitened)
    return 0.5 * (new + new.T)


class IBLRState(NamedTuple):
    """State of :func:`iblr`.

    Attributes
    ----------
    mean : jax.Array, shape (P,)
    precision : jax.Array, shape (P,) or (P, P)
        Total precision: diagonal ``s = ess (h + delta / N)`` (always positive) or, with
        ``covariance="dense"``, the full ``S`` (always positive definite).
    momentum : jax.Array, shape (P,)
        Exponential moving average of the (scaled) gradient.
    step : jax.Array, shape ()
        Number of updates taken.
    loss_scale : jax.Array, shape ()
        ``ess / N``: the loss is tempered to ``(ess / N) L``.
    """

    mean: jax.Array
    precision: jax.Array
    momentum: jax.Array
    step: jax.Array
    loss_scale: jax.Array


class IBLRInfo(NamedTuple):
    """Diagnostics of one :func:`iblr` step.

    Attributes
    ----------
    loss : jax.Array
        ``L`` (its estimate, with minibatches) averaged over the step's samples.
    converged : jax.Array
        Always False: a stochastic method runs its given number of steps.
    """

    loss: jax.Array
    converged: jax.Array


def iblr(
    lr: float | Callable,
    *,
    ess: float | None = None,
    hess_init: float = 1.0,
    beta1: float = 0.9,
    beta2: float = 0.99999,
    mc_samples: int = 1,
    covariance: str = "diag",
) -> NaturalGradientOptimizer:
    """Improved BLR with a diagonal (IVON-style) or full Gaussian, minibatch-ready.

    Per step, with ``s`` the total diagonal precision and ``c = ess / N``: draw
    ``theta = m + eps / sqrt(s)``, ``eps ~ N(0, I)`` (``mc_samples`` times); ``G = c grad
    L(theta)``; Price's estimate ``s_hat = G (theta - m) s``; then

    .. math::

        \\bar g \\leftarrow \\beta_1 \\bar g + (1 - \\beta_1) G, \\quad
        s \\leftarrow s + \\beta G' + \\tfrac{\\beta^2}{2} G'^2 / s
        \\ (G' = \\hat s - s,\\ \\beta = 1 - \\beta_2), \\quad
        m \\leftarrow m - \\alpha_t \\frac{\\bar g / (1 - \\beta_1^t)}{s}.

    This is DESIGN's iBLR (IVON) written for the total loss: IVON's per-example ``h``,
    prior precision ``delta`` and ``sigma^2 = 1 / (N (h + delta / N))`` become
    ``s = N (h + delta / N)``, the same update multiplied by ``N``. The prior is *not*
    passed separately: ``loss_fn`` is the full negative log joint (or its unbiased
    minibatch estimate, prior plus ``N / B`` times the batch), so ``G`` contains the
    prior's gradient at ``theta`` and ``s_hat`` Price's estimate of its curvature
    (exactly ``delta`` in expectation for a Gaussian prior, and the Hessian of any
    other prior, Jacobian terms included). The precision stays positive whatever the
    estimates (:func:`iblr_precision_update`).

    With ``covariance="dense"`` the same rule runs on the full precision ``S`` (Lin,
    Schmidt & Khan 2020): ``theta = m + L^-T eps`` (``S = L L^T``); Price's estimate
    ``S_hat = sym(mean_k G_k (theta_k - m)^T S)`` (``sym(A) = (A + A^T) / 2``; ``S (theta_k
    - m) = L eps_k``); ``S <- S + beta G' + beta^2 / 2 G' S^-1 G'`` with ``G' = S_hat - S``
    (:func:`iblr_dense_precision_update`, positive definite for any estimate); ``m <- m -
    alpha_t S^-1 g_bar / (1 - beta1^t)``. Its fixed point in expectation is the full
    variational Gaussian (``S = E_q[hess L]``), the exact posterior for a Gaussian-linear
    model, where the diagonal family stops at ``diag(E_q[hess L])`` and so underestimates
    the variances of correlated coordinates. Costs ``O(P^3)`` per step.

    Parameters
    ----------
    lr : float or callable
        Step size ``alpha`` of the mean, or a schedule ``step -> alpha``. A decaying
        schedule removes the minibatch noise of the final mean.
    ess : float, optional
        Effective sample size; default ``N`` (the plain posterior). Another value tempers
        the loss by ``ess / N``.
    hess_init : float
        Initial per-example precision ``h0``: ``s = ess * h0`` at the start.
    beta1, beta2 : float
        Moving-average rates of the gradient and of the precision. IVON's ``beta2 =
        0.99999`` suits long deep-learning runs; for a few hundred steps use ~0.99.
    mc_samples : int
        Draws of ``theta`` per step (their gradients and estimates are averaged).
    covariance : {"diag", "dense"}
        Diagonal precision ``(P,)`` (default, IVON) or full precision ``(P, P)``.

    Returns
    -------
    NaturalGradientOptimizer
        ``init(mean, loss_fn, *, num_examples=None)``, ``update(state, loss_fn, *,
        rng_key)``; ``num_examples`` (``N``) is needed unless ``ess`` is given, in which
        case the loss is used untempered.

    References
    ----------
    Shen et al. (2024), "Variational learning is effective for large deep networks"
    (IVON). Lin, Schmidt & Khan (2020), "Handling the positive-definite constraint in
    the Bayesian learning rule".

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> opt = iblr(0.1, beta2=0.99, ess=100.0)
    >>> loss_fn = lambda theta: 50.0 * jnp.sum((theta - 1.0) ** 2)
    >>> state = opt.init(jnp.zeros(2), loss_fn)
    >>> for key in jax.random.split(jax.random.PRNGKey(0), 300):
    ...     state, info = opt.update(state, loss_fn, rng_key=key)
    >>> bool(jnp.allclose(state.mean, 1.0, atol=0.1))
    True
    """
    if not callable(lr) and not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
        raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
    if not hess_init > 0:
        raise ValueError(f"hess_init must be positive, got {hess_init}")
    if mc_samples < 1:
        raise ValueError(f"mc_samples must be at least 1, got {mc_samples}")
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}")
    dense = covariance == "dense"

    def init(mean: ArrayLike, loss_fn: Callable, *, num_examples: int | None = None):
        del loss_fn
        mean = jnp.asarray(mean)
        if ess is None and num_examples is None:
            raise ValueError("iblr needs ess or num_examples (N) to set the precision")
        size = ess if ess is not None else num_examples
        scale = 1.0 if num_examples is None or ess is None else ess / num_examples
        precision = jnp.full(mean.shape, size * hess_init, mean.dtype)
        return IBLRState(
            mean=mean,
            precision=jnp.diag(precision) if dense else precision,
            momentum=jnp.zeros_like(mean),
            step=jnp.zeros((), jnp.int32),
            loss_scale=jnp.asarray(scale, mean.dtype),
        )

    def update(state: IBLRState, loss_fn: Callable, *, rng_key: jax.Array | None = None):
        if rng_key is None:
            raise ValueError("iblr.update needs rng_key")
        noise = jax.random.normal(rng_key, (mc_samples, *state.mean.shape), state.mean.dtype)
        if dense:
            cholesky = jnp.linalg.cholesky(state.precision)
            # theta - m = L^-T eps has covariance S^-1, and S (theta - m) = L eps.
            offsets = jax.scipy.linalg.solve_triangular(cholesky.T, noise.T, lower=False).T
        else:
            offsets = noise / jnp.sqrt(state.precision)
        losses, gradients = jax.vmap(jax.value_and_grad(loss_fn))(state.mean + offsets)
        gradients = state.loss_scale * gradients
        gradient = jnp.mean(gradients, axis=0)
        momentum = beta1 * state.momentum + (1 - beta1) * gradient
        step = state.step + 1
        debiased = momentum / (1 - beta1 ** step.astype(state.mean.dtype))
        alpha = _learning_rate(lr, state.step).astype(state.mean.dtype)
        if dense:
            estimate = gradients.T @ (noise @ cholesky.T) / mc_samples
            precision = iblr_dense_precision_update(state.precision, estimate, 1 - beta2)
            direction = jax.scipy.linalg.cho_solve(
                (jnp.linalg.cholesky(precision), True), debiased
            )
        else:
            estimate = jnp.mean(gradients * offsets, axis=0) * state.precision
            precision = iblr_precision_update(state.precision, estimate, 1 - beta2)
            direction = debiased / precision
        mean = state.mean - alpha * direction
        info = IBLRInfo(loss=jnp.mean(losses), converged=jnp.zeros((), bool))
        return IBLRState(mean, precision, momentum, step, state.loss_scale), info

    def mean_precision(state: IBLRState, covariance: str):
        return state.mean, _dense_or_diag(state.precision, covariance)

    return NaturalGradientOptimizer(init=init, update=update, mean_precision=mean_precision)


# At the end: numpyro_mpe.von imports the helpers above.
from numpyro_mpe.von import VONInfo, VONState, von  # noqa: E402
