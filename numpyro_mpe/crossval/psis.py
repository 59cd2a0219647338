"""Pareto-smoothed importance sampling leave-one-out cross-validation (PSIS-LOO) in JAX.

For posterior draws :math:`\\theta^{(s)}`, ``s = 1..S``, and pointwise log-likelihoods
:math:`\\ell_{si} = \\log p(y_i \\mid \\theta^{(s)})`, the leave-one-out importance ratios
are :math:`r_{si} \\propto 1 / p(y_i \\mid \\theta^{(s)})`. PSIS replaces the ``n_i`` largest
ratios of each observation by quantiles of a generalized Pareto distribution fitted to
them, truncates at the largest raw ratio and normalizes:

.. math::

    \\widehat{\\mathrm{elpd}}_i = \\log \\sum_s w_{si}\\, p(y_i \\mid \\theta^{(s)}),\\qquad
    n_i = \\lceil \\min(0.2 S,\\ 3 \\sqrt{S / r_{\\mathrm{eff},i}}) \\rceil .

The shape estimate :math:`\\hat k_i` is the diagnostic; estimates above
``good_k = min(1 - 1/log10(S), 0.7)`` are flagged. Everything follows R's ``loo``
package (with ``posterior``): the Zhang & Stephens (2009) profile fit with its
weakly informative prior on ``k`` (``k = (n k + 5) / (n + 10)``), ``relative_eff`` as
``posterior::ess_basic`` (split chains, Geyer's initial monotone sequence) on the
likelihood, and the Monte Carlo standard error

.. math::

    \\mathrm{mcse}_i = \\sqrt{\\log\\bigl(1 + \\mathrm{Var}_i / E_i^2\\bigr)},\\qquad
    \\mathrm{Var}_i = \\frac{\\sum_s w_{si}^2 (p(y_i \\mid \\theta^{(s)}) - E_i)^2}
    {r_{\\mathrm{eff},i}},\\quad E_i = \\exp(\\widehat{\\mathrm{elpd}}_i),

with ``mcse(elpd_loo) = sqrt(sum_i mcse_i^2)``.

The numerical core is a jitted function of one block of observations; blocks of a fixed
size are streamed through it (device memory is bounded by the block, not by the number
of observations) and the results are gathered on the host into ArviZ objects. The core
is pure JAX (no host callbacks), so it runs unchanged on CPU and GPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from arviz_stats.utils import ELPDDataLOO
from jax.typing import ArrayLike

from numpyro_mpe.core.options import check_flag
from numpyro_mpe.crossval.psis_kernels import (
    MIN_TAIL_LEN,
    compute_dtype,
    default_block,
    ess_block,
    loo_block,
    stream_blocks,
)
from numpyro_mpe.optim.base import check_count

__all__ = [
    "ELPDDataPSIS",
    "ParetoKWarning",
    "approximate_posterior_loo",
    "psis_loo",
    "relative_eff",
]

_TAIL_ROUND = 16  # round the static tail cap up to this, so nearby r_eff reuse the compile
_DEFAULT_OBS_DIM = "obs_dim"
_SAMPLE_DIMS = ("chain", "draw")  # arviz-stats' sample dims


class ParetoKWarning(UserWarning):
    """Some Pareto k estimates exceed ``good_k`` or could not be computed."""


@dataclass(kw_only=True, repr=False)
class ELPDDataPSIS(ELPDDataLOO):
    """PSIS-LOO result: an :class:`arviz_stats.utils.ELPDDataLOO` with R ``loo``'s extras.

    Besides the ``ELPDDataLOO`` fields (``elpd``, ``se``, ``p``, ``elpd_i``,
    ``pareto_k``, ``log_weights`` (smoothed, normalized), ``p_loo_i`` and ``n_eff_i``
    (the PSIS effective sample sizes), ...), it carries:

    Extra attributes
    ----------------
    mcse_elpd : float
        Monte Carlo standard error of ``elpd`` (R's ``mcse_loo``).
    mcse_elpd_i : DataArray
        Pointwise Monte Carlo standard errors ``(obs,)`` (R's ``mcse_elpd_loo``).
    r_eff : DataArray
        Relative efficiencies ``(obs,)`` used for the tail lengths and the MCSE.
    """

    mcse_elpd: float = None
    mcse_elpd_i: xr.DataArray = None
    r_eff: xr.DataArray = None

    def _table(self):
        table = super()._table()
        if self.mcse_elpd is None:
            return table
        return table + f"\n\nMonte Carlo SE of elpd_loo is {self.mcse_elpd:.2f}."


# --------------------------------------------------------------------------- selection


class _Layout(NamedTuple):
    """Where the draws and observations of a log-likelihood input sit."""

    matrix: object  # (S, N), numpy or jax
    n_chains: int
    n_draws: int
    obs_dim: str
    obs_coords: object
    chain_coords: object
    draw_coords: object


def _layout(log_lik, name: str = "log_lik") -> _Layout:
    """Validate ``(chain, draw, obs)`` / ``(draw, obs)`` input and view it as ``(S, N)``.

    A ``DataArray`` is read by its dimension names, as arviz-stats does (sample dims
    ``chain`` and ``draw``, the one remaining dimension the observations), in any order;
    other arrays by position.
    """
    obs_dim, obs_coords, chain_coords, draw_coords = _DEFAULT_OBS_DIM, None, None, None
    if isinstance(log_lik, xr.Dataset | xr.DataTree | Mapping):
        raise TypeError(
            f"{name} must be an array or a DataArray of shape (chain, draw, obs) or "
            f"(draw, obs); got a {type(log_lik).__name__}: pick one variable, e.g. "
            "idata['log_likelihood']['y']."
        )
    if isinstance(log_lik, xr.DataArray):
        log_lik = _sample_dims_first(log_lik, name)
        obs_dim = log_lik.dims[-1]
        if obs_dim in log_lik.coords:
            obs_coords = log_lik.coords[obs_dim].values
        if "chain" in log_lik.dims and "chain" in log_lik.coords:
            chain_coords = log_lik.coords["chain"].values
        if "draw" in log_lik.coords:
            draw_coords = log_lik.coords["draw"].values
        array = np.asarray(log_lik.values)
    elif isinstance(log_lik, jax.Array):
        array = log_lik
    else:
        try:
            array = np.asarray(log_lik)
        except ValueError as error:  # ragged nested lists
            raise ValueError(
                f"{name} must be a rectangular array of shape (chain, draw, obs) or "
                f"(draw, obs); {error}"
            ) from None
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (chain, draw, obs) or (draw, obs); got ndim={array.ndim} "
            f"with shape {tuple(array.shape)}."
        )
    if not (jnp.issubdtype(array.dtype, jnp.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be real-valued; got dtype {array.dtype}.")
    n_chains, n_draws = (1, array.shape[0]) if array.ndim == 2 else array.shape[:2]
    n_obs = array.shape[-1]
    if n_obs < 1 or n_chains * n_draws < 2:
        raise ValueError(
            f"{name} needs at least 2 draws and 1 observation; got shape {tuple(array.shape)}."
        )
    dims = ("chain", "draw", obs_dim)[-array.ndim :]
    _check_values(array, name, dims, magnitude_limit(compute_dtype(array), n_obs), n_obs)
    return _Layout(
        array.reshape(n_chains * n_draws, n_obs),
        n_chains,
        n_draws,
        obs_dim,
        obs_coords,
        chain_coords,
        draw_coords,
    )


def _sample_dims_first(log_lik: xr.DataArray, name: str) -> xr.DataArray:
    """``log_lik`` transposed to ``(chain, draw, obs)`` or ``(draw, obs)`` by dim names."""
    dims = tuple(log_lik.dims)
    sample_dims = tuple(dim for dim in _SAMPLE_DIMS if dim in dims)
    obs_dims = tuple(dim for dim in dims if dim not in _SAMPLE_DIMS)
    expected = (
        f"a DataArray {name} needs the sample dimension 'draw' (and optionally 'chain', "
        "arviz-stats' sample dims) and exactly one observation dimension, in any order, "
        "e.g. ('chain', 'draw', 'obs') or ('draw', 'obs')"
    )
    if "draw" not in dims:
        raise ValueError(f"{expected}; got dims {dims}, with no 'draw'.")
    if len(obs_dims) != 1:
        what = "none" if not obs_dims else f"{len(obs_dims)}: {obs_dims}"
        hint = f" (stack them into one: {name}.stack(obs=[...]))" if obs_dims else ""
        raise ValueError(f"{expected}; got dims {dims}, observation dimensions {what}{hint}.")
    return log_lik.transpose(*sample_dims, obs_dims[0])


def magnitude_limit(dtype: np.dtype, n_obs: int) -> float:
    """Largest ``|log_lik|`` PSIS-LOO accepts in ``dtype`` for ``n_obs`` observations.

    A log ratio, its distance to the largest ratio and the weighted log predictive
    terms are sums of at most four such values (with an approximate posterior's
    correction, which is held to the same limit); an eighth of the dtype's largest value
    leaves room for ``log S`` and rounding. The float64 totals over ``N`` observations
    (``elpd``, ``p_loo``, ``se``) are sums of ``N`` values of up to twice the limit.
    """
    float64_max = float(np.finfo(np.float64).max)
    return min(float(np.finfo(dtype).max) / 8, float64_max / (8 * max(n_obs, 1)))


def _check_values(array, name: str, dims: tuple[str, ...], limit: float, n_obs: int) -> None:
    """Raise ``ValueError`` naming the first (C order) non-finite entry of ``array``, or
    else the first entry whose magnitude exceeds ``limit``, before any work."""
    if not jnp.issubdtype(array.dtype, jnp.floating):
        return  # integers: finite, and far below any float dtype's limit
    xp = jnp if isinstance(array, jax.Array) else np
    # A limit above the dtype's largest value (half precision computed in float32) would
    # be cast to inf and let inf through: the dtype's largest value then bounds it.
    limit = min(limit, float(jnp.finfo(array.dtype).max))
    in_range = (array <= limit) & (array >= -limit)  # False for NaN and inf
    if bool(xp.all(in_range)):
        return
    finite = xp.isfinite(array)
    bad = ~finite if not bool(xp.all(finite)) else ~in_range
    flat = int(xp.argmax(bad.reshape(-1)))
    index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
    where = ", ".join(f"{dim} {i}" for dim, i in zip(dims, index, strict=True))
    n_bad = int(xp.sum(bad))
    value = float(array[index])
    if not np.isfinite(value):
        raise ValueError(
            f"{name} has {n_bad} non-finite value(s); the first is {value} at index {index} "
            f"({where}). PSIS-LOO needs finite values (R's loo rejects them too)."
        )
    dtype = compute_dtype(array)
    raise ValueError(
        f"{name} has {n_bad} value(s) too large in magnitude for PSIS-LOO in {dtype}; the "
        f"first is {value:.6g} at index {index} ({where}). |{name}| must be at most "
        f"{limit:.3g} here (the largest {dtype} / 8, and at most the largest float64 / "
        f"(8 N) for the totals over N = {n_obs} observations), so that log "
        "ratios, their differences and the totals cannot overflow"
        + (" (enable jax_enable_x64 for float64)." if dtype != np.float64 else ".")
    )


def _check_correction_range(log_correction: np.ndarray, dims, dtype, n_obs: int) -> None:
    """Raise ``ValueError`` unless every ``log_p - log_q`` lies within
    :func:`magnitude_limit` of its maximum (the shifted correction must not overflow)."""
    highest = float(log_correction.max())
    limit = magnitude_limit(dtype, n_obs)
    too_low = log_correction < highest - limit
    if not np.any(too_low):
        return
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(too_low)), too_low.shape))
    where = ", ".join(f"{dim} {i}" for dim, i in zip(dims, index, strict=True))
    raise ValueError(
        f"log_p - log_q spans too wide a range for PSIS-LOO in {dtype}: at index {index} "
        f"({where}) it is {float(log_correction[index]):.6g}, more than {limit:.3g} below "
        f"its maximum {highest:.6g}, so the log ratios would overflow."
    )


def _draw_values(name: str, values: ArrayLike | xr.DataArray, layout: _Layout) -> np.ndarray:
    """``log_p`` or ``log_q`` as float64, one value per draw of ``log_lik``, validated
    before any work: shape ``(chain, draw)`` as ``log_lik`` (``(1, S)`` for a
    ``(draw, obs)`` one) or ``(S,)`` chain-major.

    A ``DataArray`` with dimensions ``chain`` and ``draw`` is read by their names;
    anything else by position, with the exact shape checked, so that a ``(draw, chain)``
    array (R's layout) is refused rather than misread (only its total size once was).
    """
    n_chains, n_draws = layout.n_chains, layout.n_draws
    n_samples = n_chains * n_draws
    if isinstance(values, xr.DataArray) and set(values.dims) == {"chain", "draw"}:
        values = values.transpose("chain", "draw")
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array; {error}") from None
    if array.shape not in ((n_chains, n_draws), (n_samples,)):
        hint = ""
        if n_chains > 1 and array.shape == (n_draws, n_chains):
            hint = " That is (draw, chain), R's layout: pass its transpose."
        raise ValueError(
            f"{name} must have one value per draw of log_lik, shape (chain, draw) = "
            f"{(n_chains, n_draws)} or ({n_samples},) chain-major, {n_samples} draws in "
            f"all; got shape {array.shape}.{hint}"
        )
    if not (jnp.issubdtype(array.dtype, jnp.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be real-valued; got dtype {array.dtype}.")
    array = array.astype(np.float64)
    dims = ("chain", "draw")[-array.ndim :]
    _check_values(array, name, dims, float(np.finfo(np.float64).max), layout.matrix.shape[1])
    return array


def tail_lengths(r_eff: np.ndarray, n_samples: int) -> np.ndarray:
    """R's ``n_pareto``: ``ceiling(pmin(0.2 * S, 3 * sqrt(S / r_eff)))`` in float64."""
    return np.ceil(np.minimum(0.2 * n_samples, 3.0 * np.sqrt(n_samples / r_eff))).astype(np.int32)


def tail_buffers(tail_len: np.ndarray, n_samples: int) -> tuple[int, int]:
    """Static ``(tail_cap, capacity)`` of the block kernel for these tail lengths."""
    tail_cap = min(-(-int(tail_len.max()) // _TAIL_ROUND) * _TAIL_ROUND, n_samples - 1)
    return tail_cap, min(n_samples, tail_cap + 1 + max(8, (tail_cap + 1) // 2))


def _prepare_r_eff(r_eff, n_obs: int) -> np.ndarray:
    """Scalar or ``(N,)`` r_eff as float64 ``(N,)``; NaN entries become 1 (as R)."""
    values = np.asarray(r_eff.values if isinstance(r_eff, xr.DataArray) else r_eff)
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise TypeError(
            f"r_eff must be a real number or real numbers, one per observation; got dtype "
            f"{values.dtype} ({_abbreviate(r_eff)})."
        )
    values = values.astype(float)
    if values.ndim == 0:
        values = np.full(n_obs, float(values))
    if values.shape != (n_obs,):
        raise ValueError(
            f"r_eff must be a scalar or have one value per observation ({n_obs}); "
            f"got shape {values.shape}."
        )
    values = np.where(np.isnan(values), 1.0, values)
    if np.any(~np.isfinite(values)) or np.any(values <= 0):
        bad = int(np.argmax(~np.isfinite(values) | (values <= 0)))
        raise ValueError(f"r_eff must be positive and finite; r_eff[{bad}] = {values[bad]}.")
    return values


def _abbreviate(value: object) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_chunk_size(chunk_size: object) -> None:
    """Raise unless ``chunk_size`` is None (the default block) or an integer >= 1: a
    ``TypeError`` for a float, string or bool, a ``ValueError`` for 0 or a negative
    count (``0`` must not mean the default, nor ``-1`` an empty pass)."""
    if chunk_size is not None:
        check_count("chunk_size", chunk_size, 1)


def _check_likelihoods(layout: _Layout) -> None:
    """Raise ``ValueError`` naming the first negative entry of likelihood values (the
    input of ``relative_eff(..., log=False)``), which are log-likelihoods by mistake."""
    matrix = layout.matrix
    xp = jnp if isinstance(matrix, jax.Array) else np
    negative = matrix < 0
    if not bool(xp.any(negative)):
        return
    sample, obs = (int(i) for i in np.unravel_index(int(xp.argmax(negative)), matrix.shape))
    chain, draw = divmod(sample, layout.n_draws)
    where = f"chain {chain}, draw {draw}" if layout.n_chains > 1 else f"draw {draw}"
    raise ValueError(
        f"with log=False, log_lik must hold likelihoods (>= 0); it has "
        f"{int(xp.sum(negative))} negative value(s), the first {float(matrix[sample, obs])} "
        f"({where}, {layout.obs_dim} {obs}). Pass log=True (the default) for "
        "log-likelihoods."
    )


def _run_psis(
    layout: _Layout,
    r_eff: np.ndarray,
    log_correction: np.ndarray,
    chunk_size: int | None,
    return_log_weights: bool,
) -> tuple[np.ndarray | None, ...]:
    """Stream the PSIS-LOO block function over observations; host arrays out."""
    matrix = layout.matrix
    n_samples, n_obs = matrix.shape
    dtype = compute_dtype(matrix)
    tail_len = tail_lengths(r_eff, n_samples)
    tail_cap, capacity = tail_buffers(tail_len, n_samples)
    block = min(chunk_size or default_block(n_samples), n_obs)

    correction = jnp.asarray(log_correction, dtype)
    log_weights = np.empty((n_samples, n_obs), dtype) if return_log_weights else None
    pointwise = tuple(np.empty(n_obs, dtype) for _ in range(5))

    def block_fn(chunk, tail_len_block, r_eff_block):
        result = loo_block(
            chunk,
            correction,
            tail_len_block,
            r_eff_block,
            tail_cap=tail_cap,
            capacity=capacity,
        )
        return result if return_log_weights else result[1:]

    outputs = ((log_weights,) if return_log_weights else ()) + pointwise
    stream_blocks(block_fn, matrix, (tail_len, r_eff.astype(dtype)), block, dtype, outputs)
    return (log_weights, *pointwise)


# --------------------------------------------------------------------------- public API


def relative_eff(
    log_lik: ArrayLike | xr.DataArray,
    chain_id: ArrayLike | None = None,
    *,
    log: bool = True,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Relative MCMC efficiency ``ESS / S`` of each observation's likelihood (R ``relative_eff``).

    The ESS is ``posterior::ess_basic``, which current R ``loo`` calls: chains split in
    halves, FFT autocovariances, Geyer's initial positive and monotone sequences, of the
    likelihood values ``exp(log_lik)`` of each observation.

    Parameters
    ----------
    log_lik : array_like or DataArray, shape ``(chain, draw, obs)`` or ``(draw, obs)``
        Pointwise log-likelihoods (or likelihoods with ``log=False``, R's convention),
        read as by :func:`psis_loo` (a ``DataArray`` by its dimension names).
    chain_id : array_like ``(draw,)``, optional
        For a ``(draw, obs)`` input: the chain of each row (any labels; every chain the
        same length), as R's ``relative_eff(x, chain_id)``. Without it a 2-D input is one
        chain. Must be omitted for a 3-D input.
    log : bool, default True
        Whether ``log_lik`` holds log-likelihoods. They are exponentiated after
        subtracting each observation's maximum, which leaves the ESS unchanged and
        cannot overflow. With ``False`` the values must be likelihoods (``>= 0``).
    chunk_size : int, optional
        Observations per jitted block, an integer >= 1 (as for :func:`psis_loo`).

    Returns
    -------
    ndarray ``(obs,)``
        ``r_eff``. NaN where an observation's likelihood is constant (relative spread
        below machine epsilon) or a split chain has fewer than 3 draws, as R;
        :func:`psis_loo` replaces NaN by 1, as R's ``loo`` does.

    Raises
    ------
    ValueError
        Before any work: ``log_lik`` as for :func:`psis_loo`; a negative value with
        ``log=False`` (log-likelihoods passed as likelihoods); a ``chain_id`` with a 3-D
        input, of the wrong length or with chains of unequal length; ``chunk_size < 1``.
    TypeError
        A non-real dtype, a ``log`` that is not a bool or a ``chunk_size`` that is not
        an integer.

    Notes
    -----
    R's autocovariance divides an unnormalized inverse FFT of length ``2 M`` by
    ``2 n^2`` (``M`` the next 2-3-5-smooth size above ``n``); that scaling is kept so the
    values match R when ``M != n`` too. R's constant test is absolute (range of
    ``exp(log_lik)`` below ``2.2e-16``); ours is relative to the largest likelihood, so
    an observation whose likelihood is tiny but varies still gets a finite ESS.

    Examples
    --------
    >>> import numpy as np
    >>> from numpyro_mpe import relative_eff
    >>> ll = np.random.default_rng(0).normal(size=(4, 250, 3))
    >>> relative_eff(ll).shape
    (3,)
    """
    check_flag("log", log)
    _check_chunk_size(chunk_size)
    layout = _layout(log_lik)
    if not log:
        _check_likelihoods(layout)
    return _relative_eff(layout, chain_id, log=log, chunk_size=chunk_size)


def _relative_eff(
    layout: _Layout, chain_id: ArrayLike | None, *, log: bool, chunk_size: int | None
) -> np.ndarray:
    """:func:`relative_eff` of validated input."""
    matrix, n_chains = layout.matrix, layout.n_chains
    if chain_id is not None:
        if layout.n_chains != 1:
            raise ValueError("chain_id is only for a (draw, obs) input.")
        labels = np.asarray(chain_id)
        if labels.shape != (matrix.shape[0],):
            raise ValueError(
                f"chain_id must have one entry per draw ({matrix.shape[0]}); "
                f"got shape {labels.shape}."
            )
        unique, counts = np.unique(labels, return_counts=True)
        if np.any(counts != counts[0]):
            raise ValueError(f"Every chain must have the same number of draws; got {counts}.")
        order = np.argsort(labels, kind="stable")
        matrix = matrix[order] if isinstance(matrix, np.ndarray) else matrix[jnp.asarray(order)]
        n_chains = len(unique)
    n_samples, n_obs = matrix.shape
    dtype = compute_dtype(matrix)
    block = min(chunk_size or default_block(n_samples), n_obs)
    ess = np.empty(n_obs, dtype)

    def block_fn(chunk):
        return (ess_block(chunk, n_chains=n_chains, is_log=log),)

    stream_blocks(block_fn, matrix, (), block, dtype, (ess,))
    return ess / n_samples


def _obs_array(values: np.ndarray, layout: _Layout, name: str) -> xr.DataArray:
    coords = {} if layout.obs_coords is None else {layout.obs_dim: layout.obs_coords}
    return xr.DataArray(values, dims=(layout.obs_dim,), coords=coords, name=name)


def _build_result(
    layout: _Layout,
    r_eff: np.ndarray,
    arrays: tuple,
    *,
    approx_posterior: bool,
) -> ELPDDataPSIS:
    """Assemble the ArviZ result from host arrays and raise the Pareto k warnings."""
    log_weights, pareto_k, elpd_i, lpd_i, mcse_i, n_eff_i = arrays
    n_samples, n_obs = layout.matrix.shape
    good_k = min(1.0 - 1.0 / np.log10(n_samples), 0.7) if n_samples > 1 else 0.7
    _warn_pareto_k(pareto_k, good_k)

    p_loo_i = lpd_i - elpd_i
    elpd = float(np.sum(elpd_i, dtype=np.float64))
    se = _total_se(elpd_i)
    lw_da = None
    if log_weights is not None:
        coords = {
            "chain": np.arange(layout.n_chains)
            if layout.chain_coords is None
            else layout.chain_coords,
            "draw": np.arange(layout.n_draws)
            if layout.draw_coords is None
            else layout.draw_coords,
        }
        if layout.obs_coords is not None:
            coords[layout.obs_dim] = layout.obs_coords
        lw_da = xr.DataArray(
            log_weights.reshape(layout.n_chains, layout.n_draws, n_obs),
            dims=("chain", "draw", layout.obs_dim),
            coords=coords,
            name="log_weights",
        )
    return ELPDDataPSIS(
        elpd=elpd,
        se=se,
        p=float(np.sum(p_loo_i, dtype=np.float64)),
        n_samples=n_samples,
        n_data_points=n_obs,
        scale="log",
        warning=bool(np.any(pareto_k > good_k)),
        good_k=good_k,
        elpd_i=_obs_array(elpd_i, layout, "elpd_i"),
        pareto_k=_obs_array(pareto_k, layout, "pareto_k"),
        approx_posterior=approx_posterior,
        log_weights=lw_da,
        p_loo_i=_obs_array(p_loo_i, layout, "p_loo_i"),
        n_eff_i=_obs_array(n_eff_i, layout, "n_eff_i"),
        mcse_elpd=float(np.sqrt(np.sum(np.square(mcse_i, dtype=np.float64)))),
        mcse_elpd_i=_obs_array(mcse_i, layout, "mcse_elpd_i"),
        r_eff=_obs_array(r_eff, layout, "r_eff"),
    )


def _total_se(elpd_i: np.ndarray) -> float:
    """``sqrt(N var(elpd_i))`` (``ddof=1``; 0 for one observation), computed on the
    values scaled by their largest deviation, so it is finite whenever the deviations
    are (``np.var`` squares them first, which overflows beyond ``1e154``)."""
    n_obs = elpd_i.size
    if n_obs < 2:
        return 0.0
    values = np.asarray(elpd_i, dtype=np.float64)
    deviations = values - np.mean(values)
    scale = float(np.max(np.abs(deviations)))
    if scale == 0.0:
        return 0.0
    scaled_var = np.sum(np.square(deviations / scale)) / (n_obs - 1)
    return float(scale * np.sqrt(n_obs * scaled_var))


def _warn_pareto_k(pareto_k: np.ndarray, good_k: float) -> None:
    n_obs = pareto_k.size
    failed = np.isinf(pareto_k)
    if np.any(failed):
        warnings.warn(
            f"The Pareto k could not be estimated for {int(failed.sum())} of {n_obs} "
            f"observations (first: index {int(np.argmax(failed))}): fewer than "
            f"{MIN_TAIL_LEN} tail draws, all tail log-ratios equal (e.g. a constant "
            "log-likelihood) or a tail too far from a generalized Pareto. As in R's loo, "
            "their k is set to inf and their importance weights are left unsmoothed "
            "(exact for a constant log-likelihood).",
            ParetoKWarning,
            stacklevel=4,
        )
    high = (pareto_k > good_k) & ~failed
    if np.any(high):
        warnings.warn(
            f"Estimated shape parameter of the Pareto distribution is greater than "
            f"{good_k:.2f} for {int(high.sum())} of {n_obs} observations (largest "
            f"k = {float(pareto_k[high].max()):.2f} at index "
            f"{int(np.flatnonzero(high)[np.argmax(pareto_k[high])])}). Importance sampling "
            "is unreliable there: consider a more robust model, moment matching or "
            "refitting those observations.",
            ParetoKWarning,
            stacklevel=4,
        )


def psis_loo(
    log_lik: ArrayLike | xr.DataArray,
    r_eff: ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
    return_log_weights: bool = True,
) -> ELPDDataPSIS:
    """Pareto-smoothed importance sampling LOO from a pointwise log-likelihood array.

    Reproduces R's ``loo(log_lik, r_eff = r_eff)`` (current ``loo``, with ``posterior``):
    the same smoothed weights, Pareto ``k``, pointwise ``elpd_loo`` / ``p_loo`` /
    ``mcse_elpd_loo`` and totals, to floating-point rounding.

    Parameters
    ----------
    log_lik : array_like or DataArray, shape ``(chain, draw, obs)`` or ``(draw, obs)``
        Pointwise log-likelihood. numpy and JAX arrays are read by position; an xarray
        ``DataArray`` by its dimension names, as arviz-stats does: a ``draw`` dimension,
        optionally ``chain`` (without it, one chain), and exactly one other dimension,
        the observations (its name and coordinates are kept), in any order. Values must
        be finite and not too large (see Raises). Computed in the input's float dtype
        (float32 unless ``jax_enable_x64`` is on; half precision in float32).
    r_eff : float or array_like ``(obs,)``, optional
        Relative efficiency of each observation's likelihood. Default: for a 3-D input,
        :func:`relative_eff` of ``log_lik`` (R's recommended
        ``r_eff = relative_eff(exp(log_lik))``); for a 2-D input, 1 (draws treated as
        independent, as R's default). NaN entries are replaced by 1, as R.
    chunk_size : int, optional
        Observations per jitted block, an integer >= 1 (default about ``2**19 / S`` on
        CPU, ``2**25 / S`` on GPU). Device memory scales with ``chunk_size * S``.
    return_log_weights : bool, default True
        Keep the ``(chain, draw, obs)`` smoothed log weights (host memory the size of
        ``log_lik``); ``False`` leaves ``log_weights`` as None.

    Returns
    -------
    ELPDDataPSIS
        An :class:`arviz_stats.utils.ELPDDataLOO` with ``elpd``, ``se``, ``p``
        (``p_loo``), ``n_samples``, ``n_data_points``, ``scale="log"``, ``warning``,
        ``good_k = min(1 - 1/log10(S), 0.7)``, ``elpd_i``, ``pareto_k``, ``p_loo_i``,
        ``n_eff_i`` ``(obs,)``, ``log_weights`` ``(chain, draw, obs)`` (normalized; a
        2-D input gets one chain) and ``mcse_elpd`` / ``mcse_elpd_i`` / ``r_eff``.

    Raises
    ------
    ValueError
        Before any work: wrong number of dimensions (or ``DataArray`` dimension names),
        fewer than 2 draws, a non-finite value, a value too large for the compute dtype
        (above its largest value / 8, or the largest float64 / ``8 N``, where log ratios,
        their differences or the totals could overflow: each message names the first
        such entry, its ``(chain, draw, obs)`` and, for the magnitude, the dtype), a
        bad ``r_eff`` or ``chunk_size < 1``.
    TypeError
        A non-real dtype (of ``log_lik`` or ``r_eff``), a ``Dataset`` or dict for
        ``log_lik``, a ``chunk_size`` that is not an integer or a
        ``return_log_weights`` that is not a bool.

    Warns
    -----
    ParetoKWarning
        When some ``k > good_k``, and when some ``k`` cannot be estimated (fewer than 5
        tail draws, a constant tail such as a constant log-likelihood, or a tail whose
        first quartile equals its minimum): as R, such ``k`` are ``inf`` and the weights
        stay unsmoothed, so ``elpd_i`` is still finite (exact for a constant
        log-likelihood). No output is ever silently NaN.

    Notes
    -----
    Per block of observations the core selects each row's ``n + 1`` largest log ratios
    (bisection on order-preserving integer keys, then a sort of only those), fits the
    generalized Pareto distribution on a fixed grid of ``30 + floor(sqrt(n_max))``
    points with the rows' own grids masked in, and writes the smoothed quantiles back.
    arviz-stats rounds the tail length ``min(0.2 S, 3 sqrt(S / r_eff))`` down where R
    rounds it up, so arviz differs from R and from this function by one tail draw
    whenever that length is not an integer; otherwise they agree to rounding.

    Every exponential is of a log shifted to at most 0 and ``se`` is computed on scaled
    deviations, so within the magnitude limit the results are finite and
    shift-invariant: ``log_lik + c`` moves ``elpd_i`` by ``c`` and leaves ``p``, ``se``
    and the MCSE unchanged, even where ``exp(log_lik)`` overflows.

    ``mcse_elpd_i`` is R's formula rewritten as
    ``sum_s (w_s lik_s / E - w_s)^2 / r_eff``, whose terms are at most 1, so it does
    not overflow or underflow as ``exp(log_lik)`` can.

    References
    ----------
    .. [1] Vehtari, Simpson, Gelman, Yao and Gabry (2024). Pareto smoothed importance
       sampling. JMLR 25(72).
    .. [2] Vehtari, Gelman and Gabry (2017). Practical Bayesian model evaluation using
       leave-one-out cross-validation and WAIC. Statistics and Computing 27(5).
    .. [3] Zhang and Stephens (2009). A new and efficient estimation method for the
       generalized Pareto distribution. Technometrics 51(3).

    Examples
    --------
    >>> import numpy as np
    >>> from numpyro_mpe import psis_loo
    >>> rng = np.random.default_rng(0)
    >>> theta = 0.2 * rng.normal(size=(2, 500, 1))  # posterior draws, 2 chains
    >>> log_lik = -0.5 * (rng.normal(size=20) - theta) ** 2  # (chain, draw, obs)
    >>> result = psis_loo(log_lik)
    >>> result.elpd_i.shape, result.log_weights.shape
    ((20,), (2, 500, 20))
    """
    _check_chunk_size(chunk_size)
    check_flag("return_log_weights", return_log_weights)
    layout = _layout(log_lik)
    n_samples, n_obs = layout.matrix.shape
    if r_eff is None:
        r_eff = 1.0
        if layout.n_chains > 1:
            r_eff = _relative_eff(layout, None, log=True, chunk_size=chunk_size)
    r_eff_values = _prepare_r_eff(r_eff, n_obs)
    arrays = _run_psis(layout, r_eff_values, np.zeros(n_samples), chunk_size, return_log_weights)
    return _build_result(layout, r_eff_values, arrays, approx_posterior=False)


def approximate_posterior_loo(
    log_lik: ArrayLike | xr.DataArray,
    log_p: ArrayLike,
    log_q: ArrayLike,
    *,
    chunk_size: int | None = None,
    return_log_weights: bool = True,
) -> ELPDDataPSIS:
    """PSIS-LOO for draws from an approximate posterior ``q`` (R's ``loo_approximate_posterior``).

    The log importance ratios of observation ``i`` are
    ``-log_lik[s, i] + log_p[s] - log_q[s]``: the LOO ratio times the correction from
    ``q`` to the posterior ``p``. They are Pareto-smoothed with ``r_eff = 1`` (draws
    from ``q`` are independent), and, as R, ``p_loo`` uses the plain mean over the draws
    of ``q``: ``lpd_i = log mean_s exp(log_lik[s, i])``.

    Parameters
    ----------
    log_lik : array_like or DataArray, shape ``(chain, draw, obs)`` or ``(draw, obs)``
        Pointwise log-likelihood at the draws from ``q``.
    log_p : array_like or DataArray, shape ``(chain, draw)`` or ``(chain * draw,)``
        Unnormalized log posterior density at each draw: ``(chain, draw)`` as
        ``log_lik`` (``(1, draw)`` for a 2-D one) or flat, chain-major. A ``DataArray``
        with dimensions ``chain`` and ``draw`` is read by their names, in any order.
    log_q : array_like or DataArray, same shape as ``log_p``
        Log density of the approximation at each draw (R's ``log_g``).
    chunk_size, return_log_weights
        As for :func:`psis_loo`.

    Returns
    -------
    ELPDDataPSIS
        As :func:`psis_loo`, with ``approx_posterior=True`` and ``r_eff`` all ones.

    Raises
    ------
    ValueError
        Before any work: as :func:`psis_loo`; a ``log_p`` or ``log_q`` of another shape
        (a ``(draw, chain)`` array, R's layout, included), with a non-finite value, or
        ``log_q`` of another shape than ``log_p``; a ``log_p - log_q`` that overflows
        float64 or spans more than the magnitude limit (naming the draw).
    TypeError
        As :func:`psis_loo`; a non-real ``log_p`` or ``log_q``.

    Examples
    --------
    >>> import numpy as np
    >>> from numpyro_mpe import approximate_posterior_loo
    >>> rng = np.random.default_rng(1)
    >>> theta = rng.normal(0.1, 0.3, size=400)  # draws from q = N(0.1, 0.3^2)
    >>> y = rng.normal(size=25)
    >>> log_lik = -0.5 * (y[None, :] - theta[:, None]) ** 2
    >>> log_p = log_lik.sum(1) - 0.5 * theta**2
    >>> log_q = -0.5 * ((theta - 0.1) / 0.3) ** 2
    >>> approximate_posterior_loo(log_lik, log_p, log_q).approx_posterior
    True
    """
    _check_chunk_size(chunk_size)
    check_flag("return_log_weights", return_log_weights)
    layout = _layout(log_lik)
    n_obs = layout.matrix.shape[1]
    log_p = _draw_values("log_p", log_p, layout)
    log_q = _draw_values("log_q", log_q, layout)
    if log_q.shape != log_p.shape:
        raise ValueError(
            f"log_q must have the shape of log_p, {log_p.shape}; got shape {log_q.shape}."
        )
    dims = ("chain", "draw")[-log_p.ndim :]
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
        log_correction = log_p - log_q
    _check_values(log_correction, "log_p - log_q", dims, float(np.finfo(np.float64).max), n_obs)
    _check_correction_range(log_correction, dims, compute_dtype(layout.matrix), n_obs)
    log_correction = (log_correction - log_correction.max()).reshape(-1)
    r_eff_values = np.ones(n_obs)
    arrays = _run_psis(layout, r_eff_values, log_correction, chunk_size, return_log_weights)
    return _build_result(layout, r_eff_values, arrays, approx_posterior=True)
