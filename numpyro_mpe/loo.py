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
Monte Carlo beyond (:mod:`numpyro_mpe.quadrature`; for ``K = 1`` an adaptive 9-node rule).

Without a predictor, the parameter-space (Laplace) form integrates a quadratic
expansion of ``l_i`` against the cavity ``N(m^{\\setminus i}, (S - H_i)^{-1})``:

.. math::

    \\log p(y_i \\mid y_{-i}) \\approx -l_i(m) + \\tfrac12 \\log\\frac{|S - H_i|}{|S|}
        - \\tfrac12 g_i^T (S - H_i)^{-1} g_i,

exact for Gaussian-linear terms.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.arviz import ELPDDataMPE, make_elpd_data
from numpyro_mpe.conjugate import AutoConjugate, conjugate_loo
from numpyro_mpe.gaussian import is_dense, precision_solve
from numpyro_mpe.guide import AutoGaussian
from numpyro_mpe.importance import ImportanceLOO, importance_loo
from numpyro_mpe.model import Predictor, join_arguments, split_arguments, trace_model
from numpyro_mpe.quadrature import _covariance_root, _log_predictive_pair
from numpyro_mpe.rows import cached_row_slicing

__all__ = ["loo", "prepare_loo"]

_METHODS = ("cavity", "paper", "is")
_DIRECTIONS_PER_STEP = 8
_MAX_HESSIAN_BYTES = 2 * 1024**3
_ROW_BLOCK_VALUES = 2**20  # Jacobian-row values (examples x K x P) held at once


def _likelihood_curvature(predictor: Predictor, f: jax.Array):
    """``e_i = d l_i / d f`` ``(N, K)`` and ``Lambda_i`` ``(N, K, K)``."""

    def total_loss(f_):
        return -jnp.sum(predictor.log_lik(f_))

    gradient_fn = jax.grad(total_loss)
    e = gradient_fn(f)
    columns = [
        jax.jvp(gradient_fn, (f,), (jnp.zeros_like(f).at[:, k].set(1.0),))[1]
        for k in range(f.shape[1])
    ]
    return e, jnp.stack(columns, axis=2)


