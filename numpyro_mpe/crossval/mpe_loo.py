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
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.core.curvature import (
    DIRECTIONS_PER_STEP,
    MAX_HESSIAN_BYTES,
    check_hessian_stack,
    jacobian_rows,
    likelihood_curvature,
    per_example_gradients,
    per_example_hessians,
    prediction_space_covariances,
    row_covariances,
)
from numpyro_mpe.core.gaussian import is_dense, precision_solve
from numpyro_mpe.core.model import (
    PlateModel,
    Predictor,
    check_plate_name,
    join_arguments,
    split_arguments,
    trace_model,
)
from numpyro_mpe.core.options import (
    IMPORTANCE_SELECTIONS,
    LOO_METHODS,
    ImportanceSelection,
    LooMethod,
    check_choice,
)
from numpyro_mpe.core.quadrature import log_predictive_pair
from numpyro_mpe.core.rows import (
    MinibatchPlan,
    cached_row_slicing,
    limit_compilations,
    pad_examples,
    sliced_predictor,
)
from numpyro_mpe.crossval.groups import group_codes, group_loo_core
from numpyro_mpe.crossval.importance import (
    PROPOSALS,
    ImportanceLOO,
    check_num_samples,
    check_seed,
    good_pareto_k,
    importance_loo,
    run_pilot,
)
from numpyro_mpe.crossval.results import ELPDDataMPE, ReliabilityWarning, make_elpd_data
from numpyro_mpe.infer.blr import default_checkpoint
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.optim.base import check_number
from numpyro_mpe.perturbation.removal import check_group_labels

__all__ = [
    "IMPORTANCE_DECREMENT",
    "IMPORTANCE_EVIDENCE_GAP",
    "STATIONARY_DECREMENT",
    "LooOptions",
    "LooTerms",
    "loo",
    "loo_core",
    "predictor_loo",
    "prepare_guide_loo",
    "prepare_loo",
    "stationarity_core",
    "warn_unless_stationary",
]


class LooTerms(NamedTuple):
    """Per-example terms of the closed forms, each ``(N,)``.

    Attributes
    ----------
    elpd, lppd : jax.Array
        ``log p(y_i | y_-i)`` and the full-data ``log p(y_i | y)`` of the form.
    reliability : jax.Array
        The reliability value (see :func:`loo`).
    decrement : jax.Array
        The removal step's Newton decrement ``g_i^T (S - H_i)^-1 g_i = e_i^T
        V_i^{\\setminus i} e_i`` (``inf`` where the cavity is improper): how far, in the
        metric of the leave-one-out precision, removing the example moves the mean. It
        ranks where the Gaussian cavity misses the exact value (MPE-IS selects by it).
    """

    elpd: jax.Array
    lppd: jax.Array
    reliability: jax.Array
    decrement: jax.Array


def predictor_loo(
    predictor: Predictor, mean, precision, *, method: str, row_jacobian=None, rows=None
) -> LooTerms:
    """:class:`LooTerms` with a predictor. ``row_jacobian``: see :func:`row_covariances`;
    ``rows``: see :func:`log_predictive_pair`."""
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
    shift = jnp.einsum("nkl,nl->nk", cavity, e)
    elpd, lppd = log_predictive_pair(predictor, f + shift, cavity, f, v, rows)
    decrement = jnp.where(valid, jnp.sum(e * shift, axis=1), jnp.inf)
    return LooTerms(elpd, lppd, reliability, decrement)


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
    return LooTerms(elpd, lppd, reliability, jnp.where(valid, cavity_quad, jnp.inf))


# Newton decrement above which loo warns that the params are not a fit to these data.
STATIONARY_DECREMENT = 0.5

#: ``importance="auto"`` samples the examples whose removal decrement exceeds this.
IMPORTANCE_DECREMENT = 0.05

#: ``importance="auto"`` samples every example when the fitted Gaussian's evidence misses
#: the pilot's by more than this (nats): measured 0.3-0.45 on a near-separable logistic
#: regression whose cavity errs by 1.2 nats in total, below 0.01 on roaches and wells.
IMPORTANCE_EVIDENCE_GAP = 0.1

_GOOD_PILOT_K = 0.7


