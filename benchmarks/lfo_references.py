"""Independent NUTS references for leave-future-out (LFO) cross-validation.

Written with plain NumPyro, nothing of ``numpyro_mpe``'s LFO or MCMC code, so that it can
check them. For each forecast origin ``t = L, ..., T - M`` (0-based, the convention of
``arviz_stats.lfo_cv``) NUTS samples ``p(theta | y_0..y_{t-1})`` and the reference is

.. math::

    \\widehat{\\text{elpd}}_t = \\log \\frac{1}{S} \\sum_{s=1}^{S}
        \\exp\\Big(\\sum_{i=t}^{t+M-1} \\log p(y_i \\mid y_{<i}, \\theta_s)\\Big),

with the lagged values ``y_{<i}`` taken as data (the models' chain-rule factorisation).

**Masking.** The reference models re-implement :func:`numpyro_mpe.time_series.ar_model`
and :func:`~numpyro_mpe.time_series.poisson_ar_model` (same priors, same likelihood; the
script checks their log densities agree) with the forecast origin as a model argument:
the observation site sits under ``numpyro.handlers.mask(mask=arange(T) < origin)``, so
the terms of ``y_t, ..., y_{T-1}`` are dropped from the log density while every lag stays
data. The sampler (NumPyro's NUTS kernels, ``numpyro.infer.hmc.hmc``) is jitted with
``(y, origin)`` as arguments, so it compiles once per case and runs for every origin
(``MCMC.run`` would recompile its loop at each call). A fit at origin ``t`` serves both
horizons (its training data do not depend on ``M``).

**Monte Carlo standard error** (delta method): with ``w_s = exp(l_s - max l)`` the block
likelihood of draw ``s``, ``mcse = sd(w) / (mean(w) sqrt(ESS_w))``, ``ESS_w`` from
``numpyro.diagnostics.effective_sample_size`` over the chains. Fits at different origins
use independent keys, so a total's MCSE is the root sum of squares of its origins'.

Cases (float64, NUTS with a dense mass matrix and target acceptance 0.95, 4 chains run
one after the other, 1000 warmup + 2500 draws each):

1. Lake Huron (``load_lake_huron().level``, T = 98), ``ar_model(y, order=4,
   level=579.0, scale=1.0)``, L = 20, M = 1 and 4.
2. ``simulate_poisson_ar(100, 0.5, [0.6], seed=2026)``, ``poisson_ar_model(y, order=1)``,
   L = 20, M = 1 and 4.

Writes ``tests/references/lfo_lake_huron_nuts.csv``, ``lfo_poisson_ar_nuts.csv`` (columns
origin, horizon, elpd, mcse) and ``poisson_ar_series.csv`` (t, y); prints the totals,
the sampler's diagnostics, the full-data posterior means and the run time.

Usage::

    python benchmarks/lfo_references.py                      # the references (~3 min, 2 CPUs)
    python benchmarks/lfo_references.py --num-warmup 200 --num-samples 200 --out /tmp/lfo
"""

from __future__ import annotations

import numpyro

numpyro.enable_x64()

import argparse  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # noqa: E402
from numpyro.infer import init_to_sample  # noqa: E402
from numpyro.infer.hmc import hmc  # noqa: E402
from numpyro.infer.util import initialize_model, log_density, unconstrain_fn  # noqa: E402

from numpyro_mpe.datasets import load_lake_huron  # noqa: E402
from numpyro_mpe.time_series import ar_model, poisson_ar_model, simulate_poisson_ar  # noqa: E402

REFERENCES = Path(__file__).resolve().parents[1] / "tests" / "references"
MIN_TRAIN = 20
HORIZONS = (1, 4)
NUM_CHAINS = 4
NUM_WARMUP = 1000
NUM_SAMPLES = 2500
# Lake Huron's intercept is barely identified when sum(ar) nears 1: NumPyro's defaults
# (diagonal mass matrix, 0.8) diverged 558 times in its 78 fits, a dense mass matrix
# with 0.95 twice.
TARGET_ACCEPT = 0.95
LAKE_HURON = dict(order=4, level=579.0, scale=1.0)
POISSON_AR = dict(num_times=100, intercept=0.5, ar=[0.6], seed=2026)
SEEDS = {"lake_huron": 98, "poisson_ar": 100}


# --------------------------------------------------------------------------- models


def lags(y: jnp.ndarray, order: int) -> jnp.ndarray:
    """``(T, order)``: column ``k`` holds ``y_{t-k-1}``, 0 before the start."""
    padded = jnp.concatenate([jnp.zeros(order, y.dtype), y])
    return jnp.stack([padded[order - k - 1 : order - k - 1 + y.shape[0]] for k in range(order)], 1)


def ar_likelihood(y, intercept, ar, sigma) -> dist.Distribution:
    """``p(y_t | y_{<t}, theta)`` of every ``t`` (batch ``(T,)``) for ``ar_model``."""
    return dist.Normal(intercept + lags(y - intercept, ar.shape[-1]) @ ar, sigma)


