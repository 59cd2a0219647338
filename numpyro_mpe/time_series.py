"""Time-series models whose examples are time points, for leave-future-out (:func:`lfo`).

Each model puts one observation per time in its plate of examples, in time order, and
writes the likelihood of ``y_t`` given the past (lagged values are data): so the log
likelihood of a block ``y_{t..t+M-1}`` given ``theta`` is the sum of its examples' terms,
the chain-rule factorisation ``lfo`` (and ArviZ's ``lfo_cv``) scores.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

__all__ = ["ar_model", "lagged_values", "poisson_ar_model", "simulate_poisson_ar"]


def lagged_values(y: ArrayLike, order: int, fill: float = 0.0) -> jnp.ndarray:
    """Lag matrix ``(T, order)``: column ``k`` holds ``y_{t-k-1}``, ``fill`` before the start.

    Parameters
    ----------
    y : array_like, shape (T,)
        The series.
    order : int
        Number of lags, at least 1.
    fill : float
        The value of lags before the first observation.

    Raises
    ------
    ValueError
        ``y`` not one-dimensional, or ``order`` not a positive integer.
    """
    y = jnp.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"lagged_values: y must be a series of shape (T,), got shape {y.shape}")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 1:
        raise ValueError(f"lagged_values: order must be a positive integer, got {order!r}")
    padded = jnp.concatenate([jnp.full(order, fill, y.dtype), y])
    return jnp.stack([padded[order - k - 1 : order - k - 1 + y.shape[0]] for k in range(order)], 1)


def ar_model(y: ArrayLike, order: int = 4, level: float = 0.0, scale: float = 1.0) -> None:
    """AR(``order``) model of residuals around a latent intercept (as ``brms``'s ``ar()``).

    .. math::

        y_t \\sim N\\Big(b + \\sum_{k=1}^{p} a_k (y_{t-k} - b),\\ \\sigma\\Big),\\qquad
        a_k \\sim N(0, 0.5),\\ b \\sim N(\\text{level}, 10\\,\\text{scale}),\\
        \\sigma \\sim \\text{HalfNormal}(\\text{scale}),

    with residuals ``y_{t-k} - b`` taken as 0 before the start, so that every time point
    is an example of the plate ``"time"`` (``T`` examples).

    Parameters
    ----------
    y : array_like, shape (T,)
        The series, observed at every time.
    order : int
        ``p``, the number of autoregressive terms.
    level, scale : float
        Centre and scale of the intercept and noise priors (the series' units).
    """
    y = jnp.asarray(y)
    intercept = numpyro.sample("intercept", dist.Normal(level, 10.0 * scale))
    ar = numpyro.sample("ar", dist.Normal(0.0, 0.5).expand([order]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(scale))
    residual_lags = lagged_values(y - intercept, order)
    with numpyro.plate("time", y.shape[0]):
        numpyro.sample("y", dist.Normal(intercept + residual_lags @ ar, sigma), obs=y)


def poisson_ar_model(y: ArrayLike, order: int = 1) -> None:
    """Poisson autoregression on the log of past counts.

    .. math::

        y_t \\sim \\text{Poisson}\\Big(\\exp\\big(b + \\textstyle\\sum_{k=1}^{p} a_k
        \\log(1 + y_{t-k})\\big)\\Big),\\qquad b \\sim N(0, 2),\\ a_k \\sim N(0, 0.5),

    with ``y_{t-k} = 0`` before the start (plate ``"time"``, ``T`` examples).

    Parameters
    ----------
    y : array_like, shape (T,)
        Counts, observed at every time.
    order : int
        ``p``, the number of lags.
    """
    y = jnp.asarray(y)
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 2.0))
    ar = numpyro.sample("ar", dist.Normal(0.0, 0.5).expand([order]).to_event(1))
    log_rate = intercept + jnp.log1p(lagged_values(y, order)) @ ar
    with numpyro.plate("time", y.shape[0]):
        numpyro.sample("y", dist.Poisson(jnp.exp(log_rate)), obs=y)


def simulate_poisson_ar(num_times: int, intercept: float, ar: ArrayLike, seed: int) -> np.ndarray:
    """Simulate a series of :func:`poisson_ar_model` with known parameters.

    .. math::

        y_t \\sim \\text{Poisson}\\Big(\\exp\\big(b + \\textstyle\\sum_{k=1}^{p} a_k
        \\log(1 + y_{t-k})\\big)\\Big),\\qquad t = 0, \\dots, T - 1,

    with ``y_{t-k} = 0`` before the start, drawn in time order with
    ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    num_times : int
        ``T``, the length of the series, at least 1.
    intercept : float
        ``b``, the log rate when every lag is 0.
    ar : array_like, shape (p,)
        ``a_1..a_p``, the coefficients of ``log(1 + y_{t-k})``; ``p >= 1``.
    seed : int
        Seed of the numpy generator.

    Returns
    -------
    numpy.ndarray, shape (T,), float64
        The counts ``y_0..y_{T-1}``.

    Raises
    ------
    ValueError
        ``num_times`` not a positive integer, ``intercept`` or ``ar`` not finite, or
        ``ar`` not a non-empty vector.

    Examples
    --------
    >>> y = simulate_poisson_ar(100, 0.5, [0.6], seed=2026)
    >>> y.shape, y.dtype, bool((y >= 0).all())
    ((100,), dtype('float64'), True)
    """
    if isinstance(num_times, bool) or not isinstance(num_times, int | np.integer) or num_times < 1:
        raise ValueError(
            f"simulate_poisson_ar: num_times must be a positive integer, got {num_times!r}"
        )
    if not np.isfinite(intercept):
        raise ValueError(f"simulate_poisson_ar: intercept must be finite, got {intercept!r}")
    ar = np.asarray(ar, dtype=float)
    if ar.ndim != 1 or ar.size == 0 or not np.isfinite(ar).all():
        raise ValueError(
            f"simulate_poisson_ar: ar must be a non-empty finite vector (p,), got {ar!r}"
        )
    rng = np.random.default_rng(seed)
    order = ar.size
    padded = np.zeros(order + num_times)
    for t in range(num_times):
        lags = padded[t : t + order][::-1]  # y_{t-1}, ..., y_{t-p}
        padded[order + t] = rng.poisson(np.exp(intercept + np.log1p(lags) @ ar))
    return padded[order:]