@partial(jax.jit, static_argnames=("model", "static", "plate"))
def stationarity_core(mean, precision, arrays, num_examples, *, model, static, plate):
    """Newton decrement ``g^T S^-1 g / 2`` of the loss ``L`` at ``mean`` on the data, with
    ``g = grad L(mean)`` over the first ``num_examples`` examples (the rest are padding).

    Zero at a fitted Laplace posterior; about ``d^2 / 2`` when the mean is ``d``
    posterior standard deviations (in the precision's metric) from the stationary point
    of ``L`` on these data: params fitted to other data, or a fit far from converged.
    """
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    real = jnp.arange(plate_model.num_examples) < num_examples

    def loss(theta):
        log_lik = jnp.where(real, plate_model.log_lik(theta), 0.0)
        return -(plate_model.log_prior(theta) + jnp.sum(log_lik))

    gradient = jax.grad(loss)(mean)
    return 0.5 * jnp.dot(gradient, precision_solve(precision, gradient))


@partial(jax.jit, static_argnames=("model", "static", "plate", "names", "method", "gathered"))
def loo_core(mean, precision, arrays, *, model, static, plate, names, method, gathered=None):
    """Jitted once per model, argument structure, array shapes and method; the data are
    arguments. :func:`prepare_loo` pads the examples to a few sizes
    (:func:`~numpyro_mpe.core.rows.pad_examples`), so that a new data size seldom compiles,
    and bounds what stays compiled (:func:`~numpyro_mpe.core.rows.limit_compilations`).

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
        rows = sliced_predictor(model, arrays, static, plate, names, gathered)
        row_jacobian = partial(jacobian_rows, rows, mean)
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
    importance: ImportanceSelection | ArrayLike = "auto",
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
        cavity form, then MPE-IS (:mod:`numpyro_mpe.crossval.importance`) on the examples
        chosen by ``importance``: exact leave-one-out densities by Pareto-smoothed
        importance sampling, with proposals built from the fit by moment matching and
        the MPE removals. An importance estimate replaces the closed form only where its
        Pareto k is good, it is finite and it is possible (never above 0 for a discrete
        observation); ``result.estimator`` says which estimate each example got.
    plate : str, optional
        The plate of examples.
    reliability_threshold : float
        A number in ``(0, 1]``: examples whose reliability value exceeds it are counted
        and warned about.
    importance : {"auto", "poor", "all"} or array of int
        For ``method="is"``: ``"auto"`` (default) samples every example when the pilot
        says the fitted Gaussian is far from the posterior (Pareto k above 0.7, or its
        evidence off by more than :data:`IMPORTANCE_EVIDENCE_GAP` nats), else
        the examples whose removal step's Newton decrement ``e_i^T V_i^{\\setminus i}
        e_i`` exceeds :data:`IMPORTANCE_DECREMENT` or whose reliability exceeds
        ``reliability_threshold``: where the Gaussian's error lives; ``"poor"`` only the
        latter; ``"all"`` all examples; or these indices (``[]``: none). Its kind is
        checked for every method.
    num_samples : int
        For ``method="is"``: importance draws per example (or group), an integer >= 2
        (checked for every method, before any work: ``TypeError`` for a bool or a
        float, ``ValueError`` below 2). The pilot takes ``4 x num_samples`` draws, the
        proposal shared by all examples ``max(16000, 80 x num_samples)`` and an example's
        own proposal ``8 x num_samples``.
    seed : int
        For ``method="is"``: seed of the draws, an integer in ``[0, 2**63 - 1]`` (checked
        for every method).
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
        ``group_of_example``, ``group_newton_decrement`` (above 0.1 the group is
        corrected by Newton steps to its leave-group-out Laplace posterior, and warned
        about), ``group_newton_steps`` and ``group_corrected_decrement``.

    Warns
    -----
    ReliabilityWarning
        When some reliability value exceeds ``reliability_threshold``. Examples whose
        value reaches 1 (improper cavity) fall back to the paper's form, which keeps the
        full-data covariance (``S`` instead of ``S - H_i`` in the parameter-space form).
        Also when the params are not a fit to these data: the Newton decrement
        ``g^T S^-1 g / 2`` of the loss at their mean (``g`` its gradient on the data)
        exceeds :data:`STATIONARY_DECREMENT` (0.5, a mean one posterior sd from the
        mode), as for params fitted to other data of the same shape, or a fit stopped
        far from convergence. (Params carry no fingerprint of their data: this check
        asks the data themselves. :func:`prepare_loo`'s function, meant for checkpoints
        during training, does not make it.)
    """
    options = _checked_options(
        method, plate, reliability_threshold, importance, num_samples, seed, groups
    )
    return prepare_guide_loo(guide, model, args, kwargs, options._replace(check_stationary=True))(
        params
    )


