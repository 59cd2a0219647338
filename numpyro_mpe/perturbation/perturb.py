"""The memory-perturbation equation: the posterior without (or reweighting) examples.

Removing the set ``M`` with weights ``eps_j`` (1 removes, fractions downweight) from
``q = N(m, S^-1)`` is one opposite BLR step with ``rho = 1``:

.. math::

    S^{\\setminus M} = S - \\sum_{j \\in M} \\epsilon_j H_j,\\qquad
    m^{\\setminus M} = m + (S^{\\setminus M})^{-1} \\sum_{j \\in M} \\epsilon_j g_j,

with ``g_j = grad l_j(m)`` and ``H_j = hess l_j(m)`` (the delta method). For the
diagonal family ``H_j`` is replaced by its diagonal. When every removed ``l_j`` is
quadratic in ``theta`` (Gaussian likelihood, linear predictor, known variance) this is
exact posterior division: it equals the refit without ``M``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.core.curvature import weighted_gradient_hessian
from numpyro_mpe.core.gaussian import check_positive_definite, is_dense, precision_solve
from numpyro_mpe.core.model import join_arguments, split_arguments, trace_model
from numpyro_mpe.core.rows import (
    bucket_size,
    cached_row_slicing,
    gather_rows,
    limit_compilations,
)
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.perturbation.removal import (
    check_removal_arguments,
    group_mask,
    removal_weights,
)

#: ``perturb`` runs the model on the removed examples alone when they are at most ``N``
#: divided by this, and the model can be run on a slice of its rows.
ROWS_FRACTION = 8

__all__ = [
    "ROWS_FRACTION",
    "perturb",
    "perturb_core",
    "perturb_guide",
    "perturb_mean_precision",
    "perturb_rows_core",
]


def perturb_mean_precision(
    mean: jax.Array,
    precision: jax.Array,
    log_lik: Callable[[jax.Array], jax.Array],
    eps: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """MPE on ``(m, S)``: remove ``eps``-weighted examples; ``log_lik: theta -> (N,)``.

    Uses the gradient and Hessian of ``sum_j eps_j l_j`` (one ``(P, P)`` array, never
    ``(N, P, P)``).
    """

    gradient, hessian = weighted_gradient_hessian(log_lik, mean, eps)
    new_precision = precision - (hessian if is_dense(precision) else jnp.diag(hessian))
    return mean + precision_solve(new_precision, gradient), new_precision


@partial(jax.jit, static_argnames=("model", "static", "plate"))
def perturb_core(mean, precision, eps, arrays, *, model, static, plate):
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    return perturb_mean_precision(mean, precision, plate_model.log_lik, eps)


@partial(jax.jit, static_argnames=("model", "static", "plate", "plan"))
def perturb_rows_core(mean, precision, indices, eps, arrays, *, model, static, plate, plan):
    """:func:`perturb_core` with the model run on the removed examples ``indices`` ``(M,)``
    alone (``eps`` ``(M,)`` their weights; padding entries have weight 0): ``O(M)`` per
    Hessian-vector product instead of ``O(N)``. ``plan``: a ``"gather"``
    :class:`~numpyro_mpe.core.rows.MinibatchPlan`."""
    args, kwargs = join_arguments(gather_rows(arrays, plan, indices), static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    return perturb_mean_precision(mean, precision, plate_model.log_lik, eps)


def perturb(
    model: Callable,
    guide: Any,
    params: dict,
    remove: ArrayLike | None,
    *args: Any,
    plate: str | None = None,
    groups: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    **kwargs: Any,
) -> dict:
    """Guide params of the posterior without the examples in ``remove``, or with every
    example reweighted by ``weights``.

    With ``groups`` (a label per example), ``remove`` names whole groups: one MPE step
    with the groups' summed gradient and Hessian (exact division for Gaussian-linear
    terms).

    Parameters
    ----------
    model : callable
        The NumPyro model the guide was fitted to.
    guide : AutoGaussian or AutoConjugate
        Its guide (with :class:`~numpyro_mpe.AutoConjugate`, exact division of
        the conjugate posterior's natural parameters).
    params : dict
        Fitted guide params (e.g. ``BLR.run(...).params``).
    remove : array_like of int or bool, or None
        Which examples to remove: integer indices, or a boolean mask ``(N,)`` (True
        removes); an empty ``remove`` (``[]``) removes nothing and returns the posterior
        unchanged. A float array is refused (``TypeError``): pass new weights as
        ``weights=``. None when ``weights`` is given.
    *args, **kwargs
        The model's arguments (a model keyword named ``plate``, ``groups`` or
        ``weights`` is taken by ``perturb`` itself).
    plate : str, optional
        The plate of examples.
    groups : array_like, shape (N,), optional
        A group label per example (all numbers or all strings, none NaN); ``remove`` is
        then a label or a list of labels.
    weights : array_like, shape (N,), optional, keyword-only
        New per-example weights in ``[0, 1]`` instead of ``remove`` (1 keeps, 0 removes,
        0.5 halves): ``perturb(model, guide, params, None, *args, weights=w)``. See
        :func:`removal_weights`.

    Returns
    -------
    dict
        Guide params of ``q^{\\M}``, used exactly like ``params``.

    Raises
    ------
    TypeError
        Before any work, for a float ``remove`` (without ``groups``), a boolean ``remove``
        with ``groups`` whose labels are not booleans, both or neither of ``remove`` and
        ``weights``, ``weights`` with ``groups``, or boolean ``weights``.
    ValueError
        For a mask, weights or groups of the wrong shape, indices out of range, weights
        outside ``[0, 1]``, NaN group labels or labels not among ``groups``.
    NotPositiveDefiniteError
        When the perturbed precision is not positive definite (the removed examples
        carry all the information about some direction of ``theta``).
    """
    check_removal_arguments(remove, weights, groups=groups)
    return perturb_guide(guide, model, params, remove, args, kwargs, plate, groups, weights)


@functools.singledispatch
def perturb_guide(
    guide: Any,
    model: Callable,
    params: dict,
    remove: ArrayLike,
    args: tuple,
    kwargs: dict,
    plate: str | None,
    groups: ArrayLike | None,
    weights: ArrayLike | None,
) -> dict:
    """:func:`perturb` for one family of guides, chosen by the guide's type.

    A guide family brings its own removal by registering here
    (``@perturb_guide.register(MyGuide)``), as :class:`~numpyro_mpe.AutoConjugate` does.
    """
    raise TypeError(
        f"perturb does not support the guide {type(guide).__name__}; use "
        "numpyro_mpe.AutoGaussian or numpyro_mpe.AutoConjugate"
    )


@perturb_guide.register
def _perturb_gaussian(
    guide: AutoGaussian,
    model: Callable,
    params: dict,
    remove: ArrayLike,
    args: tuple,
    kwargs: dict,
    plate: str | None,
    groups: ArrayLike | None,
    weights: ArrayLike | None,
) -> dict:
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    if groups is not None:
        remove = group_mask(remove, groups, plate_model.num_examples)
    eps = removal_weights(remove, plate_model.num_examples, weights=weights)
    mean, precision = guide.checked_mean_precision(
        params, plate_model.num_latents, where="perturb"
    )
    arrays, static = split_arguments(args, kwargs)
    core_options = {"model": model, "static": static, "plate": plate}
    touched = np.flatnonzero(np.asarray(eps))
    num_examples = plate_model.num_examples
    plan = None
    if touched.size <= num_examples // ROWS_FRACTION:
        plan = cached_row_slicing(model, plate, args, kwargs, plate_model)
    if plan is not None and plan.path == "gather":
        # Padded to a few sizes (one compilation each) with weight-0 copies of example 0.
        size = min(bucket_size(touched.size), num_examples)
        indices = np.zeros(size, np.int32)
        indices[: touched.size] = touched
        removed = jnp.zeros(size, eps.dtype).at[: touched.size].set(eps[touched])
        operands = (mean, precision, jnp.asarray(indices), removed, arrays)
        options = {**core_options, "plan": plan}
        limit_compilations(perturb_rows_core, operands, options)
        new_mean, new_precision = perturb_rows_core(*operands, **options)
    else:
        limit_compilations(perturb_core, (mean, precision, eps, arrays), core_options)
        new_mean, new_precision = perturb_core(mean, precision, eps, arrays, **core_options)
    check_positive_definite(new_precision, "perturb")
    return guide.params_from_mean_precision(new_mean, new_precision)
