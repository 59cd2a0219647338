"""Dense and diagonal Gaussians over the flat latent vector, in precision form.

A Gaussian ``q = N(m, S^-1)`` is stored as its mean ``m`` ``(P,)`` and precision ``S``,
``(P, P)`` for the dense family or ``(P,)`` (the diagonal) for the diagonal family. Its
natural parameters are ``lambda = (S m, -S / 2)``. Every function here is pure and
dispatches on ``precision.ndim``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve
from jax.typing import ArrayLike

__all__ = [
    "NotPositiveDefiniteError",
    "check_positive_definite",
    "draws_from_standard_normal",
    "is_dense",
    "log_density",
    "mean_precision_from_natural",
    "natural_from_mean_precision",
    "precision_solve",
]


def is_dense(precision: ArrayLike) -> bool:
    """True for a ``(P, P)`` precision matrix, False for a ``(P,)`` diagonal."""
    return jnp.ndim(precision) == 2


def natural_from_mean_precision(
    mean: ArrayLike, precision: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """``(m, S) -> (eta1, eta2) = (S m, -S / 2)``; shapes ``(P,)`` and ``(P, P)`` or ``(P,)``."""
    mean = jnp.asarray(mean)
    precision = jnp.asarray(precision)
    eta1 = precision @ mean if is_dense(precision) else precision * mean
    return eta1, -0.5 * precision


def mean_precision_from_natural(eta1: ArrayLike, eta2: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(eta1, eta2) -> (m, S)`` with ``S = -2 eta2`` and ``m = S^-1 eta1``."""
    precision = -2.0 * jnp.asarray(eta2)
    return precision_solve(precision, eta1), precision


def precision_solve(precision: ArrayLike, rhs: ArrayLike) -> jax.Array:
    """``S^-1 b`` for ``b`` of shape ``(P,)`` or ``(P, R)``, by Cholesky for dense ``S``."""
    precision = jnp.asarray(precision)
    rhs = jnp.asarray(rhs)
    if is_dense(precision):
        return cho_solve((jnp.linalg.cholesky(precision), True), rhs)
    return rhs / (precision if rhs.ndim == 1 else precision[:, None])


def draws_from_standard_normal(
    standard_normal: ArrayLike, mean: ArrayLike, precision: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Draws of ``N(m, S^-1)`` from standard normals, and their log densities.

    ``theta = m + L^-T z`` with ``S = L L^T`` (dense; ``S`` symmetrised first) or ``m + z /
    sqrt(s)`` (diagonal), for ``z`` ``(S, P)``; returns ``theta`` ``(S, P)`` and ``log
    N(theta; m, S^-1)`` ``(S,)``. NaN draws where ``S`` is not positive definite.
    """
    z = jnp.asarray(standard_normal)
    mean = jnp.asarray(mean)
    precision = jnp.asarray(precision)
    if is_dense(precision):
        cholesky = jnp.linalg.cholesky(0.5 * (precision + precision.T))
        offsets = jax.scipy.linalg.solve_triangular(cholesky.T, z.T, lower=False).T
        half_log_det = jnp.sum(jnp.log(jnp.diag(cholesky)))
    else:
        offsets = z / jnp.sqrt(precision)
        half_log_det = 0.5 * jnp.sum(jnp.log(precision))
    log_density = (
        -0.5 * jnp.sum(z**2, axis=-1) + half_log_det - 0.5 * mean.shape[0] * jnp.log(2 * jnp.pi)
    )
    return mean + offsets, log_density


def log_density(theta: ArrayLike, mean: ArrayLike, precision: ArrayLike) -> jax.Array:
    """``log N(theta; m, S^-1)`` for draws ``theta`` ``(S, P)``: ``(S,)``."""
    precision = jnp.asarray(precision)
    offsets = jnp.asarray(theta) - jnp.asarray(mean)
    if is_dense(precision):
        cholesky = jnp.linalg.cholesky(0.5 * (precision + precision.T))
        # z = L^T (theta - m) has a standard normal distribution.
        return draws_from_standard_normal(offsets @ cholesky, mean, precision)[1]
    return draws_from_standard_normal(offsets * jnp.sqrt(precision), mean, precision)[1]


class NotPositiveDefiniteError(ValueError):
    """The fitted precision is not positive definite: the Gaussian is not a posterior."""


def check_positive_definite(precision: jax.Array, where: str) -> None:
    """Raise :class:`NotPositiveDefiniteError` unless ``precision`` is positive definite."""
    precision = np.asarray(precision)
    if precision.ndim == 2:
        eigenvalues = np.linalg.eigvalsh(0.5 * (precision + precision.T))
    else:
        eigenvalues = precision
    if not np.all(np.isfinite(eigenvalues)) or eigenvalues.min() <= 0:
        raise NotPositiveDefiniteError(
            f"{where}: the precision is not positive definite (smallest eigenvalue "
            f"{eigenvalues.min():.3g}); the mean is not at a local maximum of the log "
            "joint (run more steps) or the posterior is not locally Gaussian there"
        )
