"""Bayesian leave-one-out predictive densities from the memory-perturbation equation.

With a predictor ``f_i(theta)`` (logits, log rate, location, ...), ``J_i = d f_i/d theta``,
``e_i = d l_i/d f``, ``Lambda_i = d^2 l_i/d f^2`` and ``V_i = J_i S^-1 J_i^T``:

.. math::

    V_i^{\\setminus i} = V_i (I - \\Lambda_i V_i)^{-1},\\qquad
    f_i^{\\setminus i} = f_i + V_i^{\\setminus i} e_i,\\qquad
    \\log p(y_i \\mid y_{-i}) \\approx \\log \\int p(y_i \\mid f)\\,
        N(f; f_i^{\\setminus i}, V_i^{\\setminus i})\\, df

(``method="cavity"``); ``method="paper"`` uses ``f_i + V_i e_i`` and ``V_i``. For the
diagonal family ``V_i^{\\setminus i} = J_i (S - \\mathrm{diag}(J_i^T \\Lambda_i J_i))^{-1}
J_i^T``, the exact division of that family. The integral is closed form for a Normal
observation with known variance, Gauss-Hermite for ``K <= 3`` predictor components and
Monte Carlo beyond (:mod:`numpyro_mpe.core.quadrature`; for ``K = 1`` an adaptive 9-node rule).

Without a predictor, the parameter-space (Laplace) form integrates a quadratic
expansion of ``l_i`` against the cavity ``N(m^{\\setminus i}, (S - H_i)^{-1})``:

.. math::

    \\log p(y_i \\mid y_{-i}) \\approx -l_i(m) + \\tfrac12 \\log\\frac{|S - H_i|}{|S|}
        - \\tfrac12 g_i^T (S - H_i)^{-1} g_i,

exact for Gaussian-linear terms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.core.curvature import (
    DIRECTIONS_PER_STEP,
    check_hessian_stack,
    likelihood_curvature,
    per_example_gradients,
    per_example_hessians,
    prediction_space_covariances,
    row_covariances,
)
from numpyro_mpe.core.gaussian import is_dense, precision_solve
from numpyro_mpe.core.model import Predictor, join_arguments, split_arguments, trace_model
from numpyro_mpe.core.options import (
    IMPORTANCE_SELECTIONS,
    LOO_METHODS,
    ImportanceSelection,
    LooMethod,
    check_choice,
)
from numpyro_mpe.core.quadrature import log_predictive_pair
from numpyro_mpe.core.rows import cached_row_slicing
from numpyro_mpe.crossval.groups import group_codes, group_loo_core
from numpyro_mpe.crossval.importance import ImportanceLOO, importance_loo
from numpyro_mpe.crossval.results import ELPDDataMPE, make_elpd_data
from numpyro_mpe.infer.blr import default_checkpoint
from numpyro_mpe.infer.guide import AutoGaussian

__all__ = [
    "LooOptions",
    "loo",
    "loo_core",
    "predictor_loo",
    "prepare_guide_loo",
    "prepare_loo",
]


def predictor_loo(
    predictor: Predictor, mean, precision, *, method: str, row_jacobian=None, rows=None
):
    """``(elpd_i, lppd_i, reliability_i)`` with a predictor. ``row_jacobian``: see
    :func:`row_covariances`; ``rows``: see :func:`log_predictive_pair`."""
    f = predictor.fn(mean)
    e, lam = likelihood_curvature(predictor, f)
    if row_jacobian is None:
        v, cavity, reliability = prediction_space_covariances(predictor.fn, mean, precision, lam)
    else:
        v, cavity, reliability = row_covariances(row_jacobian, f.shape[0], precision, lam)
    valid = reliability < 1.0
    if method == "paper":
        cavity = v
    cavity = jnp.where(valid[:, None, None], 0.5 * (cavity + jnp.swapaxes(cavity, 1, 2)), v)
    cavity_mean = f + jnp.einsum("nkl,nl->nk", cavity, e)
    elpd, lppd = log_predictive_pair(predictor, cavity_mean, cavity, f, v, rows)
    return elpd, lppd, reliability


def _laplace_loo(log_lik: Callable, mean, precision):
    per_example = log_lik(mean)
    gradients = per_example_gradients(log_lik, mean)
    hessians = per_example_hessians(log_lik, mean)
    if is_dense(precision):
        cholesky = jnp.linalg.cholesky(precision)
        log_det = 2 * jnp.sum(jnp.log(jnp.diag(cholesky)))

        def solve_terms(matrix):
            factor = jnp.linalg.cholesky(matrix)
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), -1)
            solved = jax.scipy.linalg.cho_solve((factor, True), gradients[..., None])[..., 0]
            return logdet - log_det, jnp.sum(gradients * solved, -1)

        whitened = jax.scipy.linalg.solve_triangular(
            cholesky,
            jnp.swapaxes(jax.scipy.linalg.solve_triangular(cholesky, hessians, lower=True), 1, 2),
            lower=True,
        )
        reliability = jnp.linalg.eigvalsh(whitened)[:, -1]
        cavity_logdet, cavity_quad = solve_terms(precision - hessians)
        full_logdet, full_quad = solve_terms(precision + hessians)
    else:
        diagonal = jnp.diagonal(hessians, axis1=1, axis2=2)
        reliability = jnp.max(diagonal / precision, axis=1)
        cavity_logdet = jnp.sum(jnp.log1p(-diagonal / precision), 1)
        cavity_quad = jnp.sum(gradients**2 / (precision - diagonal), 1)
        full_logdet = jnp.sum(jnp.log1p(diagonal / precision), 1)
        full_quad = jnp.sum(gradients**2 / (precision + diagonal), 1)
    valid = reliability < 1.0
    plug_in_quad = jnp.sum(gradients * precision_solve(precision, gradients.T).T, 1)
    elpd = per_example + jnp.where(
        valid, 0.5 * cavity_logdet - 0.5 * cavity_quad, -0.5 * plug_in_quad
    )
    lppd = per_example - 0.5 * full_logdet + 0.5 * full_quad
    return elpd, lppd, reliability


@partial(jax.jit, static_argnames=("model", "static", "plate", "names", "method", "gathered"))
def loo_core(mean, precision, arrays, *, model, static, plate, names, method, gathered=None):
    """Jitted once per model, argument structure and method; the data are arguments.

    ``gathered`` (which array arguments hold one row per example, from
    :func:`~numpyro_mpe.core.rows.plan_row_slicing`): take the predictor's Jacobian row by row,
    each from the model run on that example alone, and integrate the examples that the
    9-node rule refuses on their own rows (:func:`log_predictive_pair`).
    """
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=names or False, **kwargs)
    if names is None:
        return _laplace_loo(plate_model.log_lik, mean, precision)
    row_jacobian = rows = None
    if gathered is not None:

        def rows(indices):
            """The predictor of the model run on the examples ``indices`` alone."""
            sliced = [
                jnp.take(a, indices, axis=0) if g else a
                for a, g in zip(arrays, gathered, strict=True)
            ]
            row_args, row_kwargs = join_arguments(sliced, static)
            return trace_model(
                model, *row_args, plate=plate, with_predictor=names, **row_kwargs
            ).predictor

        @jax.vmap
        def row_jacobian(index):
            return jax.jacrev(lambda theta: rows(index[None]).fn(theta))(mean)[0]  # (K, P)

    return predictor_loo(
        plate_model.predictor,
        mean,
        precision,
        method=method,
        row_jacobian=row_jacobian,
        rows=rows,
    )


def loo(
    model: Callable,
    guide: Any,
    params: dict,
    *args: Any,
    method: LooMethod = "cavity",
    plate: str | None = None,
    reliability_threshold: float = 0.7,
    importance: ImportanceSelection | ArrayLike = "poor",
    num_samples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    **kwargs: Any,
) -> ELPDDataMPE:
    """Bayesian leave-one-out predictive densities ``log p(y_i | y_-i)`` by MPE.

    With ``groups``, leave-one-group-out instead: one ``log p(y_G | y_-G)`` per group
    (:mod:`numpyro_mpe.crossval.groups`).

    Parameters
    ----------
    model : callable
        The NumPyro model.
    guide : AutoGaussian or AutoConjugate
        Its fitted guide. With :class:`~numpyro_mpe.AutoConjugate` the result
        is exact (:func:`~numpyro_mpe.conjugate.guide.conjugate_loo`) and the method options
        do not apply.
    params : dict
        Guide params (from :meth:`BLR.run`, :func:`perturb`, or any iteration).
    *args, **kwargs
        The model's arguments.
    method : {"cavity", "paper", "is"}
        ``"cavity"``: leave-one-out covariance ``V_i (I - Lambda_i V_i)^-1`` in prediction
        space; ``"paper"``: the plug-in ``f_i + V_i e_i`` with the full-data ``V_i``.
        Without a predictor both use the parameter-space (Laplace) form. ``"is"``: the
        cavity form, then MPE-IS (:mod:`numpyro_mpe.crossval.importance`) on the examples chosen
        by ``importance``: the MPE posterior without the example is the proposal of a
        Pareto-smoothed importance sampler for the exact leave-one-out posterior.
    plate : str, optional
        The plate of examples.
    reliability_threshold : float
        Examples whose reliability value exceeds it are counted and warned about.
    importance : {"poor", "all"} or array of int
        For ``method="is"``: the examples above ``reliability_threshold`` (default), all
        examples, or these indices.
    num_samples : int
        For ``method="is"``: importance draws per example.
    seed : int
        For ``method="is"``: seed of the draws.
    groups : array_like, shape (N,), optional
        A group label per example (county, class, subject, ...): leave one group out.
        ``method="cavity"`` is the closed form of the group's MPE cavity (exact for
        Gaussian-linear terms), ``"paper"`` keeps the full-data precision, ``"is"`` adds
        an importance-sampled correction for the group's non-quadratic log likelihood
        (``num_samples`` draws per group; ``importance`` is ignored).

    Returns
    -------
    ELPDDataMPE
        ``elpd_i`` over the plate's coordinate, ``p = sum(lppd_i - elpd_i)``, ``se``,
        ``reliability``; accepted by ``az.compare``. With ``groups``: over a ``group``
        coordinate holding the labels, plus ``example_elpd`` (``log p(y_i |
        y_{-G(i)})`` over the plate, with a predictor), ``group_log_loss`` (its negative
        mean per group: the leave-one-class-out loss for classifiers),
        ``group_of_example`` and ``group_newton_decrement`` (warned about above 0.1).

    Warns
    -----
    ReliabilityWarning
        When some reliability value exceeds ``reliability_threshold``. Examples whose
        value reaches 1 (improper cavity) fall back to the paper's form, which keeps the
        full-data covariance (``S`` instead of ``S - H_i`` in the parameter-space form).
    """
    return prepare_loo(
        model,
        guide,
        *args,
        method=method,
        plate=plate,
        reliability_threshold=reliability_threshold,
        importance=importance,
        num_samples=num_samples,
        seed=seed,
        groups=groups,
        **kwargs,
    )(params)


def prepare_loo(
    model: Callable,
    guide: Any,
    *args: Any,
    method: LooMethod = "cavity",
    plate: str | None = None,
    reliability_threshold: float = 0.7,
    importance: ImportanceSelection | ArrayLike = "poor",
    num_samples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    **kwargs: Any,
) -> Callable[[dict], ELPDDataMPE]:
    """:func:`loo` as a function of the guide's params, for many checkpoints of one fit.

    Everything that does not depend on the params is done here, once: the argument
    checks, tracing the model and finding its predictor, and planning how its data are
    sliced by example. Each call of the returned function runs only the compiled
    computation and builds the ArviZ object, so recording MPE-LOO during training
    (``BLR.run(checkpoints=...)`` calls this) costs what that computation costs.

    Parameters
    ----------
    model, guide, *args, **kwargs, method, plate, reliability_threshold, importance,
    num_samples, seed, groups
        As for :func:`loo`. The model's arguments must not change between calls of the
        returned function (it holds them).

    Returns
    -------
    callable
        ``params -> ELPDDataMPE``, equal to ``loo(model, guide, params, *args, ...)``.

    Raises
    ------
    ValueError, ModelError
        As :func:`loo`, here rather than at the first call.
    """
    check_choice("method", method, LOO_METHODS)
    if not 0 < reliability_threshold <= 1:
        raise ValueError(f"reliability_threshold must be in (0, 1], got {reliability_threshold}")
    options = LooOptions(
        method=method,
        plate=plate,
        reliability_threshold=reliability_threshold,
        importance=importance,
        num_samples=num_samples,
        seed=seed,
        groups=groups,
    )
    return prepare_guide_loo(guide, model, args, kwargs, options)


class LooOptions(NamedTuple):
    """The options of :func:`loo`, checked, as one value (see :func:`loo`)."""

    method: LooMethod
    plate: str | None
    reliability_threshold: float
    importance: ImportanceSelection | ArrayLike
    num_samples: int
    seed: int
    groups: ArrayLike | None


@functools.singledispatch
def prepare_guide_loo(
    guide: Any, model: Callable, args: tuple, kwargs: dict, options: LooOptions
) -> Callable[[dict], ELPDDataMPE]:
    """:func:`prepare_loo` for one family of guides, chosen by the guide's type.

    A guide family brings its own LOO by registering here
    (``@prepare_guide_loo.register(MyGuide)``), as
    :class:`~numpyro_mpe.AutoConjugate` does; generic code never tests guide types.
    """
    raise TypeError(
        f"loo does not support the guide {type(guide).__name__}; use "
        "numpyro_mpe.AutoGaussian or numpyro_mpe.AutoConjugate"
    )


@prepare_guide_loo.register
def _prepare_gaussian_loo(
    guide: AutoGaussian, model: Callable, args: tuple, kwargs: dict, options: LooOptions
) -> Callable[[dict], ELPDDataMPE]:
    method, plate, reliability_threshold, importance, num_samples, seed, _ = options
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    names = None if plate_model.predictor is None else plate_model.predictor.names
    arrays, static = split_arguments(args, kwargs)
    itemsize = plate_model.init_theta.dtype.itemsize
    if options.groups is not None:
        return _leave_group_out(
            model, plate_model, guide, arrays, static, names, options, itemsize
        )
    if names is None:
        check_hessian_stack(
            plate_model.num_examples,
            plate_model.num_latents,
            itemsize,
            what="the parameter-space form's per-example Hessians",
            advice="give the observation a single distribution with a predictor",
        )
    if method == "is":  # check the argument before any work
        _importance_indices(importance, reliability_threshold, None, plate_model)
    gathered = None
    if names is not None and plate_model.num_latents > DIRECTIONS_PER_STEP:
        # More than one streaming pass over the data: take the Jacobian row by row when
        # the model can be run on one example's data alone.
        row_plan = cached_row_slicing(model, plate, args, kwargs, plate_model)
        gathered = row_plan.gathered if row_plan.path == "gather" else None

    def loo_at(params: dict) -> ELPDDataMPE:
        mean, precision = guide.checked_mean_precision(
            params, plate_model.num_latents, where="loo"
        )
        elpd, lppd, reliability = loo_core(
            mean,
            precision,
            arrays,
            model=model,
            static=static,
            plate=plate,
            names=names,
            method="cavity" if method == "is" else method,
            gathered=gathered,
        )
        used = "laplace" if names is None and method != "is" else method
        importance_result = None
        if method == "is":
            selected = _importance_indices(
                importance, reliability_threshold, reliability, plate_model
            )
            if selected.size:
                importance_result = importance_loo(
                    plate_model, mean, precision, selected, num_samples=num_samples, seed=seed
                )
                elpd = jnp.asarray(elpd).at[selected].set(importance_result.elpd)
        return make_elpd_data(
            elpd,
            lppd,
            reliability,
            dim=plate_model.plate,
            threshold=reliability_threshold,
            method=used,
            covariance=guide.covariance,
            importance=None
            if importance_result is None
            else (selected, importance_result, num_samples),
        )

    return loo_at


def _leave_group_out(model, plate_model, guide, arrays, static, names, options, itemsize):
    """The leave-group-out part of :func:`prepare_loo`: checks, then ``params -> result``."""
    labels, codes = group_codes(options.groups, plate_model.num_examples)
    check_hessian_stack(
        len(labels),
        plate_model.num_latents,
        itemsize,
        what="leave-group-out's per-group Hessians",
        advice="use fewer groups",
    )
    return partial(
        _leave_group_out_at,
        model,
        plate_model,
        guide,
        arrays,
        static,
        names,
        options,
        labels,
        codes,
    )


def _leave_group_out_at(
    model, plate_model, guide, arrays, static, names, options, labels, codes, params
):
    mean, precision = guide.checked_mean_precision(params, plate_model.num_latents, where="loo")
    result = group_loo_core(
        mean,
        precision,
        jnp.asarray(codes),
        arrays,
        options.seed,
        model=model,
        static=static,
        plate=options.plate,
        names=names,
        method=options.method,
        num_groups=len(labels),
        num_samples=options.num_samples,
    )
    importance = None
    if result.pareto_k is not None:
        importance = (
            np.arange(len(labels)),
            ImportanceLOO(
                elpd=result.elpd,
                pareto_k=result.pareto_k,
                mcse=result.mcse,
                shared_mcse=jnp.zeros(()),
                mpe_proposal=result.reliability < 1.0,
            ),
            options.num_samples,
        )
    used = options.method if options.method != "cavity" else "group-cavity"
    return make_elpd_data(
        result.elpd,
        result.lppd,
        result.reliability,
        dim="group",
        coords=labels,
        threshold=options.reliability_threshold,
        method=used,
        covariance=guide.covariance,
        importance=importance,
        groups=(plate_model.plate, codes, result.example_elpd, result.newton_decrement),
    )


def _importance_indices(importance, threshold, reliability, plate_model) -> np.ndarray:
    """Indices for MPE-IS; checks the argument (before any work when ``reliability`` is
    None) and selects (after the cavity pass)."""
    n = plate_model.num_examples
    if isinstance(importance, str):
        if importance not in IMPORTANCE_SELECTIONS:
            raise ValueError(f"importance must be 'poor', 'all' or indices, got {importance!r}")
        if importance == "all":
            return np.arange(n)
        if reliability is None:
            return np.zeros(0, int)
        return np.flatnonzero(np.asarray(reliability) > threshold)
    indices = np.atleast_1d(np.asarray(importance))
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
        raise ValueError(f"importance indices must be a 1-d integer array, got {indices.dtype}")
    bad = (indices < 0) | (indices >= n)
    if bad.any():
        raise ValueError(f"importance index {indices[bad][0]} is out of range for {n} examples")
    return indices


@default_checkpoint.register
def _loo_checkpoint(guide: AutoGaussian, model: Callable, args: tuple, kwargs: dict, plate):
    """MPE-LOO at each checkpoint of :meth:`~numpyro_mpe.BLR.run` (its default)."""
    loo_at = prepare_loo(model, guide, *args, plate=plate, **kwargs)

    def checkpoint_fn(params: dict, step: int) -> ELPDDataMPE:
        return loo_at(params)

    return checkpoint_fn
