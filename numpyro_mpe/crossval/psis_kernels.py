"""Jitted kernels of PSIS-LOO (see :mod:`numpyro_mpe.crossval.psis` for the estimator).

Top-``n`` selection, the generalized Pareto tail fit, the per-block LOO computation,
the ESS of ``relative_eff`` and the block streaming; pure JAX, CPU and GPU alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "MIN_TAIL_LEN",
    "compute_dtype",
    "default_block",
    "ess_block",
    "loo_block",
    "psis_columns",
    "stream_blocks",
    "top_sorted",
]

MIN_TAIL_LEN = 5
_GPD_PRIOR = 3.0  # Zhang & Stephens grid prior
_GPD_MIN_GRID = 30
_K_PRIOR_WEIGHT = 10.0  # weakly informative prior on k: N(0.5, .) with weight 10 draws
_CPU_BLOCK_ELEMENTS = 2**19  # default block on CPU: 512K values (cache-sized; faster than 4M)
_GPU_BLOCK_ELEMENTS = 2**25


def top_sorted(values: jax.Array, count: int, capacity: int) -> tuple[jax.Array, jax.Array]:
    """The ``count`` largest entries of each column, descending, and their row indices.

    Exact selection without a full sort (XLA's CPU sort is slow): a safeguarded search
    (interpolation steps on the counts alternating with bisection steps) finds a
    threshold that keeps between ``count`` and ``capacity`` entries, or, when ties make
    that impossible, the ``count``-th largest value itself; those entries are compacted
    into ``(capacity, B)`` and sorted there. Among ties the later row ranks higher, as
    in R's stable ascending ``sort.int``.

    Parameters
    ----------
    values : Array ``(S, B)``
        Finite or ``-inf`` (a zero weight). NaN or ``+inf`` cannot hang the search
        (it is capped) but make its result meaningless; callers refuse them.
    count, capacity : int
        Static, ``count <= capacity <= S``.

    Returns
    -------
    top : Array ``(count, B)``
    index : Array ``(count, B)`` of int32
    """
    n_rows, n_cols = values.shape
    target = 0.5 * (count + capacity)
    max_steps = _max_search_steps(values.dtype)

    def count_at_least(threshold):
        return jnp.sum(values >= threshold[None, :], axis=0, dtype=jnp.int32)

    def done(lo, hi, n_lo):
        # "not lo < hi" rather than "lo >= hi": a NaN bound (inf in the input makes
        # hi - lo inf or NaN) ends the search instead of looping forever.
        return (n_lo <= capacity) | ~(jnp.nextafter(lo, hi) < hi)

    def cond(state):
        lo, hi, n_lo, _, step = state
        return ~jnp.all(done(lo, hi, n_lo)) & (step < max_steps)

    def body(state):
        # Invariants: count_at_least(lo) = n_lo >= count; fewer than count entries > hi;
        # count_at_least(hi) = n_hi.
        lo, hi, n_lo, n_hi, step = state
        fraction = (n_lo - target) / jnp.maximum(n_lo - n_hi, 1).astype(values.dtype)
        fraction = jnp.where(step % 2 == 0, jnp.clip(fraction, 0.0, 1.0), 0.5)
        mid = jnp.clip(lo + fraction * (hi - lo), jnp.nextafter(lo, hi), jnp.nextafter(hi, lo))
        n_mid = count_at_least(mid)
        active = ~done(lo, hi, n_lo)
        up = active & (n_mid >= count)
        down = active & (n_mid < count)
        return (
            jnp.where(up, mid, lo),
            jnp.where(down, mid, hi),
            jnp.where(up, n_mid, n_lo),
            jnp.where(down, n_mid, n_hi),
            step + 1,
        )

    # The window starts at the smallest value above -inf (a zero weight, as MPE-IS can
    # meet), so hi - lo stays finite; at -inf only where fewer than count values are
    # above it: the search then stops at once and keeps the latest -inf ties.
    above_floor = values > -jnp.inf
    high = jnp.max(values, axis=0)
    low = jnp.min(jnp.where(above_floor, values, high[None, :]), axis=0)
    low = jnp.where(jnp.sum(above_floor, axis=0) >= count, low, -jnp.inf)
    init = (low, high, count_at_least(low), count_at_least(high), jnp.asarray(0, jnp.int32))
    lo, hi, n_lo, n_hi, _ = lax.while_loop(cond, body, init)
    # Within the window keep everything >= lo; otherwise lo, hi are adjacent floats and
    # the count-th largest value is whichever of them has at least count entries >= it.
    collapsed = n_lo > capacity
    threshold = jnp.where(collapsed & (n_hi >= count), hi, lo)

    def within_window(_):
        return values >= threshold[None, :]

    def with_ties(_):
        # Keep all entries above the threshold and the latest ties up to capacity (R's
        # stable ascending sort ranks the later of two tied draws higher).
        above = values > threshold[None, :]
        tied = values == threshold[None, :]
        n_above = jnp.sum(above, axis=0, dtype=jnp.int32)
        tied_rank = jnp.flip(jnp.cumsum(jnp.flip(tied, axis=0), axis=0, dtype=jnp.int32), axis=0)
        return above | (tied & (tied_rank <= (capacity - n_above)[None, :]))

    selected = lax.cond(jnp.any(collapsed), with_ties, within_window, None)
    # associative_scan: slower to compile than cumsum but about twice as fast on CPU.
    slot = lax.associative_scan(jnp.add, selected.astype(jnp.int32), axis=0) - 1
    slot = jnp.where(selected, slot, capacity)  # the extra row is a discard bin
    columns = jnp.arange(n_cols)[None, :]
    rows = jnp.broadcast_to(jnp.arange(n_rows, dtype=jnp.int32)[:, None], values.shape)
    index = jnp.zeros((capacity + 1, n_cols), jnp.int32).at[slot, columns].set(rows)[:capacity]
    valid = jnp.arange(capacity)[:, None] < jnp.sum(selected, axis=0)[None, :]
    candidates = jnp.where(valid, jnp.take_along_axis(values, index, axis=0), -jnp.inf)
    # Compaction kept row order, so a stable ascending sort leaves ties by increasing
    # row; reversed: descending, later draw first among ties.
    ascending, index_sorted = lax.sort((candidates, index), dimension=0, is_stable=True)
    return ascending[::-1][:count], index_sorted[::-1][:count]


def _max_search_steps(dtype) -> int:
    """An upper bound on the steps of :func:`top_sorted`'s search for finite input.

    Every other step bisects the window ``[lo, hi]``; a window as wide as twice the
    largest float reaches adjacent floats (spacing at least the smallest subnormal)
    after ``maxexp + 1 - (minexp - nmant)`` halvings. The cap only guarantees
    termination: with finite input the search always stops before it.
    """
    info = jnp.finfo(dtype)
    return 2 * (int(info.maxexp) - int(info.minexp) + int(info.nmant) + 2)


# --------------------------------------------------------------------------- PSIS core


def _gpd_tail_fit(top: jax.Array, tail_len: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zhang & Stephens (2009) fit to each column's tail, as ``posterior::gpdfit``.

    Parameters
    ----------
    top : Array ``(T + 1, B)``
        Largest log weights (shifted so the maximum is 0), descending.
    tail_len : Array ``(B,)`` of int
        Tail length ``n <= T`` per column; the cutoff is ``top[n]``.

    Returns
    -------
    k : Array ``(B,)``
        Shape estimate with the prior ``(n k + 5) / (n + 10)``; ``inf`` where it cannot
        be estimated (``n < 5``, a constant tail, first quartile equal to the minimum,
        or a NaN fit), as R's ``loo``.
    smoothed : Array ``(T, B)``
        Log of the GPD quantiles ``(n - j - 0.5) / n`` for tail slot ``j`` (descending
        order); meaningful where ``j < n`` and ``k`` is finite.
    """
    dtype = top.dtype
    n_slots = top.shape[0] - 1
    n = tail_len.astype(jnp.int32)
    n_float = n.astype(dtype)
    slot = jnp.arange(n_slots)[:, None]
    in_tail = slot < n[None, :]

    def at(array, index):
        return jnp.take_along_axis(array, jnp.clip(index, 0, array.shape[0] - 1)[None, :], 0)[0]

    cutoff = at(top, n)
    exp_cutoff = jnp.exp(cutoff)
    x = jnp.where(in_tail, jnp.exp(top[:n_slots]) - exp_cutoff[None, :], 0.0)
    x_max = x[0]
    x_min = at(x, n - 1)
    x_star = at(x, n - (n + 2) // 4)  # R: x[floor(n / 4 + 0.5)] of the ascending tail

    grid_max = _GPD_MIN_GRID + math.isqrt(n_slots)
    grid_size = _GPD_MIN_GRID + jnp.floor(jnp.sqrt(n_float))
    jj = jnp.arange(1, grid_max + 1, dtype=dtype)[:, None]
    theta = 1.0 / x_max + (1.0 - jnp.sqrt(grid_size / (jj - 0.5))) / _GPD_PRIOR / x_star
    # Masked slots have x = 0, so log1p(-theta x) = 0 there.
    k_grid = jnp.sum(jnp.log1p(-theta[:, None, :] * x[None, :, :]), axis=1) / n_float
    profile = n_float * (jnp.log(-theta / k_grid) - k_grid - 1.0)
    profile = jnp.where(jj <= grid_size, profile, -jnp.inf)
    grid_weights = jnp.exp(profile - jax.nn.logsumexp(profile, axis=0, keepdims=True))
    theta_hat = jnp.sum(theta * grid_weights, axis=0)
    k_hat = jnp.sum(jnp.log1p(-theta_hat * x), axis=0) / n_float
    sigma = -k_hat / theta_hat
    k = (k_hat * n_float + 0.5 * _K_PRIOR_WEIGHT) / (n_float + _K_PRIOR_WEIGHT)

    constant_tail = jnp.abs(top[0] - at(top, n - 1)) < np.finfo(np.float64).eps / 100
    fit_failed = (n < MIN_TAIL_LEN) | constant_tail | ~(x_star > x_min) | jnp.isnan(k)
    k = jnp.where(fit_failed, jnp.inf, k)

    prob = (n_float - slot - 0.5) / n_float
    safe_k = jnp.where((k == 0) | ~jnp.isfinite(k), 1.0, k)
    excess = jnp.where(
        k == 0,
        -sigma * jnp.log1p(-prob),
        sigma * jnp.expm1(-safe_k * jnp.log1p(-prob)) / safe_k,
    )
    return k, jnp.log(exp_cutoff + excess)


def psis_columns(
    log_ratios: jax.Array, tail_len: jax.Array, *, tail_cap: int, capacity: int
) -> tuple[jax.Array, jax.Array]:
    """Pareto-smoothed, truncated log weights of each column (maximum 0, unnormalized).

    Parameters
    ----------
    log_ratios : Array ``(S, B)``
    tail_len : Array ``(B,)`` of int, at most ``tail_cap``.
    tail_cap, capacity : int
        Static: the largest tail length and the selection buffer (``>= tail_cap + 1``).

    Returns
    -------
    log_weights : Array ``(S, B)``, at most 0 (the truncation at the largest raw ratio).
    pareto_k : Array ``(B,)``
    """
    n_draws, n_cols = log_ratios.shape
    log_weights = log_ratios - jnp.max(log_ratios, axis=0)
    top, index = top_sorted(log_weights, tail_cap + 1, capacity)
    pareto_k, smoothed = _gpd_tail_fit(top, tail_len)
    replace = (jnp.arange(tail_cap)[:, None] < tail_len[None, :]) & jnp.isfinite(smoothed)
    replace = replace & jnp.isfinite(pareto_k)
    target = jnp.where(replace, index[:tail_cap], n_draws)  # out of range: dropped
    columns = jnp.arange(n_cols)[None, :]
    log_weights = log_weights.at[target, columns].set(smoothed, mode="drop")
    return jnp.minimum(log_weights, 0.0), pareto_k


class _BlockResult(NamedTuple):
    """Per-block outputs: log weights ``(S, B)``, the rest ``(B,)``."""

    log_weights: jax.Array
    pareto_k: jax.Array
    elpd: jax.Array
    lpd: jax.Array
    mcse: jax.Array
    n_eff: jax.Array


@functools.partial(jax.jit, static_argnames=("tail_cap", "capacity"))
def loo_block(
    log_lik: jax.Array,
    log_correction: jax.Array,
    tail_len: jax.Array,
    r_eff: jax.Array,
    *,
    tail_cap: int,
    capacity: int,
) -> _BlockResult:
    """PSIS-LOO for a block of observations (columns).

    Three exponentials per value, each of a quantity at most 0 (nothing overflows, and
    what underflows is negligible next to the largest term): the weights
    ``w = exp(lw)``, the LOO predictive terms ``u = w lik / sum(w lik)`` (their log-sum
    is ``elpd``) and the likelihoods for ``lpd``. The MCSE then needs no further
    exponential: ``Var / E^2 = sum_s (u_s - w_s)^2 / r_eff``.

    Parameters
    ----------
    log_lik : Array ``(S, B)``
    log_correction : Array ``(S,)`` or ``(S, B)``
        Added to the log ratios ``-log_lik`` (``log p - log q`` for an approximate
        posterior, zeros otherwise): one value per draw shared by all observations, or
        one per draw and observation when each observation has its own proposal.
    tail_len : Array ``(B,)`` of int32
    r_eff : Array ``(B,)``
    """
    n_draws = log_lik.shape[0]
    log_weights, pareto_k = psis_columns(
        (log_correction if log_correction.ndim == 2 else log_correction[:, None]) - log_lik,
        tail_len,
        tail_cap=tail_cap,
        capacity=capacity,
    )
    weights = jnp.exp(log_weights)  # log_weights <= 0 with maximum 0
    weight_sum = jnp.sum(weights, axis=0)
    weights = weights / weight_sum
    log_weights = log_weights - jnp.log(weight_sum)

    log_terms = log_weights + log_lik
    log_terms_max = jnp.max(log_terms, axis=0)
    terms = jnp.exp(log_terms - log_terms_max)
    terms_sum = jnp.sum(terms, axis=0)
    elpd = log_terms_max + jnp.log(terms_sum)
    predictive_share = terms / terms_sum  # w_s lik_s / E

    log_lik_max = jnp.max(log_lik, axis=0)
    likelihood_sum = jnp.sum(jnp.exp(log_lik - log_lik_max), axis=0)
    lpd = log_lik_max + jnp.log(likelihood_sum / n_draws)

    # sum_s w_s^2 (lik_s - E)^2 / E^2 = sum_s (w_s lik_s / E - w_s)^2
    spread = jnp.sum(jnp.square(predictive_share - weights), axis=0)
    mcse = jnp.sqrt(jnp.log1p(spread / r_eff))
    n_eff = r_eff / jnp.sum(jnp.square(weights), axis=0)
    return _BlockResult(log_weights, pareto_k, elpd, lpd, mcse, n_eff)


# --------------------------------------------------------------------------- relative_eff


def _fft_good_size(n: int) -> int:
    """Smallest ``m >= n`` with no prime factor above 5 (R's ``fft_next_good_size``)."""
    if n <= 2:
        return 2
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m <= 1:
            return n
        n += 1


@functools.partial(jax.jit, static_argnames=("n_chains", "is_log"))
def ess_block(values: jax.Array, *, n_chains: int, is_log: bool) -> jax.Array:
    """``posterior::ess_basic`` (split chains) of each column's likelihood values.

    Parameters
    ----------
    values : Array ``(S, B)``
        Chain-major draws (``S = n_chains * n_draws``): log-likelihoods when ``is_log``
        (exponentiated after subtracting each column's maximum, which leaves the ESS
        unchanged) or the likelihood values themselves.

    Returns
    -------
    Array ``(B,)``
        Effective sample sizes; NaN for a constant column or fewer than 3 draws per
        split chain, as R.
    """
    n_total, n_obs = values.shape
    n_draws = n_total // n_chains
    x = values.T.reshape(n_obs, n_chains, n_draws)
    if is_log:
        x = jnp.exp(x - jnp.max(x, axis=(1, 2), keepdims=True))
    half = n_draws // 2
    if half >= 1:
        x = jnp.concatenate([x[:, :, :half], x[:, :, n_draws - half :]], axis=1)
    n_split_chains, n = x.shape[1], x.shape[2]
    if n < 3:
        return jnp.full((n_obs,), jnp.nan, values.dtype)

    chain_mean = jnp.mean(x, axis=2)
    centered = x - chain_mean[:, :, None]
    fft_size = _fft_good_size(n)
    spectrum = jnp.fft.rfft(centered, n=2 * fft_size, axis=2)
    power = spectrum.real**2 + spectrum.imag**2
    # R: Re(fft(|F|^2, inverse = TRUE))[1:n] / (n^2 * 2), an unnormalized inverse FFT.
    acov = jnp.fft.irfft(power, n=2 * fft_size, axis=2)[:, :, :n] * (fft_size / n**2)
    acov_mean = jnp.mean(acov, axis=1)  # (B, n)
    mean_var = acov_mean[:, 0] * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if n_split_chains > 1:
        var_plus = var_plus + jnp.var(chain_mean, axis=1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov_mean) / var_plus[:, None]
    rho = rho.at[:, 0].set(1.0)

    # Geyer's initial positive sequence, vectorized: pair k = (rho_2k, rho_2k+1). The
    # loop of R stops at the first pair K whose predecessor test fails; pairs < K enter
    # tau through their running minimum (the initial monotone sequence).
    n_pairs = n // 2
    pair_sum = rho[:, 0 : 2 * n_pairs : 2] + rho[:, 1 : 2 * n_pairs : 2]
    pair = jnp.arange(n_pairs)
    keep_going = (2 * pair[None, :] < n - 5) & (pair_sum > 0)
    last = jnp.argmax(~keep_going, axis=1)  # K
    monotone = lax.cummin(pair_sum, axis=1)
    head = jnp.sum(jnp.where(pair[None, :] < last[:, None], monotone, 0.0), axis=1)
    last_even = jnp.take_along_axis(rho, (2 * last)[:, None], axis=1)[:, 0]
    last_pair = jnp.take_along_axis(pair_sum, last[:, None], axis=1)[:, 0]
    last_even = jnp.where((last_pair >= 0) | (last_even > 0), last_even, 0.0)
    tau = -1.0 + 2.0 * head + last_even
    ess_max = n_split_chains * n
    tau = jnp.maximum(tau, 1.0 / math.log10(ess_max))
    ess = ess_max / tau

    spread = jnp.max(x, axis=(1, 2)) - jnp.min(x, axis=(1, 2))
    scale = jnp.max(jnp.abs(x), axis=(1, 2))
    constant = ~(spread >= np.finfo(np.float64).eps * scale) | (scale == 0)
    return jnp.where(constant, jnp.nan, ess)


# --------------------------------------------------------------------------- host driver


@functools.partial(jax.jit, static_argnames=("width",))
def _slice_columns(x: jax.Array, start: jax.Array, *, width: int) -> jax.Array:
    return lax.dynamic_slice_in_dim(x, start, width, axis=1)


def compute_dtype(x) -> np.dtype:
    """The dtype PSIS computes ``x`` in: its float dtype as JAX will hold it (float32
    unless x64 is enabled), at least float32.

    Half precision (``float16``, ``bfloat16``) is computed in float32: its 3 or 4
    significant digits cannot carry the weight normalization or the tail fit, and XLA's
    FFT (in :func:`ess_block`) refuses it. Integers are computed in float64 (float32
    without x64).
    """
    dtype = np.dtype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else np.dtype(np.float64)
    if dtype.itemsize < 4:
        dtype = np.dtype(np.float32)
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def default_block(n_draws: int) -> int:
    elements = _GPU_BLOCK_ELEMENTS if jax.default_backend() == "gpu" else _CPU_BLOCK_ELEMENTS
    return max(1, elements // max(n_draws, 1))


def stream_blocks(
    block_fn: Callable[..., tuple],
    matrix,
    per_obs: tuple[np.ndarray, ...],
    block: int,
    dtype: np.dtype,
    outputs: tuple[np.ndarray, ...],
) -> None:
    """Run ``block_fn`` over column blocks of ``matrix`` ``(S, N)``, filling ``outputs``.

    Every call sees exactly ``block`` columns (the last block is shifted left to stay in
    range, so nothing is padded and nothing recompiles); per-observation inputs are
    sliced alongside. An output with ``ndim == 2`` is ``(S, N)``, otherwise ``(N,)``. The
    next block is dispatched before the previous one is copied back, so transfers overlap
    compute.
    """
    n_obs = matrix.shape[1]
    on_device = isinstance(matrix, jax.Array)
    pending = None

    def collect(item):
        start, offset, stop, result = item
        for out, value in zip(outputs, result, strict=True):
            value = np.asarray(value)
            if out.ndim == 2:
                out[:, start:stop] = value[:, offset : offset + stop - start]
            else:
                out[start:stop] = value[offset : offset + stop - start]

    for start in range(0, n_obs, block):
        stop = min(start + block, n_obs)
        first = min(start, n_obs - block)
        if on_device:
            chunk = _slice_columns(matrix, jnp.asarray(first), width=block).astype(dtype)
        else:
            chunk = jnp.asarray(np.asarray(matrix[:, first : first + block], dtype=dtype))
        args = [jnp.asarray(a[first : first + block]) for a in per_obs]
        result = block_fn(chunk, *args)
        if pending is not None:
            collect(pending)
        pending = (start, start - first, stop, result)
    if pending is not None:
        collect(pending)
