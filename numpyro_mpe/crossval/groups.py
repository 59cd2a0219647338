"""Leave-one-group-out predictive densities from the memory-perturbation equation.

Removing a whole group ``G`` of examples (a county, a class, a subject) is one MPE step
with the group's summed terms ``l_G = sum_{i in G} l_i``, ``g_G = grad l_G(m)`` and
``H_G = hess l_G(m)``, not a sum of per-example corrections:

.. math::

    q^{\\setminus G}(\\theta) = \\frac{q(\\theta)\\, e^{Q_G(\\theta)}}{Z_G}
        = N\\big(m + (S - H_G)^{-1} g_G,\\ (S - H_G)^{-1}\\big),

with ``Q_G`` the second-order expansion of ``l_G`` at ``m``. The leave-group-out
predictive density of the group's observations jointly is

.. math::

    \\log p(y_G \\mid y_{-G}) \\approx \\log \\int p(y_G \\mid \\theta)\\,
        q^{\\setminus G}(\\theta)\\, d\\theta
        = \\underbrace{-l_G(m) + \\tfrac12 \\log\\frac{|S - H_G|}{|S|}
          - \\tfrac12 g_G^T (S - H_G)^{-1} g_G}_{-\\log Z_G \\text{ (closed form)}}
        + \\log E_{q}\\big[e^{Q_G(\\theta) - l_G(\\theta)}\\big].

``method="cavity"`` keeps the closed form (the last term is 0 when ``l_G`` is
quadratic: Gaussian likelihood, linear predictor, known variance, where this equals
refitting without the group); ``method="is"`` adds the last term by Pareto-smoothed
importance sampling with draws from the full-data ``q`` (independent draws per group;
its Pareto ``k`` says when they are not enough). For the diagonal family ``H_G`` is
replaced by its diagonal. Groups whose cavity ``S - H_G`` is not positive definite
(reliability >= 1) fall back to ``S``.

With a predictor, each example's density given the data without its group, ``log
p(y_i | y_{-G(i)})``, is integrated in prediction space as :func:`numpyro_mpe.loo` does:
its mean is the loss on the removed group's examples (leave-one-class-out, LOCO).

**Large groups.** The Newton decrement ``g'^T H'^{-1} g'`` of ``L_{-G}(theta) = -log
p(theta, y_{-G})`` at the cavity mean says how far one MPE step falls short of the
leave-group-out mode. Above ``CORRECTION_THRESHOLD = 0.1`` (``method="cavity"`` and
``"is"``; ``"paper"`` stays the plug-in)
:func:`~numpyro_mpe.crossval.newton_correction.leave_out_laplace` corrects the group:

1. damped Newton steps on ``L_{-G}`` from the cavity mean, until the decrement is below
   ``CORRECTION_TOL = 1e-8`` (at most ``MAX_NEWTON_STEPS = 10``), give the leave-group-out
   Laplace posterior ``r = N(m_r, S_r^{-1})``, ``S_r = hess L_{-G}(m_r)`` (its
   diagonal for the diagonal family);
2. the group's density ``int p(y_G | theta) r(theta) dtheta`` is integrated by Laplace's
   method at the mode ``c`` of the tilted density ``p(y_G | theta) r(theta)`` (Newton
   steps from ``m``), with ``l_G`` expanded to second order at ``c`` (``l_G(c)``,
   ``gamma = grad l_G(c)``, ``H_c = hess l_G(c)``, ``delta = m_r - c``,
   ``beta = gamma + H_c delta``):

.. math::

    \\log p(y_G \\mid y_{-G}) \\approx -l_G(c) - \\gamma^T\\delta - \\tfrac12 \\delta^T H_c
        \\delta + \\tfrac12 \\log\\frac{|S_r|}{|S_r + H_c|}
        + \\tfrac12 \\beta^T (S_r + H_c)^{-1} \\beta .

For the one-step cavity (``r = q^{\\setminus G}``, ``c = m``) this is the closed form
above; ``method="is"`` adds ``log E_t[exp(Q_c - l_G)]`` with draws from the tilted
Gaussian ``t = N(m_r - (S_r + H_c)^{-1} beta, (S_r + H_c)^{-1})`` in place of ``q``, and
``example_elpd`` integrates each example under ``r``. Expanding ``l_G`` at ``m`` instead
of ``c`` is not enough: on the kidiq LOCO the tilted mode lies about 4 posterior sd from
``m`` and that expansion misses the refits by 18-31 nats.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.core.curvature import (
    GROUPS_PER_BATCH,
    gradient_hessian,
    group_terms,
    prediction_space_covariances,
)
from numpyro_mpe.core.gaussian import draws_from_standard_normal, is_dense
from numpyro_mpe.core.model import Predictor, join_arguments, trace_model
from numpyro_mpe.core.quadrature import log_predictive
from numpyro_mpe.crossval.importance import log_normalizer
from numpyro_mpe.crossval.newton_correction import (
    CORRECTION_THRESHOLD,
    MAX_NEWTON_STEPS,
    LeaveOutLaplace,
    laplace_log_density,
    leave_out_laplace,
)
from numpyro_mpe.perturbation.removal import check_group_labels

__all__ = ["GroupLOO", "group_codes", "group_loo_core"]


class GroupLOO(NamedTuple):
    """Leave-one-group-out arrays for ``G`` groups of ``N`` examples.

    Attributes
    ----------
    elpd : jax.Array, shape (G,)
        ``log p(y_G | y_-G)``.
    lppd : jax.Array, shape (G,)
        ``log E_q[p(y_G | theta)]`` under the full-data posterior (closed form).
    reliability : jax.Array, shape (G,)
        Largest eigenvalue of ``S^{-1/2} H_G S^{-1/2}``: the share of the posterior
        precision the group carries along its most informed direction.
    example_elpd : jax.Array, shape (N,) or None
        ``log p(y_i | y_{-G(i)})``, with a predictor; None otherwise.
    pareto_k, mcse : jax.Array, shape (G,) or None
        ``method="is"``: the Pareto k and Monte Carlo standard error of the sampled term.
    newton_decrement : jax.Array, shape (G,)
        ``g'^T H'^{-1} g'`` of the log joint without the group at the cavity mean (one MPE
        step): 0 when the cavity is the leave-group-out Laplace posterior; above 1, the
        cavity mean is more than about one posterior sd from the leave-group-out mode.
    newton_steps : jax.Array, shape (G,), int32
        Newton steps taken from the cavity mean toward the leave-group-out mode: 0 for
        the groups at or below :data:`CORRECTION_THRESHOLD` (and for ``"paper"``).
    corrected_decrement : jax.Array, shape (G,)
        The same decrement where the group's density was computed: at the corrected mean
        after ``newton_steps`` steps, ``newton_decrement`` where no step was taken.
    """

    elpd: jax.Array
    lppd: jax.Array
    reliability: jax.Array
    example_elpd: jax.Array | None
    pareto_k: jax.Array | None
    mcse: jax.Array | None
    newton_decrement: jax.Array
    newton_steps: jax.Array
    corrected_decrement: jax.Array


def group_codes(groups: ArrayLike, num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct labels ``(G,)`` and each example's group code ``(N,)`` in ``[0, G)``.

    Raises
    ------
    ValueError, TypeError
        As :func:`numpyro_mpe.perturbation.removal.check_group_labels`: not one label per
        example, NaN or None labels, or labels of mixed types (numbers and strings).
    """
    labels = check_group_labels(groups, num_examples)
    distinct, codes = np.unique(labels, return_inverse=True)
    return distinct, codes.astype(np.int32)


