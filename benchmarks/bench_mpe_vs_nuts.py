"""Benchmark: MPE-LOO (Newton fit + ``mpe.loo``) against NUTS + PSIS-LOO, same model.

Logistic regression with D = 20 (the problem of ``bench_loo.py``: fixed seed, float64)
at N = 1e4 and 1e5. Each N runs in its own subprocess and measures:

* **MPE-LOO**: ``BLR(model, AutoGaussian(model, "dense"), optim.newton()).run`` for 50
  steps (stops at convergence) then ``mpe.loo(model, guide, params, X, y)``. The first
  call (compilation included) is timed, then ``--repeats`` further calls of both on the
  same shapes (compilation excluded): the median is reported, split into fit and LOO.
* **NUTS + PSIS-LOO**: ``numpyro_mpe.crossval.mcmc.mcmc_loo`` (NUTS, ``--num-chains`` chains run
  sequentially, ``--num-warmup`` + ``--num-samples`` iterations each; the per-example
  log-likelihood of every draw; ``relative_eff`` by chain and ``psis_loo``), timed once
  end to end and by stage. Its fixed cost (tracing and compiling the sampler, the
  log-likelihood and PSIS) is estimated by an identical call with 5 + 5 iterations
  beforehand, and subtracted for the "compile excluded" ratio.
* **Accuracy**: ``mpe.exact_loo(..., method="laplace", indices=subsample)`` on a random
  subsample of ``--num-refits`` examples: one Gaussian (Laplace) refit per left-out
  example, Newton from the full fit, whose predictive density uses the same integration
  rule as ``mpe.loo``. They are the reference for the *LOO-approximation* error of
  MPE-LOO (same Gaussian family, example removed exactly); for PSIS they measure the
  Monte Carlo error of importance sampling plus the (small, at this N) difference
  between the Bayesian posterior and its Laplace approximation.

Usage::

    python benchmarks/bench_mpe_vs_nuts.py            # N = 1e4 and 1e5 (~3 min on 2 CPUs)
    python benchmarks/bench_mpe_vs_nuts.py --quick    # N = 1e3, 200 + 200 draws (~35 s)
    python benchmarks/bench_mpe_vs_nuts.py --sizes 10000 --num-samples 500 --json out.json
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import bench_loo  # noqa: E402  (same directory: the problem of bench_loo.py)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402

import numpyro_mpe as mpe  # noqa: E402
from numpyro_mpe.crossval.mcmc import mcmc_loo  # noqa: E402

D = bench_loo.D
DEFAULT_SIZES = (10_000, 100_000)
QUICK_SIZE = 1_000
NEWTON_STEPS = 50
REFIT_NEWTON_STEPS = 8  # from the full fit; Newton converges in 2-3 steps here


# --------------------------------------------------------------------------- problem


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data of ``bench_loo.py`` (same seed, same ``beta`` for every N): ``(X, y)``."""
    x, y, _ = bench_loo.make_data(n, seed)
    return x, y


model = bench_loo.model


# --------------------------------------------------------------------------- worker


def _block(value):
    return jax.block_until_ready(value)


def _mpe_once(blr, guide, key, X, y) -> tuple[float, float, object, object]:
    start = time.perf_counter()
    result = blr.run(key, NEWTON_STEPS, X, y, progress_bar=False)
    _block(result.params)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    elpd = mpe.loo(model, guide, result.params, X, y)
    loo_s = time.perf_counter() - start
    return fit_s, loo_s, result, elpd


def _nuts(X, y, key, num_warmup, num_samples, num_chains):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mpe.ParetoKWarning)
        start = time.perf_counter()
        result = mcmc_loo(
            model,
            X,
            y,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="sequential",
            rng_key=key,
        )
        total = time.perf_counter() - start
    messages = [str(w.message) for w in caught if issubclass(w.category, mpe.ParetoKWarning)]
    return result, total, messages