def _direction_chunks(directions: jax.Array, chunk: int) -> jax.Array:
    """``(P, P)`` rows -> ``(ceil(P / chunk), chunk, P)``, padded with zero directions."""
    size = directions.shape[0]
    padded = -(-size // chunk) * chunk
    directions = jnp.pad(directions, ((0, padded - size), (0, 0)))
    return directions.reshape(padded // chunk, chunk, directions.shape[1])


def _prediction_space_covariances(predictor_fn: Callable, mean, precision, lam):
    """Full-data ``V_i``, cavity ``V_i^{\\i}`` (both ``(N, K, K)``) and reliability ``(N,)``.

    Streams over the ``P`` directions of ``theta``, ``_DIRECTIONS_PER_STEP`` Jacobian-vector
    products at a time, so memory is ``O(N K^2)``: the ``(N, K, P)`` Jacobian is never
    formed.
    """
    f, jvp = jax.linearize(predictor_fn, mean)
    columns_of = jax.vmap(jvp)
    zeros = jnp.zeros(f.shape + f.shape[1:], f.dtype)
    chunk = min(_DIRECTIONS_PER_STEP, mean.shape[0])
    if is_dense(precision):
        # V = (J L^-T)(J L^-T)^T with S = L L^T; the rows of L^-1 are the directions.
        whitening = jax.scipy.linalg.solve_triangular(
            jnp.linalg.cholesky(precision), jnp.eye(mean.shape[0], dtype=mean.dtype), lower=True
        )

        def accumulate_dense(acc, directions):
            columns = columns_of(directions)  # (chunk, N, K)
            return acc + jnp.einsum("cnk,cnl->nkl", columns, columns), None

        v, _ = jax.lax.scan(accumulate_dense, zeros, _direction_chunks(whitening, chunk))
        return v, *_dense_cavity(v, lam)

    def accumulate_diag(carry, inputs):
        v, cavity, reliability = carry
        directions, site_precision = inputs  # (chunk, P), (chunk,)
        columns = columns_of(directions)  # J e_p, (chunk, N, K)
        removed = jnp.einsum("cnk,nkl,cnl->cn", columns, lam, columns)
        outer = jnp.einsum("cnk,cnl->cnkl", columns, columns)
        # Padded directions have a zero column; their unit precision adds nothing.
        v = v + jnp.einsum("cnkl,c->nkl", outer, 1.0 / site_precision)
        cavity = cavity + jnp.sum(outer / (site_precision[:, None] - removed)[..., None, None], 0)
        reliability = jnp.maximum(reliability, jnp.max(removed / site_precision[:, None], 0))
        return (v, cavity, reliability), None

    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)
    padded_precision = _direction_chunks(precision[:, None], chunk)[..., 0]
    padded_precision = jnp.where(padded_precision == 0, 1.0, padded_precision)
    initial = (zeros, zeros, jnp.zeros(f.shape[0], f.dtype))
    (v, cavity, reliability), _ = jax.lax.scan(
        accumulate_diag, initial, (_direction_chunks(eye, chunk), padded_precision)
    )
    return v, cavity, reliability


def _row_covariances(row_jacobian: Callable, num_examples: int, precision, lam):
    """As :func:`_prediction_space_covariances`, from per-example Jacobian rows.

    ``row_jacobian(indices (B,)) -> (B, K, P)``, the rows ``J_i`` of those examples, each
    by reverse passes through the model on that example's data alone: ``O(N K P)`` for
    all rows instead of ``P`` passes over all ``N`` examples. Blocks of examples are
    processed in turn, so memory is ``O(B K P)``.
    """
    dense = is_dense(precision)
    size, k = precision.shape[0], lam.shape[1]
    chunk = int(min(num_examples, max(1, _ROW_BLOCK_VALUES // (k * size))))
    num_blocks = -(-num_examples // chunk)
    # The last block repeats the last example; the repeats are dropped below.
    blocks = jnp.minimum(jnp.arange(num_blocks * chunk), num_examples - 1)
    if dense:
        cholesky = jnp.linalg.cholesky(precision)
    else:
        inverse_precision = 1.0 / precision

    def block(indices):
        rows = row_jacobian(indices)  # (B, K, P)
        curvature = lam[indices]
        if dense:
            # V_i = (L^-1 J_i^T)^T (L^-1 J_i^T) with S = L L^T, one solve for the block.
            whitened = jax.scipy.linalg.solve_triangular(
                cholesky, rows.reshape(-1, size).T, lower=True
            ).reshape(size, chunk, k)
            v = jnp.einsum("pbk,pbl->bkl", whitened, whitened)
            return v, *_dense_cavity(v, curvature)
        if k == 1:
            # Elementwise in J_i^2 / s, one division per value; written so that XLA's CPU
            # backend fuses each reduction with it (half the time of the plain form).
            scaled = rows[:, 0, :] ** 2 * inverse_precision
            curvature = curvature[:, 0, 0]
            v = jnp.sum(scaled, axis=1)
            cavity = jnp.sum(scaled / (1.0 - curvature[:, None] * scaled), axis=1)
            # max_p Lambda_i J_ip^2 / s_p, and 0 where Lambda_i < 0 as in the column form.
            reliability = jnp.maximum(curvature, 0.0) * jnp.max(scaled, axis=1)
            return v[:, None, None], cavity[:, None, None], reliability
        removed = jnp.sum(rows * jnp.einsum("bkl,blp->bkp", curvature, rows), axis=1)
        v = jnp.einsum("bkp,blp->bkl", rows / precision, rows)
        cavity = jnp.einsum("bkp,blp->bkl", rows / (precision - removed)[:, None, :], rows)
        return v, cavity, jnp.max(removed / precision, axis=1)

    results = jax.lax.map(block, blocks.reshape(num_blocks, chunk))
    return tuple(r.reshape((-1, *r.shape[2:]))[:num_examples] for r in results)


def _dense_cavity(v, lam):
    """Cavity ``V (I - Lambda V)^-1`` ``(B, K, K)`` and reliability ``(B,)`` from ``V``."""
    if v.shape[1] == 1:
        reliability = lam[:, 0, 0] * v[:, 0, 0]
        return v / (1.0 - reliability)[:, None, None], reliability
    root = _covariance_root(v)
    reliability = jnp.linalg.eigvalsh(jnp.swapaxes(root, 1, 2) @ lam @ root)[:, -1]
    eye = jnp.eye(v.shape[1], dtype=v.dtype)
    transposed = jnp.swapaxes
    cavity = transposed(
        jnp.linalg.solve(eye - transposed(lam @ v, 1, 2), transposed(v, 1, 2)), 1, 2
    )
    return cavity, reliability


def _predictor_loo(
    predictor: Predictor, mean, precision, *, method: str, row_jacobian=None, rows=None
):
    """``(elpd_i, lppd_i, reliability_i)`` with a predictor. ``row_jacobian``: see
    :func:`_row_covariances`; ``rows``: see :func:`_log_predictive_pair`."""
    f = predictor.fn(mean)
    e, lam = _likelihood_curvature(predictor, f)
    if row_jacobian is None:
        v, cavity, reliability = _prediction_space_covariances(predictor.fn, mean, precision, lam)
    else:
        v, cavity, reliability = _row_covariances(row_jacobian, f.shape[0], precision, lam)
    valid = reliability < 1.0
    if method == "paper":
        cavity = v
    cavity = jnp.where(valid[:, None, None], 0.5 * (cavity + jnp.swapaxes(cavity, 1, 2)), v)
    cavity_mean = f + jnp.einsum("nkl,nl->nk", cavity, e)
    elpd, lppd = _log_predictive_pair(predictor, cavity_mean, cavity, f, v, rows)
    return elpd, lppd, reliability


def _laplace_loo(log_lik: Callable, mean, precision):
    per_example = log_lik(mean)
    gradients = -jax.jacfwd(log_lik)(mean)
    hessians = -jax.jacfwd(jax.jacfwd(log_lik))(mean)
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
def _loo_core(mean, precision, arrays, *, model, static, plate, names, method, gathered=None):
    """Jitted once per model, argument structure and method; the data are arguments.

    ``gathered`` (which array arguments hold one row per example, from
    :func:`~numpyro_mpe.rows.plan_row_slicing`): take the predictor's Jacobian row by row,
    each from the model run on that example alone, and integrate the examples that the
    9-node rule refuses on their own rows (:func:`_log_predictive_pair`).
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

    return _predictor_loo(
        plate_model.predictor,
        mean,
        precision,
        method=method,
        row_jacobian=row_jacobian,
        rows=rows,
    )


def loo(
    model: Callable,
    guide: AutoGaussian | AutoConjugate,
    params: dict,
    *args: Any,
    method: str = "cavity",
    plate: str | None = None,
    reliability_threshold: float = 0.7,
    importance: str | ArrayLike = "poor",
    num_samples: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
    **kwargs: Any,
) -> ELPDDataMPE:
    """Bayesian leave-one-out predictive densities ``log p(y_i | y_-i)`` by MPE.

    With ``groups``, leave-one-group-out instead: one ``log p(y_G | y_-G)`` per group
    (:mod:`numpyro_mpe.group_loo`).

    Parameters
    ----------
    model : callable
        The NumPyro model.
    guide : AutoGaussian or AutoConjugate
        Its fitted guide. With :class:`~numpyro_mpe.conjugate.AutoConjugate` the result
        is exact (:func:`~numpyro_mpe.conjugate.conjugate_loo`) and the method options
        do not apply.
    params : dict
        Guide params (from :meth:`BLR.run`, :func:`perturb`, or any iteration).
    *args, **kwargs
        The model's arguments.
    method : {"cavity", "paper", "is"}
        ``"cavity"``: leave-one-out covariance ``V_i (I - Lambda_i V_i)^-1`` in prediction
        space; ``"paper"``: the plug-in ``f_i + V_i e_i`` with the full-data ``V_i``.
        Without a predictor both use the parameter-space (Laplace) form. ``"is"``: the
        cavity form, then MPE-IS (:mod:`numpyro_mpe.importance`) on the examples chosen
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
    guide: AutoGaussian | AutoConjugate,
    *args: Any,
    method: str = "cavity",
    plate: str | None = None,
    reliability_threshold: float = 0.7,
    importance: str | ArrayLike = "poor",
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
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not 0 < reliability_threshold <= 1:
        raise ValueError(f"reliability_threshold must be in (0, 1], got {reliability_threshold}")
    if isinstance(guide, AutoConjugate):
        if groups is not None:
            raise ValueError("groups is not supported with AutoConjugate; use AutoGaussian")
        return partial(_conjugate_loo_at, model, guide, args, kwargs, plate)
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    names = None if plate_model.predictor is None else plate_model.predictor.names
    arrays, static = split_arguments(args, kwargs)
    itemsize = plate_model.init_theta.dtype.itemsize
    if groups is not None:
        return _leave_group_out(
            groups,
            plate_model,
            guide,
            arrays,
            static,
            names,
            {
                "model": model,
                "plate": plate,
                "method": method,
                "seed": seed,
                "num_samples": num_samples,
                "reliability_threshold": reliability_threshold,
            },
            itemsize,
        )
    if names is None:
        size = plate_model.num_examples * plate_model.num_latents**2 * itemsize
        if size > _MAX_HESSIAN_BYTES:
            raise ValueError(
                f"the parameter-space form needs per-example Hessians of {size / 2**30:.1f} GiB "
                f"({plate_model.num_examples} x {plate_model.num_latents}^2); give the "
                "observation a single distribution with a predictor"
            )
    if method == "is":  # check the argument before any work
        _importance_indices(importance, reliability_threshold, None, plate_model)
    gathered = None
    if names is not None and plate_model.num_latents > _DIRECTIONS_PER_STEP:
        # More than one streaming pass over the data: take the Jacobian row by row when
        # the model can be run on one example's data alone.
        row_plan = cached_row_slicing(model, plate, args, kwargs, plate_model)
        gathered = row_plan.gathered if row_plan.path == "gather" else None

    def loo_at(params: dict) -> ELPDDataMPE:
        mean, precision = guide.mean_precision(params)
        elpd, lppd, reliability = _loo_core(
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


def _conjugate_loo_at(model, guide, args, kwargs, plate, params):
    return conjugate_loo(model, guide, params, *args, plate=plate, **kwargs)


def _leave_group_out(groups, plate_model, guide, arrays, static, names, options, itemsize):
    """The leave-group-out part of :func:`prepare_loo`: checks, then ``params -> result``."""
    # group_loo imports this module (its covariances): import it here, not at the top.
    from numpyro_mpe.group_loo import group_codes

    labels, codes = group_codes(groups, plate_model.num_examples)
    size = len(labels) * plate_model.num_latents**2 * itemsize
    if size > _MAX_HESSIAN_BYTES:
        raise ValueError(
            f"leave-group-out needs per-group Hessians of {size / 2**30:.1f} GiB "
            f"({len(labels)} groups x {plate_model.num_latents}^2)"
        )
    return partial(
        _leave_group_out_at, plate_model, guide, arrays, static, names, options, labels, codes
    )


def _leave_group_out_at(plate_model, guide, arrays, static, names, options, labels, codes, params):
    from numpyro_mpe.group_loo import group_loo_core

    mean, precision = guide.mean_precision(params)
    result = group_loo_core(
        mean,
        precision,
        jnp.asarray(codes),
        arrays,
        options["seed"],
        model=options["model"],
        static=static,
        plate=options["plate"],
        names=names,
        method=options["method"],
        num_groups=len(labels),
        num_samples=options["num_samples"],
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
            options["num_samples"],
        )
    used = options["method"] if options["method"] != "cavity" else "group-cavity"
    return make_elpd_data(
        result.elpd,
        result.lppd,
        result.reliability,
        dim="group",
        coords=labels,
        threshold=options["reliability_threshold"],
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
        if importance not in ("poor", "all"):
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
