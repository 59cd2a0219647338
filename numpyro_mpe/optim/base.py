"""The optimizer contract: an optax-style ``init`` / ``update`` pair over a Gaussian.

Every optimizer of :mod:`numpyro_mpe.optim` is a :class:`NaturalGradientOptimizer`.
``loss_fn(theta)`` is the total loss ``L(theta) = l_0(theta) + sum_i l_i(theta)`` (with
minibatches, an unbiased estimate of it: the prior plus ``N / B`` times the batch's
likelihood terms). Both functions take the same keyword-only extras, in the spirit of
optax's ``GradientTransformationExtraArgs``, and ignore those they do not need:

``init(mean, loss_fn, *, rng_key=None, num_examples=None, gauss_newton_fn=None)``
    The first state, from the initial mean ``(P,)``.
``update(state, loss_fn, *, rng_key=None, num_examples=None, gauss_newton_fn=None)``
    One step; returns ``(state, info)`` with ``info.loss`` and ``info.converged``.

The extras (:data:`EXTRAS`):

- ``rng_key``: the step's random key (stochastic optimizers need it),
- ``num_examples``: ``N``, the number of likelihood terms of the full data,
- ``gauss_newton_fn``: ``theta -> (P, P)``, the prior's Hessian plus the generalised
  Gauss-Newton matrix of the likelihood (:func:`numpyro_mpe.core.curvature.gauss_newton_matrix`);
  only computed for optimizers whose ``uses_gauss_newton`` is True.

:class:`~numpyro_mpe.BLR` always passes ``rng_key`` and ``num_examples`` and never reads
signatures. ``mean_precision(state, covariance)`` reads the Gaussian ``N(m, S^-1)`` off a
state, so MPE works at any iteration; ``covariance`` says which family the optimizer's
precision is (None: it computes full Hessians and serves either family).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.options import Covariance

__all__ = [
    "EXTRAS",
    "NaturalGradientOptimizer",
    "cached_by_settings",
    "check_count",
    "check_lr",
    "check_number",
    "check_schedule",
    "dense_or_diag",
    "learning_rate",
    "newton_decrement",
]

EXTRAS = ("rng_key", "num_examples", "gauss_newton_fn")
"""The keyword-only extras every ``init`` and ``update`` accepts."""


class NaturalGradientOptimizer(NamedTuple):
    """An ``init`` / ``update`` pair (optax-style) over a Gaussian's natural parameters.

    Attributes
    ----------
    init : callable
        ``init(mean, loss_fn, *, rng_key=None, num_examples=None, gauss_newton_fn=None)
        -> state``.
    update : callable
        ``update(state, loss_fn, *, rng_key=None, num_examples=None,
        gauss_newton_fn=None) -> (state, info)``; ``info.loss`` and ``info.converged``
        are always present.
    mean_precision : callable
        ``mean_precision(state, covariance) -> (m, S)`` for ``covariance`` in
        ``{"dense", "diag"}``.
    covariance : {"dense", "diag"} or None
        The family of the precision the optimizer keeps; None when it computes full
        Hessians and serves either family (:func:`~numpyro_mpe.optim.newton`).
        :class:`~numpyro_mpe.BLR` refuses a guide of the other family.
    uses_gauss_newton : bool
        Whether ``init`` / ``update`` need ``gauss_newton_fn``.
    reports_convergence : bool
        Whether ``info.converged`` can become True on a full batch (Newton, online
        Newton); False for optimizers that run the steps they are given (iBLR, VON with
        draws). :meth:`~numpyro_mpe.BLR.run` warns when a full-batch run of one that
        reports ends unconverged.
    full_batch_only : bool
        Whether each step needs the full-data loss (Newton's line search on ``L``);
        :class:`~numpyro_mpe.BLR` refuses minibatches for such an optimizer.
    lr : float or callable or None
        The step size or schedule (``step -> rate``, from 0), for
        :meth:`~numpyro_mpe.BLR.run` to check a schedule over the steps it runs
        (:func:`check_schedule`); None for optimizers without one.
    max_lr : float
        Largest rate the optimizer accepts (1 for a precision average, ``inf`` for iBLR).
    """

    init: Callable
    update: Callable
    mean_precision: Callable
    covariance: Covariance | None = None
    uses_gauss_newton: bool = False
    reports_convergence: bool = False
    full_batch_only: bool = False
    lr: float | Callable | None = None
    max_lr: float = math.inf


_MAX_CACHED_OPTIMIZERS = 64


def cached_by_settings(factory: Callable) -> Callable:
    """``factory`` returning one optimizer object per distinct settings.

    jax's compilation caches key a static argument by its hash, and a
    :class:`NaturalGradientOptimizer` hashes by its functions' identities. So a fresh
    ``optim.newton()`` per ``BLR.run`` (as the README writes it) would compile anew
    every run (1.7 s against 0.04 s for a second Newton fit on wells, measured) and keep
    each compilation alive. With this
    decorator equal settings give the same object: the second run reuses the first's
    compilation. Settings are compared with their types (``1`` is not ``1.0``); a call
    with an unhashable setting (an array ``precision_init``) builds a new optimizer.
    The most recent 64 settings per factory are kept. A schedule ``lr`` is compared by
    identity and compiled into the step: like any function jax compiles, it must be
    pure (one that reads a global changed between runs keeps the first run's value).
    """
    cache: OrderedDict = OrderedDict()

    @functools.wraps(factory)
    def build(*args, **kwargs):
        key = tuple((type(a), a) for a in args) + tuple(
            (name, type(v), v) for name, v in sorted(kwargs.items())
        )
        try:
            hash(key)
        except TypeError:
            return factory(*args, **kwargs)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        optimizer = factory(*args, **kwargs)
        cache[key] = optimizer
        if len(cache) > _MAX_CACHED_OPTIMIZERS:
            cache.popitem(last=False)
        return optimizer

    return build


def newton_decrement(gradient: jax.Array, hessian: jax.Array) -> jax.Array:
    """``g^T H^-1 g / 2``, or ``inf`` where ``H`` is not positive definite (never NaN)."""
    cholesky = jnp.linalg.cholesky(hessian)
    step = jax.scipy.linalg.cho_solve((cholesky, True), gradient)
    decrement = 0.5 * jnp.dot(gradient, step)
    return jnp.where(jnp.isfinite(decrement), decrement, jnp.inf)


def learning_rate(lr: float | Callable, step: jax.Array) -> jax.Array:
    """``lr`` itself, or ``lr(step)`` for a schedule (optax-style, ``step`` from 0)."""
    return jnp.asarray(lr(step) if callable(lr) else lr)


def check_number(
    name: str, value: object, low: float, high: float = math.inf, *, closed: bool = False
) -> None:
    """Raise unless ``value`` is a real number in ``(low, high]`` (``[low, high]`` when
    ``closed``): ``TypeError`` for a string, None, bool or array, ``ValueError`` for NaN,
    inf or a number out of range, naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    above = value >= low if closed else value > low
    if not (math.isfinite(value) and above and value <= high):
        raise ValueError(f"{name} must be in {_interval(low, high, closed)}, got {value!r}")


def _interval(low: float, high: float, closed: bool) -> str:
    right = f"{high:g}]" if math.isfinite(high) else "inf)"
    return f"{'[' if closed else '('}{low:g}, {right}"


def check_count(name: str, value: object, low: int) -> None:
    """Raise unless ``value`` is an integer (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def check_lr(lr: float | Callable, high: float = 1.0) -> None:
    """Raise unless ``lr`` is a schedule or a number in ``(0, high]``."""
    if callable(lr):
        return
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.integer | np.floating):
        raise TypeError(f"lr must be a number or a schedule, got {lr!r}")
    if not (math.isfinite(lr) and 0 < lr <= high):
        raise ValueError(f"lr must be in {_interval(0, high, False)} or a schedule, got {lr!r}")


def check_schedule(optimizer: NaturalGradientOptimizer, first: int, last: int) -> None:
    """Raise ``ValueError`` if the optimizer's schedule leaves ``(0, max_lr]`` at a step.

    Checks steps ``first, ..., last - 1`` (counted from 0, as the optimizer counts them)
    before they run: a schedule that turns negative or non-finite would otherwise move
    the fit uphill, silently.
    """
    lr = optimizer.lr
    if not callable(lr) or last <= first:
        return
    steps = jnp.arange(first, last)
    rates = np.asarray(jax.vmap(lr)(steps), dtype=float).reshape(-1)
    bad = ~(np.isfinite(rates) & (rates > 0) & (rates <= optimizer.max_lr))
    if bad.any():
        index = int(np.argmax(bad))
        allowed = "(0, inf)" if math.isinf(optimizer.max_lr) else f"(0, {optimizer.max_lr:g}]"
        raise ValueError(
            f"the lr schedule gives {rates[index]:g} at step {first + index}, outside "
            f"{allowed}; fix the schedule (it is called with the step count from 0)"
        )


def dense_or_diag(precision: jax.Array, covariance: Covariance) -> jax.Array:
    """A ``(P, P)`` or ``(P,)`` precision in the form the guide's ``covariance`` needs."""
    if covariance == "dense":
        return precision if precision.ndim == 2 else jnp.diag(precision)
    return jnp.diag(precision) if precision.ndim == 2 else precision
