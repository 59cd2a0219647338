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

Every ``init`` checks ``mean`` (:func:`check_mean`) and ``loss_fn``, every ``update`` and
``mean_precision`` its state (:func:`check_state`), before any work; the checks look at
shapes and dtypes only when their arguments are traced, so they hold under ``jit`` and
``vmap``.
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
from jax.typing import ArrayLike

from numpyro_mpe.core.gaussian import check_symmetric
from numpyro_mpe.core.options import COVARIANCES, Covariance, check_choice

__all__ = [
    "EXTRAS",
    "NaturalGradientOptimizer",
    "PrecisionAverage",
    "cached_by_settings",
    "check_count",
    "check_loss_fn",
    "check_lr",
    "check_mean",
    "check_number",
    "check_precision_init",
    "check_representable",
    "check_rng_key",
    "check_schedule",
    "check_state",
    "dense_or_diag",
    "initial_precision",
    "is_traced",
    "learning_rate",
    "newton_decrement",
    "start_precision_average",
    "update_precision_average",
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
        ``{"dense", "diag"}`` (``ValueError`` for another name).
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
    name : str or None
        The factory's name in :mod:`numpyro_mpe.optim` (``"iblr"``), for messages.
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
    name: str | None = None


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
    name: str,
    value: object,
    low: float,
    high: float = math.inf,
    *,
    closed: bool = False,
    open_high: bool = False,
) -> None:
    """Raise unless ``value`` is a real number in ``(low, high]`` (``[low, ...`` when
    ``closed``, ``..., high)`` when ``open_high``): ``TypeError`` for a string, None, bool
    or array, ``ValueError`` for NaN, inf or a number out of range, naming ``name`` and
    the value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    above = value >= low if closed else value > low
    below = value < high if open_high else value <= high
    if not (math.isfinite(value) and above and below):
        interval = _interval(low, high, closed, open_high)
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def _interval(low: float, high: float, closed: bool, open_high: bool = False) -> str:
    right = f"{high:g}{')' if open_high else ']'}" if math.isfinite(high) else "inf)"
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


def is_traced(value: object) -> bool:
    """Whether ``value`` is a jax tracer (under ``jit`` / ``vmap``): its values are unknown,
    so only its shape and dtype can be checked."""
    return isinstance(value, jax.core.Tracer)


def check_rng_key(rng_key: object, where: str) -> None:
    """Raise ``TypeError`` unless ``rng_key`` is a jax PRNG key (typed or raw ``(2,)``
    uint32), naming ``where``; shapes and dtypes only, so it holds under ``jit``."""
    if isinstance(rng_key, jax.Array | np.ndarray):
        if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key) and rng_key.shape == ():
            return
        if rng_key.dtype == np.uint32 and rng_key.shape == (2,):
            return
    described = f"{type(rng_key).__name__}"
    if hasattr(rng_key, "shape"):
        described += f" of shape {rng_key.shape} and dtype {rng_key.dtype}"
    else:
        described += f" {rng_key!r}"
    raise TypeError(
        f"{where}: rng_key must be a jax PRNG key, e.g. jax.random.key(0) or "
        f"jax.random.PRNGKey(0); got {described}"
    )


def check_loss_fn(loss_fn: object, where: str, mean: jax.Array | None = None) -> None:
    """Raise ``TypeError`` unless ``loss_fn`` is callable, naming ``where``; with ``mean``
    (``(P,)``), also unless ``loss_fn(mean)`` is a floating-point scalar (its shape is
    found by :func:`jax.eval_shape`: no evaluation, so it holds under ``jit``)."""
    if not callable(loss_fn):
        raise TypeError(
            f"{where}: loss_fn must be a callable theta -> scalar loss, got "
            f"{type(loss_fn).__name__}"
        )
    if mean is None:
        return
    out = jax.eval_shape(loss_fn, mean)
    if not (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.shape == ()
        and jnp.issubdtype(out.dtype, jnp.floating)
    ):
        got = (
            f"shape {out.shape} and dtype {out.dtype}"
            if isinstance(out, jax.ShapeDtypeStruct)
            else f"a {type(out).__name__}"
        )
        raise TypeError(
            f"{where}: loss_fn must return a floating-point scalar (the total loss), got "
            f"{got}; sum per-example losses into one"
        )


def check_mean(mean: ArrayLike, where: str) -> jax.Array:
    """``mean`` as a jax array, or an error naming ``where`` unless it is ``(P,)``
    floating point (``TypeError``) and, when its values are known (not traced), finite
    (``ValueError`` with the index of the first bad entry)."""
    try:
        array = jnp.asarray(mean)
    except TypeError:
        raise TypeError(
            f"{where}: mean must be a (P,) array of floats, got {type(mean).__name__}"
        ) from None
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{where}: mean must have shape (P,) with P >= 1, got {array.shape}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(
            f"{where}: mean must be floating point, got dtype {array.dtype} (write "
            "jnp.zeros(P) or cast with .astype(float))"
        )
    if not is_traced(array):
        values = np.asarray(array)
        bad = ~np.isfinite(values)
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(f"{where}: mean contains {values[index]} at index {index}")
    return array


def check_state(
    state: object, state_type: type, where: str, *, covariance: Covariance | None = None
) -> None:
    """Raise ``TypeError`` unless ``state`` is a ``state_type`` (from this optimizer's
    ``init``) and, when ``covariance`` is given, ``ValueError`` unless its precision is
    of that family (``(P, P)`` dense, ``(P,)`` diag); names ``where``. Shapes only, so it
    holds under ``jit``."""
    if not isinstance(state, state_type):
        raise TypeError(
            f"{where}: state must be a {state_type.__name__} (from this optimizer's init), "
            f"got {type(state).__name__}"
        )
    if covariance is None:
        return
    shape = jnp.shape(state.precision)
    size = jnp.shape(state.mean)[0]
    expected = (size, size) if covariance == "dense" else (size,)
    if shape != expected:
        raise ValueError(
            f"{where}: the state's precision has shape {shape}, but this optimizer keeps a "
            f"covariance={covariance!r} precision {expected}: the state comes from an "
            "optimizer of the other family"
        )


def check_precision_init(precision_init: ArrayLike | None, covariance: Covariance) -> None:
    """Raise unless ``precision_init`` is None or a positive definite initial precision:
    a positive number, a ``(P,)`` array of positive entries or (``covariance="dense"``)
    a symmetric positive definite ``(P, P)`` matrix. ``TypeError`` for a string, bool or
    non-numeric array, ``ValueError`` naming the shape or value at fault. (``P`` is
    checked by :func:`initial_precision`.)"""
    if precision_init is None or is_traced(precision_init):
        return
    if isinstance(precision_init, int | float | np.integer | np.floating):
        check_number("precision_init", precision_init, 0.0)
        return
    try:
        array = np.asarray(precision_init)
    except Exception:
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"precision_init must be a positive number or an array of them, got {precision_init!r}"
        )
    allowed = ("()", "(P,)", "(P, P)") if covariance == "dense" else ("()", "(P,)")
    square = array.ndim == 2 and array.shape[0] == array.shape[1] and covariance == "dense"
    if array.ndim > 1 and not square:
        raise ValueError(
            f"precision_init must have shape {' or '.join(allowed)} for "
            f"covariance={covariance!r}, got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"precision_init must be finite, got {array}")
    if array.ndim < 2:
        if np.any(array <= 0):
            index = int(np.argmax(array.reshape(-1) <= 0))
            raise ValueError(
                f"precision_init must be positive, got {array.reshape(-1)[index]} at index {index}"
            )
        return
    check_symmetric(array, "precision_init", where="optimizer settings")
    smallest = np.linalg.eigvalsh(array).min()
    if smallest <= 0:
        raise ValueError(
            f"precision_init must be positive definite, got smallest eigenvalue {smallest:.3g}"
        )


def check_representable(name: str, value: ArrayLike, dtype: object, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` and ``name`` when the finite setting ``value``
    overflows to inf in ``dtype`` (the mean's: 1e300 in float32); a traced ``value``
    passes."""
    if is_traced(value):
        return
    with np.errstate(over="ignore"):
        cast = np.asarray(value).astype(dtype)
    if not np.all(np.isfinite(cast)):
        raise ValueError(
            f"{where}: {name} = {np.max(np.abs(np.asarray(value))):g} overflows {np.dtype(dtype)} "
            f"(the mean's dtype, largest {float(np.finfo(dtype).max):.3g}); use a smaller "
            "value, or enable float64 with jax.config.update('jax_enable_x64', True)"
        )


