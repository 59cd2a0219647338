"""Per-example sensitivity: how far the posterior mean moves when an example is removed.

Removing example ``i`` from ``q = N(m, S^-1)`` by the memory-perturbation equation
(:mod:`numpyro_mpe.perturbation.perturb`, ``rho = 1``) moves the mean by

.. math::

    \\delta_i = m^{\\setminus i} - m = (S - H_i)^{-1} g_i,

with ``g_i = grad l_i(m)`` of ``l_i = -log p(y_i | theta)`` and ``H_i`` its curvature
(``diag(H_i)`` for the diagonal family): when the observation is driven by a predictor
``f_i(theta)`` (:class:`numpyro_mpe.Predictor`), ``H_i = J_i^T Lambda_i J_i`` with ``J_i =
d f_i / d theta`` and ``Lambda_i = d^2 l_i / d f^2``, the curvature
:func:`numpyro_mpe.loo` uses (exact for a predictor linear in ``theta``, its Gauss-Newton
part for a network), computed from one Jacobian row per example; without a predictor,
the exact ``hess l_i(m)``. Where ``S - H_i`` is not positive definite
(the example carries all the information about some direction) the first-order
influence ``S^-1 g_i`` is used instead and the example is flagged. In the conjugate case
(Gaussian likelihood, linear in ``theta``, known variance) ``delta_i`` is the exact
difference of the posterior means with and without example ``i``.

Each shift is also given in posterior-sd units per latent coordinate, ``delta_i / sd``,
and summarised per example by ``max_p |delta_ip / sd_p|`` and the Mahalanobis norm
``sqrt(delta_i^T S delta_i)`` (in posterior standard deviations along the direction of
the shift). With a predictor, the shift of the example's own prediction is ``J_i
delta_i``: the first-order change of ``f_i(m + delta_i) - f_i(m)``, exact for a
predictor linear in ``theta``, and the move of ``loo``'s cavity mean. For large ``P``
(a network) only these summaries are returned, not the ``(N, P)`` shifts.

Given held-out examples ``t`` (``test=``), the influence of removing each training example
on them: ``g_t^T delta_i``, the first-order change of the test loss ``-log p(y_t | m)``
(Koh and Liang's influence on a test loss, with the removal step ``(S - H_i)^-1 g_i`` of
the Gaussian posterior in place of ``H^-1 g_i`` at a point estimate, so it applies to any
fit whose posterior ``numpyro_mpe`` holds), and with a predictor ``J_t delta_i``, the
change of the test prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from numpyro_mpe.core.curvature import (
    DIRECTIONS_PER_STEP,
    MAX_HESSIAN_BYTES,
    check_hessian_stack,
    dense_cavity,
    jacobian_rows,
    likelihood_curvature,
    map_example_blocks,
    per_example_gradients,
    per_example_hessian_diagonals,
    per_example_hessians,
)
from numpyro_mpe.core.gaussian import is_dense, precision_solve
from numpyro_mpe.core.model import join_arguments, split_arguments, trace_model
from numpyro_mpe.core.rows import cached_row_slicing, limit_compilations, sliced_predictor
from numpyro_mpe.infer.guide import AutoGaussian

__all__ = ["MAX_SHIFT_BYTES", "Sensitivity", "latent_names", "sensitivity"]

MAX_SHIFT_BYTES = 256 * 1024**2
"""Largest ``(N, P)`` shift array :func:`sensitivity` returns by default."""


class Sensitivity(NamedTuple):
    """Per-example shifts of the posterior mean under removal (see module docstring).

    Attributes
    ----------
    shift : jax.Array or None
        ``(N, P)`` ``delta_i = m^{\\i} - m``, the move of the mean when example ``i`` is
        removed (unconstrained latent space); None when not kept (``keep_shifts``).
    standardized_shift : jax.Array or None
        ``(N, P)`` ``delta_i / sd``, with ``sd`` the posterior standard deviations; None
        with ``shift``.
    max_abs_standardized_shift : jax.Array
        ``(N,)`` ``max_p |delta_ip / sd_p|``.
    largest_coordinate : jax.Array
        ``(N,)`` int32, the coordinate ``p`` of that maximum.
    largest_standardized_shift : jax.Array
        ``(N,)`` ``delta_ip / sd_p`` at that coordinate (signed).
    mahalanobis : jax.Array
        ``(N,)`` ``sqrt(delta_i^T S delta_i)``.
    prediction_shift : jax.Array or None
        ``(N, K)`` ``J_i delta_i``: the (first-order) move of example ``i``'s own
        predictor when it is removed; None when the model has no predictor.
    first_order : jax.Array
        ``(N,)`` bool, True where ``S - H_i`` is not positive definite and the shift is
        the first-order ``S^-1 g_i``.
    posterior_sd : jax.Array
        ``(P,)`` posterior standard deviations ``sqrt(diag(S^-1))``.
    names : tuple of str
        ``(P,)`` labels of the flat latent coordinates (:func:`latent_names`).
    plate : str
        The plate of examples.
    test_loss_shift : jax.Array or None
        ``(N, M)`` ``g_t^T delta_i`` for the ``M`` test examples (``test=``): the
        first-order change of test example ``t``'s loss ``-log p(y_t | theta)`` at the
        mean when training example ``i`` is removed. Positive: ``i`` helps ``t``. None
        without ``test``.
    test_prediction_shift : jax.Array or None
        ``(N, M, K)`` ``J_t delta_i``: the first-order move of test example ``t``'s
        predictor when ``i`` is removed. None without ``test`` or without a predictor.
    """

    shift: jax.Array | None
    standardized_shift: jax.Array | None
    max_abs_standardized_shift: jax.Array
    largest_coordinate: jax.Array
    largest_standardized_shift: jax.Array
    mahalanobis: jax.Array
    prediction_shift: jax.Array | None
    first_order: jax.Array
    posterior_sd: jax.Array
    names: tuple[str, ...]
    plate: str
    test_loss_shift: jax.Array | None = None
    test_prediction_shift: jax.Array | None = None


def latent_names(latent_shapes: dict) -> tuple[str, ...]:
    """Labels of the flat unconstrained latent vector, in model-site order.

    A scalar site is its name (``"sigma"``); an array site gets one label per element,
    row-major with 0-based indices (``"beta[0]"``, ``"beta[1]"``, ``"L[0,1]"``).

    Parameters
    ----------
    latent_shapes : dict
        ``{site: unconstrained shape}`` (:attr:`PlateModel.latent_shapes`).

    Returns
    -------
    tuple of str
        ``(P,)`` labels.

    Examples
    --------
    >>> latent_names({"beta": (2,), "sigma": ()})
    ('beta[0]', 'beta[1]', 'sigma')
    """
    names = []
    for site, shape in latent_shapes.items():
        if len(shape) == 0:
            names.append(site)
            continue
        for index in np.ndindex(*shape):
            names.append(f"{site}[{','.join(str(i) for i in index)}]")
    return tuple(names)


def _dense_shifts(log_lik, mean, precision, gradients):
    hessians = per_example_hessians(log_lik, mean)  # (N, P, P)
    cavity = precision[None] - hessians
    cholesky = jnp.linalg.cholesky(cavity)
    diagonal = jnp.diagonal(cholesky, axis1=-2, axis2=-1)
    proper = jnp.all(jnp.isfinite(cholesky), axis=(1, 2)) & jnp.all(diagonal > 0, axis=1)
    safe = jnp.where(proper[:, None, None], cholesky, jnp.eye(mean.shape[0], dtype=mean.dtype))
    cavity_shift = jax.vmap(lambda c, g: cho_solve((c, True), g))(safe, gradients)
    influence = precision_solve(precision, gradients.T).T
    return jnp.where(proper[:, None], cavity_shift, influence), ~proper


def _diag_shifts(log_lik, mean, precision, gradients):
    diagonal = per_example_hessian_diagonals(log_lik, mean)  # (N, P), memory O(N P)
    cavity = precision[None, :] - diagonal
    proper = jnp.all(cavity > 0, axis=1)
    safe = jnp.where(proper[:, None], cavity, precision[None, :])
    return gradients / safe, ~proper


def _predictor_shifts(rows, e, lam, precision, cholesky):
    """``delta_i = (S - J_i^T Lambda_i J_i)^-1 J_i^T e_i`` for a block of examples.

    ``rows`` ``(B, K, P)``, ``e`` ``(B, K)``, ``lam`` ``(B, K, K)``; ``cholesky`` the
    factor ``L`` of a dense ``S = L L^T`` (None for a diagonal ``S``). Dense: by the
    push-through identity ``delta_i = S^-1 J_i^T (I - Lambda_i V_i)^-1 e_i`` with ``V_i =
    J_i S^-1 J_i^T``, ``(K, K)`` solves only, proper where ``Lambda_i V_i`` has no
    eigenvalue at or above 1 (:func:`dense_cavity`), which is where ``S - J_i^T Lambda_i
    J_i`` is positive definite. Returns ``(shift (B, P), first_order (B,), mahalanobis
    (B,))``.
    """
    gradients = jnp.einsum("bkp,bk->bp", rows, e)
    if cholesky is None:
        removed = jnp.sum(rows * jnp.einsum("bkl,blp->bkp", lam, rows), axis=1)  # (B, P)
        proper = jnp.all(precision - removed > 0, axis=1)
        shift = gradients / jnp.where(proper[:, None], precision - removed, precision)
        return shift, ~proper, jnp.sqrt(jnp.sum(shift**2 * precision, axis=1))
    size, (count, k) = precision.shape[0], e.shape
    whitened = jax.scipy.linalg.solve_triangular(
        cholesky, rows.reshape(-1, size).T, lower=True
    ).reshape(size, count, k)  # L^-1 J_i^T
    v = jnp.einsum("pbk,pbl->bkl", whitened, whitened)
    _, reliability = dense_cavity(v, lam)
    proper = reliability < 1.0
    eye = jnp.eye(k, dtype=e.dtype)
    solved = jnp.linalg.solve(eye - lam @ v, e[..., None])[..., 0]
    weights = jnp.where(proper[:, None], solved, e)
    whitened_shift = jnp.einsum("pbk,bk->pb", whitened, weights)  # L^-1 J_i^T u_i = L^T delta_i
    shift = jax.scipy.linalg.solve_triangular(cholesky.T, whitened_shift, lower=False).T
    return shift, ~proper, jnp.linalg.norm(whitened_shift, axis=0)


def _summaries(shift, sd, first_order, mahalanobis, prediction, keep_shifts):
    """The per-example summaries of :class:`Sensitivity` from a block of shifts."""
    standardized = shift / sd
    largest = jnp.argmax(jnp.abs(standardized), axis=1)
    signed = jnp.take_along_axis(standardized, largest[:, None], axis=1)[:, 0]
    summary = {
        "max_abs_standardized_shift": jnp.abs(signed),
        "largest_coordinate": largest.astype(jnp.int32),
        "largest_standardized_shift": signed,
        "mahalanobis": mahalanobis,
        "first_order": first_order,
        "prediction_shift": prediction,
    }
    if keep_shifts:
        summary["shift"] = shift
    return summary


def _test_derivatives(model, mean, test_arrays, test_static, plate, names):
    """Loss gradients ``g_t`` ``(M, P)`` of the test examples and, with a predictor, their
    Jacobians ``J_t`` ``(M, K, P)`` (None without), by reverse passes (``M`` is small)."""
    args, kwargs = join_arguments(test_arrays, test_static)
    test_model = trace_model(model, *args, plate=plate, with_predictor=names or False, **kwargs)
    gradients = -jax.jacrev(test_model.log_lik)(mean)
    jacobian = None if names is None else jax.jacrev(test_model.predictor.fn)(mean)
    return gradients, jacobian


def _test_shifts(shift, test_gradients, test_jacobian) -> dict:
    """The ``test_`` fields of :class:`Sensitivity` for a block of shifts ``(B, P)``."""
    if test_gradients is None:
        return {}
    shifts = {"test_loss_shift": shift @ test_gradients.T}
    if test_jacobian is not None:
        shifts["test_prediction_shift"] = jnp.einsum("mkp,bp->bmk", test_jacobian, shift)
    return shifts


@partial(
    jax.jit,
    static_argnames=(
        "model",
        "static",
        "plate",
        "names",
        "gathered",
        "keep_shifts",
        "test_static",
    ),
)
def _sensitivity_core(
    mean,
    precision,
    arrays,
    test_arrays,
    *,
    model,
    static,
    plate,
    names,
    gathered,
    keep_shifts,
    test_static,
):
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=names or False, **kwargs)
    test_gradients = test_jacobian = None
    if test_static is not None:
        test_gradients, test_jacobian = _test_derivatives(
            model, mean, test_arrays, test_static, plate, names
        )
    dense = is_dense(precision)
    if dense:
        variance = jnp.diag(precision_solve(precision, jnp.eye(mean.shape[0], dtype=mean.dtype)))
    else:
        variance = 1.0 / precision
    sd = jnp.sqrt(variance)
    if names is None:
        gradients = per_example_gradients(plate_model.log_lik, mean)
        if dense:
            shift, first_order = _dense_shifts(plate_model.log_lik, mean, precision, gradients)
            mahalanobis = jnp.sqrt(jnp.einsum("np,pq,nq->n", shift, precision, shift))
        else:
            shift, first_order = _diag_shifts(plate_model.log_lik, mean, precision, gradients)
            mahalanobis = jnp.sqrt(jnp.sum(shift**2 * precision, axis=1))
        summary = _summaries(shift, sd, first_order, mahalanobis, None, keep_shifts)
        return sd, summary | _test_shifts(shift, test_gradients, None)
    predictor = plate_model.predictor
    e, lam = likelihood_curvature(predictor, predictor.fn(mean))
    if gathered is None:
        jacobian = jax.jacfwd(predictor.fn)(mean)  # (N, K, P), P passes over all N

        def rows_of(indices):
            return jacobian[indices]

    else:
        rows_of = partial(
            jacobian_rows, sliced_predictor(model, arrays, static, plate, names, gathered), mean
        )
    cholesky = jnp.linalg.cholesky(precision) if dense else None

    def block(indices):
        rows = rows_of(indices)
        shift, first_order, mahalanobis = _predictor_shifts(
            rows, e[indices], lam[indices], precision, cholesky
        )
        prediction = jnp.einsum("bkp,bp->bk", rows, shift)
        summary = _summaries(shift, sd, first_order, mahalanobis, prediction, keep_shifts)
        return summary | _test_shifts(shift, test_gradients, test_jacobian)

    size, k = mean.shape[0], e.shape[1]
    return sd, map_example_blocks(block, plate_model.num_examples, k * size)


def sensitivity(
    model: Callable,
    guide: AutoGaussian,
    params: dict,
    *args: Any,
    plate: str | None = None,
    keep_shifts: bool | None = None,
    test: tuple | None = None,
    test_kwargs: dict | None = None,
    **kwargs: Any,
) -> Sensitivity:
    """How the posterior mean moves when each example is removed, by MPE.

    Parameters
    ----------
    model : callable
        The NumPyro model the guide was fitted to.
    guide : AutoGaussian
        Its guide (dense or diagonal).
    params : dict
        Fitted guide params (e.g. ``BLR.run(...).params``).
    *args, **kwargs
        The model's arguments.
    plate : str, optional
        The plate of examples.
    keep_shifts : bool, optional
        Return the ``(N, P)`` arrays ``shift`` and ``standardized_shift``. Default: when
        one of them takes at most :data:`MAX_SHIFT_BYTES`; otherwise they are None and
        only the per-example summaries are returned (a network's ``N x P`` would not
        fit).
    test, test_kwargs : tuple and dict, optional
        The model's positional and keyword arguments for ``M`` held-out examples
        (observed values included): the influence of each training example on their
        losses and predictions is returned (``test_loss_shift``,
        ``test_prediction_shift``). ``M`` reverse passes.

    Returns
    -------
    Sensitivity
        ``shift`` and ``standardized_shift`` ``(N, P)`` (or None), the summaries
        ``max_abs_standardized_shift``, ``largest_coordinate``,
        ``largest_standardized_shift`` and ``mahalanobis`` ``(N,)``, the predictor's
        shift ``(N, K)`` (or None), the ``first_order`` flags ``(N,)``, ``posterior_sd``
        ``(P,)`` and the coordinate ``names``; with ``test``, the ``(N, M)`` test loss
        and ``(N, M, K)`` test prediction shifts.

    Raises
    ------
    ValueError
        When the test arguments give other latents or another predictor than the
        training ones, or the test shifts ``(N, M, K)`` would take more than
        :data:`MAX_SHIFT_BYTES` or the test Jacobians ``(M, K, P)`` more than 2 GiB.
        When the dense family's per-example Hessians ``(N, P, P)`` of a model without a
        predictor would take more than 2 GiB (use ``covariance="diag"``, whose diagonals
        need ``(N, P)``); when a model with a predictor cannot be run on a slice of its
        rows and its Jacobian ``(N, K, P)`` would take more than 2 GiB.
    TypeError
        ``keep_shifts`` not a bool or None; ``test`` not a tuple, ``test_kwargs`` not a
        dict; a guide that is not an AutoGaussian.
    ModelError
        From :func:`trace_model`, for a model it cannot use.

    Notes
    -----
    With a predictor, ``H_i`` is its prediction-space curvature ``J_i^T Lambda_i J_i``,
    the curvature :func:`~numpyro_mpe.loo` integrates with: then ``J_i delta_i = V_i (I
    - Lambda_i V_i)^-1 e_i`` is exactly the move of ``loo``'s cavity mean, and the cost
    is one reverse pass per example and predictor component (``O(N K P)``, memory
    ``O(B K P)`` for blocks of ``B`` examples) when the model can be run on a slice of
    its rows. ``J_i^T Lambda_i J_i`` is the exact ``hess l_i`` for a predictor linear in
    ``theta`` (a GLM, the conjugate case), and its Gauss-Newton part otherwise (a
    network). Without a predictor, ``H_i`` is the exact Hessian (``P`` passes over the
    data for the diagonal family, ``(N, P, P)`` for the dense one). Either way
    ``delta_i`` equals ``perturb(..., remove=[i])``'s mean minus ``m`` where ``perturb``
    uses the same ``H_i``; in the conjugate case it is the exact refit difference. The
    sensitivity of the seed's table, ``S^-1 g_i`` (the derivative of the mean with
    respect to the example's weight), is the ``first_order`` fallback.

    Examples
    --------
    >>> result = sensitivity(model, guide, fit.params, X, y)  # doctest: +SKIP
    >>> int(result.mahalanobis.argmax())  # the most influential example  # doctest: +SKIP
    >>> held_out = (X_test, y_test)  # doctest: +SKIP
    >>> on_test = sensitivity(model, guide, fit.params, X, y, test=held_out)  # doctest: +SKIP
    >>> int(on_test.test_loss_shift[:, 0].argmax())  # most helpful to test 0  # doctest: +SKIP
    """
    if not isinstance(guide, AutoGaussian):
        raise TypeError(
            f"sensitivity needs the AutoGaussian the params were fitted with, got guide "
            f"{type(guide).__name__}"
        )
    if keep_shifts is not None and not isinstance(keep_shifts, bool):
        raise TypeError(f"keep_shifts must be a bool or None, got {keep_shifts!r}")
    if test is not None and not isinstance(test, tuple):
        raise TypeError(
            f"sensitivity: test must be a tuple of the model's positional arguments for the "
            f"test examples, got {type(test).__name__}"
        )
    if test_kwargs is not None and not isinstance(test_kwargs, dict):
        raise TypeError(
            f"sensitivity: test_kwargs must be a dict, got {type(test_kwargs).__name__}"
        )
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    mean, precision = guide.checked_mean_precision(
        params, plate_model.num_latents, where="sensitivity"
    )
    mean = jnp.asarray(mean)
    precision = jnp.asarray(precision)
    num_examples, size = plate_model.num_examples, plate_model.num_latents
    itemsize = mean.dtype.itemsize
    names = None if plate_model.predictor is None else plate_model.predictor.names
    gathered = None
    if names is None and is_dense(precision):
        check_hessian_stack(
            num_examples,
            size,
            itemsize,
            what="sensitivity's dense per-example Hessians",
            advice="fit a covariance='diag' guide or subsample the examples",
        )
    if names is not None and size > DIRECTIONS_PER_STEP:
        plan = cached_row_slicing(model, plate, args, kwargs, plate_model)
        if plan.path == "gather":
            gathered = plan.gathered
        else:
            k = jax.eval_shape(plate_model.predictor.fn, mean).shape[1]
            needed = num_examples * k * size * itemsize
            if needed > MAX_HESSIAN_BYTES:
                raise ValueError(
                    f"sensitivity: the model cannot be run on a slice of its rows "
                    f"({plan.reason}), and its Jacobian of {needed / 2**30:.3g} GiB "
                    f"({num_examples} x {k} x {size}) exceeds the "
                    f"{MAX_HESSIAN_BYTES / 2**30:.3g} GiB limit; index the model's "
                    "per-example arrays by the plate's examples, or subsample them"
                )
    if keep_shifts is None:
        keep_shifts = num_examples * size * itemsize <= MAX_SHIFT_BYTES
    test_arrays = test_static = None
    if test is not None or test_kwargs is not None:
        test_args, test_kwargs = test or (), test_kwargs or {}
        _check_test(model, plate, test_args, test_kwargs, plate_model, mean)
        test_arrays, test_static = split_arguments(test_args, test_kwargs)
    arrays, static = split_arguments(args, kwargs)
    core_options = {
        "model": model,
        "static": static,
        "plate": plate,
        "names": names,
        "gathered": gathered,
        "keep_shifts": keep_shifts,
        "test_static": test_static,
    }
    limit_compilations(_sensitivity_core, (mean, precision, arrays, test_arrays), core_options)
    sd, summary = _sensitivity_core(mean, precision, arrays, test_arrays, **core_options)
    shift = summary.pop("shift", None)
    return Sensitivity(
        shift=shift,
        standardized_shift=None if shift is None else shift / sd[None, :],
        posterior_sd=sd,
        names=latent_names(plate_model.latent_shapes),
        plate=plate_model.plate,
        **summary,
    )


def _check_test(model, plate, test_args, test_kwargs, plate_model, mean) -> None:
    """Raise before any work when the test arguments do not fit the training ones."""
    test_model = trace_model(model, *test_args, plate=plate, **test_kwargs)
    if test_model.latent_shapes != plate_model.latent_shapes:
        raise ValueError(
            f"sensitivity: the test arguments give the latents {test_model.latent_shapes}, "
            f"the training ones {plate_model.latent_shapes}; pass the same model's "
            "arguments for the held-out examples"
        )
    predictor = plate_model.predictor
    test_predictor = test_model.predictor
    if (predictor is None) != (test_predictor is None) or (
        predictor is not None and predictor.names != test_predictor.names
    ):
        raise ValueError(
            "sensitivity: the test examples' observations are driven by other parameters "
            "than the training ones; pass the same model's arguments for the held-out "
            "examples"
        )
    count, size, itemsize = test_model.num_examples, plate_model.num_latents, mean.dtype.itemsize
    k = 1 if predictor is None else jax.eval_shape(test_predictor.fn, mean).shape[1]
    shifts = plate_model.num_examples * count * k * itemsize
    if shifts > MAX_SHIFT_BYTES:
        raise ValueError(
            f"sensitivity: the test shifts ({plate_model.num_examples} x {count} x {k}) "
            f"would take {shifts / 2**30:.3g} GiB, above the {MAX_SHIFT_BYTES / 2**30:.3g} "
            "GiB limit; pass fewer test examples at a time"
        )
    jacobians = count * k * size * itemsize
    if jacobians > MAX_HESSIAN_BYTES:
        raise ValueError(
            f"sensitivity: the test examples' Jacobians ({count} x {k} x {size}) would take "
            f"{jacobians / 2**30:.3g} GiB, above the {MAX_HESSIAN_BYTES / 2**30:.3g} GiB "
            "limit; pass fewer test examples at a time"
        )
