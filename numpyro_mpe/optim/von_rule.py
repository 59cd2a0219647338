"""Variational online Newton (VON): the BLR with Monte Carlo expectations under ``q``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from numpyro_mpe.core.options import (
    COVARIANCES,
    VON_HESSIANS,
    Covariance,
    VONHessian,
    check_choice,
)
from numpyro_mpe.optim.base import (
    NaturalGradientOptimizer,
    PrecisionAverage,
    cached_by_settings,
    check_count,
    check_loss_fn,
    check_lr,
    check_mean,
    check_number,
    check_precision_init,
    check_rng_key,
    check_state,
    dense_or_diag,
    initial_precision,
    learning_rate,
    start_precision_average,
    update_precision_average,
)

__all__ = ["VONInfo", "VONState", "von"]


class VONState(NamedTuple):
    """State of :func:`von`: the BLR iterate ``q = N(mean, precision^-1)``.

    Attributes
    ----------
    mean : jax.Array, shape (P,)
    precision : jax.Array, shape (P, P) or (P,)
        ``S`` (dense, symmetric) or its diagonal (diag).
    step : jax.Array, shape ()
        Number of updates taken (the argument of a learning-rate schedule).
    rng_key : jax.Array
        Key of the next step's draws (used when ``update`` gets no ``rng_key``).
    average : PrecisionAverage
        The initial precision, the weight ``prod_t (1 - rho_t)`` it still carries and the
        estimates' noise (:class:`~numpyro_mpe.optim.base.PrecisionAverage`).
    """

    mean: jax.Array
    precision: jax.Array
    step: jax.Array
    rng_key: jax.Array
    average: PrecisionAverage


class VONInfo(NamedTuple):
    """Diagnostics of one :func:`von` step.

    Attributes
    ----------
    loss : jax.Array
        ``L`` at the new mean.
    decrement : jax.Array
        ``g^T S^-1 g / 2`` with ``g`` the (estimated) expected gradient and ``S`` the new
        precision (``inf`` where it is not finite or ``S`` not positive definite).
    positive_definite : jax.Array
        Whether the new precision is positive definite. When it is not, the step is
        rejected: the state keeps the old mean (never NaN), stores the indefinite
        precision (finite whenever the estimates are; later updates leave such a state
        unchanged and report False again) and ``converged`` is True, so
        :meth:`numpyro_mpe.BLR.run` stops there and raises
        :class:`~numpyro_mpe.NotPositiveDefiniteError`.
    converged : jax.Array
        With ``mc_samples=0``: ``decrement < tol`` and the precision changed by at most
        ``rtol`` (relative), as :func:`~numpyro_mpe.optim.online_newton`. With draws:
        never (a stochastic method runs its given number of steps), except after a
        step that lost positive definiteness.
    initial_weight : jax.Array
        ``prod_t (1 - rho_t)``, the weight the initial precision still carries.
    initial_bias : jax.Array
        How far the initial precision still pulls the precision from the average of the
        estimates, relative to the precision
        (:func:`~numpyro_mpe.optim.base.update_precision_average`).
    precision_error : jax.Array
        The precision's estimated relative Monte Carlo standard error (0 with
        ``mc_samples=0``).
    """

    loss: jax.Array
    decrement: jax.Array
    positive_definite: jax.Array
    converged: jax.Array
    initial_weight: jax.Array
    initial_bias: jax.Array
    precision_error: jax.Array


def _symmetrise(matrix: jax.Array) -> jax.Array:
    return 0.5 * (matrix + matrix.T)


def _is_positive_definite(precision: jax.Array) -> jax.Array:
    """Cholesky succeeds (dense ``(P, P)``) or all entries are positive (diag ``(P,)``)."""
    if precision.ndim == 2:
        return jnp.all(jnp.isfinite(jnp.linalg.cholesky(precision)))
    return jnp.all(jnp.isfinite(precision) & (precision > 0))


@cached_by_settings
def von(
    lr: float | Callable = 0.1,
    *,
    mc_samples: int = 1,
    hessian: VONHessian = "exact",
    covariance: Covariance = "dense",
    precision_init: ArrayLike | None = None,
    tol: float = 1e-10,
    rtol: float = 1e-8,
) -> NaturalGradientOptimizer:
    """Variational online Newton: the BLR step with expectations under ``q = N(m, S^-1)``.

    With ``g = E_q[grad L(theta)]`` and ``H = E_q[hess L(theta)]`` (``L`` the loss the
    driver passes: prior included, and with minibatches its unbiased estimate) the BLR
    step ``lambda <- (1 - rho) lambda - rho sum_j g~_j`` reads, in mean-precision form,

    .. math::

        S_{t+1} = (1 - \\rho) S_t + \\rho \\hat H_t, \\qquad
        m_{t+1} = m_t - \\rho S_{t+1}^{-1} \\hat g_t,

    where ``g_hat``, ``H_hat`` estimate ``g``, ``H`` from ``mc_samples`` fresh draws
    ``theta_k = m + L^-T eps_k`` (``S = L L^T``; ``theta_k = m + eps_k / sqrt(s)`` for
    diag), ``eps_k ~ N(0, I)``:

    - ``hessian="exact"``: ``H_hat = mean_k hess L(theta_k)`` (its diagonal for diag);
    - ``hessian="price"``: Price's / the reparameterisation estimate with the current
      precision as control variate, ``H_hat = S + sym(mean_k (grad L(theta_k) - S
      delta_k) (S delta_k)^T)``, ``delta_k = theta_k - m``, ``sym(A) = (A + A^T) / 2``;
      unbiased because ``E_q[grad L (theta - m)^T] = E_q[hess L] S^-1`` (Stein) and
      ``E[S delta delta^T S] = S``, and without noise where ``L`` is quadratic with
      Hessian ``S``. For diag ``h_hat = s + mean_k (grad L(theta_k) - s delta_k) * s
      delta_k``, as :func:`~numpyro_mpe.optim.iblr`. Needs only gradients.
    - ``hessian="gauss_newton"``: ``H_hat = mean_k G(theta_k)`` with ``G`` the exact
      Hessian of the negative log prior plus the generalised Gauss-Newton matrix
      ``sum_i w_i J_i^T Lambda_i J_i`` of the likelihood terms (``J_i`` the Jacobian of
      example ``i``'s predictor, ``Lambda_i = d^2 l_i / d f^2``), supplied by
      :class:`~numpyro_mpe.BLR` as ``gauss_newton_fn`` (the model's observation needs a
      predictor). ``Lambda_i`` is positive semi-definite for canonical links
      (Bernoulli / Binomial logits, Poisson log rate, Categorical logits, Normal
      location), so ``G`` is too, even where ``hess L`` is not; for other parameters
      (a Normal's log scale beside its location) it can be indefinite.

    With ``mc_samples=0`` the expectations are taken by the delta method (``g`` and ``H``
    at ``m``): the iterates are exactly those of :func:`~numpyro_mpe.optim.online_newton`
    (``hessian="exact"``; ``"gauss_newton"`` evaluates ``G`` at ``m``). The fixed point is
    then the Laplace posterior; with draws it is the variational Gaussian
    (``E_q[grad L] = 0``, ``S = E_q[hess L]``), equal to the exact posterior for a
    Gaussian-linear model. With draws, the dense family's ``g_hat = mean_k (grad
    L(theta_k) - S delta_k)`` (the same control variate: only the loss's departure from
    the quadratic model ``S`` is left as noise; the diagonal family keeps the plain mean,
    since ``diag(s)`` models a correlated Hessian badly). A constant ``lr`` leaves Monte
    Carlo noise of relative size ``~ sqrt(lr / mc_samples)`` in the diagonal iterates and
    averages the precision over ``~1 / lr`` steps; a decaying schedule (``lr(t) ~ 1 /
    t``) averages it out. :class:`VONInfo` reports the weight the initial precision
    keeps and the precision's Monte Carlo error, and :meth:`~numpyro_mpe.BLR.run` warns
    when they say the average has not settled (as for :func:`~numpyro_mpe.optim.iblr`).

    **Positive definiteness.** The step is a convex combination, so ``S`` stays positive
    definite whenever every ``H_hat`` is positive semi-definite (convex ``L``,
    ``hessian="exact"``). Price's estimate is indefinite for ``mc_samples < P`` far from
    the fixed point, and ``hess L`` itself is indefinite on a non-convex loss; a large
    ``lr`` can then make ``S`` indefinite. Such a step is rejected (see :class:`VONInfo`):
    it never produces NaN, and :class:`~numpyro_mpe.BLR` raises
    :class:`~numpyro_mpe.NotPositiveDefiniteError`. Use a smaller ``lr``, more draws, or
    :func:`~numpyro_mpe.optim.iblr`, whose precision step is positive definite for any
    estimate.

    Parameters
    ----------
    lr : float or callable
        ``rho`` in ``(0, 1]``, or a schedule ``step -> rho`` (``step`` from 0).
    mc_samples : int
        Draws per step; 0 for the delta method.
    hessian : {"exact", "price", "gauss_newton"}
        Estimator of ``E_q[hess L]``.
    covariance : {"dense", "diag"}
        Full precision ``(P, P)`` or its diagonal ``(P,)`` (then ``q`` is a diagonal
        Gaussian and only the Hessian's diagonal is estimated).
    precision_init : array_like, optional
        Initial ``S`` (a scalar, ``(P,)`` or, for dense, ``(P, P)``), positive (definite)
        and finite, else ``ValueError`` here (its shape against ``P`` in ``init``); by
        default the Hessian (or its diagonal) at the initial mean.
    tol, rtol : float
        Convergence test of the delta method (``mc_samples=0``), as in
        :func:`~numpyro_mpe.optim.online_newton`.

    Returns
    -------
    NaturalGradientOptimizer
        ``init(mean, loss_fn, *, rng_key=None, gauss_newton_fn=None)`` and
        ``update(state, loss_fn, *, rng_key=None, gauss_newton_fn=None)``; without
        ``rng_key`` the draws use (and advance) the state's key (``PRNGKey(0)`` unless
        ``init`` got one). :class:`~numpyro_mpe.BLR` passes a fresh key each step, and
        ``gauss_newton_fn`` (``theta -> (P, P)``).

    References
    ----------
    Khan & Rue (2023), "The Bayesian learning rule", section 4 (variational online
    Newton). Khan et al. (2018), "Fast and scalable Bayesian deep learning by
    weight-perturbation in Adam" (Vadam, VOGN).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> opt = von(lambda step: 1.0 / (step + 2), mc_samples=2)
    >>> loss_fn = lambda theta: 0.5 * jnp.sum((theta - 1.0) ** 2) + 0.1 * jnp.sum(theta**4)
    >>> state = opt.init(jnp.zeros(2), loss_fn)
    >>> for _ in range(200):
    ...     state, info = opt.update(state, loss_fn)
    >>> bool(info.positive_definite) and state.precision.shape == (2, 2)
    True
    """
    check_lr(lr)
    check_choice("covariance", covariance, COVARIANCES)
    check_choice("hessian", hessian, VON_HESSIANS)
    check_count("mc_samples", mc_samples, 0)
    check_number("tol", tol, 0.0, closed=True)
    check_number("rtol", rtol, 0.0, closed=True)
    check_precision_init(precision_init, covariance)
    if mc_samples == 0 and hessian == "price":
        raise ValueError(
            "hessian='price' needs draws (mc_samples >= 1); mc_samples=0 is the delta "
            "method, which evaluates the Hessian at the mean"
        )
    dense = covariance == "dense"

    def curvature_fn(loss_fn: Callable, gauss_newton_fn: Callable | None) -> Callable:
        """``theta -> H(theta)``: the exact Hessian or the Gauss-Newton matrix."""
        if hessian != "gauss_newton":
            return jax.hessian(loss_fn)
        if gauss_newton_fn is None:
            raise ValueError(
                "von(hessian='gauss_newton') needs the Gauss-Newton matrix of the model "
                "(gauss_newton_fn), which numpyro_mpe.BLR supplies; run it through BLR"
            )
        return gauss_newton_fn

    def hessian_at(curvature: Callable, theta: jax.Array) -> jax.Array:
        full = curvature(theta)
        expected = (theta.shape[0], theta.shape[0])
        if jnp.shape(full) != expected:
            source = "gauss_newton_fn" if hessian == "gauss_newton" else "the Hessian of loss_fn"
            raise ValueError(
                f"von: {source} returned shape {jnp.shape(full)}; the mean has "
                f"{theta.shape[0]} entries, so it must be {expected}"
            )
        return _symmetrise(full) if dense else jnp.diag(full)

    def delta_method(loss_fn, curvature, mean, precision, rng_key):
        del precision, rng_key
        return jax.grad(loss_fn)(mean), hessian_at(curvature, mean)

    def monte_carlo(loss_fn, curvature, mean, precision, rng_key):
        noise = jax.random.normal(rng_key, (mc_samples, *mean.shape), mean.dtype)
        if dense:
            cholesky = jnp.linalg.cholesky(precision)
            # theta - m = L^-T eps has covariance S^-1; S (theta - m) = L eps.
            offsets = jax.vmap(
                lambda eps: jax.scipy.linalg.solve_triangular(cholesky.T, eps, lower=False)
            )(noise)
            whitened = noise @ cholesky.T
        else:
            offsets = noise / jnp.sqrt(precision)
            whitened = noise * jnp.sqrt(precision)
        draws = mean + offsets
        gradients = jax.vmap(jax.grad(loss_fn))(draws)
        # S (theta - m), the gradient of the current quadratic model, has mean zero: a
        # control variate (for the diagonal family, of Price's estimate only).
        residuals = gradients - whitened
        gradient = jnp.mean(residuals if dense else gradients, axis=0)
        if hessian != "price":
            estimate = jnp.mean(jax.vmap(lambda theta: hessian_at(curvature, theta))(draws), 0)
        elif dense:
            estimate = precision + _symmetrise(residuals.T @ whitened / mc_samples)
        else:
            estimate = precision + jnp.mean(residuals * whitened, axis=0)
        return gradient, estimate

    expectations = delta_method if mc_samples == 0 else monte_carlo

    def init(
        mean: ArrayLike,
        loss_fn: Callable,
        *,
        rng_key: jax.Array | None = None,
        num_examples: int | None = None,
        gauss_newton_fn: Callable | None = None,
    ) -> VONState:
        del num_examples
        mean = check_mean(mean, "von.init")
        check_loss_fn(loss_fn, "von.init", mean)
        if precision_init is None:
            precision = hessian_at(curvature_fn(loss_fn, gauss_newton_fn), mean)
        else:
            precision = initial_precision(precision_init, mean, covariance, "von.init")
        if rng_key is not None:
            check_rng_key(rng_key, "von.init")
        key = jax.random.PRNGKey(0) if rng_key is None else rng_key
        average = start_precision_average(precision)
        return VONState(mean, precision, jnp.zeros((), jnp.int32), key, average)

    def update(
        state: VONState,
        loss_fn: Callable,
        *,
        rng_key: jax.Array | None = None,
        num_examples: int | None = None,
        gauss_newton_fn: Callable | None = None,
    ) -> tuple[VONState, VONInfo]:
        del num_examples
        check_state(state, VONState, "von.update", covariance=covariance)
        check_loss_fn(loss_fn, "von.update")
        if rng_key is not None:
            check_rng_key(rng_key, "von.update")
        curvature = curvature_fn(loss_fn, gauss_newton_fn)
        next_key, step_key = jax.random.split(state.rng_key if rng_key is None else rng_key)
        rho = learning_rate(lr, state.step).astype(state.mean.dtype)
        # A state left indefinite by a rejected step is kept as it is (no NaN draws).
        usable = _is_positive_definite(state.precision)
        fallback = jnp.eye(state.mean.shape[0]) if dense else jnp.ones_like(state.mean)
        fallback = fallback.astype(state.mean.dtype)
        safe_old = jnp.where(usable, state.precision, fallback)
        gradient, estimate = expectations(loss_fn, curvature, state.mean, safe_old, step_key)
        precision = (1 - rho) * state.precision + rho * estimate
        positive = usable & _is_positive_definite(precision)
        precision = jnp.where(usable, precision, state.precision)
        safe = jnp.where(positive, precision, fallback)
        if dense:
            direction = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(safe), True), gradient)
        else:
            direction = gradient / jnp.where(positive, precision, 1.0)
        direction = jnp.where(positive, direction, 0.0)
        mean = state.mean - rho * direction
        decrement = 0.5 * jnp.dot(gradient, direction)
        decrement = jnp.where(jnp.isfinite(decrement) & positive, decrement, jnp.inf)
        if mc_samples == 0:
            change = jnp.max(jnp.abs(precision - state.precision))
            converged = (decrement < tol) & (change <= rtol * jnp.max(jnp.abs(precision)))
        else:
            converged = jnp.zeros((), bool)
        average, initial_bias, error = update_precision_average(
            state.average, rho, safe_old, _symmetrise(estimate) if dense else estimate, safe
        )
        # A rejected step leaves the average as it was.
        average = jax.tree.map(
            lambda new, old: jnp.where(positive, new, old), average, state.average
        )
        info = VONInfo(
            loss=loss_fn(mean),
            decrement=decrement,
            positive_definite=positive,
            converged=converged | ~positive,
            initial_weight=average.initial_weight,
            initial_bias=initial_bias,
            precision_error=error if mc_samples else jnp.zeros_like(error),
        )
        return VONState(mean, precision, state.step + 1, next_key, average), info

    def mean_precision(state: VONState, covariance: Covariance):
        check_state(state, VONState, "von.mean_precision")
        return state.mean, dense_or_diag(state.precision, covariance)

    return NaturalGradientOptimizer(
        init,
        update,
        mean_precision,
        covariance=covariance,
        uses_gauss_newton=hessian == "gauss_newton",
        reports_convergence=mc_samples == 0,
        lr=lr,
        max_lr=1.0,
        name="von",
    )