def _log_det_and_quad(precision, gradient):
    """``log|C|`` and ``g^T C^-1 g`` for a batch of dense ``(G, P, P)`` or diagonal
    ``(G, P)`` precisions; NaN where ``C`` is not positive definite."""
    if precision.ndim == 3:
        factor = jnp.linalg.cholesky(precision)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), -1)
        solved = jax.scipy.linalg.cho_solve((factor, True), gradient[..., None])[..., 0]
        return log_det, jnp.sum(gradient * solved, -1)
    return jnp.sum(jnp.log(precision), -1), jnp.sum(gradient**2 / precision, -1)


def _closed_form(loss, gradient, hessian, mean, precision):
    """``-log Z_G`` (cavity), the lppd and reliability, each ``(G,)``; cavity params."""
    dense = is_dense(precision)
    expand = precision[None] if dense else precision[None, :]
    full_log_det, _ = _log_det_and_quad(expand, jnp.zeros_like(mean)[None])
    cavity_precision = expand - hessian
    cavity_log_det, cavity_quad = _log_det_and_quad(cavity_precision, gradient)
    tilted_log_det, tilted_quad = _log_det_and_quad(expand + hessian, gradient)
    if dense:
        cholesky = jnp.linalg.cholesky(precision)
        half = jax.scipy.linalg.solve_triangular(cholesky, hessian, lower=True)
        whitened = jax.scipy.linalg.solve_triangular(
            cholesky, jnp.swapaxes(half, 1, 2), lower=True
        )
        reliability = jnp.linalg.eigvalsh(whitened)[:, -1]
    else:
        reliability = jnp.max(hessian / precision, axis=1)
    valid = (reliability < 1.0) & jnp.isfinite(cavity_log_det)
    _, plug_in_quad = _log_det_and_quad(expand, gradient)
    elpd = -loss + jnp.where(
        valid, 0.5 * (cavity_log_det - full_log_det) - 0.5 * cavity_quad, -0.5 * plug_in_quad
    )
    lppd = -loss - 0.5 * (tilted_log_det - full_log_det) + 0.5 * tilted_quad
    cavity_precision = jnp.where(
        valid.reshape((-1,) + (1,) * (cavity_precision.ndim - 1)), cavity_precision, expand
    )
    if dense:
        shift = jax.scipy.linalg.cho_solve(
            (jnp.linalg.cholesky(cavity_precision), True), gradient[..., None]
        )[..., 0]
    else:
        shift = gradient / cavity_precision
    return elpd, lppd, reliability, valid, mean + shift, cavity_precision