def worker(n: int, options: dict) -> dict:
    warnings.simplefilter("ignore", mpe.ReliabilityWarning)
    out: dict = {"n": n, **options, "loadavg_start": os.getloadavg()}
    x_np, y_np = make_data(n)
    X, y = jnp.asarray(x_np), jnp.asarray(y_np)
    key_fit, key_nuts = jax.random.split(jax.random.PRNGKey(0))

    # MPE-LOO: first call (compile included), then repeats on the same shapes.
    guide = mpe.AutoGaussian(model, covariance="dense")
    blr = mpe.BLR(model, guide, mpe.optim.newton())
    fit_first, loo_first, result, elpd = _mpe_once(blr, guide, key_fit, X, y)
    fits, loos = [], []
    for _ in range(options["repeats"]):
        fit_s, loo_s, result, elpd = _mpe_once(blr, guide, key_fit, X, y)
        fits.append(fit_s)
        loos.append(loo_s)
    totals = [f + lo for f, lo in zip(fits, loos, strict=True)]
    out.update(
        mpe_first_s=fit_first + loo_first,
        mpe_fit_first_s=fit_first,
        mpe_loo_first_s=loo_first,
        mpe_warm_s=statistics.median(totals),
        mpe_fit_warm_s=statistics.median(fits),
        mpe_loo_warm_s=statistics.median(loos),
        newton_steps=len(result.losses),
        mpe_max_reliability=float(np.asarray(elpd.reliability).max()),
    )
    mpe_elpd_i = np.asarray(elpd.elpd_i)
    mpe_lppd_i = np.asarray(elpd.lppd_i)

    # NUTS + PSIS-LOO: fixed cost first (same shapes, 5 + 5 iterations), then the run.
    _, fixed_s, _ = _nuts(X, y, key_nuts, 5, 5, options["num_chains"])
    nuts, nuts_s, pareto_messages = _nuts(
        X, y, key_nuts, options["num_warmup"], options["num_samples"], options["num_chains"]
    )
    loo = nuts.loo
    stats = nuts.posterior.sample_stats
    pareto_k = np.asarray(loo.pareto_k)
    out.update(
        nuts_total_s=nuts_s,
        nuts_fixed_s=fixed_s,
        nuts_warm_s=max(nuts_s - fixed_s, 0.0),
        nuts_sampling_s=nuts.seconds["sampling"],
        nuts_log_lik_s=nuts.seconds["log_lik"],
        nuts_psis_s=nuts.seconds["psis"],
        nuts_mean_steps=float(stats["n_steps"].mean()),
        nuts_divergences=int(stats["diverging"].sum()),
        nuts_min_ess_beta=float(np.min(bulk_ess(nuts.posterior.posterior["beta"].values))),
        pareto_k_max=float(pareto_k.max()),
        pareto_k_above_good=int(np.sum(pareto_k > loo.good_k)),
        good_k=float(loo.good_k),
        pareto_warnings=pareto_messages,
    )
    psis_elpd_i = np.asarray(loo.elpd_i)
    psis_mcse_i = np.asarray(loo.mcse_elpd_i)
    psis_lpd_i = psis_elpd_i + np.asarray(loo.p_loo_i)
    del nuts, loo

    # Accuracy against Laplace refits on a random subsample.
    subsample = np.sort(
        np.random.default_rng(1).choice(n, size=min(options["num_refits"], n), replace=False)
    )
    start = time.perf_counter()
    refits = mpe.exact_loo(
        model,
        guide,
        result.params,
        X,
        y,
        method="laplace",
        indices=subsample,
        num_steps=REFIT_NEWTON_STEPS,
    )
    out["refits_s"] = time.perf_counter() - start
    reference = np.asarray(refits.elpd_i)
    mpe_error = np.abs(mpe_elpd_i[subsample] - reference)
    psis_error = np.abs(psis_elpd_i[subsample] - reference)
    out.update(
        num_refits=len(subsample),
        mpe_max_abs_err=float(mpe_error.max()),
        mpe_mean_abs_err=float(mpe_error.mean()),
        psis_max_abs_err=float(psis_error.max()),
        psis_mean_abs_err=float(psis_error.mean()),
        psis_mean_mcse_i=float(psis_mcse_i[subsample].mean()),
        elpd_refit_subsample=float(reference.sum()),
        elpd_mpe_subsample=float(mpe_elpd_i[subsample].sum()),
        elpd_psis_subsample=float(psis_elpd_i[subsample].sum()),
        elpd_loo_mpe=float(mpe_elpd_i.sum()),
        elpd_loo_psis=float(psis_elpd_i.sum()),
        mpe_vs_psis_max_abs=float(np.max(np.abs(mpe_elpd_i - psis_elpd_i))),
        # Signed, summed over all N: the LOO gap, and the same gap for the full-data
        # predictive (no leaving out): the part due to Gaussian vs NUTS posterior.
        elpd_psis_minus_mpe=float(np.sum(psis_elpd_i - mpe_elpd_i)),
        lpd_psis_minus_mpe=float(np.sum(psis_lpd_i - mpe_lppd_i)),
        loadavg_end=os.getloadavg(),
    )
    return out


def bulk_ess(draws: np.ndarray) -> np.ndarray:
    """Bulk ESS of each coefficient, ``(chain, draw, D) -> (D,)`` (arviz-stats)."""
    from arviz_stats.base import array_stats

    return np.asarray(array_stats.ess(draws, chain_axis=0, draw_axis=1))


# --------------------------------------------------------------------------- driver


