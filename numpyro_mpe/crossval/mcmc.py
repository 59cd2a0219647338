"""The baseline MPE-LOO is measured against: NUTS, then PSIS-LOO on its draws.

:func:`mcmc_loo` runs numpyro's NUTS on a model, evaluates the per-example
log-likelihood of every draw with the same per-example terms as the rest of the
package (:func:`numpyro_mpe.trace_model`), and applies :func:`numpyro_mpe.psis_loo`
with ``r_eff`` from :func:`numpyro_mpe.relative_eff` by chain:

.. math::

    \\log p(y_i \\mid y_{-i}) \\approx \\log \\sum_s \\tilde w_{s,i}\\, p(y_i \\mid \\theta_s),
    \\qquad \\tilde w_{s,i} \\propto \\text{Pareto-smoothed } 1 / p(y_i \\mid \\theta_s),

with ``theta_s`` the ``S = chains x draws`` posterior draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS

from numpyro_mpe.core.model import join_arguments, split_arguments, trace_model
from numpyro_mpe.core.options import CHAIN_METHODS, ChainMethod, check_choice, check_flag
from numpyro_mpe.crossval.psis import ELPDDataPSIS, psis_loo, relative_eff
from numpyro_mpe.optim.base import check_rng_key
from numpyro_mpe.perturbation.removal import check_at_most

__all__ = ["MCMCLooResult", "mcmc_loo"]

# Default draws per log-likelihood chunk: about this many (draw, example) values at once.
_VALUES_PER_CHUNK = 2**22
# NUTS statistics kept per draw, for ArviZ's sample_stats (n_steps, tree_depth, lp, ...).
_SAMPLE_STATS = ("num_steps", "accept_prob", "potential_energy", "energy")


class MCMCLooResult(NamedTuple):
    """Output of :func:`mcmc_loo`.

    Attributes
    ----------
    loo : ELPDDataPSIS
        PSIS-LOO (an ``arviz_stats`` ``ELPDDataLOO``): ``elpd``, ``se``, ``p``,
        ``elpd_i`` / ``pareto_k`` ``(N,)`` over the plate's dimension, ``log_weights``
        ``(chain, draw, N)``.
    posterior : xarray.DataTree
        ``az.from_numpyro(mcmc, log_likelihood=False)`` (posterior, observed_data and
        sample_stats: ``diverging``, ``n_steps``, ``tree_depth``, ``acceptance_rate``,
        ``lp``, ``energy``) plus a ``log_likelihood`` group with one variable ``(chain, draw,
        N)``, its last dimension named after the plate: the per-example log-likelihood
        used for ``loo``. The variable is named after the observed site (``"log_lik"``
        when several observed sites share the plate; it is then their sum per example).
        ``az.loo(posterior)`` reads it.
    mcmc : numpyro.infer.MCMC
        The sampler after its run (``get_samples()``, ``print_summary()``, ...).
    seconds : dict
        Wall-clock seconds of ``"sampling"`` (warm-up and draws, compilation included),
        ``"log_lik"`` (the per-example log-likelihood of every draw) and ``"psis"``
        (``relative_eff`` and ``psis_loo``).
    """

    loo: ELPDDataPSIS
    posterior: xr.DataTree
    mcmc: MCMC
    seconds: dict


def _check_arguments(num_warmup, num_samples, num_chains, chain_method, chunk_size) -> None:
    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(num_warmup) or num_warmup < 0:
        raise ValueError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    if not is_int(num_samples) or num_samples < 2:
        raise ValueError(
            f"num_samples must be an integer >= 2 (PSIS needs several draws per chain), "
            f"got {num_samples!r}"
        )
    if not is_int(num_chains) or num_chains < 1:
        raise ValueError(f"num_chains must be an integer >= 1, got {num_chains!r}")
    for name, value in (("num_warmup", num_warmup), ("num_samples", num_samples)):
        check_at_most(name, value)
    check_at_most("num_chains", num_chains)
    check_choice("chain_method", chain_method, CHAIN_METHODS)
    if chunk_size is not None and (not is_int(chunk_size) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")


def _unconstrained_vector(model, args, kwargs, values: dict, latent_shapes: dict) -> jax.Array:
    """Flat unconstrained ``theta (P,)`` of one draw of constrained latent ``values``.

    The model is traced with the draw substituted, so a support that depends on other
    latents is inverted at the right value; sites are raveled in ``latent_shapes`` order
    (the model-site order of :func:`trace_model`'s ``unravel``).
    """
    substituted = handlers.substitute(handlers.seed(model, rng_seed=0), data=values)
    with handlers.block():
        trace = handlers.trace(substituted).get_trace(*args, **kwargs)
    return jnp.concatenate(
        [
            jnp.reshape(biject_to(trace[name]["fn"].support).inv(trace[name]["value"]), (-1,))
            for name in latent_shapes
        ]
    )


@partial(jax.jit, static_argnames=("model", "static", "plate"))
def _log_lik_chunk(draws: dict, arrays: list, *, model, static, plate) -> jax.Array:
    """``(chunk, N)`` per-example log-likelihood of a chunk of constrained draws.

    Jitted once per model, argument structure, plate and chunk shape; the data are
    arguments, not constants baked into the executable.
    """
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)

    def one_draw(values):
        theta = _unconstrained_vector(model, args, kwargs, values, plate_model.latent_shapes)
        return plate_model.log_lik(theta)

    return jax.vmap(one_draw)(draws)


def _pointwise_log_lik(
    model, args, kwargs, samples: dict, *, plate: str, num_examples: int, chunk_size: int | None
) -> np.ndarray:
    """``(S, N)`` host array of log-likelihoods, computed ``chunk_size`` draws at a time.

    Every chunk has the same shape (the last is padded by repeating its final draw and
    the padding dropped), so the chunk function compiles once; device memory holds one
    chunk, ``O(chunk_size * N)``, and the result goes to host memory chunk by chunk.
    """
    num_draws = next(iter(samples.values())).shape[0]
    if chunk_size is None:
        chunk_size = max(1, _VALUES_PER_CHUNK // max(num_examples, 1))
    chunk_size = min(chunk_size, num_draws)
    arrays, static = split_arguments(args, kwargs)
    output = None
    for start in range(0, num_draws, chunk_size):
        stop = min(start + chunk_size, num_draws)
        index = np.minimum(np.arange(start, start + chunk_size), num_draws - 1)
        chunk = {name: value[index] for name, value in samples.items()}
        values = _log_lik_chunk(chunk, arrays, model=model, static=static, plate=plate)
        values = np.asarray(values)[: stop - start]
        if output is None:
            output = np.empty((num_draws, values.shape[1]), values.dtype)
        output[start:stop] = values
    return output


def mcmc_loo(
    model: Callable,
    *args: Any,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    rng_key: jax.Array | None = None,
    plate: str | None = None,
    chain_method: ChainMethod = "sequential",
    chunk_size: int | None = None,
    progress_bar: bool = False,
    **kwargs: Any,
) -> MCMCLooResult:
    """NUTS on ``model``, then PSIS-LOO on the per-example log-likelihood of its draws.

    Parameters
    ----------
    model : callable
        A NumPyro model whose observed sites sit inside a plate of ``N`` examples and
        whose latents are continuous and global (as for :func:`trace_model`).
    *args, **kwargs
        The model's arguments (for NUTS and for the log-likelihood).
    num_warmup, num_samples, num_chains : int
        NUTS warm-up iterations and draws per chain (``num_samples >= 2``), and chains;
        ``S = num_chains * num_samples`` draws in all.
    rng_key : jax.Array, optional
        Key of the NUTS run (split per chain by numpyro); ``jax.random.PRNGKey(0)`` if
        None.
    plate : str, optional
        Name of the plate of examples; found automatically when the observed sites are
        all in one plate.
    chain_method : {"sequential", "parallel", "vectorized"}
        As :class:`numpyro.infer.MCMC`.
    chunk_size : int, optional
        Draws whose ``(chunk_size, N)`` log-likelihoods are computed together (device
        memory grows with ``chunk_size * N``); by default about ``2**22 / N``.
    progress_bar : bool
        numpyro's progress bar.

    Returns
    -------
    MCMCLooResult
        ``loo`` (:class:`numpyro_mpe.ELPDDataPSIS`, ``elpd_i`` and ``pareto_k``
        ``(N,)``), ``posterior`` (ArviZ ``DataTree`` with a ``log_likelihood`` group
        ``(chain, draw, N)``), ``mcmc`` and ``seconds`` (``sampling``, ``log_lik``,
        ``psis``).

    Raises
    ------
    ValueError
        Before sampling: ``num_warmup < 0``, ``num_samples < 2``, ``num_chains < 1``,
        a count above ``2**31 - 1``, an unknown ``chain_method`` or ``chunk_size < 1``.
    TypeError
        Before sampling: an ``rng_key`` that is not a jax PRNG key (an int, say), a
        ``progress_bar`` that is not a bool (``"no"``).
    ModelError
        Before sampling, from :func:`trace_model`: no plate of examples, an unknown
        ``plate``, a discrete or local latent, NaN in the data, ...

    Warns
    -----
    ParetoKWarning
        From :func:`psis_loo`, when some Pareto ``k`` exceeds ``min(1 - 1/log10(S), 0.7)``.

    Notes
    -----
    The log-likelihood of draw ``s`` and example ``i`` is ``trace_model(...).log_lik``:
    the log densities of the observed sites in the plate (and of any observed
    ``numpyro.factor`` in it), each summed over its dimensions other than the plate's,
    so it is the per-example term that :func:`numpyro_mpe.loo` and
    :func:`numpyro_mpe.exact_loo` use. ``log_lik`` takes the flat unconstrained latent
    vector; MCMC keeps constrained draws, so each draw is mapped back by tracing the
    model with the draw substituted and inverting each latent's support bijection at its
    traced distribution. That round trip is exact for real-valued latents (identity) and
    within a few ulps otherwise (``exp(log(x))``); the log-likelihood then equals
    ``numpyro.infer.log_likelihood`` on the constrained draws (the array
    ``az.from_numpyro(mcmc, log_likelihood=True)`` holds) to rounding.

    Draws are processed in jitted chunks of ``chunk_size``, all of one shape, so the
    function compiles once per model and chunk shape and never materializes more than
    one ``(chunk_size, N)`` block on the device. The ``(chain, draw, N)`` result is kept
    in host memory (``8 S N`` bytes in float64), and :func:`psis_loo` stores smoothed
    log weights of the same size.

    Examples
    --------
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from numpyro_mpe import mcmc_loo
    >>> def model(x, y):
    ...     beta = numpyro.sample("beta", dist.Normal(0, 1))
    ...     with numpyro.plate("data", x.shape[0]):
    ...         numpyro.sample("y", dist.Normal(beta * x, 1.0), obs=y)
    >>> x = np.linspace(-1, 1, 20)
    >>> y = 0.5 * x + np.random.default_rng(0).normal(size=20)
    >>> result = mcmc_loo(model, x, y, num_warmup=200, num_samples=200, num_chains=2,
    ...                   rng_key=jax.random.PRNGKey(1))
    >>> result.loo.elpd_i.shape, result.posterior.log_likelihood["y"].dims
    ((20,), ('chain', 'draw', 'data'))
    """
    _check_arguments(num_warmup, num_samples, num_chains, chain_method, chunk_size)
    check_flag("progress_bar", progress_bar)
    if rng_key is not None:
        check_rng_key(rng_key, "mcmc_loo")
    # Validates the model, data and plate before any sampling.
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    rng_key = jax.random.PRNGKey(0) if rng_key is None else rng_key

    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    mcmc.run(rng_key, *args, extra_fields=_SAMPLE_STATS, **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    seconds = {"sampling": time.perf_counter() - start}

    start = time.perf_counter()
    # (chain, draw, ...) -> (chain * draw, ...), chain-major as the reshape below.
    latents = {
        name: jnp.reshape(samples[name], (num_chains * num_samples, *samples[name].shape[2:]))
        for name in plate_model.latent_shapes
    }
    log_lik = _pointwise_log_lik(
        model,
        args,
        kwargs,
        latents,
        plate=plate_model.plate,
        num_examples=plate_model.num_examples,
        chunk_size=chunk_size,
    )
    seconds["log_lik"] = time.perf_counter() - start

    name = plate_model.observed_sites[0] if len(plate_model.observed_sites) == 1 else "log_lik"
    dim = plate_model.plate
    # Masked examples are not examples: left out (keeping their indices as coordinates).
    examples = np.arange(plate_model.num_examples)
    if plate_model.observed_mask is not None:
        examples = np.flatnonzero(plate_model.observed_mask)
    log_lik = xr.DataArray(
        log_lik.reshape(num_chains, num_samples, plate_model.num_examples)[..., examples],
        dims=("chain", "draw", dim),
        coords={"chain": np.arange(num_chains), "draw": np.arange(num_samples), dim: examples},
        name=name,
    )

    start = time.perf_counter()
    r_eff = relative_eff(log_lik)
    loo = psis_loo(log_lik, r_eff)
    seconds["psis"] = time.perf_counter() - start

    posterior = az.from_numpyro(mcmc, log_likelihood=False)
    posterior["log_likelihood"] = xr.DataTree(xr.Dataset({name: log_lik}))
    return MCMCLooResult(loo=loo, posterior=posterior, mcmc=mcmc, seconds=seconds)