def prepare_loo(
    model: Callable,
    guide: Any,
    *args: Any,
    method: LooMethod = "cavity",
    plate: str | None = None,
    reliability_threshold: float = 0.7,
    importance: ImportanceSelection | ArrayLike = "auto",
    num_samples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    **kwargs: Any,
) -> Callable[[dict], ELPDDataMPE]:
    """:func:`loo` as a function of the guide's params, for many checkpoints of one fit.

    Everything that does not depend on the params is done here, once: the argument
    checks, tracing the model and finding its predictor, and planning how its data are
    sliced by example. For the cavity and paper forms, when the model's terms are per
    example, its examples are padded to :func:`~numpyro_mpe.core.rows.bucket_size` ``(N)``
    (repeats of the last, dropped from the result; the values of the others are those of
    the unpadded data), so the computation is compiled once per bucket of sizes, not once
    per ``N``. Each call of the returned function runs only the compiled
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
    TypeError, ValueError, ModelError
        As :func:`loo` (options of the wrong type or out of range, bad data), here
        rather than at the first call.
    """
    options = _checked_options(
        method, plate, reliability_threshold, importance, num_samples, seed, groups
    )
    return prepare_guide_loo(guide, model, args, kwargs, options)


def _checked_options(
    method, plate, reliability_threshold, importance, num_samples, seed, groups
) -> LooOptions:
    check_choice("method", method, LOO_METHODS)
    check_plate_name(plate)
    check_number("reliability_threshold", reliability_threshold, 0.0, 1.0)
    _checked_importance(importance)  # its kind, for every method; index ranges once N is known
    num_samples = check_num_samples(num_samples)
    check_seed(seed)
    if groups is not None:
        check_group_labels(groups, None)  # label types and NaN; the shape once N is known
    return LooOptions(
        method=method,
        plate=plate,
        reliability_threshold=reliability_threshold,
        importance=importance,
        num_samples=num_samples,
        seed=seed,
        groups=groups,
    )


class LooOptions(NamedTuple):
    """The options of :func:`loo`, checked, as one value (see :func:`loo`)."""

    method: LooMethod
    plate: str | None
    reliability_threshold: float
    importance: ImportanceSelection | ArrayLike
    num_samples: int
    seed: int
    groups: ArrayLike | None
    check_stationary: bool = False


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
    method, plate, reliability_threshold, importance = options[:4]
    plate_model, arrays, static, num_examples, row_plan = _traced_examples(
        model, args, kwargs, options
    )
    names = None if plate_model.predictor is None else plate_model.predictor.names
    itemsize = plate_model.init_theta.dtype.itemsize
    if options.groups is not None:
        return _leave_group_out(
            model, plate_model, guide, arrays, static, names, options, itemsize
        )
    if names is None:
        check_hessian_stack(
            num_examples,
            plate_model.num_latents,
            itemsize,
            what="the parameter-space form's per-example Hessians",
            advice="give the observation a single distribution with a predictor",
        )
    if method == "is":  # check the argument before any work
        _importance_indices(importance, reliability_threshold, plate_model)
    gathered = None
    if names is not None and plate_model.num_latents > DIRECTIONS_PER_STEP:
        # More than one streaming pass over the data: take the Jacobian row by row when
        # the model can be run on one example's data alone.
        if row_plan is None:
            row_plan = cached_row_slicing(model, plate, args, kwargs, plate_model)
        gathered = row_plan.gathered if row_plan.path == "gather" else None
    core_options = {
        "model": model,
        "static": static,
        "plate": plate,
        "names": names,
        "method": "cavity" if method == "is" else method,
        "gathered": gathered,
    }
    observed = plate_model.observed_mask
    if observed is not None:
        observed = observed[:num_examples]  # without the padding (_traced_examples)

    def loo_at(params: dict) -> ELPDDataMPE:
        mean, precision = guide.checked_mean_precision(
            params, plate_model.num_latents, where="loo"
        )
        if options.check_stationary:
            warn_unless_stationary(mean, precision, arrays, num_examples, core_options)
        limit_compilations(loo_core, (mean, precision, arrays), core_options)
        terms = loo_core(mean, precision, arrays, **core_options)
        if num_examples < plate_model.num_examples:  # drop the padding (_traced_examples)
            terms = LooTerms(*(np.asarray(values)[:num_examples] for values in terms))
        importance_result = None
        if method == "is":
            importance_result = _importance_sampled(
                model, plate_model, arrays, static, mean, precision, terms, options
            )
        return make_elpd_data(
            terms.elpd,
            terms.lppd,
            terms.reliability,
            dim=plate_model.plate,
            threshold=reliability_threshold,
            method="laplace" if names is None and method != "is" else method,
            covariance=guide.covariance,
            importance=importance_result,
            observed=observed,
            estimator=_closed_form_estimators(names, method, terms.reliability),
        )

    return loo_at