def poisson_likelihood(y, intercept, ar) -> dist.Distribution:
    """``p(y_t | y_{<t}, theta)`` of every ``t`` (batch ``(T,)``) for ``poisson_ar_model``."""
    return dist.Poisson(jnp.exp(intercept + jnp.log1p(lags(y, ar.shape[-1])) @ ar))


def ar_reference(y, origin, *, order, level, scale):
    """``ar_model`` with the terms of ``y_origin..y_{T-1}`` masked out of the likelihood."""
    intercept = numpyro.sample("intercept", dist.Normal(level, 10.0 * scale))
    ar = numpyro.sample("ar", dist.Normal(0.0, 0.5).expand([order]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(scale))
    observed = jnp.arange(y.shape[0]) < origin
    with numpyro.plate("time", y.shape[0]), numpyro.handlers.mask(mask=observed):
        numpyro.sample("y", ar_likelihood(y, intercept, ar, sigma), obs=y)


def poisson_reference(y, origin, *, order):
    """``poisson_ar_model`` with the terms of ``y_origin..y_{T-1}`` masked out."""
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 2.0))
    ar = numpyro.sample("ar", dist.Normal(0.0, 0.5).expand([order]).to_event(1))
    observed = jnp.arange(y.shape[0]) < origin
    with numpyro.plate("time", y.shape[0]), numpyro.handlers.mask(mask=observed):
        numpyro.sample("y", poisson_likelihood(y, intercept, ar), obs=y)


class Case(NamedTuple):
    name: str
    y: np.ndarray
    reference: object  # model(y, origin)
    package_model: object  # model(y), the numpyro_mpe.time_series model
    pointwise: object  # (samples dict, y) -> (S, T) log p(y_t | y_{<t}, theta_s)


def _cases() -> list[Case]:
    lake = np.asarray(load_lake_huron().level, dtype=float)
    counts = simulate_poisson_ar(**POISSON_AR)
    return [
        Case(
            "lake_huron",
            lake,
            functools.partial(ar_reference, **LAKE_HURON),
            functools.partial(ar_model, **LAKE_HURON),
            lambda s, y: jax.vmap(lambda b, a, g: ar_likelihood(y, b, a, g).log_prob(y))(
                s["intercept"], s["ar"], s["sigma"]
            ),
        ),
        Case(
            "poisson_ar",
            counts,
            functools.partial(poisson_reference, order=1),
            functools.partial(poisson_ar_model, order=1),
            lambda s, y: jax.vmap(lambda b, a: poisson_likelihood(y, b, a).log_prob(y))(
                s["intercept"], s["ar"]
            ),
        ),
    ]


def check_same_model(case: Case, rng_key) -> None:
    """The reference model at ``origin = T`` has the package model's log density, and the
    masked one drops exactly the pointwise terms of the masked times."""
    y = jnp.asarray(case.y)
    num_times = y.shape[0]
    for key in jax.random.split(rng_key, 5):
        params = numpyro.infer.Predictive(case.package_model, num_samples=1)(key, y)
        params = {name: value[0] for name, value in params.items() if name != "y"}
        full, _ = log_density(case.reference, (y, num_times), {}, params)
        package, _ = log_density(case.package_model, (y,), {}, params)
        np.testing.assert_allclose(full, package, rtol=1e-12)
        pointwise = case.pointwise({k: v[None] for k, v in params.items()}, y)[0]
        masked, _ = log_density(case.reference, (y, 30), {}, params)
        np.testing.assert_allclose(full - masked, pointwise[30:].sum(), rtol=1e-10)


# --------------------------------------------------------------------------- estimates


def block_elpd(block_log_lik: np.ndarray) -> tuple[float, float]:
    """``(elpd, mcse)`` of a block from its log likelihood per draw, ``(chains, draws)``."""
    flat = block_log_lik.reshape(-1)
    elpd = float(logsumexp(flat) - np.log(flat.size))
    weights = np.exp(block_log_lik - block_log_lik.max())
    ess = float(effective_sample_size(weights))
    mcse = float(weights.std() / (weights.mean() * np.sqrt(ess)))
    return elpd, mcse


