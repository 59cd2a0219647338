"""MPE fit + LOO on an accelerator: logistic regression, D = 20, up to 1e7 observations.

A prepared script for a GPU machine (it runs unchanged on CPU, e.g. with ``--quick``):

1. prints the JAX backend and devices;
2. checks the default device against the CPU backend on one problem (max abs
   differences of the Newton mean and of MPE-LOO's ``elpd_i``; both run the same jitted
   code, in float64);
3. for each dtype and number of observations, draws the data on the device (no host
   copy), then times a first Newton fit (dense ``D x D`` precision, compilation
   included) and a first ``numpyro_mpe.loo``, then both again warm. float64 runs only
   where the device holds the data with room to spare.

The model is ``y_i ~ Bernoulli(logit^-1(x_i^T beta))``, ``beta ~ N(0, I_D)``, with
``x_i = [1, z_i]``, ``z_i ~ N(0, I_{D-1})`` and a fixed true ``beta`` scaled so that the
logits have standard deviation about 1.5.

Usage::

    python benchmarks/gpu_mpe.py                  # N = 1e6, 1e7, float32 and float64
    python benchmarks/gpu_mpe.py --quick          # N = 1e4, 1e5: a CPU smoke run
    python benchmarks/gpu_mpe.py --sizes 300000 --dtypes float32
"""

from __future__ import annotations

import argparse
import functools
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 runs need it; float32 stays float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import numpyro_mpe  # noqa: E402
from numpyro_mpe import optim  # noqa: E402

NUM_FEATURES = 20
DEFAULT_SIZES = (1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)
NEWTON_STEPS = 30


def logistic(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


@functools.partial(jax.jit, static_argnames=("n_obs", "dtype"))
def make_data(key, *, n_obs: int, dtype) -> tuple[jax.Array, jax.Array]:
    """``X (N, D)`` and ``y (N,)`` on the default device."""
    k_x, k_y = jax.random.split(key)
    z = jax.random.normal(k_x, (n_obs, NUM_FEATURES - 1), dtype)
    X = jnp.concatenate([jnp.ones((n_obs, 1), dtype), z], axis=1)
    beta = jnp.linspace(-1.0, 1.0, NUM_FEATURES, dtype=dtype) * (1.5 / np.sqrt(7.0))
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(X @ beta)).astype(dtype)
    return X, y


def fits(n_obs: int, dtype) -> bool:
    """Room for the data, the padded copy ``loo`` makes and its per-example terms."""
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit is None:
        return True
    needed = 4 * n_obs * (NUM_FEATURES + 1) * np.dtype(dtype).itemsize + 2**31
    return needed < 0.8 * limit


def fit_and_loo(X, y) -> tuple[dict, float, float, object]:
    """Newton fit then MPE-LOO; seconds of each (results on the host)."""
    guide = numpyro_mpe.AutoGaussian(logistic, covariance="dense")
    start = time.perf_counter()
    result = numpyro_mpe.BLR(logistic, guide, optim.newton()).run(
        jax.random.PRNGKey(0), NEWTON_STEPS, X, y, progress_bar=False
    )
    params = jax.block_until_ready(result.params)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loo = numpyro_mpe.loo(logistic, guide, params, X, y)
    loo_seconds = time.perf_counter() - start
    return params, fit_seconds, loo_seconds, loo


def cross_check(n_obs: int) -> None:
    """The default device against the CPU backend on the same float64 data."""
    X, y = make_data(jax.random.key(1), n_obs=n_obs, dtype=jnp.float64)
    params, _, _, on_device = fit_and_loo(X, y)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        cpu_params, _, _, on_cpu = fit_and_loo(jax.device_put(X, cpu), jax.device_put(y, cpu))
    mean_diff = np.max(np.abs(np.asarray(params["auto_loc"]) - np.asarray(cpu_params["auto_loc"])))
    elpd_diff = np.max(np.abs(on_device.elpd_i.values - on_cpu.elpd_i.values))
    print(
        f"{jax.default_backend()} vs cpu, float64, {n_obs} obs: max |diff| mean {mean_diff:.2e},"
        f" elpd_i {elpd_diff:.2e}\n"
    )


def bench(n_obs: int, dtype) -> dict:
    X, y = jax.block_until_ready(make_data(jax.random.key(0), n_obs=n_obs, dtype=dtype))
    _, fit_first, loo_first, _ = fit_and_loo(X, y)
    _, fit_warm, loo_warm, loo = fit_and_loo(X, y)
    return {
        "dtype": np.dtype(dtype).name,
        "n_obs": n_obs,
        "fit_first": fit_first,
        "loo_first": loo_first,
        "fit_warm": fit_warm,
        "loo_warm": loo_warm,
        "elpd": float(loo.elpd),
        "max_reliability": float(np.max(loo.reliability.values)),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: int(float(s)), nargs="+")
    parser.add_argument("--quick", action="store_true", help="N = 1e4, 1e5")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--check-size", type=int, default=2000, help="N of the cross-check")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}\n")
    cross_check(args.check_size)
    rows = []
    print(
        "| dtype | N | fit, 1st call | LOO, 1st call | fit, warm | LOO, warm | elpd_loo_mpe"
        " | max reliability |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for dtype in args.dtypes:
        for n_obs in sizes:
            if not fits(n_obs, dtype):
                print(f"| {dtype} | {n_obs} | does not fit on the device | | | | | |")
                continue
            row = bench(n_obs, jnp.dtype(dtype))
            rows.append(row)
            print(
                f"| {row['dtype']} | {row['n_obs']} | {row['fit_first']:.2f} s"
                f" | {row['loo_first']:.2f} s | {row['fit_warm']:.3f} s"
                f" | {row['loo_warm']:.3f} s | {row['elpd']:.2f} | {row['max_reliability']:.2e} |",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
