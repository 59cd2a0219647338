"""Benchmark: Newton fit and MPE-LOO for logistic regression, D = 20, N up to 1e6.

For each N this measures, each N in its own subprocess (so that peak memory is per N):

* the Newton fit (``BLR(..., optim.newton()).run``): first call (compile included) and
  repeat calls on the same ``BLR`` object;
* the baseline: one jitted ``jax.value_and_grad`` + ``jax.hessian`` of ``pm.log_joint``
  at the fitted mean;
* MPE-LOO end to end (``mpe.loo(model, guide, params, X, y)`` exactly as a user calls it,
  model tracing included) and its jitted numerical core alone
  (``numpyro_mpe.crossval.mpe_loo.predictor_loo`` with ``method="cavity"`` on
  ``(mean, precision)``);
* the ratios of both MPE-LOO times to the baseline (target <= 5);
* peak resident memory (``ru_maxrss``) after the fit and at the end of the run.

At N = 1000 a further subprocess times brute-force leave-one-out refits (target: MPE-LOO
at least 100x faster) and compares their predictive densities with MPE-LOO's.

Usage::

    python benchmarks/bench_loo.py                      # N = 1e3 to 1e6 (~2.5 min on 2 CPUs)
    python benchmarks/bench_loo.py --sizes 1000 10000
    python benchmarks/bench_loo.py --quick              # N = 1e3 only, fewer repeats
    python benchmarks/bench_loo.py --json results.json  # also write the raw numbers
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import numpyro_mpe as mpe  # noqa: E402

_loo_module = importlib.import_module("numpyro_mpe.crossval.mpe_loo")

D = 20
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
REFIT_N = 1_000
LOO_TARGET = 5.0
REFIT_TARGET = 100.0
GAUSS_HERMITE_POINTS = 40  # what numpyro_mpe uses for a 1-d predictor


# --------------------------------------------------------------------------- problem


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X = [1, z_1..z_19]``, ``beta ~ N(0, 0.5^2)``, ``y ~ Bernoulli(sigmoid(X beta))``.

    ``beta`` is drawn first, so it is the same for every N.
    """
    rng = np.random.default_rng(seed)
    beta = rng.normal(0.0, 0.5, size=D)
    x = np.hstack([np.ones((n, 1)), rng.standard_normal((n, D - 1))])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ beta)))).astype(np.float64)
    return x, y, beta