def run_subprocess(n: int, options: dict, timeout: float) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--_worker", str(n)]
    command += ["--_options", json.dumps(options)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"n": n, "status": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        reason = (
            "killed by signal 9 (likely out of memory)"
            if proc.returncode == -9
            else f"exit code {proc.returncode}"
        )
        return {
            "n": n,
            "status": reason,
            "stderr_tail": proc.stderr.strip().splitlines()[-5:],
            "wall_s": wall,
        }
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    result.update(status="ok", wall_s=wall)
    return result


fmt_time = bench_loo.fmt_time


def tables(results: list[dict]) -> str:
    lines = [
        "| N | NUTS draws | MPE: fit + LOO, 1st call | MPE: warm (fit / LOO) | "
        "NUTS + PSIS total (sampling / log-lik / PSIS) | NUTS fixed cost (est.) | "
        "ratio NUTS / MPE, 1st calls | ratio, compile excluded |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['n']:,} | {r['status']} |" + " |" * 6)
            continue
        draws = f"{r['num_chains']} x ({r['num_warmup']} + {r['num_samples']})"
        lines.append(
            f"| {r['n']:,} | {draws} | {fmt_time(r['mpe_first_s'])} | "
            f"{fmt_time(r['mpe_warm_s'])} ({fmt_time(r['mpe_fit_warm_s'])} / "
            f"{fmt_time(r['mpe_loo_warm_s'])}) | {fmt_time(r['nuts_total_s'])} "
            f"({fmt_time(r['nuts_sampling_s'])} / {fmt_time(r['nuts_log_lik_s'])} / "
            f"{fmt_time(r['nuts_psis_s'])}) | {fmt_time(r['nuts_fixed_s'])} | "
            f"**{r['nuts_total_s'] / r['mpe_first_s']:.3g}x** | "
            f"**{r['nuts_warm_s'] / r['mpe_warm_s']:.3g}x** |"
        )
    lines += [
        "",
        "| N | refits (subsample) | max / mean abs(elpd_i MPE - refit) | "
        "max / mean abs(elpd_i PSIS - refit) | mean PSIS MCSE(elpd_i) | "
        "elpd_loo MPE / PSIS (all N) | sum (PSIS - MPE): elpd_i / lpd_i | "
        "max abs(MPE - PSIS), all N | "
        "Pareto k max (> good_k) | NUTS: mean leapfrog steps, min ESS, divergences |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["status"] != "ok":
            continue
        lines.append(
            f"| {r['n']:,} | {r['num_refits']} ({fmt_time(r['refits_s'])}) | "
            f"{r['mpe_max_abs_err']:.2e} / {r['mpe_mean_abs_err']:.2e} | "
            f"{r['psis_max_abs_err']:.2e} / {r['psis_mean_abs_err']:.2e} | "
            f"{r['psis_mean_mcse_i']:.2e} | {r['elpd_loo_mpe']:.3f} / "
            f"{r['elpd_loo_psis']:.3f} | {r['elpd_psis_minus_mpe']:+.3f} / "
            f"{r['lpd_psis_minus_mpe']:+.3f} | {r['mpe_vs_psis_max_abs']:.2e} | "
            f"{r['pareto_k_max']:.2f} ({r['pareto_k_above_good']} > {r['good_k']:.2f}) | "
            f"{r['nuts_mean_steps']:.1f}, {r['nuts_min_ess_beta']:.0f}, "
            f"{r['nuts_divergences']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: int(float(s)), nargs="+")
    parser.add_argument("--quick", action="store_true", help="N = 1e3, 200 + 200 draws")
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--num-refits", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per N")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--_worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_options", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker is not None:
        print(json.dumps(worker(args._worker, json.loads(args._options))))
        return 0

    if args.quick:
        sizes = [QUICK_SIZE]
        args.num_warmup, args.num_samples = 200, 200
        args.num_refits, args.repeats = min(args.num_refits, 50), 2
    else:
        sizes = args.sizes or list(DEFAULT_SIZES)
    options = {
        "num_warmup": args.num_warmup,
        "num_samples": args.num_samples,
        "num_chains": args.num_chains,
        "num_refits": args.num_refits,
        "repeats": args.repeats,
    }
    print(f"# MPE-LOO vs NUTS + PSIS-LOO: logistic regression, D = {D}, float64", flush=True)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), numpyro {numpyro.__version__}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n",
        flush=True,
    )
    total_start = time.perf_counter()
    results = []
    for n in sizes:
        print(f"running N = {n:,} ...", file=sys.stderr, flush=True)
        result = run_subprocess(n, options, args.timeout)
        results.append(result)
        print(
            f"  {result['status']} in {result.get('wall_s', float('nan')):.1f} s",
            *result.get("stderr_tail", []),
            sep="\n    ",
            file=sys.stderr,
            flush=True,
        )
    print(tables(results))
    print(
        "\nReference: Laplace refits (Newton from the full fit, same predictive integration "
        "as mpe.loo); they measure MPE's LOO-approximation error, and PSIS's Monte Carlo "
        "error plus the Laplace-vs-posterior difference."
    )
    print(f"\nTotal benchmark wall time: {time.perf_counter() - total_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"options": options, "results": results}, f, indent=2)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
