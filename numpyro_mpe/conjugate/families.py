"""Closed forms of the conjugate exponential families used by :mod:`numpyro_mpe.conjugate`.

Each family is a :class:`Family` of pure functions over tuples of arrays. Its posterior
is kept as natural parameters ``eta`` (the coefficients of the prior's sufficient
statistics in its log density), which add up over examples,

.. math::

    \\eta_{\\text{post}} = \\eta_0 + \\sum_i w_i t_i ,

so removing examples is subtraction. The leave-one-out predictive of each family is a
closed form of the cavity ``eta_post - t_i``, evaluated for every ``i`` at once.

======== ========================================== ======================================
family   natural parameters ``eta``                 statistics ``t_i``
======== ========================================== ======================================
beta     ``(a - 1, b - 1)``                         ``(y_i, n_i - y_i)``
gamma    ``(a - 1, -b)``                            ``(y_i, -e_i)``
dirichlet ``alpha - 1``                             ``onehot(y_i)``
normal   ``(P m, -P / 2)``                          ``(x_i y_i, -x_i x_i^T / 2)``
nig      ``(P m, -P / 2, -(a + 1 + D / 2),``        ``(x_i y_i, -x_i x_i^T / 2, -1 / 2,``
         ``-(b + m^T P m / 2))``                    ``-y_i^2 / 2)``
======== ========================================== ======================================

For the two Gaussian families ``x_i`` and ``y_i`` are whitened by the known per-example
scale ``k_i`` (and ``y_i`` shifted by a known offset ``c_i``), so the observation is
``y_i ~ N(x_i^T beta, s2)`` with ``s2 = 1`` (normal) or ``s2 ~ InverseGamma(a, b)`` and
``beta | s2 ~ N(m, s2 P^{-1})`` (nig, "Normal-inverse-gamma"); the density of the
original ``y_i`` is that of the whitened one minus ``log k_i``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betaln, gammaln
from numpyro.distributions import constraints

from numpyro_mpe.core.gaussian import check_positive_definite, check_symmetric, real_array

__all__ = ["FAMILIES", "Family", "check_params"]


class Family(NamedTuple):
    """A conjugate family as pure functions (``params`` and ``eta`` are tuples of arrays).

    Attributes
    ----------
    param_names : tuple of str
        Names of the posterior distribution's parameters, in order.
    param_constraints : tuple
        Their numpyro constraints.
    param_ndims : tuple of int
        Their numbers of dimensions (0 a scalar, 1 a ``(D,)`` or ``(K,)`` vector, 2 a
        ``(D, D)`` matrix); the natural parameters ``eta`` have the same.
    weighted_stats : callable
        ``(data, w (N,)) -> sum_i w_i t_i``, shaped like ``eta``.
    to_natural : callable
        ``params -> eta``.
    from_natural : callable
        ``eta -> params``.
    proper : callable
        ``params -> {name: bool array}``: which parameters are valid.
    loo : callable
        ``(params, data) -> (elpd_i, lppd_i, cavity_proper_i)``, each ``(N,)``:
        ``log p(y_i | y_-i)`` from the cavity, ``log p(y_i | y)`` under ``params``.
    """

    param_names: tuple[str, ...]
    param_constraints: tuple
    param_ndims: tuple[int, ...]
    weighted_stats: Callable
    to_natural: Callable
    from_natural: Callable
    proper: Callable
    loo: Callable


def _cholesky_ok(precision: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(jnp.linalg.cholesky(precision)))


def _beta_loo(params, data):
    """Beta-binomial: ``log C(n, y) + log B(a + y, b + n - y) - log B(a, b)``, cavity
    ``(a - y_i, b - n_i + y_i)``."""
    a, b = params
    y, n = data["y"], data["n"]
    log_choose = gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
    a_cavity, b_cavity = a - y, b - (n - y)
    elpd = log_choose + betaln(a, b) - betaln(a_cavity, b_cavity)
    lppd = log_choose + betaln(a + y, b + n - y) - betaln(a, b)
    # Bernoulli (n = 1): the ratio form avoids differencing two large log-beta values,
    # which costs float32 ~eps * |log B(a, b)| (1e-4 nats at N = 3000).
    bernoulli = n == 1

    def log_mean(a, b):
        return jnp.log(jnp.where(y == 1, a, b)) - jnp.log(a + b)

    elpd = jnp.where(bernoulli, log_mean(a_cavity, b_cavity), elpd)
    lppd = jnp.where(bernoulli, log_mean(a, b), lppd)
    return elpd, lppd, (a_cavity > 0) & (b_cavity > 0)


def _negative_binomial(a, b, y, exposure):
    """``log int Poisson(y; e lam) Gamma(lam; a, b) dlam``."""
    return (
        gammaln(a + y)
        - gammaln(a)
        - gammaln(y + 1)
        - a * jnp.log1p(exposure / b)
        + y * (jnp.log(exposure) - jnp.log(b + exposure))
    )


def _gamma_loo(params, data):
    """Negative binomial of ``y_i`` with exposure ``e_i``; cavity ``(a - y_i, b - e_i)``."""
    a, b = params
    y, exposure = data["y"], data["exposure"]
    a_cavity, b_cavity = a - y, b - exposure
    elpd = _negative_binomial(a_cavity, b_cavity, y, exposure)
    lppd = _negative_binomial(a, b, y, exposure)
    return elpd, lppd, (a_cavity > 0) & (b_cavity > 0)


def _dirichlet_loo(params, data):
    """``log alpha_y - log sum(alpha)``; cavity ``alpha - onehot(y_i)``."""
    (alpha,) = params
    alpha_y, total = alpha[data["y"]], jnp.sum(alpha)
    elpd = jnp.log(alpha_y - 1) - jnp.log(total - 1)
    return elpd, jnp.log(alpha_y) - jnp.log(total), alpha_y > 1


def _gaussian_stats(data, w):
    x, y = data["x"], data["y"]
    return x.T @ (w * y), -0.5 * (x.T * w) @ x


def _leverage(params, data):
    """``f_i = x_i^T m`` and ``v_i = x_i^T P^{-1} x_i`` for all examples at once."""
    loc, precision = params[:2]
    whitened = jax.scipy.linalg.solve_triangular(
        jnp.linalg.cholesky(precision), data["x"].T, lower=True
    )
    return data["x"] @ loc, jnp.sum(whitened**2, axis=0)


def _normal_loo(params, data):
    """``N(y_i; f_i, 1 + v_i)``; cavity ``N(y_i; (f_i - v_i y_i) / (1 - v_i), 1 / (1 - v_i))``."""
    # Division along f_i = x_i^T beta (a rank-one site): the cavity marginal of f_i has
    # precision 1/v - 1 and mean (f - v y) / (1 - v), so y_i | y_-i ~ N(., 1 / (1 - v)).
    f, v = _leverage(params, data)
    residual = data["y"] - f
    half_log_2pi = 0.5 * jnp.log(2 * jnp.pi)
    elpd = 0.5 * jnp.log1p(-v) - residual**2 / (2 * (1 - v)) - half_log_2pi
    lppd = -0.5 * jnp.log1p(v) - residual**2 / (2 * (1 + v)) - half_log_2pi
    return elpd - data["log_scale"], lppd - data["log_scale"], v < 1


def _student_t(z, df, scale2):
    return (
        gammaln((df + 1) / 2)
        - gammaln(df / 2)
        - 0.5 * jnp.log(df * jnp.pi * scale2)
        - (df + 1) / 2 * jnp.log1p(z**2 / (df * scale2))
    )


def _nig_loo(params, data):
    """Student-t ``t_{2a}(y_i; f_i, b (1 + v_i) / a)``; cavity below (whitened units)."""
    # Same rank-one division, plus a - 1/2 and b - r^2 / (2 (1 - v)) (Sherman-Morrison).
    _, _, a, b = params
    f, v = _leverage(params, data)
    residual = data["y"] - f
    a_cavity = a - 0.5
    b_cavity = b - residual**2 / (2 * (1 - v))
    elpd = _student_t(residual / (1 - v), 2 * a_cavity, b_cavity / (a_cavity * (1 - v)))
    lppd = _student_t(residual, 2 * a, b * (1 + v) / a)
    proper = (v < 1) & (a_cavity > 0) & (b_cavity > 0)
    return elpd - data["log_scale"], lppd - data["log_scale"], proper


def _nig_to_natural(params):
    loc, precision, a, b = params
    half_dim = loc.shape[0] / 2
    h = precision @ loc
    return h, -precision / 2, -(a + 1 + half_dim), -(b + loc @ h / 2)


def _nig_from_natural(eta):
    h, minus_half_precision, eta_a, eta_b = eta
    precision = -2 * minus_half_precision
    loc = jnp.linalg.solve(precision, h)
    return loc, precision, -eta_a - 1 - h.shape[0] / 2, -eta_b - loc @ h / 2


_POSITIVE = constraints.positive
FAMILIES = {
    "beta": Family(
        ("concentration1", "concentration0"),
        (_POSITIVE, _POSITIVE),
        (0, 0),
        lambda data, w: (w @ data["y"], w @ (data["n"] - data["y"])),
        lambda p: (p[0] - 1, p[1] - 1),
        lambda eta: (eta[0] + 1, eta[1] + 1),
        lambda p: {"concentration1": p[0] > 0, "concentration0": p[1] > 0},
        _beta_loo,
    ),
    "gamma": Family(
        ("concentration", "rate"),
        (_POSITIVE, _POSITIVE),
        (0, 0),
        lambda data, w: (w @ data["y"], -(w @ data["exposure"])),
        lambda p: (p[0] - 1, -p[1]),
        lambda eta: (eta[0] + 1, -eta[1]),
        lambda p: {"concentration": p[0] > 0, "rate": p[1] > 0},
        _gamma_loo,
    ),
    "dirichlet": Family(
        ("concentration",),
        (_POSITIVE,),
        (1,),
        lambda data, w: (jnp.zeros(data["num_categories"], w.dtype).at[data["y"]].add(w),),
        lambda p: (p[0] - 1,),
        lambda eta: (eta[0] + 1,),
        lambda p: {"concentration": jnp.all(p[0] > 0)},
        _dirichlet_loo,
    ),
    "normal": Family(
        ("loc", "precision"),
        (constraints.real_vector, constraints.positive_definite),
        (1, 2),
        _gaussian_stats,
        lambda p: (p[1] @ p[0], -p[1] / 2),
        lambda eta: (jnp.linalg.solve(-2 * eta[1], eta[0]), -2 * eta[1]),
        lambda p: {"precision": _cholesky_ok(p[1])},
        _normal_loo,
    ),
    "nig": Family(
        ("loc", "precision", "concentration", "rate"),
        (constraints.real_vector, constraints.positive_definite, _POSITIVE, _POSITIVE),
        (1, 2, 0, 0),
        lambda data, w: (
            *_gaussian_stats(data, w),
            -0.5 * jnp.sum(w),
            -0.5 * (w @ data["y"] ** 2),
        ),
        _nig_to_natural,
        _nig_from_natural,
        lambda p: {"precision": _cholesky_ok(p[1]), "concentration": p[2] > 0, "rate": p[3] > 0},
        _nig_loo,
    ),
}


def _shape_words(family: str, ndim: int) -> str:
    if ndim == 1:
        return "a vector (K,) with K >= 2" if family == "dirichlet" else "a vector (D,)"
    return "a scalar" if ndim == 0 else "a matrix (D, D)"


def check_params(
    family: str, values: tuple, names: tuple[str, ...], where: str, *, proper: bool = True
) -> tuple[jax.Array, ...]:
    """``values`` (the ``family``'s params in ``param_names`` order, or with ``proper=False``
    its natural parameters ``eta``; ``names`` in messages) as arrays after checking them.

    Checked: real numbers (:func:`~numpyro_mpe.core.gaussian.real_array`), each of the
    family's number of dimensions (a ``(D,)`` vector and ``(D, D)`` matrix of one ``D >=
    1``; a Dirichlet's ``K >= 2``), and, when the values are known (not traced), finite.
    With ``proper`` also: positive concentrations and rates, a symmetric
    positive definite precision. ``ValueError`` naming ``where``, the param, the shape
    or value at fault; :class:`~numpyro_mpe.NotPositiveDefiniteError` for a precision.
    """
    spec = FAMILIES[family]
    arrays = tuple(real_array(v, n, where) for v, n in zip(values, names, strict=True))
    for array, name, ndim in zip(arrays, names, spec.param_ndims, strict=True):
        if array.ndim != ndim or (
            ndim == 1 and array.shape[0] < (2 if family == "dirichlet" else 1)
        ):
            raise ValueError(
                f"{where}: {name!r} must be {_shape_words(family, ndim)} in a {family} "
                f"posterior, got shape {array.shape}"
            )
    if spec.param_ndims[:2] == (1, 2) and arrays[1].shape != (arrays[0].shape[0],) * 2:
        raise ValueError(
            f"{where}: {names[0]!r} {arrays[0].shape} and {names[1]!r} {arrays[1].shape} must "
            "have shapes (D,) and (D, D)"
        )
    if any(isinstance(array, jax.core.Tracer) for array in arrays):
        return arrays
    for array, name in zip(arrays, names, strict=True):
        bad = ~np.isfinite(np.asarray(array))
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            at = f" at index {index}" if index else ""
            raise ValueError(f"{where}: {name!r} is not finite{at} ({np.asarray(array)[index]})")
    if not proper:
        return arrays
    for array, name, param, constraint in zip(
        arrays, names, spec.param_names, spec.param_constraints, strict=True
    ):
        if constraint is constraints.positive_definite:
            check_symmetric(array, name, where)
            check_positive_definite(
                array, where, advice=f"params hold an improper {family} posterior ({name!r})"
            )
        elif constraint is _POSITIVE and not np.all(np.asarray(array) > 0):
            bad = np.asarray(array) <= 0
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{where}: params hold an improper {family} posterior: {param} is not positive "
                f"({name}{list(index) if index else ''} = {np.asarray(array)[index]})"
            )
    return arrays