def warn_unless_stationary(
    mean, precision, arrays, num_examples, core_options, where: str = "loo"
) -> None:
    """:class:`ReliabilityWarning` when ``mean`` is far from a stationary point of the
    loss on the data (:func:`stationarity_core`); the message starts with ``where``."""
    static = {name: core_options[name] for name in ("model", "static", "plate")}
    limit_compilations(stationarity_core, (mean, precision, arrays), static)
    decrement = float(stationarity_core(mean, precision, arrays, num_examples, **static))
    if not decrement <= STATIONARY_DECREMENT:
        warnings.warn(
            f"{where}: the params are not a fit of this model to these data: the Newton "
            f"decrement of the loss at their mean is {decrement:.3g} (0 at a converged "
            "fit; the mean is about sqrt(2 x that) posterior sds from the mode). Were they "
            "fitted to these data, and did the fit converge? MPE starts from the "
            "full-data posterior",
            ReliabilityWarning,
            stacklevel=4,
        )


def _traced_examples(
    model: Callable, args: tuple, kwargs: dict, options: LooOptions
) -> tuple[PlateModel, list, tuple, int, MinibatchPlan | None]:
    """``(plate_model, arrays, static, N, row_plan)`` for :func:`prepare_loo`.

    For the cavity and paper forms the model's examples are padded to
    :func:`~numpyro_mpe.core.rows.bucket_size` ``(N)`` when its terms are per example
    (:func:`~numpyro_mpe.core.rows.pad_examples`): ``loo_core`` then compiles once per
    bucket instead of once per data size, and its values for the first ``N`` examples,
    computed row by row, are those of the unpadded data. Otherwise (leave-group-out,
    MPE-IS, models that do not slice by example, the Laplace form's per-example Hessians
    over :data:`MAX_HESSIAN_BYTES` once padded) the model is traced on the arguments as
    given, and ``row_plan`` is None (not planned yet).
    """
    if options.groups is None and options.method != "is":
        padded = pad_examples(model, options.plate, args, kwargs)
        if padded is not None:
            plate_model = padded.plate_model
            hessian_bytes = (
                plate_model.num_examples
                * plate_model.num_latents**2
                * plate_model.init_theta.dtype.itemsize
            )
            if plate_model.predictor is not None or hessian_bytes <= MAX_HESSIAN_BYTES:
                return (
                    plate_model,
                    padded.arrays,
                    padded.static,
                    padded.num_examples,
                    padded.plan,
                )
    plate_model = trace_model(model, *args, plate=options.plate, **kwargs)
    arrays, static = split_arguments(args, kwargs)
    return plate_model, arrays, static, plate_model.num_examples, None


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
    inputs = (mean, precision, jnp.asarray(codes), arrays, options.seed)
    core_options = {
        "model": model,
        "static": static,
        "plate": options.plate,
        "names": names,
        "method": options.method,
        "num_groups": len(labels),
        "num_samples": options.num_samples,
    }
    limit_compilations(group_loo_core, inputs, core_options)
    result = group_loo_core(*inputs, **core_options)
    importance = None
    if result.pareto_k is not None:
        importance = (
            np.arange(len(labels)),
            ImportanceLOO(
                elpd=result.elpd,
                pareto_k=result.pareto_k,
                mcse=result.mcse,
                total_mcse=jnp.sqrt(jnp.sum(result.mcse**2)),
                good_k=jnp.full(len(labels), good_pareto_k(options.num_samples)),
                proposal=jnp.full(len(labels), PROPOSALS.index("group"), np.int8),
                pilot_pareto_k=jnp.full((), jnp.nan),
            ),
            np.ones(len(labels), bool),
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
        groups=(
            plate_model.plate,
            codes,
            result.example_elpd,
            result.newton_decrement,
            result.newton_steps,
            result.corrected_decrement,
        ),
        observed=plate_model.observed_mask,
    )