def _sampled_correction(log_lik, codes, expansion, proposal_mean, proposal_precision, key, num):
    """PSIS estimate of ``log E_t[exp(Q_G - l_G)]`` per group: ``(G,)`` each of value,
    Pareto k and MCSE; independent draws per group.

    ``expansion`` is ``(center, loss, gradient, hessian)`` stacked over groups: ``Q_G`` is
    ``l_G`` expanded to second order at ``center``; the proposal ``t`` of group ``G`` is
    ``N(proposal_mean[G], proposal_precision[G]^-1)``.
    """
    center, loss, gradient, hessian = expansion
    dim = center.shape[1]

    def log_ratios(group):
        z = jax.random.normal(jax.random.fold_in(key, group), (num, dim), center.dtype)
        theta = draws_from_standard_normal(z, proposal_mean[group], proposal_precision[group])[0]
        offsets = theta - center[group]
        indicator = (codes == group).astype(center.dtype)
        group_loss = -jax.vmap(log_lik)(center[group] + offsets) @ indicator
        h = hessian[group]
        curvature = (
            jnp.einsum("sp,pq,sq->s", offsets, h, offsets)
            if h.ndim == 2
            else jnp.sum(offsets**2 * h, 1)
        )
        quadratic = loss[group] + offsets @ gradient[group] + 0.5 * curvature
        return quadratic - group_loss

    ratios = jax.lax.map(log_ratios, jnp.arange(loss.shape[0]), batch_size=GROUPS_PER_BATCH)
    return log_normalizer(ratios.T, num)


def _newton_decrements(log_joint, codes, cavity_mean, dense: bool):
    """``(G,)`` Newton decrements of ``-log p(theta, y_-G)`` at each group's cavity mean."""

    def decrement(group_and_mean):
        group, mean = group_and_mean

        def loss(theta):
            return -log_joint(theta, (codes != group).astype(mean.dtype))

        gradient, hessian = gradient_hessian(loss, mean, dense=dense)
        if not dense:
            return jnp.sum(gradient**2 / hessian)
        return gradient @ jnp.linalg.solve(hessian, gradient)

    groups = jnp.arange(cavity_mean.shape[0])
    return jax.lax.map(decrement, (groups, cavity_mean), batch_size=GROUPS_PER_BATCH)


def _example_densities(predictor: Predictor, codes, cavity_mean, cavity_precision):
    """``log p(y_i | y_{-G(i)})`` ``(N,)``: each example under its group's cavity."""
    num_examples, k = predictor.fn(cavity_mean[0]).shape
    zeros = jnp.zeros((num_examples, k, k), cavity_mean.dtype)

    def add_group(total, inputs):
        group, mean, precision = inputs
        v = prediction_space_covariances(predictor.fn, mean, precision, zeros)[0]
        density = log_predictive(predictor, predictor.fn(mean), v)
        return total + jnp.where(codes == group, density, 0.0), None

    initial = jnp.zeros(num_examples, cavity_mean.dtype)
    inputs = (jnp.arange(cavity_mean.shape[0]), cavity_mean, cavity_precision)
    return jax.lax.scan(add_group, initial, inputs)[0]


