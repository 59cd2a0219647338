"""PSIS-LOO on an accelerator: timings up to 1e6 observations x 4000 draws, float32/64.

A prepared script for a GPU machine (it runs unchanged on CPU, e.g. with ``--quick``):

1. prints the JAX backend and devices;
2. checks the accelerator against the CPU backend on one problem (max abs differences
   of ``elpd_i``, Pareto k and the log weights; both run the same jitted code);
3. for float32 and float64 (float64 where the device holds the array with room to
   spare) and each number of observations, builds the ``(chain, draw, obs)``
   log-likelihood array on the device (no host copy), then times ``relative_eff``, a
   first ``psis_loo`` call (compilation included) and a warm one. The largest size
   skips returning the smoothed log weights (``return_log_weights=False``), which would
   otherwise copy an array as large as the input back to the host.

The log-likelihood is a Normal regression ``y_i ~ N(alpha + beta x_i, 1)`` evaluated at
AR(1) draws of ``(alpha, beta)`` in 4 chains, generated on the device.

Usage::

    python benchmarks/gpu_psis.py                 # obs 1e4, 1e5, 1e6 (GPU: about 2 min)
    python benchmarks/gpu_psis.py --quick         # obs 1e3, 1e4: a CPU smoke run
    python benchmarks/gpu_psis.py --sizes 100000 --dtypes float32 --chunk-size 16384
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)  # float64 runs need it; float32 stays float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from numpyro_mpe.crossval.psis import psis_loo, relative_eff  # noqa: E402

N_CHAINS = 4
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
KEEP_WEIGHTS_UP_TO = 100_000  # beyond, return_log_weights=False


@functools.partial(jax.jit, static_argnames=("n_obs", "n_draws", "dtype"))
def make_log_lik(key, *, n_obs: int, n_draws: int, dtype) -> jax.Array:
    """``(chain, draw, obs)`` log-likelihoods, built on the default device."""
    k_x, k_y, k_noise = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (n_obs,), dtype)
    y = 0.5 - x + jax.random.normal(k_y, (n_obs,), dtype)
    noise = jax.random.normal(k_noise, (n_draws, N_CHAINS, 2), dtype)

    def ar1(previous, innovation):
        current = 0.5 * previous + jnp.sqrt(jnp.asarray(0.75, dtype)) * innovation
        return current, current

    _, draws = jax.lax.scan(ar1, noise[0], noise)  # (draw, chain, 2)
    draws = jnp.transpose(draws, (1, 0, 2)) / jnp.sqrt(jnp.asarray(n_obs, dtype))
    alpha = 0.5 + draws[..., 0:1]
    beta = -1.0 + draws[..., 1:2]
    residual = y - alpha - beta * x  # (chain, draw, obs), one fused elementwise pass
    return -0.5 * jnp.log(2 * jnp.pi).astype(dtype) - 0.5 * residual**2


def device_bytes_limit() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def fits(n_obs: int, n_draws: int, dtype) -> bool:
    """Room for the array, its finiteness mask and the per-block temporaries."""
    limit = device_bytes_limit()
    if limit is None:
        return True
    needed = N_CHAINS * n_draws * n_obs * (np.dtype(dtype).itemsize + 1) + 2**32
    return needed < 0.8 * limit


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    out = jax.block_until_ready(out)
    return out, time.perf_counter() - start


def cross_check(n_obs: int, n_draws: int) -> None:
    """The default device against the CPU backend on the same float64 array."""
    log_lik = make_log_lik(jax.random.key(1), n_obs=n_obs, n_draws=n_draws, dtype=jnp.float64)
    on_device = psis_loo(log_lik)
    with jax.default_device(jax.devices("cpu")[0]):
        on_cpu = psis_loo(np.asarray(log_lik))
    diffs = {
        name: float(np.max(np.abs(getattr(on_device, name).values - getattr(on_cpu, name).values)))
        for name in ("elpd_i", "pareto_k", "mcse_elpd_i", "r_eff", "log_weights")
    }
    print(
        f"{jax.default_backend()} vs cpu, float64, {n_obs} obs x {N_CHAINS * n_draws} draws: "
        + ", ".join(f"max |diff| {name} {value:.2e}" for name, value in diffs.items())
        + "\n"
    )


def bench(n_obs: int, n_draws: int, dtype, chunk_size: int | None) -> dict:
    log_lik = make_log_lik(jax.random.key(0), n_obs=n_obs, n_draws=n_draws, dtype=dtype)
    log_lik = jax.block_until_ready(log_lik)
    keep = n_obs <= KEEP_WEIGHTS_UP_TO
    r_eff, reff_first = timed(relative_eff, log_lik, chunk_size=chunk_size)
    _, reff_warm = timed(relative_eff, log_lik, chunk_size=chunk_size)
    kwargs = {"r_eff": r_eff, "chunk_size": chunk_size, "return_log_weights": keep}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, first = timed(psis_loo, log_lik, **kwargs)
        result, warm = timed(psis_loo, log_lik, **kwargs)
    del log_lik
    return {
        "dtype": np.dtype(dtype).name,
        "n_obs": n_obs,
        "first": first,
        "warm": warm,
        "reff_first": reff_first,
        "reff_warm": reff_warm,
        "keep": keep,
        "elpd": result.elpd,
        "max_k": float(np.max(result.pareto_k.values)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain (4 chains)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--chunk-size", type=int, default=None, help="observations per block")
    parser.add_argument("--quick", action="store_true", help="obs 1e3 and 1e4 (CPU smoke run)")
    parser.add_argument("--no-check", action="store_true", help="skip the CPU cross-check")
    args = parser.parse_args()
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)

    devices = jax.devices()
    limit = device_bytes_limit()
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, devices {devices}"
        + (f", {limit / 2**30:.1f} GiB usable" if limit else "")
    )
    if not args.no_check:
        cross_check(min(sizes[0], 2_000), args.draws)

    rows = []
    for name in args.dtypes:
        dtype = jnp.dtype(name)
        for n_obs in sizes:
            if not fits(n_obs, args.draws, dtype):
                print(f"skip {name} {n_obs}: does not fit in device memory")
                continue
            row = bench(n_obs, args.draws, dtype, args.chunk_size)
            rows.append(row)
            print(
                f"{name} {n_obs:>9} obs: relative_eff {row['reff_warm']:.3f} s, psis_loo "
                f"{row['warm']:.3f} s (first {row['first']:.3f} s), elpd {row['elpd']:.2f}",
                flush=True,
            )

    print(
        "\n| dtype | obs | draws | psis_loo first (s) | psis_loo warm (s) "
        "| relative_eff warm (s) | obs/s (psis_loo warm) | log weights returned |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|"
    )
    for row in rows:
        print(
            f"| {row['dtype']} | {row['n_obs']} | {N_CHAINS * args.draws} | {row['first']:.3f} "
            f"| {row['warm']:.3f} | {row['reff_warm']:.3f} | {row['n_obs'] / row['warm']:.3g} "
            f"| {'yes' if row['keep'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