def make_sampler(case: Case, num_warmup: int, num_samples: int):
    """``sample(rng_key, origin) -> (draws, pointwise, diverging)``, compiled once.

    ``draws``: constrained latents ``(chains, draws, ...)``; ``pointwise``: ``(chains,
    draws, T)`` log likelihood of every time; ``diverging``: ``(chains, draws)``. Each
    chain starts from a draw of the prior (as ``init_to_sample``) and runs NUTS (dense
    mass matrix and step size adapted over the warmup by NumPyro's windowed schedule,
    target acceptance ``TARGET_ACCEPT``, tree depth 10); the chains run one after the
    other (``lax.map``). ``MCMC.run`` recompiles its sampling loop on every call, so the loop
    is written here with NumPyro's functional ``hmc`` kernels and jitted with the data
    and the origin as arguments.
    """
    y = jnp.asarray(case.y)
    _, potential_fn_gen, postprocess_fn_gen, _ = initialize_model(
        jax.random.PRNGKey(0),
        case.reference,
        init_strategy=init_to_sample,
        dynamic_args=True,
        model_args=(y, y.shape[0]),
    )
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def one_chain(rng_key, origin):
        model_args = (y, origin)
        key_init, key_kernel = jax.random.split(rng_key)
        prior = handlers.trace(handlers.seed(case.reference, key_init)).get_trace(*model_args)
        start = {
            name: site["value"]
            for name, site in prior.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        start = unconstrain_fn(case.reference, model_args, {}, start)
        state = init_kernel(
            start,
            num_warmup,
            target_accept_prob=TARGET_ACCEPT,
            dense_mass=True,
            model_args=model_args,
            rng_key=key_kernel,
        )

        def step(state, _):
            state = sample_kernel(state, model_args=model_args)
            return state, (state.z, state.diverging)

        state, _ = jax.lax.scan(step, state, None, length=num_warmup)
        _, (z, diverging) = jax.lax.scan(step, state, None, length=num_samples)
        draws = jax.vmap(postprocess_fn_gen(*model_args))(z)
        return draws, case.pointwise(draws, y), diverging

    @jax.jit
    def sample(rng_key, origin):
        return jax.lax.map(
            lambda key: one_chain(key, origin), jax.random.split(rng_key, NUM_CHAINS)
        )

    return sample


def run_case(case: Case, num_warmup: int, num_samples: int) -> dict:
    """NUTS at every origin ``L..T-1`` (and on all data); rows and diagnostics."""
    num_times = case.y.shape[0]
    sample = make_sampler(case, num_warmup, num_samples)
    case_key = jax.random.PRNGKey(SEEDS[case.name])
    rows, worst_rhat, lowest_ess, divergences = [], 0.0, np.inf, {}
    full_data_means = None
    for origin in [*range(MIN_TRAIN, num_times), num_times]:
        draws, pointwise, diverging = sample(jax.random.fold_in(case_key, origin), origin)
        draws = {k: np.asarray(v) for k, v in draws.items()}
        pointwise = np.asarray(pointwise)
        if np.asarray(diverging).any():
            divergences[origin] = int(np.asarray(diverging).sum())
        for value in draws.values():
            worst_rhat = max(worst_rhat, float(np.max(split_gelman_rubin(value))))
            lowest_ess = min(lowest_ess, float(np.min(effective_sample_size(value))))
        if origin == num_times:
            full_data_means = {k: v.mean(axis=(0, 1)) for k, v in draws.items()}
            continue
        for horizon in HORIZONS:
            if origin + horizon <= num_times:
                block = pointwise[:, :, origin : origin + horizon].sum(-1)
                rows.append((origin, horizon, *block_elpd(block)))
    return dict(
        rows=rows,
        worst_rhat=worst_rhat,
        lowest_ess=lowest_ess,
        divergences=divergences,
        full_data_means=full_data_means,
    )


def write_rows(path: Path, rows: list[tuple]) -> None:
    lines = ["origin,horizon,elpd,mcse"]
    lines += [f"{t},{m},{elpd:.10f},{mcse:.6e}" for t, m, elpd, mcse in rows]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-warmup", type=int, default=NUM_WARMUP)
    parser.add_argument("--num-samples", type=int, default=NUM_SAMPLES)
    parser.add_argument("--out", type=Path, default=REFERENCES, help="folder of the CSVs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}")
    for case in _cases():
        case_start = time.perf_counter()
        check_same_model(case, jax.random.PRNGKey(0))
        if case.name == "poisson_ar":
            series = "\n".join(f"{t},{int(v)}" for t, v in enumerate(case.y))
            (args.out / "poisson_ar_series.csv").write_text(f"t,y\n{series}\n")
            print(
                f"poisson_ar series: T = {case.y.size}, min {case.y.min():.0f}, "
                f"max {case.y.max():.0f}, mean {case.y.mean():.2f}"
            )
        result = run_case(case, args.num_warmup, args.num_samples)
        write_rows(args.out / f"lfo_{case.name}_nuts.csv", result["rows"])
        print(f"\n{case.name}: T = {case.y.size}, L = {MIN_TRAIN}")
        for horizon in HORIZONS:
            rows = [row for row in result["rows"] if row[1] == horizon]
            total = sum(row[2] for row in rows)
            mcse = np.sqrt(sum(row[3] ** 2 for row in rows))
            worst = max(row[3] for row in rows)
            print(
                f"  M = {horizon}: {len(rows)} origins, elpd = {total:.3f}, "
                f"MCSE = {mcse:.3f} (largest per origin {worst:.4f})"
            )
        means = {k: np.round(v, 3).tolist() for k, v in result["full_data_means"].items()}
        print(f"  full-data posterior means: {means}")
        print(
            f"  diagnostics over all fits: max split R-hat {result['worst_rhat']:.4f}, "
            f"min ESS {result['lowest_ess']:.0f}, divergences {result['divergences'] or 0} "
            "(origin: count)"
        )
        print(f"  {time.perf_counter() - case_start:.0f} s")
    print(f"\nrun time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
