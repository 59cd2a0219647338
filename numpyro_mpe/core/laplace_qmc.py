"""Laplace-centred quasi-Monte Carlo: the integration rule of ``loo`` for ``K > 3``
predictor components (a softmax over ten classes, say).

``log int p(y_i | f) N(f; m_i, C_i) df`` for all examples at once. In whitened coordinates
``f = m_i + R_i u`` (``R_i R_i^T = C_i``) the integral is ``E[p(y_i | m_i + R_i u)]`` over
``u ~ N(0, I_K)``. Newton's method finds the mode ``u*_i`` of the integrand
``p(y_i | m_i + R_i u) N(u; 0, I)``; with ``A_i = I + R_i^T Lambda_i R_i`` there
(``Lambda_i`` the likelihood's curvature in ``f``), ``N(u*_i, A_i^-1)`` is the integrand's
Laplace approximation. The integral is taken by importance sampling from the defensive
mixture

    ``q_i(u) = alpha N(u; u*_i, A_i^-1) + (1 - alpha) N(u; 0, I)``,  ``alpha = 3/4``,

``E[p(y_i | f)] = E_q[p(y_i | f) N(u; 0, I) / q_i(u)]``, at quasi-random points: the first
``alpha LAPLACE_QMC_POINTS`` of a scrambled Sobol' sequence (fixed seed) mapped to
``N(0, I_K)`` for the first component, the rest for the second. The Laplace component
makes the weights nearly constant where the integrand is nearly Gaussian (exact, to
rounding, for a Gaussian likelihood); the prior component bounds them by
``max p(y_i | f) / (1 - alpha)`` whatever the likelihood (Hesterberg's defensive
importance sampling), so a likelihood that is not log-concave, or a proposal narrower
than the integrand, cannot make the variance infinite. See ``docs/math.md``,
"Integration", for the measured error on the digits models.
"""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from numpyro_mpe.core.curvature import likelihood_curvature
from numpyro_mpe.core.gaussian import covariance_root
from numpyro_mpe.core.model import Predictor

__all__ = [
    "LAPLACE_QMC_POINTS",
    "LAPLACE_SHARE",
    "NEWTON_STEPS",
    "laplace_quasi_monte_carlo",
    "sobol_normal",
]

LAPLACE_QMC_POINTS = 4096
"""Sobol' points per example (``2^12``); ``docs/math.md`` gives the error this buys."""
LAPLACE_SHARE = 0.75
"""``alpha``: the share of the points drawn from the Laplace approximation."""
NEWTON_STEPS = 12
"""Newton steps to the mode of each example's integrand, each with a step-size search."""
_STEP_SIZES = (1.0, 0.5, 0.125, 0.0)  # the step-size search; 0 keeps the mode monotone
_ELEMENTS_PER_STEP = 2**22  # N x points x K values evaluated at once, at most


@cache
def sobol_normal(dim: int, count: int = LAPLACE_QMC_POINTS) -> np.ndarray:
    """``(count, dim)`` points of a scrambled Sobol' sequence (seed 0) mapped through the
    standard normal quantile: quasi-random draws of ``N(0, I_dim)``."""
    points = qmc.Sobol(dim, scramble=True, seed=0).random(count)
    return ndtri(points)


def _laplace_proposal(predictor: Predictor, mean, root):
    """Mode ``u* (N, K)`` of ``log p(y_i | mean_i + root_i u) - |u|^2 / 2``, and the
    eigenvalues ``(N, K)`` and eigenvectors ``(N, K, K)`` of ``A`` there.

    ``A``'s eigenvalues are clipped below at 1 (where ``Lambda_i`` is not positive
    semi-definite): the steps stay ascent directions and the proposal proper; the
    step-size search keeps every step from lowering the objective.
    """

    def objective(u):
        f = mean + jnp.einsum("nkl,nl->nk", root, u)
        return predictor.log_lik(f) - 0.5 * jnp.sum(u**2, axis=1)

    def precision(u):
        f = mean + jnp.einsum("nkl,nl->nk", root, u)
        loss_gradient, curvature = likelihood_curvature(predictor, f)
        information = jnp.einsum("nki,nkl,nlj->nij", root, curvature, root)
        eigenvalues, eigenvectors = jnp.linalg.eigh(
            0.5 * (information + jnp.swapaxes(information, 1, 2))
        )
        eigenvalues = jnp.maximum(1.0 + eigenvalues, 1.0)
        gradient = -jnp.einsum("nkl,nk->nl", root, loss_gradient) - u
        return gradient, eigenvalues, eigenvectors

    def newton_step(u, _):
        gradient, eigenvalues, eigenvectors = precision(u)
        rotated = jnp.einsum("nkl,nk->nl", eigenvectors, gradient) / eigenvalues
        step = jnp.einsum("nkl,nl->nk", eigenvectors, rotated)
        candidates = jnp.stack([u + size * step for size in _STEP_SIZES])
        values = jax.vmap(objective)(candidates)
        best = jnp.argmax(jnp.where(jnp.isnan(values), -jnp.inf, values), axis=0)
        return jnp.take_along_axis(candidates, best[None, :, None], axis=0)[0], None

    mode, _ = jax.lax.scan(newton_step, jnp.zeros_like(mean), None, length=NEWTON_STEPS)
    _, eigenvalues, eigenvectors = precision(mode)
    return mode, eigenvalues, eigenvectors


