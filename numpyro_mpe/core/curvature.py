"""Per-example curvature in one place: what MPE, LOO, groups and the optimizers need.

Notation (``docs/math.md``): per-example loss ``l_i(theta) = -log p(y_i | theta)``, its
gradient ``g_i`` and Hessian ``H_i`` at the mean ``m``; with a predictor ``f_i(theta)``
``(K,)``, ``J_i = d f_i / d theta`` ``(K, P)``, ``e_i = d l_i / d f`` and ``Lambda_i =
d^2 l_i / d f^2``, and ``V_i = J_i S^-1 J_i^T``.

- :func:`value_grad_hessian`, :func:`gradient_hessian`: the total loss's gradient and
  Hessian (dense or diagonal), as the optimizers step with them.
- :func:`per_example_gradients`, :func:`per_example_hessians`,
  :func:`per_example_hessian_diagonals`: ``g_i`` ``(N, P)``, ``H_i`` ``(N, P, P)`` or
  their diagonals ``(N, P)``.
- :func:`weighted_gradient_hessian`: ``sum_i w_i g_i`` and ``sum_i w_i H_i`` (one
  ``(P, P)``, never ``(N, P, P)``); :func:`group_terms`: the same per group.
- :func:`likelihood_curvature`: ``e_i`` and ``Lambda_i`` in prediction space.
- :func:`prediction_space_covariances`, :func:`row_covariances`, :func:`dense_cavity`:
  ``V_i`` and the leave-one-out ``V_i^{\\i}`` with the reliability value.
- :func:`gauss_newton_matrix`: the prior's Hessian plus ``sum_i w_i J_i^T Lambda_i J_i``.

Structured curvature (K-FAC, last layer, low rank) plugs in here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from numpyro_mpe.core.gaussian import covariance_root, is_dense
from numpyro_mpe.core.model import Predictor

__all__ = [
    "DIRECTIONS_PER_STEP",
    "GROUPS_PER_BATCH",
    "MAX_HESSIAN_BYTES",
    "check_hessian_stack",
    "dense_cavity",
    "gauss_newton_matrix",
    "gradient_hessian",
    "group_terms",
    "jacobian_rows",
    "likelihood_curvature",
    "map_example_blocks",
    "per_example_gradients",
    "per_example_hessian_diagonals",
    "per_example_hessians",
    "prediction_space_covariances",
    "row_covariances",
    "value_grad_hessian",
    "weighted_gradient_hessian",
]

DIRECTIONS_PER_STEP = 8
"""Jacobian-vector products per scan step when streaming over the ``P`` directions."""

MAX_HESSIAN_BYTES = 2 * 1024**3
"""Largest stack of ``(P, P)`` Hessians (per example or per group) formed at once."""

_ROW_BLOCK_VALUES = 2**20  # Jacobian-row values (examples x K x P) held at once
GROUPS_PER_BATCH = 8
"""Groups whose terms are computed at once (``lax.map`` batch) by per-group loops."""


def check_hessian_stack(count: int, size: int, itemsize: int, *, what: str, advice: str):
    """Raise ``ValueError`` before ``count`` Hessians of ``size x size`` values would
    exceed :data:`MAX_HESSIAN_BYTES`; ``what`` names them (``"per-example Hessians"``),
    ``advice`` says what to do instead."""
    needed = count * size**2 * itemsize
    if needed > MAX_HESSIAN_BYTES:
        raise ValueError(
            f"{what} of {needed / 2**30:.1f} GiB ({count} x {size}^2) exceed the "
            f"{MAX_HESSIAN_BYTES / 2**30:.0f} GiB limit; {advice}"
        )


def value_grad_hessian(loss_fn: Callable, theta: jax.Array):
    """``(L(theta), grad L(theta) (P,), hess L(theta) (P, P))`` of a total loss (the
    curvature Newton, online Newton and VON step with)."""
    loss, gradient = jax.value_and_grad(loss_fn)(theta)
    return loss, gradient, jax.hessian(loss_fn)(theta)


def gradient_hessian(loss_fn: Callable, theta: jax.Array, *, dense: bool = True):
    """``grad L(theta)`` ``(P,)`` and ``hess L(theta)`` ``(P, P)``, or its diagonal
    ``(P,)`` when ``dense`` is False."""
    hessian = jax.hessian(loss_fn)(theta)
    return jax.grad(loss_fn)(theta), hessian if dense else jnp.diagonal(hessian)


def per_example_gradients(log_lik: Callable, mean: jax.Array) -> jax.Array:
    """``g_i = grad l_i(m)``, ``(N, P)``, by forward mode (``P`` passes, not ``N``)."""
    return -jax.jacfwd(log_lik)(mean)


def per_example_hessians(log_lik: Callable, mean: jax.Array) -> jax.Array:
    """``H_i = hess l_i(m)``, ``(N, P, P)``."""
    return -jax.jacfwd(jax.jacfwd(log_lik))(mean)


def per_example_hessian_diagonals(log_lik: Callable, mean: jax.Array) -> jax.Array:
    """``diag H_i``, ``(N, P)``, one direction at a time: memory ``O(N P)``."""
    gradient_fn = jax.jacfwd(log_lik)

    def hessian_diagonal_column(direction):  # (P,) unit vector -> H_i[p, p] for all i
        column = -jax.jvp(gradient_fn, (mean,), (direction,))[1]  # (N, P)
        return column @ direction

    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)
    return jax.lax.map(hessian_diagonal_column, eye).T


def weighted_gradient_hessian(log_lik: Callable, mean: jax.Array, weights: jax.Array):
    """``sum_i w_i g_i`` ``(P,)`` and ``sum_i w_i H_i`` ``(P, P)`` at ``m``, from the
    gradient and Hessian of ``-sum_i w_i log p(y_i | theta)``."""

    def weighted_loss(theta):
        return -jnp.dot(weights, log_lik(theta))

    return jax.grad(weighted_loss)(mean), jax.hessian(weighted_loss)(mean)


def group_terms(log_lik: Callable, mean, codes, num_groups: int, *, dense: bool):
    """Per group ``G``: ``l_G(m)`` ``(G,)``, ``g_G`` ``(G, P)`` and ``H_G`` ``(G, P, P)``
    or its diagonal ``(G, P)``; ``codes`` ``(N,)`` holds each example's group in
    ``[0, num_groups)``."""

    def terms(group):
        indicator = (codes == group).astype(mean.dtype)

        def loss(theta):
            return -jnp.dot(indicator, log_lik(theta))

        value, gradient = jax.value_and_grad(loss)(mean)
        hessian = jax.hessian(loss)(mean)
        return value, gradient, hessian if dense else jnp.diagonal(hessian)

    return jax.lax.map(terms, jnp.arange(num_groups), batch_size=GROUPS_PER_BATCH)


def gauss_newton_matrix(predictor: Predictor, log_prior: Callable, weights) -> Callable:
    """``theta -> (P, P)``: the exact Hessian of the negative log prior plus the
    generalised Gauss-Newton matrix ``sum_i w_i J_i^T Lambda_i J_i`` of the likelihood
    terms. ``weights``: a scalar or ``(N,)``."""

    def gauss_newton(theta):
        f = predictor.fn(theta)

        def total_loss(f_):
            return -jnp.sum(predictor.log_lik(f_))

        # Lambda_i J_i for all i at once: the Hessian-vector product in f of each column.
        jacobian = jax.jacfwd(predictor.fn)(theta)  # (n, K, P)
        gradient_fn = jax.grad(total_loss)
        curved = jax.vmap(
            lambda column: jax.jvp(gradient_fn, (f,), (column,))[1], in_axes=2, out_axes=2
        )(jacobian)  # (n, K, P)
        weighted = curved * jnp.reshape(weights, (-1,) + (1,) * (curved.ndim - 1))
        likelihood = jnp.einsum("nkp,nkq->pq", jacobian, weighted)
        return likelihood - jax.hessian(log_prior)(theta)

    return gauss_newton


def likelihood_curvature(predictor: Predictor, f: jax.Array):
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


def prediction_space_covariances(predictor_fn: Callable, mean, precision, lam):
    """Full-data ``V_i``, cavity ``V_i^{\\i}`` (both ``(N, K, K)``) and reliability ``(N,)``.

    Streams over the ``P`` directions of ``theta``, ``DIRECTIONS_PER_STEP`` Jacobian-vector
    products at a time, so memory is ``O(N K^2)``: the ``(N, K, P)`` Jacobian is never
    formed.
    """
    f, jvp = jax.linearize(predictor_fn, mean)
    columns_of = jax.vmap(jvp)
    zeros = jnp.zeros(f.shape + f.shape[1:], f.dtype)
    chunk = min(DIRECTIONS_PER_STEP, mean.shape[0])
    if is_dense(precision):
        # V = (J L^-T)(J L^-T)^T with S = L L^T; the rows of L^-1 are the directions.
        whitening = jax.scipy.linalg.solve_triangular(
            jnp.linalg.cholesky(precision), jnp.eye(mean.shape[0], dtype=mean.dtype), lower=True
        )

        def accumulate_dense(acc, directions):
            columns = columns_of(directions)  # (chunk, N, K)
            return acc + jnp.einsum("cnk,cnl->nkl", columns, columns), None

        v, _ = jax.lax.scan(accumulate_dense, zeros, _direction_chunks(whitening, chunk))
        return v, *dense_cavity(v, lam)

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


def jacobian_rows(rows: Callable, mean: jax.Array, indices: jax.Array) -> jax.Array:
    """``J_i`` ``(B, K, P)`` of the examples ``indices`` ``(B,)``, each by ``K`` reverse
    passes through the model on that example's rows alone; ``rows(indices) ->
    Predictor`` as :func:`numpyro_mpe.core.rows.sliced_predictor` builds it."""

    def one(index):
        return jax.jacrev(lambda theta: rows(index[None]).fn(theta))(mean)[0]

    return jax.vmap(one)(indices)


def row_covariances(row_jacobian: Callable, num_examples: int, precision, lam):
    """As :func:`prediction_space_covariances`, from per-example Jacobian rows.

    ``row_jacobian(indices (B,)) -> (B, K, P)``, the rows ``J_i`` of those examples, each
    by reverse passes through the model on that example's data alone: ``O(N K P)`` for
    all rows instead of ``P`` passes over all ``N`` examples. Blocks of examples are
    processed in turn, so memory is ``O(B K P)``.
    """
    dense = is_dense(precision)
    size, k = precision.shape[0], lam.shape[1]
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
            ).reshape(size, indices.shape[0], k)
            v = jnp.einsum("pbk,pbl->bkl", whitened, whitened)
            return v, *dense_cavity(v, curvature)
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

    return map_example_blocks(block, num_examples, k * size)


def map_example_blocks(block_fn: Callable, num_examples: int, values_per_example: int):
    """``block_fn(indices (B,))`` over all examples in blocks, outputs joined ``(N, ...)``.

    ``B`` is chosen so that a block holds about ``2^20`` of the values that
    ``values_per_example`` counts (``K P`` for Jacobian rows): memory ``O(B K P)``, one
    ``lax.map`` step per block. The last block repeats the last example where ``N`` is not
    a multiple of ``B``; the repeats are dropped.
    """
    chunk = int(min(num_examples, max(1, _ROW_BLOCK_VALUES // max(1, values_per_example))))
    num_blocks = -(-num_examples // chunk)
    blocks = jnp.minimum(jnp.arange(num_blocks * chunk), num_examples - 1)
    results = jax.lax.map(block_fn, blocks.reshape(num_blocks, chunk))
    return jax.tree.map(lambda r: r.reshape((-1, *r.shape[2:]))[:num_examples], results)


def dense_cavity(v, lam):
    """Cavity ``V (I - Lambda V)^-1`` ``(B, K, K)`` and reliability ``(B,)`` from ``V``."""
    if v.shape[1] == 1:
        reliability = lam[:, 0, 0] * v[:, 0, 0]
        return v / (1.0 - reliability)[:, None, None], reliability
    root = covariance_root(v)
    reliability = jnp.linalg.eigvalsh(jnp.swapaxes(root, 1, 2) @ lam @ root)[:, -1]
    eye = jnp.eye(v.shape[1], dtype=v.dtype)
    transposed = jnp.swapaxes
    cavity = transposed(
        jnp.linalg.solve(eye - transposed(lam @ v, 1, 2), transposed(v, 1, 2)), 1, 2
    )
    return cavity, reliability
