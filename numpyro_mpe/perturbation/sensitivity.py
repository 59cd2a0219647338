"""Per-example sensitivity: how far the posterior mean moves when an example is removed.

Removing example ``i`` from ``q = N(m, S^-1)`` by the memory-perturbation equation
(:mod:`numpyro_mpe.perturbation.perturb`, ``rho = 1``) moves the mean by

.. math::

    \\delta_i = m^{\\setminus i} - m = (S - H_i)^{-1} g_i,

with ``g_i = grad l_i(m)`` and ``H_i = hess l_i(m)`` of ``l_i = -log p(y_i | theta)``
(``diag(H_i)`` for the diagonal family). Where ``S - H_i`` is not positive definite
(the example carries all the information about some direction) the first-order
influence ``S^-1 g_i`` is used instead and the example is flagged. In the conjugate case
(Gaussian likelihood, linear in ``theta``, known variance) ``delta_i`` is the exact
difference of the posterior means with and without example ``i``.

Each shift is also given in posterior-sd units per latent coordinate, ``delta_i / sd``,
and summarised per example by ``max_p |delta_ip / sd_p|`` and the Mahalanobis norm
``sqrt(delta_i^T S delta_i)`` (in posterior standard deviations along the direction of
the shift). When the observation is driven by a predictor ``f_i(theta)``
(:class:`numpyro_mpe.Predictor`), the shift of the example's own prediction is
``J_i delta_i``, ``J_i = d f_i / d theta`` at ``m``: the first-order change of
``f_i(m + delta_i) - f_i(m)``, exact for a predictor linear in ``theta``.
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
    check_hessian_stack,
    per_example_gradients,
    per_example_hessian_diagonals,
    per_example_hessians,
)
from numpyro_mpe.core.gaussian import is_dense, precision_solve
from numpyro_mpe.core.model import join_arguments, split_arguments, trace_model
from numpyro_mpe.core.rows import limit_compilations
from numpyro_mpe.infer.guide import AutoGaussian

__all__ = ["Sensitivity", "latent_names", "sensitivity"]


class Sensitivity(NamedTuple):
    """Per-example shifts of the posterior mean under removal (see module docstring).

    Attributes
    ----------
    shift : jax.Array
        ``(N, P)`` ``delta_i = m^{\\i} - m``, the move of the mean when example ``i`` is
        removed (unconstrained latent space).
    standardized_shift : jax.Array
        ``(N, P)`` ``delta_i / sd``, with ``sd`` the posterior standard deviations.
    max_abs_standardized_shift : jax.Array
        ``(N,)`` ``max_p |delta_ip / sd_p|``.
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
    """

    shift: jax.Array
    standardized_shift: jax.Array
    max_abs_standardized_shift: jax.Array
    mahalanobis: jax.Array
    prediction_shift: jax.Array | None
    first_order: jax.Array
    posterior_sd: jax.Array
    names: tuple[str, ...]
    plate: str


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


def _prediction_shift(predictor_fn: Callable, mean: jax.Array, shift: jax.Array) -> jax.Array:
    """``J_i delta_i`` ``(N, K)``: one Jacobian-vector product per latent coordinate."""
    _, jvp = jax.linearize(predictor_fn, mean)
    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)

    def add(total, inputs):
        direction, weights = inputs  # (P,), (N,)
        return total + jvp(direction) * weights[:, None], None

    f = predictor_fn(mean)
    total, _ = jax.lax.scan(add, jnp.zeros_like(f), (eye, shift.T))
    return total


@partial(jax.jit, static_argnames=("model", "static", "plate", "names"))
def _sensitivity_core(mean, precision, arrays, *, model, static, plate, names):
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=names or False, **kwargs)
    gradients = per_example_gradients(plate_model.log_lik, mean)
    if is_dense(precision):
        shift, first_order = _dense_shifts(plate_model.log_lik, mean, precision, gradients)
        variance = jnp.diag(precision_solve(precision, jnp.eye(mean.shape[0], dtype=mean.dtype)))
        mahalanobis = jnp.sqrt(jnp.einsum("np,pq,nq->n", shift, precision, shift))
    else:
        shift, first_order = _diag_shifts(plate_model.log_lik, mean, precision, gradients)
        variance = 1.0 / precision
        mahalanobis = jnp.sqrt(jnp.sum(shift**2 * precision, axis=1))
    prediction = None
    if names is not None:
        prediction = _prediction_shift(plate_model.predictor.fn, mean, shift)
    return shift, first_order, jnp.sqrt(variance), mahalanobis, prediction


def sensitivity(
    model: Callable,
    guide: AutoGaussian,
    params: dict,
    *args: Any,
    plate: str | None = None,
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

    Returns
    -------
    Sensitivity
        ``shift`` ``(N, P)``, ``standardized_shift`` ``(N, P)``, the summaries
        ``max_abs_standardized_shift`` and ``mahalanobis`` ``(N,)``, the predictor's shift
        ``(N, K)`` (or None), the ``first_order`` flags ``(N,)``, ``posterior_sd``
        ``(P,)`` and the coordinate ``names``.

    Raises
    ------
    ValueError
        When the dense family's per-example Hessians ``(N, P, P)`` would take more than
        2 GiB (use ``covariance="diag"``, whose diagonals need ``(N, P)``).
    ModelError
        From :func:`trace_model`, for a model it cannot use.

    Notes
    -----
    ``delta_i = (S - H_i)^{-1} g_i`` equals ``perturb(..., remove=[i])``'s mean minus
    ``m``; in the conjugate case it is the exact refit difference. The sensitivity of the
    seed's table, ``S^-1 g_i`` (the derivative of the mean with respect to the example's
    weight), is the ``first_order`` fallback.

    Examples
    --------
    >>> result = sensitivity(model, guide, fit.params, X, y)  # doctest: +SKIP
    >>> int(result.mahalanobis.argmax())  # the most influential example  # doctest: +SKIP
    """
    if not isinstance(guide, AutoGaussian):
        raise TypeError(
            f"sensitivity needs the AutoGaussian the params were fitted with, got guide "
            f"{type(guide).__name__}"
        )
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    mean, precision = guide.checked_mean_precision(
        params, plate_model.num_latents, where="sensitivity"
    )
    mean = jnp.asarray(mean)
    precision = jnp.asarray(precision)
    if is_dense(precision):
        check_hessian_stack(
            plate_model.num_examples,
            plate_model.num_latents,
            mean.dtype.itemsize,
            what="sensitivity's dense per-example Hessians",
            advice="fit a covariance='diag' guide or subsample the examples",
        )
    names = None if plate_model.predictor is None else plate_model.predictor.names
    arrays, static = split_arguments(args, kwargs)
    core_options = {"model": model, "static": static, "plate": plate, "names": names}
    limit_compilations(_sensitivity_core, (mean, precision, arrays), core_options)
    shift, first_order, sd, mahalanobis, prediction = _sensitivity_core(
        mean, precision, arrays, **core_options
    )
    standardized = shift / sd[None, :]
    return Sensitivity(
        shift=shift,
        standardized_shift=standardized,
        max_abs_standardized_shift=jnp.max(jnp.abs(standardized), axis=1),
        mahalanobis=mahalanobis,
        prediction_shift=prediction,
        first_order=first_order,
        posterior_sd=sd,
        names=latent_names(plate_model.latent_shapes),
        plate=plate_model.plate,
    )
