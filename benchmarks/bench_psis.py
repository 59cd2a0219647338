"""Benchmark: ``numpyro_mpe.crossval.psis.psis_loo`` against ``arviz_stats.loo`` on CPU, float64.

The same log-likelihood array, ``(chain, draw, obs) = (4, 1000, 10_000)`` by default
(a Normal linear regression, draws from AR(1) chains), goes through each method in
its own subprocess, so that peak memory is per method:

* ``psis_loo`` with ``r_eff=1`` (the same PSIS-LOO arviz computes with ``reff=1``);
* ``psis_loo`` with ``r_eff=None``: per-observation ``relative_eff`` (one FFT ESS per
  observation, what R recommends) included in the time;
* ``arviz_stats.loo(..., reff=1, pointwise=True)``.

Each worker builds the array, records ``ru_maxrss`` (the array is then resident), runs
the method once to warm up (JIT compilation for ``psis_loo``), then times ``--repeats``
further calls. The table reports the median wall time, the worker's peak resident set
size (``ru_maxrss``), the per-call memory of the timed calls (resident high-water mark,
reset after the warm-up, minus the resident size before them) and the ratios to arviz.

arviz and R choose the tail length differently (``floor`` and ``ceiling`` of
``3 sqrt(S / r_eff)``); here ``S = 4000`` gives 189 against 190 tail draws, so the
totals differ in the third or fourth decimal. The script prints both.

Usage::

    python benchmarks/bench_psis.py                 # 10_000 observations (about 1 min)
    python benchmarks/bench_psis.py --quick         # 1_000 observations, 1 repeat
    python benchmarks/bench_psis.py --n-obs 20000 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

METHODS = ("psis_loo", "psis_loo_no_weights", "psis_loo_reff", "arviz")
LABELS = {
    "psis_loo": "numpyro_mpe `psis_loo` (r_eff=1)",
    "psis_loo_no_weights": "numpyro_mpe `psis_loo` (r_eff=1, return_log_weights=False)",
    "psis_loo_reff": "numpyro_mpe `psis_loo` (r_eff=relative_eff, per obs)",
    "arviz": "arviz_stats `loo` (reff=1)",
}


def make_log_lik(n_obs: int, n_chains: int, n_draws: int, seed: int = 0) -> np.ndarray:
    """``(chain, draw, obs)`` Normal log-likelihoods of a 3-coefficient regression.

    Draws come from AR(1) chains (correlation 0.5) around the true coefficients, so
    the relative efficiencies are below 1.
    """
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n_obs), rng.normal(size=(n_obs, 2))])
    beta, sigma = np.array([0.5, -1.0, 2.0]), 1.0
    y = x @ beta + sigma * rng.normal(size=n_obs)
    scale = sigma / np.sqrt(n_obs)
    noise = rng.normal(size=(n_chains, n_draws, 3))
    draws = np.empty_like(noise)
    draws[:, 0] = noise[:, 0]
    for t in range(1, n_draws):
        draws[:, t] = 0.5 * draws[:, t - 1] + np.sqrt(1 - 0.25) * noise[:, t]
    theta = beta + scale * draws  # (chain, draw, 3)
    log_lik = np.empty((n_chains, n_draws, n_obs))
    for c in range(n_chains):
        residual = (y[None, :] - theta[c] @ x.T) / sigma
        log_lik[c] = -0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * residual**2
    return log_lik


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _proc_status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (high-water mark) from /proc, in MB."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def worker(method: str, n_obs: int, n_chains: int, n_draws: int, repeats: int) -> dict:
    """Time one method in this process; returns the measurements."""
    if method == "arviz":
        from arviz_base import from_dict
        from arviz_stats import loo

        def run(log_lik):
            tree = from_dict(
                {"posterior": {"mu": log_lik[..., 0]}, "log_likelihood": {"y": log_lik}}
            )
            return loo(tree, pointwise=True, reff=1.0)
    else:
        import jax

        jax.config.update("jax_enable_x64", True)
        from numpyro_mpe.crossval.psis import psis_loo

        r_eff = None if method == "psis_loo_reff" else 1.0
        keep_weights = method != "psis_loo_no_weights"

        def run(log_lik):
            return psis_loo(log_lik, r_eff=r_eff, return_log_weights=keep_weights)

    rss_imports = _max_rss_mb()
    log_lik = make_log_lik(n_obs, n_chains, n_draws)
    rss_data = _max_rss_mb()
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no high k expected, but never let one abort a run
        start = time.perf_counter()
        result = run(log_lik)
        first = time.perf_counter() - start
        summary = {
            "elpd": float(result.elpd),
            "se": float(result.se),
            "p": float(result.p),
            "max_k": float(np.max(result.pareto_k.values)),
            "n_high_k": int(np.sum(result.pareto_k.values > result.good_k)),
        }
        del result
        rss_warm = _max_rss_mb()
        resettable = _reset_peak_rss()
        rss_before_timed = _proc_status_mb("VmRSS")
        for _ in range(repeats):
            start = time.perf_counter()
            result = run(log_lik)
            times.append(time.perf_counter() - start)
            del result
    steady = _proc_status_mb("VmHWM") if resettable else float("nan")
    return {
        "method": method,
        "first_s": first,
        "times_s": times,
        "median_s": statistics.median(times),
        "rss_imports_mb": rss_imports,
        "rss_data_mb": rss_data,
        "rss_after_warmup_mb": rss_warm,
        "rss_peak_mb": _max_rss_mb(),
        "rss_before_timed_mb": rss_before_timed,
        "rss_steady_peak_mb": steady,
        "data_mb": log_lik.nbytes / 2**20,
        **summary,
    }


def run_worker(method: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--n-obs",
        str(args.n_obs),
        "--chains",
        str(args.chains),
        "--draws",
        str(args.draws),
        "--repeats",
        str(args.repeats),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict]) -> str:
    base = results["arviz"]

    def working(r):  # resident growth during a warm call, result included
        return r["rss_steady_peak_mb"] - r["rss_before_timed_mb"]

    lines = [
        "| method | median time (s) | first call (s) | peak RSS, ru_maxrss (MB) "
        "| per-call memory (MB) | time vs arviz | per-call memory vs arviz |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        r = results[method]
        lines.append(
            f"| {LABELS[method]} | {r['median_s']:.2f} | {r['first_s']:.2f} "
            f"| {r['rss_peak_mb']:.0f} | {working(r):.0f} "
            f"| {r['median_s'] / base['median_s']:.2f} "
            f"| {working(r) / working(base):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=10_000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1_000 observations, 1 repeat")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n_obs, args.repeats = 1_000, 1
    if args.worker:
        measured = worker(args.worker, args.n_obs, args.chains, args.draws, args.repeats)
        print(json.dumps(measured))
        return

    results = {method: run_worker(method, args) for method in METHODS}
    import jax

    n_samples = args.chains * args.draws
    print(
        f"PSIS-LOO, (chain, draw, obs) = ({args.chains}, {args.draws}, {args.n_obs}), "
        f"S = {n_samples}, float64, CPU ({os.cpu_count()} cores, {platform.processor() or '?'}),"
        f" jax {jax.__version__}, load average {os.getloadavg()[0]:.2f}; "
        f"median of {args.repeats} after one warm-up call.\n"
    )
    print(table(results))
    data_mb = results["arviz"]["data_mb"]
    print(
        f"\nThe log-likelihood array is {data_mb:.0f} MB. Peak RSS (ru_maxrss) includes the"
        " imports, the array and the warm-up call (JIT compilation for psis_loo). Per-call"
        " memory is the resident high-water mark during the timed calls (reset after the"
        " warm-up through /proc/self/clear_refs) minus the resident size just before them:"
        " what a warm call adds, the returned result included (its smoothed log weights"
        " alone are as large as the array)."
    )
    print()
    for method in METHODS:
        r = results[method]
        print(
            f"{method:>14}: elpd {r['elpd']:.4f}  se {r['se']:.4f}  p {r['p']:.4f}  "
            f"max k {r['max_k']:.3f}  ({r['n_high_k']} above good_k)"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