def initial_precision(
    precision_init: ArrayLike, mean: jax.Array, covariance: Covariance, where: str
) -> jax.Array:
    """``precision_init`` (checked by :func:`check_precision_init`) as the ``(P, P)``
    (dense) or ``(P,)`` (diag) precision of ``mean`` ``(P,)``; ``ValueError`` naming
    ``where`` when its shape does not fit ``P``."""
    size = mean.shape[0]
    check_representable("precision_init", precision_init, mean.dtype, where)
    precision = jnp.asarray(precision_init, mean.dtype)
    fits = precision.shape in ((), (size,)) or (
        covariance == "dense" and precision.shape == (size, size)
    )
    if not fits:
        allowed = f"(), ({size},)" + (f" or ({size}, {size})" if covariance == "dense" else "")
        raise ValueError(
            f"{where}: precision_init has shape {precision.shape}; for a mean of {size} "
            f"entries and covariance={covariance!r} it must have shape {allowed}"
        )
    if covariance == "dense":
        return precision if precision.ndim == 2 else jnp.diag(jnp.broadcast_to(precision, (size,)))
    return jnp.broadcast_to(precision, (size,))


def dense_or_diag(precision: jax.Array, covariance: Covariance) -> jax.Array:
    """A ``(P, P)`` or ``(P,)`` precision in the form the guide's ``covariance`` needs
    (``ValueError`` for another ``covariance``)."""
    check_choice("covariance", covariance, COVARIANCES)
    if covariance == "dense":
        return precision if precision.ndim == 2 else jnp.diag(precision)
    return jnp.diag(precision) if precision.ndim == 2 else precision