def _cholesky_root(cov: jax.Array) -> jax.Array:
    """``R`` with ``R R^T = cov + jitter I`` ``(N, K, K)``: the Cholesky factor, unique and
    continuous in ``cov`` (an eigenvector root turns with rounding where eigenvalues
    nearly coincide). The jitter, ``100 K eps`` times the largest variance, lets singular
    covariances through; where the factor still fails, the eigenvector root
    (:func:`~numpyro_mpe.core.gaussian.covariance_root`)."""
    dim = cov.shape[1]
    symmetric = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    scale = jnp.max(jnp.abs(jnp.diagonal(symmetric, axis1=1, axis2=2)), axis=1)
    jitter = 100 * dim * float(jnp.finfo(cov.dtype).eps) * jnp.maximum(scale, 1e-30)
    factor = jnp.linalg.cholesky(symmetric + jitter[:, None, None] * jnp.eye(dim, dtype=cov.dtype))
    failed = ~jnp.all(jnp.isfinite(factor), axis=(1, 2))
    return jnp.where(failed[:, None, None], covariance_root(cov), factor)


def laplace_quasi_monte_carlo(
    predictor: Predictor, mean: jax.Array, cov: jax.Array, points: np.ndarray | None = None
) -> jax.Array:
    """``log int p(y_i | f) N(f; mean_i, cov_i) df``: ``(N, K), (N, K, K) -> (N,)``.

    ``points``: ``(Q, K)`` draws of ``N(0, I_K)``, ``Q`` a power of 2 (at least 4), the
    first ``3 Q / 4`` for the Laplace component and the rest for the prior; by default
    :func:`sobol_normal`, ``Q = LAPLACE_QMC_POINTS``.

    The estimate is the mean weight ``w = p(y_i | f) N(u; 0, I) / q_i(u)`` corrected by
    the control variate ``h = N(u; u*_i, A_i^-1) / q_i(u) - 1``, whose mean under ``q_i`` is
    zero (Owen and Zhou): ``mean(w) - beta mean(h)``, ``beta`` the regression of ``w`` on
    ``h`` over the points. Where the integrand is proportional to the Laplace component (a
    Gaussian likelihood), ``w = c (h + 1)`` and the estimate is ``c``, exact to rounding.

    Cost: ``NEWTON_STEPS`` likelihood gradients and curvatures and ``K x K``
    eigendecompositions and Cholesky factors per example, then ``LAPLACE_QMC_POINTS``
    likelihood evaluations and ``2 K^2`` multiply-adds per point. Memory:
    ``_ELEMENTS_PER_STEP`` values, whatever ``N``. Singular covariances are integrated
    along their range.
    """
    count, dim = mean.shape
    points = sobol_normal(dim) if points is None else np.asarray(points)
    total = points.shape[0]
    if points.shape != (total, dim) or total < 4 or total & (total - 1):
        raise ValueError(
            f"laplace_quasi_monte_carlo: points must be (Q, {dim}) with Q a power of 2 of at "
            f"least 4, got shape {points.shape}"
        )
    root = _cholesky_root(cov)
    mode, eigenvalues, eigenvectors = _laplace_proposal(predictor, mean, root)
    # The proposal's root from the Cholesky factor M of the (clipped) A = M M^T, not from
    # its eigenvectors: like R, a continuous function of the inputs, so that rounding
    # (float32 against float64, or two ways of writing one model) cannot turn the points.
    clipped = jnp.einsum("nkl,nl,njl->nkj", eigenvectors, eigenvalues, eigenvectors)
    factor = jnp.linalg.cholesky(0.5 * (clipped + jnp.swapaxes(clipped, 1, 2)))
    steps = -(-count * dim * total // _ELEMENTS_PER_STEP)
    steps = min(2 ** max(steps - 1, 0).bit_length(), total // 4)  # a power of 2
    nodes = jnp.asarray(points, mean.dtype)
    laplace_nodes = nodes[: total - total // 4].reshape(steps, -1, dim)
    prior_nodes = nodes[total - total // 4 :].reshape(steps, -1, dim)
    # u = mode + to_u z and f = centre + to_f z from the Laplace component's z; from the
    # prior's u, z = M^T (u - mode); one product per point either way.
    eye = jnp.broadcast_to(jnp.eye(dim, dtype=mean.dtype), factor.shape)
    to_u = jnp.swapaxes(jax.scipy.linalg.solve_triangular(factor, eye, lower=True), 1, 2)
    laplace_map = jnp.concatenate([jnp.einsum("nkl,nlj->nkj", root, to_u), to_u], 1)
    to_z = jnp.swapaxes(factor, 1, 2)  # M^T
    prior_map = jnp.concatenate([root, to_z], 1)
    centre = mean + jnp.einsum("nkl,nl->nk", root, mode)
    mode_z = jnp.einsum("nkl,nl->nk", to_z, mode)
    log_lik = jax.vmap(predictor.log_lik, in_axes=1, out_axes=1)
    log_laplace_normaliser = np.log(LAPLACE_SHARE) + jnp.sum(
        jnp.log(jnp.diagonal(factor, axis1=1, axis2=2)), axis=1
    )

    def weights(f, u_squared, z_squared):
        """``log w`` and ``h``, both ``(N, points)``."""
        log_prior = -0.5 * u_squared
        log_laplace = log_laplace_normaliser[:, None] - 0.5 * z_squared
        log_proposal = jnp.logaddexp(log_laplace, np.log1p(-LAPLACE_SHARE) + log_prior)
        h = jnp.exp(log_laplace - log_proposal - np.log(LAPLACE_SHARE)) - 1
        return log_lik(f) + log_prior - log_proposal, h

    # Sums of w, h, w h and h^2; w and w h relative to exp(shift), the largest log weight
    # so far, rescaled when it grows (a streamed log-sum-exp): no overflow, whatever the
    # weights' range.
    def add(carry, nodes):
        shift, sums = carry
        z, u = nodes
        laplace = jnp.einsum("nkl,ql->nqk", laplace_map, z)
        prior = jnp.einsum("nkl,ql->nqk", prior_map, u)
        (log_w, h), (prior_log_w, prior_h) = (
            weights(
                centre[:, None, :] + laplace[..., :dim],
                jnp.sum((mode[:, None, :] + laplace[..., dim:]) ** 2, axis=2),
                jnp.sum(z**2, axis=1),
            ),
            weights(
                mean[:, None, :] + prior[..., :dim],
                jnp.sum(u**2, axis=1),
                jnp.sum((prior[..., dim:] - mode_z[:, None, :]) ** 2, axis=2),
            ),
        )
        log_w, h = jnp.concatenate([log_w, prior_log_w], 1), jnp.concatenate([h, prior_h], 1)
        new_shift = jnp.maximum(shift, jnp.max(log_w, axis=1))
        finite_shift = jnp.where(jnp.isfinite(new_shift), new_shift, 0.0)
        rescale = jnp.exp(shift - finite_shift)
        w = jnp.exp(log_w - finite_shift[:, None])
        added = jnp.stack([w, h, w * h, h * h]).sum(axis=2)
        factors = jnp.stack([rescale, jnp.ones_like(rescale)] * 2)  # w and w h rescaled
        return (new_shift, sums * factors + added), None

    initial = (jnp.full(count, -jnp.inf, mean.dtype), jnp.zeros((4, count), mean.dtype))
    (shift, sums), _ = jax.lax.scan(add, initial, (laplace_nodes, prior_nodes))
    w_mean, h_mean, wh_mean, hh_mean = sums / total
    h_variance = hh_mean - h_mean**2
    usable = h_variance > 1e-6 * hh_mean  # else h is constant: the proposal is the prior
    slope = jnp.where(usable, (wh_mean - w_mean * h_mean) / jnp.where(usable, h_variance, 1), 0)
    corrected = w_mean - slope * h_mean
    # The regression can overshoot where few points carry the weight: keep the plain mean.
    estimate = jnp.where((corrected > 0) & jnp.isfinite(corrected), corrected, w_mean)
    # No point with a positive likelihood (shift -inf): the integral is 0.
    return jnp.where(jnp.isfinite(shift), shift + jnp.log(estimate), shift)