def _importance_indices(importance, threshold, plate_model, terms=None, pilot=None) -> np.ndarray:
    """Indices for MPE-IS; checks the argument (before any work when ``terms`` is None)
    and selects (after the closed-form pass and the pilot).

    ``"auto"``: every example when the pilot's Pareto ``k`` exceeds 0.7 or its
    evidence gap exceeds :data:`IMPORTANCE_EVIDENCE_GAP` (the fitted Gaussian is off
    globally, and its error spread over all examples), else those whose removal decrement
    exceeds :data:`IMPORTANCE_DECREMENT` or whose reliability exceeds ``threshold``;
    only the latter when the pilot's ratios are all equal (``k = -inf``: the fit is the
    exact posterior, and the closed forms exact).
    ``"poor"``: those above ``threshold``.
    """
    n = plate_model.num_examples
    indices = _checked_importance(importance)
    if indices is None:
        if importance == "all":
            return np.arange(n)
        if terms is None:
            return np.zeros(0, int)
        poor = np.asarray(terms.reliability) > threshold
        if importance == "poor":
            return np.flatnonzero(poor)
        if np.isneginf(float(pilot.pareto_k)):  # the fit is the exact posterior
            return np.flatnonzero(poor)
        if not (
            float(pilot.pareto_k) <= _GOOD_PILOT_K
            and abs(float(pilot.evidence_gap)) <= IMPORTANCE_EVIDENCE_GAP
        ):
            return np.arange(n)
        return np.flatnonzero(poor | ~(np.asarray(terms.decrement) <= IMPORTANCE_DECREMENT))
    bad = (indices < 0) | (indices >= n)
    if bad.any():
        raise ValueError(f"importance index {indices[bad][0]} is out of range for {n} examples")
    return indices


def _importance_sampled(model, plate_model, arrays, static, mean, precision, terms, options):
    """MPE-IS for :func:`loo`: ``(selected, ImportanceLOO, accepted)`` or None when no
    example is selected. An estimate is accepted where it is finite, possible (at most 0
    for discrete observations), and its ``k`` is at most its draws' threshold, or below 1
    where the closed form's reliability is above the threshold too; the others keep
    their closed-form value."""
    pilot = run_pilot(
        model,
        plate_model,
        arrays,
        static,
        mean,
        precision,
        num_samples=options.num_samples,
        seed=options.seed,
    )
    selected = _importance_indices(
        options.importance,
        options.reliability_threshold,
        plate_model,
        terms,
        pilot,
    )
    if not selected.size:
        return None
    result = importance_loo(
        model,
        plate_model,
        arrays,
        static,
        pilot,
        selected,
        num_samples=options.num_samples,
        seed=options.seed,
    )
    possible = np.isfinite(result.elpd)
    if plate_model.discrete_observations:
        possible &= result.elpd <= 0.0
    # Where the closed form is itself flagged (reliability above the threshold), an
    # estimate whose k is above its threshold but below 1 (its mean exists) still beats
    # it; both stay flagged.
    closed_form_poor = np.asarray(terms.reliability)[selected] > options.reliability_threshold
    good = (result.pareto_k <= result.good_k) | (closed_form_poor & (result.pareto_k < 1.0))
    accepted = possible & good
    impossible = int(np.sum(~possible))
    if impossible:
        warnings.warn(
            f"MPE-IS: {impossible} of {selected.size} importance estimates are outside "
            "the possible range (a log probability of a discrete observation above 0, "
            f"or not finite), e.g. {float(result.elpd[~possible][0]):.4g} at example "
            f"{int(selected[~possible][0])}; those examples keep their closed-form value",
            ReliabilityWarning,
            stacklevel=4,
        )
    return selected, result, accepted


def _closed_form_estimators(names, method, reliability) -> np.ndarray:
    """The estimator of each example's closed-form value ``(N,)`` (see
    ``ELPDDataMPE.estimator``)."""
    proper = np.asarray(reliability) < 1.0
    if names is None:
        return np.where(proper | (method == "paper"), "laplace", "laplace-plug-in")
    if method == "paper":
        return np.full(proper.shape, "paper")
    return np.where(proper, "cavity", "paper")


def _checked_importance(importance) -> np.ndarray | None:
    """``importance`` as indices (an empty list selects none), or None for ``"poor"`` and
    ``"all"``; ``ValueError`` for another string, None, or indices that are not 1-d
    integers."""
    if importance is None or isinstance(importance, str):
        if importance not in IMPORTANCE_SELECTIONS:
            raise ValueError(
                f"importance must be 'auto', 'poor', 'all' or indices, got {importance!r}"
            )
        return None
    indices = np.atleast_1d(np.asarray(importance))
    if indices.size == 0 and indices.ndim == 1:
        return np.zeros(0, int)
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
        raise ValueError(f"importance indices must be a 1-d integer array, got {indices.dtype}")
    return indices


@default_checkpoint.register
def _loo_checkpoint(guide: AutoGaussian, model: Callable, args: tuple, kwargs: dict, plate):
    """MPE-LOO at each checkpoint of :meth:`~numpyro_mpe.BLR.run` (its default)."""
    loo_at = prepare_loo(model, guide, *args, plate=plate, **kwargs)

    def checkpoint_fn(params: dict, step: int) -> ELPDDataMPE:
        return loo_at(params)

    return checkpoint_fn