class PrecisionAverage(NamedTuple):
    """What a stochastic optimizer's precision average has forgotten and how noisy it is.

    A precision step ``S_{t+1} = (1 - beta_t) S_t + beta_t S_hat_t`` (plus iBLR's
    ``beta_t^2`` term) makes ``S_T = w S_0 + sum_t w_t S_hat_t`` with weights ``w_t =
    beta_t prod_{u > t} (1 - beta_u)`` and ``w = prod_t (1 - beta_t)``.

    Attributes
    ----------
    initial_precision : jax.Array, shape (P,) or (P, P)
        ``S_0``.
    initial_weight : jax.Array, shape ()
        ``w``: 1 at the start.
    square_weight : jax.Array, shape ()
        ``sum_t w_t^2``: the average holds ``1 / square_weight`` estimates' worth of
        noise.
    spread : jax.Array, shape (P,) or ()
        The ``w_t``-weighted average (renormalised) of the estimates' squared relative
        deviations from the precision they updated: ``((s_hat - s) / s)^2`` per entry
        (diag), ``||L^-1 (S_hat - S) L^-T||_F^2`` with ``S = L L^T`` (dense).
    """

    initial_precision: jax.Array
    initial_weight: jax.Array
    square_weight: jax.Array
    spread: jax.Array


def start_precision_average(precision: jax.Array) -> PrecisionAverage:
    """The :class:`PrecisionAverage` of an initial precision ``(P,)`` or ``(P, P)``."""
    dtype = precision.dtype
    spread = jnp.zeros((), dtype) if precision.ndim == 2 else jnp.zeros_like(precision)
    return PrecisionAverage(precision, jnp.ones((), dtype), jnp.zeros((), dtype), spread)


def _whitened(cholesky: jax.Array, matrix: jax.Array) -> jax.Array:
    """``L^-1 A L^-T`` for a symmetric ``A`` ``(P, P)`` and lower-triangular ``L``."""
    half = jax.scipy.linalg.solve_triangular(cholesky, matrix, lower=True)
    return jax.scipy.linalg.solve_triangular(cholesky, half.T, lower=True)


def update_precision_average(
    average: PrecisionAverage,
    rate: jax.Array,
    precision: jax.Array,
    estimate: jax.Array,
    new_precision: jax.Array,
) -> tuple[PrecisionAverage, jax.Array, jax.Array]:
    """Account for one precision step at ``rate``; ``(average, initial_bias, error)``.

    ``initial_bias``: how far ``S_0`` still pulls the new precision ``S`` from the
    average ``S_bar`` of the estimates, relative to ``S``. From ``S = w S_0 + (1 - w)
    S_bar``, ``S - S_bar = w / (1 - w) (S_0 - S)``; measured as ``max_j |.|_j / s_j``
    (diag) or ``||L^-1 (.) L^-T||_F`` (dense, ``S = L L^T``). ``error``: the estimated
    relative Monte Carlo standard error ``sqrt(square_weight * spread / (1 - w))`` (diag:
    the largest entry's). Estimates taken while the mean still moved deviate more and count
    as noise, so it stays large until a run has settled.

    Parameters
    ----------
    average : PrecisionAverage
    rate : jax.Array, shape ()
        ``beta_t`` in ``(0, 1]``.
    precision, estimate, new_precision : jax.Array, shape (P,) or (P, P)
        ``S_t``, ``S_hat_t`` (symmetric) and ``S_{t+1}``.

    Returns
    -------
    tuple of PrecisionAverage, jax.Array (shape ()), jax.Array (shape ())
    """
    if precision.ndim == 2:
        deviation = jnp.sum(_whitened(jnp.linalg.cholesky(precision), estimate - precision) ** 2)
        gap = _whitened(
            jnp.linalg.cholesky(new_precision), average.initial_precision - new_precision
        )
        distance = jnp.sqrt(jnp.sum(gap**2))
    else:
        deviation = ((estimate - precision) / precision) ** 2
        distance = jnp.max(jnp.abs(average.initial_precision - new_precision) / new_precision)
    weight = average.initial_weight * (1 - rate)
    square_weight = (1 - rate) ** 2 * average.square_weight + rate**2
    spread = (1 - rate) * average.spread + rate * deviation
    average = PrecisionAverage(average.initial_precision, weight, square_weight, spread)
    # The estimates weigh 1 - w in all: spread / (1 - w) is their mean squared deviation.
    estimates_weight = jnp.maximum(1 - weight, jnp.finfo(weight.dtype).tiny)
    error = jnp.sqrt(square_weight * jnp.max(spread) / estimates_weight)
    return average, weight / estimates_weight * distance, error
