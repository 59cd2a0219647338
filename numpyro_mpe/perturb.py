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

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.gaussian import is_dense, precision_solve
from numpyro_mpe.guide import AutoGaussian
from numpyro_mpe.infer import check_positive_definite
from numpyro_mpe.model import join_arguments, split_arguments, trace_model

if TYPE_CHECKING:
    from numpyro_mpe.conjugate import AutoConjugate

__all__ = ["perturb", "removal_weights"]


def removal_weights(remove: ArrayLike, num_examples: int) -> jax.Array:
    """How much of each example to remove, ``eps`` of shape ``(N,)`` in ``[0, 1]``.

    Parameters
    ----------
    remove : array_like
        Integer indices of the examples to remove; a boolean mask ``(N,)`` (True
        removes); or float weights ``(N,)`` in ``[0, 1]`` giving each example's new
        weight (1 keeps it, 0 removes it, 0.5 halves it).
    num_examples : int
        ``N``.
    """
    array = np.asarray(remove)
    if array.size == 0:
        return jnp.zeros(num_examples)
    if array.dtype == bool:
        if array.shape != (num_examples,):
            raise ValueError(
                f"a boolean mask must have shape ({num_examples},), got {array.shape}"
            )
        return jnp.asarray(array, dtype=float)
    if np.issubdtype(array.dtype, np.integer):
        array = np.atleast_1d(array)
        if array.ndim != 1:
            raise ValueError(f"indices must be 1-d, got shape {array.shape}")
        bad = (array < 0) | (array >= num_examples)
        if bad.any():
            raise ValueError(f"index {array[bad][0]} is out of range for {num_examples} examples")
        return jnp.zeros(num_examples).at[array].set(1.0)
    if np.issubdtype(array.dtype, np.floating):
        if array.shape != (num_examples,):
            raise ValueError(f"weights must have shape ({num_examples},), got {array.shape}")
        bad = ~((array >= 0) & (array <= 1))
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(f"weight {array[index]} at index {index} is outside [0, 1]")
        return 1.0 - jnp.asarray(array)
    raise TypeError(f"remove must hold integers, booleans or floats, got {array.dtype}")


def _group_mask(remove: ArrayLike, groups: ArrayLike, num_examples: int) -> np.ndarray:
    """Boolean mask ``(N,)`` of the examples whose group label is in ``remove``."""
    labels = np.asarray(groups)
    if labels.shape != (num_examples,):
        raise ValueError(
            f"groups must hold one label per example, shape ({num_examples},); got shape "
            f"{labels.shape}"
        )
    wanted = np.atleast_1d(np.asarray(remove))
    missing = wanted[~np.isin(wanted, labels)]
    if missing.size:
        raise ValueError(f"group {missing[0].item()!r} is not among the labels in groups")
    return np.isin(labels, wanted)


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

    def removed_loss(theta):
        return -jnp.dot(eps, log_lik(theta))

    gradient = jax.grad(removed_loss)(mean)
    hessian = jax.hessian(removed_loss)(mean)
    new_precision = precision - (hessian if is_dense(precision) else jnp.diag(hessian))
    return mean + precision_solve(new_precision, gradient), new_precision


@partial(jax.jit, static_argnames=("model", "static", "plate"))
def _perturb_core(mean, precision, eps, arrays, *, model, static, plate):
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    return perturb_mean_precision(mean, precision, plate_model.log_lik, eps)


def perturb(
    model: Callable,
    guide: AutoGaussian | AutoConjugate,
    params: dict,
    remove: ArrayLike,
    *args: Any,
    plate: str | None = None,
    groups: ArrayLike | None = None,
    **kwargs: Any,
) -> dict:
    """Guide params of the posterior without the examples in ``remove``.

    With ``groups`` (a label per example), ``remove`` names whole groups: one MPE step
    with the groups' summed gradient and Hessian (exact division for Gaussian-linear
    terms).

    Parameters
    ----------
    model : callable
        The NumPyro model the guide was fitted to.
    guide : AutoGaussian or AutoConjugate
        Its guide (with :class:`~numpyro_mpe.conjugate.AutoConjugate`, exact division of
        the conjugate posterior's natural parameters).
    params : dict
        Fitted guide params (e.g. ``BLR.run(...).params``).
    remove : array_like
        Indices, a boolean mask ``(N,)``, or new per-example weights ``(N,)`` in
        ``[0, 1]`` (see :func:`removal_weights`).
    *args, **kwargs
        The model's arguments.
    plate : str, optional
        The plate of examples.
    groups : array_like, shape (N,), optional
        A group label per example; ``remove`` is then a label or a list of labels.

    Returns
    -------
    dict
        Guide params of ``q^{\\M}``, used exactly like ``params``.

    Raises
    ------
    NotPositiveDefiniteError
        When the perturbed precision is not positive definite (the removed examples
        carry all the information about some direction of ``theta``).
    """
    from numpyro_mpe.conjugate import AutoConjugate, conjugate_perturb  # imports this module

    if isinstance(guide, AutoConjugate):
        if groups is not None:
            remove = _group_mask(remove, groups, np.shape(groups)[0])
        return conjugate_perturb(model, guide, params, remove, *args, plate=plate, **kwargs)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    if groups is not None:
        remove = _group_mask(remove, groups, plate_model.num_examples)
    eps = removal_weights(remove, plate_model.num_examples)
    mean, precision = guide.mean_precision(params)
    arrays, static = split_arguments(args, kwargs)
    new_mean, new_precision = _perturb_core(
        mean, precision, eps, arrays, model=model, static=static, plate=plate
    )
    check_positive_definite(new_precision, "perturb")
    return guide.params_from_mean_precision(new_mean, new_precision)
