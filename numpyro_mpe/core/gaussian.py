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
    "SYMMETRY_RTOL",
    "NotPositiveDefiniteError",
    "check_positive_definite",
    "check_symmetric",
    "covariance_root",
    "draws_from_standard_normal",
    "is_dense",
    "log_density",
    "mean_precision_from_natural",
    "natural_from_mean_precision",
    "precision_solve",
    "real_array",
]

SYMMETRY_RTOL = 1e-6
"""Largest ``|S - S^T|`` a dense precision may have, relative to its largest entry."""

_FIT_ADVICE = (
    "the mean is not at a local maximum of the log joint (run more steps) or the posterior "
    "is not locally Gaussian there"
)


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


def check_positive_definite(
    precision: jax.Array, where: str, *, advice: str = _FIT_ADVICE
) -> None:
    """Raise :class:`NotPositiveDefiniteError` unless ``precision`` is positive definite.

    The message names ``where`` and the smallest eigenvalue (of the symmetric part; the
    smallest entry of a diagonal ``(P,)``), then ``advice`` (by default, what it means
    for a fit).
    """
    precision = np.asarray(precision)
    if precision.ndim == 2:
        eigenvalues = np.linalg.eigvalsh(0.5 * (precision + precision.T))
    else:
        eigenvalues = precision
    if not np.all(np.isfinite(eigenvalues)) or eigenvalues.min() <= 0:
        raise NotPositiveDefiniteError(
            f"{where}: the precision is not positive definite (smallest eigenvalue "
            f"{eigenvalues.min():.3g}); {advice}"
        )


def check_symmetric(matrix: ArrayLike, name: str, where: str) -> None:
    """Raise ``ValueError`` unless the finite ``(P, P)`` ``matrix`` is symmetric.

    Symmetric means ``max |A - A^T| <= 1e-6 max |A|`` (:data:`SYMMETRY_RTOL`), computed
    in the matrix's own dtype; the message names ``where``, ``name``, the largest
    asymmetry and its position. Anything but a concrete 2-d array (a diagonal ``(P,)``,
    a jax tracer) passes.
    """
    if isinstance(matrix, jax.core.Tracer) or np.ndim(matrix) != 2:
        return
    array = np.asarray(matrix)
    asymmetry = np.abs(array - array.T)
    scale = np.max(np.abs(array), initial=0.0)
    if asymmetry.size and asymmetry.max() > SYMMETRY_RTOL * scale:
        # The first maximum in row-major order has row < column.
        row, column = (int(i) for i in np.unravel_index(np.argmax(asymmetry), array.shape))
        raise ValueError(
            f"{where}: {name!r} is not symmetric: {name}[{row}, {column}] = "
            f"{array[row, column]:.6g} but {name}[{column}, {row}] = "
            f"{array[column, row]:.6g} (the largest asymmetry, {asymmetry[row, column]:.3g}, is "
            f"above {SYMMETRY_RTOL:g} times the largest entry {scale:.3g}); pass (A + A.T) / 2 "
            "if that is the matrix meant"
        )


def real_array(value: object, name: str, where: str) -> jax.Array:
    """``value`` as a jax array of real numbers, or a ``ValueError`` naming ``where``,
    ``name`` and what ``value`` holds.

    Refused: None, strings, bools and complex or object arrays. Integers are cast to
    the default float dtype; floating dtypes are kept; a jax tracer's dtype is checked
    the same way. Shapes and values are the caller's to check.
    """
    if isinstance(value, jax.Array):  # tracers included: only the dtype is read
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception:  # ragged nested lists, objects numpy cannot convert
            array = np.asarray(None)
    dtype = array.dtype
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.asarray(array, dtype=jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        held = "None" if value is None else f"{type(value).__name__} {text}"
        described = f"dtype {dtype}" if dtype.kind in "bcV" else held
        raise ValueError(f"{where}: {name!r} must hold real numbers, got {described}")
    return jnp.asarray(array)


def covariance_root(cov: jax.Array) -> jax.Array:
    """A square root ``R`` with ``R R^T = cov`` for ``(N, K, K)`` PSD matrices (singular
    ones included), negative eigenvalues clipped to 0."""
    if cov.shape[1] == 1:
        return jnp.sqrt(jnp.clip(cov, 0.0))
    eigenvalues, eigenvectors = jnp.linalg.eigh(0.5 * (cov + jnp.swapaxes(cov, 1, 2)))
    return eigenvectors * jnp.sqrt(jnp.clip(eigenvalues, 0.0))[:, None, :]