def _corrected_groups(plate_model, codes, mean, cavity_mean, decrement, *, dense, max_steps):
    """:func:`leave_out_laplace` for every group whose one-step decrement exceeds
    :data:`CORRECTION_THRESHOLD` (a real branch: the others cost nothing); fields
    stacked over groups, ``steps`` 0 for the others."""
    size = mean.shape[0]
    curvature_shape = (size, size) if dense else (size,)

    def skip(group, start):
        zero = jnp.zeros((), mean.dtype)
        return LeaveOutLaplace(
            mean=start,
            precision=jnp.zeros(curvature_shape, mean.dtype),
            steps=jnp.zeros((), jnp.int32),
            decrement=zero,
            center=mean,
            loss=zero,
            gradient=jnp.zeros_like(mean),
            hessian=jnp.zeros(curvature_shape, mean.dtype),
        )

    def correct(group, start):
        block = (codes == group).astype(mean.dtype)
        return leave_out_laplace(
            plate_model.log_prior,
            plate_model.log_lik,
            1.0 - block,
            block,
            start,
            mean,
            dense=dense,
            max_steps=max_steps,
        )

    def one(inputs):
        group, start, one_step = inputs
        far = ~(one_step <= CORRECTION_THRESHOLD)
        return jax.lax.cond(far, correct, skip, group, start)

    groups = jnp.arange(cavity_mean.shape[0])
    return jax.lax.map(one, (groups, cavity_mean, decrement))


@partial(
    jax.jit,
    static_argnames=(
        "model",
        "static",
        "plate",
        "names",
        "method",
        "num_groups",
        "num_samples",
        "max_newton_steps",
    ),
)
def group_loo_core(
    mean,
    precision,
    codes,
    arrays,
    seed,
    *,
    model,
    static,
    plate,
    names,
    method,
    num_groups,
    num_samples,
    max_newton_steps=MAX_NEWTON_STEPS,
) -> GroupLOO:
    """Jitted once per model, argument structure, method and number of groups.

    ``method``: ``"cavity"`` (closed form), ``"paper"`` (the full-data precision ``S``
    in place of ``S - H_G``, never corrected) or ``"is"`` (closed form plus the sampled
    term). With ``"cavity"`` and ``"is"``, groups whose one-step Newton decrement exceeds
    :data:`CORRECTION_THRESHOLD` are corrected by :func:`leave_out_laplace` (at most
    ``max_newton_steps`` steps; 0 turns the correction off).
    """
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=names or False, **kwargs)
    dense = is_dense(precision)
    loss, gradient, hessian = group_terms(
        plate_model.log_lik, mean, codes, num_groups, dense=dense
    )
    elpd, lppd, reliability, valid, cavity_mean, cavity_precision = _closed_form(
        loss, gradient, hessian, mean, precision
    )
    decrement = _newton_decrements(plate_model.log_joint, codes, cavity_mean, dense)
    steps = jnp.zeros(num_groups, jnp.int32)
    corrected_decrement = decrement
    if method == "paper":
        _, plug_in_quad = _log_det_and_quad(
            precision[None] if dense else precision[None, :], gradient
        )
        elpd = -loss - 0.5 * plug_in_quad
    proposal_mean = jnp.broadcast_to(mean, cavity_mean.shape)
    proposal_precision = jnp.broadcast_to(precision, cavity_precision.shape)
    expansion = (proposal_mean, loss, gradient, hessian)
    if method != "paper" and max_newton_steps > 0:
        laplace = _corrected_groups(
            plate_model,
            codes,
            mean,
            cavity_mean,
            decrement,
            dense=dense,
            max_steps=max_newton_steps,
        )
        new_expansion = (laplace.center, laplace.loss, laplace.gradient, laplace.hessian)
        corrected_elpd, tilted_mean, tilted_precision = laplace_log_density(
            new_expansion, laplace.mean, laplace.precision
        )
        use = (laplace.steps > 0) & jnp.isfinite(corrected_elpd)

        def pick(new, old):
            return jnp.where(use.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)

        elpd = pick(corrected_elpd, elpd)
        valid = pick(True, valid)
        steps = pick(laplace.steps, steps)
        corrected_decrement = pick(laplace.decrement, decrement)
        cavity_mean = pick(laplace.mean, cavity_mean)
        cavity_precision = pick(laplace.precision, cavity_precision)
        expansion = tuple(map(pick, new_expansion, expansion))
        proposal_mean = pick(tilted_mean, proposal_mean)
        proposal_precision = pick(tilted_precision, proposal_precision)
    pareto_k = mcse = None
    if method == "is":
        correction, pareto_k, mcse = _sampled_correction(
            plate_model.log_lik,
            codes,
            expansion,
            proposal_mean,
            proposal_precision,
            jax.random.PRNGKey(seed),
            num_samples,
        )
        elpd = elpd + jnp.where(valid, correction, 0.0)
    example_elpd = None
    if names is not None:
        example_elpd = _example_densities(
            plate_model.predictor, codes, cavity_mean, cavity_precision
        )
    return GroupLOO(
        elpd,
        lppd,
        reliability,
        example_elpd,
        pareto_k,
        mcse,
        decrement,
        steps,
        corrected_decrement,
    )
