"""Leave-future-out by refitting at every forecast origin, and PSIS-LFO through ArviZ.

With ``T`` time points (the examples of the model's plate, in time order), a minimum
training length ``L`` and a horizon ``M``, each forecast origin ``t = L, ..., T - M``
scores the block ``B_t = {t, ..., t + M - 1}`` given the time points before it,

.. math::

    \\text{elpd}_t = \\log p(y_{B_t} \\mid y_{<t})
      = \\log \\int \\prod_{i \\in B_t} p(y_i \\mid \\theta)\\, p(\\theta \\mid y_{<t})\\,
        d\\theta,

the chain-rule factorisation of ArviZ's :func:`arviz_stats.lfo_cv` (lagged values are
data, so the block's log likelihood given ``theta`` is the sum of its examples' terms).
The posterior given ``y_{<t}`` is the model's with example weights ``w_i = 1`` for
``i < t`` and ``0`` after (:meth:`PlateModel.log_joint`).

:func:`exact_lfo` is the reference: Laplace refits of the guide's Gaussian family at
every origin, each block density integrated by importance sampling from the Laplace
approximation of the tilted density (exact for Gaussian-linear blocks), or NUTS refits.
:func:`psis_lfo` runs Bürkner, Gabry & Vehtari's PSIS-LFO (or exact NUTS refits) by
calling :func:`arviz_stats.lfo_cv` with NUTS refits over the flat unconstrained
``theta``, compiled once per model and data shapes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from arviz_stats.utils import ELPDDataLFO
from numpyro.infer.hmc import hmc

from numpyro_mpe.core.model import PlateModel, join_arguments, split_arguments, trace_model
from numpyro_mpe.core.options import REFIT_METHODS, RefitMethod, check_choice
from numpyro_mpe.crossval.importance import check_seed, log_normalizer
from numpyro_mpe.crossval.lfo_window import LFOWindow, check_lfo_window
from numpyro_mpe.crossval.psis import ParetoKWarning
from numpyro_mpe.crossval.refits import REFIT_TOL, minimize, tilted_log_ratios
from numpyro_mpe.crossval.results import ELPDDataRefitLFO
from numpyro_mpe.infer.blr import ConvergenceWarning, check_optimizer_for_guide
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.optim import NaturalGradientOptimizer, newton
from numpyro_mpe.optim.base import check_count, check_number
from numpyro_mpe.perturbation.removal import check_at_most

__all__ = ["exact_lfo", "psis_lfo"]

#: ``method`` of :func:`psis_lfo`, as :func:`arviz_stats.lfo_cv` names them.
_LFO_METHODS = ("approx", "exact")
#: Pareto k above which an importance-sampled block density is not a reference.
_MAX_BLOCK_K = 0.7
#: Origins (and block densities) per compiled piece, the last piece padded: every number
#: of origins reuses one compilation.
_CHUNK = 16


@partial(jax.jit, static_argnames=("model", "static", "plate", "num_warmup", "num_samples"))
def _nuts_draws(rng_key, weights, start, arrays, *, model, static, plate, num_warmup, num_samples):
    """One NUTS chain over the flat unconstrained ``theta`` of the weighted log joint,
    from ``start`` ``(P,)``: draws ``(S, P)`` and their log likelihoods ``(S, N)``.

    Jitted once per model, argument structure, plate and draw counts: the weights
    ``(N,)`` and the data are arguments, so every cutoff reuses one executable.
    """
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)

    def potential_fn(example_weights):
        return lambda theta: -plate_model.log_joint(theta, example_weights)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn, algo="NUTS")

    def advance(state):
        return sample_kernel(state, model_args=(weights,))

    state = init_kernel(start, num_warmup, model_args=(weights,), rng_key=rng_key)
    state = jax.lax.fori_loop(0, num_warmup, lambda _, state: advance(state), state)

    def draw(state, _):
        state = advance(state)
        return state, state.z

    _, theta = jax.lax.scan(draw, state, length=num_samples)
    return theta, jax.vmap(plate_model.log_lik)(theta)


def _draws_tree(theta, log_lik, dim: str, name: str) -> xr.DataTree:
    """DataTree of one chain: ``posterior`` (``theta`` ``(chain, draw, latent)``) and
    ``log_likelihood`` (``name`` ``(chain, draw, dim)``, coordinate ``0..T-1``)."""
    theta = np.asarray(theta)[None]
    log_lik = np.asarray(log_lik)[None]
    coords = {"chain": [0], "draw": np.arange(theta.shape[1])}
    posterior = xr.Dataset(
        {"theta": (("chain", "draw", "latent"), theta)},
        coords={**coords, "latent": np.arange(theta.shape[2])},
    )
    pointwise = xr.Dataset(
        {name: (("chain", "draw", dim), log_lik)},
        coords={**coords, dim: np.arange(log_lik.shape[2])},
    )
    return xr.DataTree.from_dict({"posterior": posterior, "log_likelihood": pointwise})


class _NutsRefits(arviz_stats.SamplingWrapper):
    """NUTS refits on the time points before a cutoff, for :func:`arviz_stats.lfo_cv`.

    ``model`` is ``draw(rng_key, weights, start) -> (theta (S, P), log_lik (S, T))``;
    the refit on ``y_{<t}`` uses ``fold_in(rng_key, t)`` (the full fit ``t = T``), so
    the result does not depend on the order of the calls.
    """

    def __init__(self, draw, *, rng_key, start, num_times, dim, name):
        super().__init__(model=draw)
        self.rng_key = rng_key
        self.start = start
        self.num_times = num_times
        self.dim = dim
        self.name = name

    def sel_observations(self, idx):
        excluded = np.asarray(idx)
        weights = np.ones(self.num_times, self.start.dtype)
        weights[excluded] = 0.0
        return weights, excluded

    def sample(self, modified_observed_data):
        cutoff = int(np.sum(modified_observed_data))
        key = jax.random.fold_in(self.rng_key, cutoff)
        return self.model(key, jnp.asarray(modified_observed_data), self.start)

    def get_inference_data(self, fitted_model):
        return _draws_tree(*fitted_model, self.dim, self.name)

    def log_likelihood__i(self, excluded_obs, idata__i):
        return idata__i.log_likelihood[self.name].isel({self.dim: excluded_obs})


def _check_counts(**counts: tuple[object, int]) -> None:
    """Each ``name=(value, low)`` an integer in ``[low, 2**31 - 1]``, naming ``name``."""
    for name, (value, low) in counts.items():
        check_count(name, value, low)
        check_at_most(name, value)


def _nuts_lfo(
    model: Callable,
    args: tuple,
    kwargs: dict,
    plate_model: PlateModel,
    window: LFOWindow,
    start: jax.Array,
    options: dict,
) -> ELPDDataLFO:
    """:func:`arviz_stats.lfo_cv` with NUTS refits; the full-data chain starts at
    ``start`` and every refit at the full-data posterior mean."""
    arrays, static = split_arguments(args, kwargs)
    draw = partial(
        _nuts_draws,
        arrays=arrays,
        model=model,
        static=static,
        plate=plate_model.plate,
        num_warmup=options["num_warmup"],
        num_samples=options["num_samples"],
    )
    rng_key = jax.random.PRNGKey(options["seed"])
    weights = jnp.ones(window.num_times, start.dtype)
    theta, log_lik = draw(jax.random.fold_in(rng_key, window.num_times), weights, start)
    sites = plate_model.observed_sites
    name = sites[0] if len(sites) == 1 else "log_lik"
    wrapper = _NutsRefits(
        draw,
        rng_key=rng_key,
        start=jnp.mean(theta, axis=0),
        num_times=window.num_times,
        dim=plate_model.plate,
        name=name,
    )
    return arviz_stats.lfo_cv(
        _draws_tree(theta, log_lik, plate_model.plate, name),
        wrapper,
        min_observations=window.min_train,
        forecast_horizon=window.horizon,
        time_dim=plate_model.plate,
        pointwise=True,
        var_name=name,
        method=options["method"],
        k_threshold=options["k_threshold"],
    )


def psis_lfo(
    model: Callable,
    *args: Any,
    min_train: int,
    horizon: int = 1,
    method: str = "approx",
    k_threshold: float = 0.7,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int = 0,
    plate: str | None = None,
    **kwargs: Any,
) -> ELPDDataLFO:
    """PSIS leave-future-out (Bürkner, Gabry & Vehtari 2020) with NUTS refits, by ArviZ.

    Calls :func:`arviz_stats.lfo_cv` on a full-data NUTS fit, with refits on
    ``y_{<t}``: NUTS over the flat unconstrained ``theta`` of :func:`trace_model` with
    example weights ``w_i = 1`` for ``i < t`` and 0 after. With ``method="approx"`` the
    posterior of the last refit is carried to later origins by Pareto-smoothed
    importance ratios ``prod_{last <= i < t} p(y_i | theta_s)``, and the model is
    refitted at the origin where their Pareto k exceeds ``k_threshold``; with
    ``method="exact"`` it is refitted at every origin:

    .. math::

        \\text{elpd}_t = \\log \\frac{1}{S} \\sum_{s=1}^{S}
            \\prod_{i=t}^{t+M-1} p(y_i \\mid \\theta_s),\\qquad
            \\theta_s \\sim p(\\theta \\mid y_{<t}).

    Parameters
    ----------
    model : callable
        A NumPyro model whose plate of examples is the time series, in time order, with
        the likelihood of ``y_t`` given the past (lagged values as data), e.g.
        :func:`numpyro_mpe.time_series.ar_model`.
    *args, **kwargs
        The model's arguments.
    min_train : int
        ``L``, the time points of the first training set, ``1 <= L <= T - horizon``.
    horizon : int
        ``M``, the time points scored jointly at each origin (at least 1).
    method : {"approx", "exact"}
        PSIS between refits, or a refit at every origin.
    k_threshold : float
        Pareto k above which ``method="approx"`` refits, a number in ``(0, inf)``.
    num_warmup, num_samples : int
        NUTS warm-up iterations (at least 0) and draws (at least 2) of each fit, one
        chain, at most ``2**31 - 1``.
    seed : int
        Seed of every NUTS run, an integer in ``[0, 2**63 - 1]``; the fit on
        ``y_{<t}`` uses ``fold_in(PRNGKey(seed), t)`` (the full fit ``t = T``).
    plate : str, optional
        The plate of time points; found automatically when the observed sites are all in
        one plate.

    Returns
    -------
    arviz_stats.utils.ELPDDataLFO
        ArviZ's result (``kind="lfo_cv"``): ``elpd_i`` and ``p_lfo_i`` ``(T - M - L + 1,)``
        over a dimension named after the plate, its coordinate the origins ``L..T-M``;
        ``refits``, ``n_refits``, ``pareto_k`` (``method="approx"``). ``az.compare``
        accepts several with equal ``horizon`` and ``min_train``.

    Raises
    ------
    TypeError, ValueError
        Before any work, naming the argument: a count that is not an integer or is out
        of range (``min_train``, ``horizon``, ``num_warmup``, ``num_samples``, ``seed``),
        ``k_threshold`` not in ``(0, inf)``, an unknown ``method``, ``min_train +
        horizon > T``, a series with masked time points.
    ModelError
        From :func:`trace_model`: no plate of examples, NaN in the data, ...

    Warns
    -----
    UserWarning
        From :func:`arviz_stats.lfo_cv`, when ``method="approx"`` refitted at more than
        half of the origins.

    Notes
    -----
    Every fit is one NUTS chain (``numpyro.infer.hmc.hmc``'s kernels in one
    ``jax.lax.scan``): the full-data chain starts at the prior median
    (:attr:`PlateModel.init_theta`), every refit at the full-data posterior mean. It
    compiles once per model, data shapes and draw counts, then each refit is a call of
    that executable (``numpyro.infer.MCMC`` compiles its sampling loop again at every
    ``run``: about 1.3 s per refit of a 3-parameter model, measured, against 16 ms).

    References
    ----------
    P.-C. Bürkner, J. Gabry and A. Vehtari (2020), "Approximate leave-future-out
    cross-validation for Bayesian time series models", Journal of Statistical
    Computation and Simulation 90(14), 2499-2523.

    Examples
    --------
    >>> from numpyro_mpe import psis_lfo
    >>> from numpyro_mpe.datasets import load_lake_huron
    >>> from numpyro_mpe.time_series import ar_model
    >>> y = load_lake_huron().level
    >>> result = psis_lfo(ar_model, y, min_train=20, level=579.0)  # doctest: +SKIP
    >>> round(result.elpd, 1), result.elpd_i.shape, result.refits  # doctest: +SKIP
    (-92.8, (78,), array([41, 61]))
    """
    check_choice("method", method, _LFO_METHODS)
    check_number("k_threshold", k_threshold, 0.0)
    _check_counts(num_warmup=(num_warmup, 0), num_samples=(num_samples, 2))
    seed = check_seed(seed)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    window = check_lfo_window(min_train, horizon, plate_model)
    options = {
        "method": method,
        "k_threshold": float(k_threshold),
        "num_warmup": int(num_warmup),
        "num_samples": int(num_samples),
        "seed": seed,
    }
    return _nuts_lfo(model, args, kwargs, plate_model, window, plate_model.init_theta, options)


_LAPLACE_STATIC = ("model", "static", "plate", "optimizer", "num_steps")


@partial(jax.jit, static_argnames=(*_LAPLACE_STATIC, "covariance"))
def _laplace_refits(
    mean, arrays, origins, *, model, static, plate, optimizer, num_steps, covariance
):
    """Newton refits on ``y_{<t}`` for the origins ``(O,)`` in the order given, each
    started at the previous refit's mean (the first at ``mean``), in one ``lax.scan``:
    means, precisions and whether each converged."""
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    times = jnp.arange(plate_model.num_examples)

    def refit(start, origin):
        weights = (times < origin).astype(mean.dtype)
        refit_mean, refit_precision, converged = minimize(
            optimizer,
            lambda theta: -plate_model.log_joint(theta, weights),
            start,
            covariance,
            num_steps,
        )
        next_start = jnp.where(jnp.all(jnp.isfinite(refit_mean)), refit_mean, start)
        return next_start, (refit_mean, refit_precision, converged)

    return jax.lax.scan(refit, mean, origins)[1]


@partial(jax.jit, static_argnames=(*_LAPLACE_STATIC, "num_samples"))
def _block_log_ratios(
    base_means,
    base_precisions,
    origins,
    horizon,
    rng_key,
    arrays,
    *,
    model,
    static,
    plate,
    optimizer,
    num_steps,
    num_samples,
):
    """Log importance ratios ``(S, _CHUNK)`` of ``log int p(y_{t..t+M-1} | theta) N(theta; m,
    S^-1) dtheta`` for ``_CHUNK`` Gaussians ``(m, S)`` and origins ``t``; the draws of
    origin ``t`` come from ``fold_in(rng_key, t)``, so the refit and the full fit of an
    origin share them."""
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    times = jnp.arange(plate_model.num_examples)

    def log_ratios(base_mean, base_precision, origin):
        block = ((times >= origin) & (times < origin + horizon)).astype(base_mean.dtype)
        z = jax.random.normal(
            jax.random.fold_in(rng_key, origin), (num_samples, base_mean.shape[0]), base_mean.dtype
        )
        return tilted_log_ratios(
            plate_model.log_lik,
            block,
            base_mean,
            base_precision,
            z,
            optimizer=optimizer,
            num_steps=num_steps,
        )

    return jax.lax.map(lambda base: log_ratios(*base), (base_means, base_precisions, origins)).T


@partial(jax.jit, static_argnames=("num_samples",))
def _psis_log_means(log_ratios, *, num_samples):
    """PSIS ``(log mean, Pareto k)`` ``(_CHUNK,)`` of the columns of ``log_ratios``: one
    compilation per draw count and dtype, whatever the model."""
    return log_normalizer(log_ratios, num_samples)[:2]


def _padded(values: np.ndarray) -> np.ndarray:
    """``values`` with its last entry repeated to a multiple of ``_CHUNK`` entries."""
    return np.concatenate([values, np.repeat(values[-1:], -len(values) % _CHUNK, axis=0)])


def _laplace_lfo(
    model, args, kwargs, plate_model, optimizer, mean, precision, covariance, window, options
):
    """Laplace refits from the last origin (``T - M``, started at the full fit) down to
    the first, then each block's density under its refit (``elpd``) and under the full
    fit (``lppd``): ``(elpd, lppd, pareto_k, converged)`` ``(O,)`` in the origins'
    order, the Pareto k the larger of an origin's two.

    The origins and the block densities are padded to multiples of ``_CHUNK``, so that
    another ``min_train`` or ``horizon`` on the same data compiles nothing anew.
    """
    arrays, static = split_arguments(args, kwargs)
    fixed = {
        "model": model,
        "static": static,
        "plate": plate_model.plate,
        "optimizer": optimizer,
        "num_steps": options["num_steps"],
    }
    descending = window.origins[::-1]
    count = descending.size
    # device_put, not jnp.asarray: that compiles a conversion per shape.
    refits = _laplace_refits(
        mean, arrays, jax.device_put(_padded(descending)), covariance=covariance, **fixed
    )
    means, precisions, converged = (np.asarray(values)[:count] for values in refits)
    # The block's density under each origin's refit, then under the full fit.
    bases = [
        _padded(np.concatenate([refitted, np.broadcast_to(full, refitted.shape)]))
        for refitted, full in (
            (means, np.asarray(mean)),
            (precisions, np.asarray(precision)),
            (descending, descending),
        )
    ]
    rng_key = jax.random.PRNGKey(options["seed"])
    num_samples = options["num_samples"]
    log_mean, pareto_k = [], []
    for start in range(0, len(bases[0]), _CHUNK):
        chunk = (jax.device_put(base[start : start + _CHUNK]) for base in bases)
        log_ratios = _block_log_ratios(
            *chunk, window.horizon, rng_key, arrays, num_samples=num_samples, **fixed
        )
        chunk_mean, chunk_k = _psis_log_means(log_ratios, num_samples=num_samples)
        log_mean.append(np.asarray(chunk_mean))
        pareto_k.append(np.asarray(chunk_k))
    log_mean, pareto_k = np.concatenate(log_mean), np.concatenate(pareto_k)
    elpd, lppd = log_mean[:count][::-1], log_mean[count : 2 * count][::-1]
    pareto_k = np.maximum(pareto_k[:count], pareto_k[count : 2 * count])[::-1]
    return elpd, lppd, pareto_k, converged[::-1]


def _warn_laplace_lfo(converged, pareto_k, origins, num_steps: int) -> bool:
    """Warn about refits that did not converge and block densities with Pareto k above
    0.7 (naming the first origins); True when it warned."""
    failed = ~np.asarray(converged)
    if failed.any():
        named = ", ".join(str(t) for t in origins[failed][:5])
        more = " ..." if failed.sum() > 5 else ""
        warnings.warn(
            f"exact_lfo: {int(failed.sum())} of {failed.size} refits did not converge in "
            f"num_steps={num_steps} (origins {named}{more}); their densities are not "
            "exact: raise num_steps",
            ConvergenceWarning,
            stacklevel=3,
        )
    high = ~(np.asarray(pareto_k) <= _MAX_BLOCK_K)
    if high.any():
        warnings.warn(
            f"exact_lfo: the importance sampling of {int(high.sum())} block densities has "
            f"Pareto k above {_MAX_BLOCK_K} (or not estimable; origin "
            f"{origins[np.argmax(high)]} first); raise num_samples or do not use them as "
            "a reference",
            ParetoKWarning,
            stacklevel=3,
        )
    return bool(failed.any() or high.any())


def exact_lfo(
    model: Callable,
    guide: AutoGaussian,
    params: dict,
    *args: Any,
    min_train: int,
    horizon: int = 1,
    method: RefitMethod = "laplace",
    optimizer: NaturalGradientOptimizer | None = None,
    num_steps: int = 20,
    num_samples: int = 2000,
    num_warmup: int = 1000,
    seed: int = 0,
    plate: str | None = None,
    **kwargs: Any,
) -> ELPDDataLFO:
    """Brute-force leave-future-out: a refit on ``y_{<t}`` at every forecast origin.

    At each origin ``t = L, ..., T - M``

    .. math::

        \\text{elpd}_t = \\log \\int \\prod_{i=t}^{t+M-1} p(y_i \\mid \\theta)\\,
            q_t(\\theta)\\, d\\theta,

    with ``q_t`` the refit on the time points before ``t``: for ``method="laplace"``
    the guide's Gaussian family ``N(m_t, S_t^-1)`` fitted by Newton to the log joint
    with example weights ``1`` for ``i < t`` and ``0`` after; for ``method="nuts"``
    NUTS draws (:func:`psis_lfo` with ``method="exact"``).

    Parameters
    ----------
    model, guide, params
        The model (its plate of examples the time series, in time order) and its fitted
        :class:`AutoGaussian` (the warm start, and the family refitted by
        ``method="laplace"``; the start of the NUTS chains for ``method="nuts"``).
    *args, **kwargs
        The model's arguments.
    min_train : int
        ``L``, the time points of the first training set, ``1 <= L <= T - horizon``.
    horizon : int
        ``M``, the time points scored jointly at each origin (at least 1).
    method : {"laplace", "nuts"}
        Laplace refits, or NUTS refits (``num_warmup`` + ``num_samples`` draws each).
    optimizer : NaturalGradientOptimizer, optional
        For ``method="laplace"``; ``numpyro_mpe.optim.newton(tol=1e-15)`` by default.
    num_steps : int
        Most optimizer steps per Laplace refit (and per mode of a tilted density).
    num_samples : int
        ``method="laplace"``: importance draws per block density; ``"nuts"``: NUTS
        draws per refit.
    num_warmup : int
        NUTS warm-up iterations per refit (``method="nuts"``).
    seed : int
        Seed of every random draw, an integer in ``[0, 2**63 - 1]``.
    plate : str, optional
        The plate of time points.

    Returns
    -------
    ELPDDataRefitLFO or arviz_stats.utils.ELPDDataLFO
        ``method="laplace"``: :class:`ELPDDataRefitLFO` (an ``ELPDDataLFO``):
        ``elpd_i`` ``(T - M - L + 1,)`` over a dimension named after the plate, its
        coordinate the origins; ``p_lfo_i = lppd_t - elpd_t`` with ``lppd_t`` the same
        integral under the guide's full-data Gaussian; ``pareto_k`` of the block
        integrals (the larger of the two; ``-inf`` where exact); ``refits`` all the
        origins; ``good_k`` None; ``method`` and ``seconds``. ``method="nuts"``:
        ArviZ's ``ELPDDataLFO`` from :func:`psis_lfo`. ``az.compare`` accepts either
        beside other LFO results of the same ``horizon`` and ``min_train``.

    Raises
    ------
    TypeError, ValueError
        Before any work, naming the argument: a guide that is not an
        :class:`AutoGaussian`, an optimizer of another covariance, a count out of range
        (``min_train``, ``horizon``, ``num_steps``, ``num_samples``, ``num_warmup``,
        ``seed``), an unknown ``method``, ``min_train + horizon > T``, masked time
        points, params that are not a positive definite Gaussian of the model's size.
    ModelError
        From :func:`trace_model`.

    Warns
    -----
    ConvergenceWarning
        Some Laplace refits did not converge within ``num_steps`` (naming their origins).
    ParetoKWarning
        The importance sampling of some block density has Pareto ``k > 0.7``.

    Notes
    -----
    The Laplace refits run from the last origin ``T - M`` (started at the full fit) down
    to ``L``, each started at the refit of the origin after it, in one compiled
    ``lax.scan``. Each block density is importance sampled (``num_samples`` draws) from
    the Laplace approximation of ``p(y_B | theta) q_t(theta)``, so it is exact, with
    Pareto k ``-inf``, when the block's log likelihood is quadratic in ``theta`` (a
    Gaussian autoregression with known noise written as a linear model).

    Examples
    --------
    >>> import jax
    >>> import numpyro_mpe as mpe
    >>> from numpyro_mpe.datasets import load_lake_huron
    >>> from numpyro_mpe.time_series import ar_model
    >>> y = load_lake_huron().level
    >>> guide = mpe.AutoGaussian(ar_model)
    >>> fit = mpe.BLR(ar_model, guide, mpe.optim.newton()).run(
    ...     jax.random.PRNGKey(0), 50, y, level=579.0, progress_bar=False)  # doctest: +SKIP
    >>> result = mpe.exact_lfo(ar_model, guide, fit.params, y, min_train=20,
    ...                        level=579.0)  # doctest: +SKIP
    >>> round(result.elpd, 1), result.elpd_i.shape  # doctest: +SKIP
    (-94.5, (78,))
    """
    check_choice("method", method, REFIT_METHODS)
    if not isinstance(guide, AutoGaussian):
        raise TypeError(
            f"exact_lfo refits an AutoGaussian's family; got guide {type(guide).__name__}"
        )
    if optimizer is not None:
        check_optimizer_for_guide(optimizer, guide, where="exact_lfo")
    _check_counts(
        num_steps=(num_steps, 1),
        num_samples=(num_samples, 2),
        num_warmup=(num_warmup, 0),
    )
    seed = check_seed(seed)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    window = check_lfo_window(min_train, horizon, plate_model)
    mean, precision = guide.checked_mean_precision(
        params, plate_model.num_latents, where="exact_lfo"
    )
    options = {
        "method": "exact",
        "k_threshold": 0.7,
        "num_steps": int(num_steps),
        "num_samples": int(num_samples),
        "num_warmup": int(num_warmup),
        "seed": seed,
    }
    if method == "nuts":
        return _nuts_lfo(model, args, kwargs, plate_model, window, mean, options)
    start = time.perf_counter()
    elpd, lppd, pareto_k, converged = _laplace_lfo(
        model,
        args,
        kwargs,
        plate_model,
        newton(tol=REFIT_TOL) if optimizer is None else optimizer,
        mean,
        precision,
        guide.covariance,
        window,
        options,
    )
    seconds = time.perf_counter() - start
    warned = _warn_laplace_lfo(converged, pareto_k, window.origins, int(num_steps))
    return ELPDDataRefitLFO.from_origins(
        window,
        elpd,
        lppd,
        dim=plate_model.plate,
        pareto_k=pareto_k,
        warning=warned,
        method="laplace",
        seconds=seconds,
    )