def model(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


# --------------------------------------------------------------------------- helpers


def _block(value):
    return jax.block_until_ready(value)


def time_call(fn, repeats: int) -> tuple[float, float, list[float], object]:
    """First call (compile included) and the median of ``repeats`` further calls."""
    start = time.perf_counter()
    out = _block(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = _block(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), times, out


def time_paired(fns, repeats: int):
    """Like :func:`time_call` for several functions, called in turn on each repeat.

    Returns first-call times, lists of repeat times and the last outputs, per function.
    """
    firsts, outs = [], []
    for fn in fns:
        start = time.perf_counter()
        outs.append(_block(fn()))
        firsts.append(time.perf_counter() - start)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            outs[k] = _block(fn())
            times[k].append(time.perf_counter() - start)
    return firsts, times, outs


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def xla_temp_mb(jitted, *args) -> float | None:
    """XLA's temporary-buffer size for a jitted function (None when not reported)."""
    try:
        analysis = jitted.lower(*args).compile().memory_analysis()
        return analysis.temp_size_in_bytes / 1024.0**2
    except Exception:
        return None


def value_grad_hessian(log_joint):
    def fn(theta):
        value, gradient = jax.value_and_grad(log_joint)(theta)
        return value, gradient, jax.hessian(log_joint)(theta)

    return fn


def gaussian_log_predictive(y, mu, var, points: int = GAUSS_HERMITE_POINTS):
    """``log int Bernoulli(y | sigmoid(f)) N(f; mu, var) df`` by Gauss-Hermite."""
    nodes, weights = np.polynomial.hermite.hermgauss(points)
    f = mu[:, None] + jnp.sqrt(2.0 * var)[:, None] * nodes[None, :]
    log_lik = dist.Bernoulli(logits=f).log_prob(y[:, None])
    return jax.scipy.special.logsumexp(log_lik + jnp.log(weights / np.sqrt(np.pi)), axis=1)


def fit():
    guide = mpe.AutoGaussian(model, covariance="dense")
    blr = mpe.BLR(model, guide, mpe.optim.newton())
    return guide, blr


def default_repeats(n: int) -> int:
    if n <= 10_000:
        return 11
    if n <= 100_000:
        return 5
    return 3


# --------------------------------------------------------------------------- workers


def worker_size(n: int, repeats: int) -> dict:
    """All timings for one N (run in its own process)."""
    warnings.simplefilter("ignore", mpe.ReliabilityWarning)
    out: dict = {"n": n, "repeats": repeats, "loadavg_start": os.getloadavg()}
    x_np, y_np, _ = make_data(n)
    X, y = jnp.asarray(x_np), jnp.asarray(y_np)
    del x_np, y_np
    key = jax.random.PRNGKey(0)

    # Newton fit: first call on a fresh BLR (compiles), then repeats on the same object.
    guide, blr = fit()
    fit_first, fit_repeat, fit_times, result = time_call(
        lambda: blr.run(key, 50, X, y, progress_bar=False), max(1, repeats // 2)
    )
    out.update(
        fit_first_s=fit_first,
        fit_repeat_s=fit_repeat,
        fit_times_s=fit_times,
        newton_steps=len(result.losses),
        rss_after_fit_mb=peak_rss_mb(),
    )
    # BLR.init alone on the warm BLR object (part of every run).
    start = time.perf_counter()
    _block(blr.init(key, X, y))
    out["fit_init_s"] = time.perf_counter() - start
    params = result.params
    mean, precision = guide.mean_precision(params)

    start = time.perf_counter()
    pm = mpe.trace_model(model, X, y)
    out["trace_model_first_s"] = time.perf_counter() - start
    # Baseline (one jitted value_and_grad + hessian of the log joint at the fitted mean)
    # and the jitted numerical core of MPE-LOO on (mean, precision), timed alternately so
    # that both see the same machine load.
    baseline = jax.jit(value_grad_hessian(pm.log_joint))
    core = jax.jit(functools.partial(_loo_module.predictor_loo, pm.predictor, method="cavity"))
    (base_first, core_first), (base_times, core_times), (_, core_out) = time_paired(
        [lambda: baseline(mean), lambda: core(mean, precision)], repeats
    )
    out.update(
        base_first_s=base_first,
        base_s=statistics.median(base_times),
        base_min_s=min(base_times),
        base_times_s=base_times,
        core_first_s=core_first,
        core_s=statistics.median(core_times),
        core_min_s=min(core_times),
        core_times_s=core_times,
        core_over_base_paired=statistics.median(
            c / b for c, b in zip(core_times, base_times, strict=True)
        ),
    )

    # mpe.loo end to end, as a user calls it (traces the model each call).
    loo_repeats = repeats if n <= 100_000 else 2
    loo_first, loo_repeat, loo_times, elpd = time_call(
        lambda: mpe.loo(model, guide, params, X, y), loo_repeats
    )
    out.update(loo_first_s=loo_first, loo_s=loo_repeat, loo_times_s=loo_times)

    # Where mpe.loo's time goes besides the core: tracing the model.
    trace_times = []
    for _ in range(min(3, repeats)):
        start = time.perf_counter()
        mpe.trace_model(model, X, y)
        trace_times.append(time.perf_counter() - start)
    out["trace_model_s"] = statistics.median(trace_times)

    elpd_i = np.asarray(elpd.elpd_i)
    reliability = np.asarray(elpd.reliability)
    out.update(
        elpd_loo=float(elpd.elpd),
        p_loo=float(elpd.p),
        core_matches_loo=bool(np.allclose(np.asarray(core_out[0]), elpd_i)),
        max_reliability=float(reliability.max()),
        num_reliability_above_0_7=int(np.sum(reliability > 0.7)),
        rss_end_mb=peak_rss_mb(),
        loadavg_end=os.getloadavg(),
        xla_temp_core_mb=xla_temp_mb(core, mean, precision),
        xla_temp_base_mb=xla_temp_mb(baseline, mean),
    )
    return out


def worker_refits(n: int, repeats: int, chunk: int, loop_subset: int) -> dict:
    """Brute-force leave-one-out refits at N = n, and their agreement with MPE-LOO."""
    warnings.simplefilter("ignore", mpe.ReliabilityWarning)
    out: dict = {"n": n, "chunk": chunk, "loop_subset": loop_subset}
    x_np, y_np, _ = make_data(n)
    X, y = jnp.asarray(x_np), jnp.asarray(y_np)
    key = jax.random.PRNGKey(0)
    guide, blr = fit()
    params = blr.run(key, 50, X, y, progress_bar=False).params
    mean, precision = guide.mean_precision(params)
    pm = mpe.trace_model(model, X, y)

    # MPE-LOO and the baseline again, in this process.
    out["loadavg_start"] = os.getloadavg()
    baseline = jax.jit(value_grad_hessian(pm.log_joint))
    core = jax.jit(functools.partial(_loo_module.predictor_loo, pm.predictor, method="cavity"))
    _, (base_times, core_times), _ = time_paired(
        [lambda: baseline(mean), lambda: core(mean, precision)], repeats
    )
    out["base_s"], out["base_min_s"] = statistics.median(base_times), min(base_times)
    out["core_s"], out["core_min_s"] = statistics.median(core_times), min(core_times)
    _, out["loo_s"], _, elpd = time_call(lambda: mpe.loo(model, guide, params, X, y), repeats)
    mpe_elpd_i = np.asarray(elpd.elpd_i)

    # (a) Efficient brute force: the package's Newton optimizer, started at the full-data
    # mean, on the weighted log joint (weight 0 for the left-out example), vmapped over
    # `chunk` left-out examples at a time and jitted. All n refits are timed.
    optimizer = mpe.optim.newton()

    def refit(weights):
        def loss(theta):
            return -pm.log_joint(theta, weights)

        def cond(carry):
            _, steps, done = carry
            return (~done) & (steps < 50)

        def body(carry):
            state, steps, _ = carry
            state, info = optimizer.update(state, loss)
            return state, steps + 1, info.converged

        state = optimizer.init(mean, loss)
        state, steps, _ = jax.lax.while_loop(cond, body, (state, 0, jnp.array(False)))
        return state.mean, state.hessian, steps

    refit_chunk = jax.jit(jax.vmap(refit))

    def weights_for(indices):
        return 1.0 - jax.nn.one_hot(jnp.asarray(indices), n, dtype=X.dtype)

    starts = range(0, n, chunk)
    start = time.perf_counter()
    _block(refit_chunk(weights_for(np.arange(chunk))))
    out["refit_vmap_compile_and_first_chunk_s"] = time.perf_counter() - start
    means, hessians, steps = [], [], []
    start = time.perf_counter()
    for lo in starts:
        m_, h_, s_ = _block(refit_chunk(weights_for(np.arange(lo, min(lo + chunk, n)))))
        means.append(m_)
        hessians.append(h_)
        steps.append(s_)
    out["refit_vmap_all_s"] = time.perf_counter() - start
    means, hessians = jnp.concatenate(means), jnp.concatenate(hessians)
    steps = np.concatenate([np.asarray(s) for s in steps])
    out["refit_newton_steps_max"] = int(steps.max())
    out["refit_newton_steps_median"] = float(np.median(steps))

    # Refit predictive density with the same Gaussian-predictive integration as MPE-LOO:
    # logit ~ N(x_i^T m_-i, x_i^T S_-i^-1 x_i), Gauss-Hermite with 40 points.
    mu = jnp.einsum("np,np->n", X, means)
    var = jnp.einsum("np,np->n", X, jnp.linalg.solve(hessians, X[:, :, None])[..., 0])
    refit_elpd_i = np.asarray(gaussian_log_predictive(y, mu, var))
    diff = mpe_elpd_i - refit_elpd_i
    out.update(
        max_abs_diff_elpd_i=float(np.max(np.abs(diff))),
        mean_abs_diff_elpd_i=float(np.mean(np.abs(diff))),
        elpd_loo_mpe=float(mpe_elpd_i.sum()),
        elpd_loo_refit=float(refit_elpd_i.sum()),
        max_reliability=float(np.asarray(elpd.reliability).max()),
    )

    # (b) Brute force as a user would write it: BLR.run on the data without row i (one
    # BLR object, default initialisation), for the first `loop_subset` rows, extrapolated
    # linearly to n refits. One extra refit first, to compile.
    guide_b = mpe.AutoGaussian(model, covariance="dense")
    blr_b = mpe.BLR(model, guide_b, mpe.optim.newton())

    def user_refit(i):
        xi, yi = jnp.delete(X, i, axis=0), jnp.delete(y, i)
        return blr_b.run(key, 50, xi, yi, progress_bar=False).params

    _block(user_refit(n - 1))
    start = time.perf_counter()
    for i in range(loop_subset):
        _block(user_refit(i))
    per_refit = (time.perf_counter() - start) / loop_subset
    out["refit_loop_per_refit_s"] = per_refit
    out["refit_loop_extrapolated_s"] = per_refit * n
    out["rss_end_mb"] = peak_rss_mb()
    out["loadavg_end"] = os.getloadavg()
    return out


# --------------------------------------------------------------------------- driver


def run_subprocess(args: list[str], timeout: float) -> dict:
    command = [sys.executable, os.path.abspath(__file__), *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        reason = (
            "killed by signal 9 (likely out of memory)"
            if proc.returncode == -9
            else f"exit code {proc.returncode}"
        )
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"status": reason, "stderr_tail": tail, "wall_s": wall}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result["status"] = "ok"
    result["wall_s"] = wall
    return result


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_ratio(value: float, target: float, below: bool) -> str:
    ok = value <= target if below else value >= target
    return f"{value:.3g} ({'meets' if ok else 'misses'} {'<=' if below else '>='} {target:g})"


def environment() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "commit": commit,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def size_tables(results: list[dict]) -> str:
    lines = [
        "| N | Newton steps | fit, 1st call | fit, repeat | of which `BLR.init` | "
        "grad+Hess, median (min) | MPE-LOO core, median (min) | core, 1st call | "
        "`mpe.loo`, 1st call | `mpe.loo`, repeat | of which `trace_model` |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['n']:,} | {r['status']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['n']:,} | {r['newton_steps']} | {fmt_time(r['fit_first_s'])} | "
            f"{fmt_time(r['fit_repeat_s'])} | {fmt_time(r['fit_init_s'])} | "
            f"{fmt_time(r['base_s'])} ({fmt_time(r['base_min_s'])}) | "
            f"{fmt_time(r['core_s'])} ({fmt_time(r['core_min_s'])}) | "
            f"{fmt_time(r['core_first_s'])} | {fmt_time(r['loo_first_s'])} | "
            f"{fmt_time(r['loo_s'])} | {fmt_time(r['trace_model_s'])} |"
        )
    lines += [
        "",
        "| N | core / grad+Hess, paired median (ratio of mins) | `mpe.loo` / grad+Hess | "
        "peak RSS after fit | peak RSS at end | XLA temp: core / grad+Hess | "
        "max reliability | load avg. |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['n']:,} | {r['status']} |" + " |" * 6)
            continue
        temps = (
            f"{r['xla_temp_core_mb']:.0f} MB / {r['xla_temp_base_mb']:.0f} MB"
            if r["xla_temp_core_mb"] is not None and r["xla_temp_base_mb"] is not None
            else "-"
        )
        lines.append(
            f"| {r['n']:,} | {fmt_ratio(r['core_over_base_paired'], LOO_TARGET, True)} "
            f"({r['core_min_s'] / r['base_min_s']:.3g}) | "
            f"{fmt_ratio(r['loo_s'] / r['base_s'], LOO_TARGET, True)} | "
            f"{r['rss_after_fit_mb']:.0f} MB | {r['rss_end_mb']:.0f} MB | {temps} | "
            f"{r['max_reliability']:.3g} | "
            f"{r['loadavg_start'][0]:.1f} → {r['loadavg_end'][0]:.1f} |"
        )
    return "\n".join(lines)


def refit_table(r: dict) -> str:
    if r["status"] != "ok":
        return f"Brute-force refits: {r['status']}"
    n = r["n"]
    vmap_all, loop_all = r["refit_vmap_all_s"], r["refit_loop_extrapolated_s"]
    lines = [
        f"| brute force ({n:,} refits) | time | / MPE-LOO core ({fmt_time(r['core_s'])}, "
        f"min {fmt_time(r['core_min_s'])}) | "
        f"/ `mpe.loo` ({fmt_time(r['loo_s'])}) |",
        "|---|---:|---:|---:|",
        f"| (a) jitted Newton from the full-data mean, vmapped in chunks of {r['chunk']}, "
        f"all {n:,} timed | {fmt_time(vmap_all)} | "
        f"{fmt_ratio(vmap_all / r['core_s'], REFIT_TARGET, False)} | "
        f"{fmt_ratio(vmap_all / r['loo_s'], REFIT_TARGET, False)} |",
        f"| (b) `BLR.run` on the data without row i, looped; {r['loop_subset']} timed, "
        f"x{n // r['loop_subset']} | {fmt_time(loop_all)} | "
        f"{fmt_ratio(loop_all / r['core_s'], REFIT_TARGET, False)} | "
        f"{fmt_ratio(loop_all / r['loo_s'], REFIT_TARGET, False)} |",
        "",
        f"Agreement with the refits (refit predictive: logit ~ N(x_i^T m_-i, "
        f"x_i^T S_-i^-1 x_i), {GAUSS_HERMITE_POINTS}-point Gauss-Hermite): "
        f"max |elpd_i(MPE) - elpd_i(refit)| = {r['max_abs_diff_elpd_i']:.2e}, "
        f"mean {r['mean_abs_diff_elpd_i']:.2e}; elpd_loo {r['elpd_loo_mpe']:.4f} (MPE) vs "
        f"{r['elpd_loo_refit']:.4f} (refits). Refit Newton steps: median "
        f"{r['refit_newton_steps_median']:g}, max {r['refit_newton_steps_max']}. "
        f"grad+Hess in this process: {fmt_time(r['base_s'])}; peak RSS "
        f"{r['rss_end_mb']:.0f} MB; load avg. {r['loadavg_start'][0]:.1f} → "
        f"{r['loadavg_end'][0]:.1f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=lambda s: int(float(s)),
        default=None,
        help="values of N (default: 1e3 1e4 1e5 1e6)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N = 1e3 only, fewer repeats (for tests)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats after the first call (default: 11/5/3 by N)",
    )
    parser.add_argument("--no-refits", action="store_true", help="skip the brute-force refits")
    parser.add_argument(
        "--refit-chunk", type=int, default=100, help="left-out examples per vmapped refit batch"
    )
    parser.add_argument(
        "--refit-loop-subset",
        type=int,
        default=20,
        help="number of looped BLR.run refits timed (then extrapolated)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed to each per-N subprocess"
    )
    parser.add_argument("--json", default=None, help="write the raw results to this file")
    parser.add_argument("--_worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_refits", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker is not None:
        repeats = args.repeats or default_repeats(args._worker)
        print(json.dumps(worker_size(args._worker, repeats)))
        return 0
    if args._refits is not None:
        repeats = args.repeats or default_repeats(args._refits)
        result = worker_refits(args._refits, repeats, args.refit_chunk, args.refit_loop_subset)
        print(json.dumps(result))
        return 0

    sizes = [REFIT_N] if args.quick else (args.sizes or list(DEFAULT_SIZES))
    if args.quick:
        args.repeats = args.repeats or 5
        args.refit_loop_subset = min(args.refit_loop_subset, 5)
    extra = ["--repeats", str(args.repeats)] if args.repeats else []
    env = environment()
    print(f"# MPE-LOO benchmark: logistic regression, D = {D}, float64", flush=True)
    print(
        f"jax {env['jax']} ({env['backend']}), numpyro {env['numpyro']}, "
        f"{env['cpu_count']} x {env['cpu']}, Python {env['python']}, "
        f"numpyro_mpe at commit {env['commit']}\n",
        flush=True,
    )
    total_start = time.perf_counter()
    results = []
    for n in sizes:
        print(f"running N = {n:,} ...", file=sys.stderr, flush=True)
        result = run_subprocess(["--_worker", str(n), *extra], args.timeout)
        result.setdefault("n", n)
        results.append(result)
        print(
            f"  {result['status']} in {result.get('wall_s', float('nan')):.1f} s",
            file=sys.stderr,
            flush=True,
        )
    refits = None
    if REFIT_N in sizes and not args.no_refits:
        print(f"running brute-force refits at N = {REFIT_N:,} ...", file=sys.stderr, flush=True)
        refits = run_subprocess(
            [
                "--_refits",
                str(REFIT_N),
                "--refit-chunk",
                str(args.refit_chunk),
                "--refit-loop-subset",
                str(args.refit_loop_subset),
                *extra,
            ],
            args.timeout,
        )
        refits.setdefault("n", REFIT_N)
        print(
            f"  {refits['status']} in {refits.get('wall_s', float('nan')):.1f} s",
            file=sys.stderr,
            flush=True,
        )

    print(size_tables(results))
    if refits is not None:
        print()
        print(refit_table(refits))
    print(f"\nTotal benchmark wall time: {time.perf_counter() - total_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "sizes": results, "refits": refits}, f, indent=2)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
