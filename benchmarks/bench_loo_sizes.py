"""Benchmark: ``loo`` at many data sizes: compilations and memory under load.

Logistic regression on the wells data (``numpyro_mpe.datasets.load_wells``, N = 3020,
``[1, dist100, arsenic]``, float64), fitted once by ``BLR(..., optim.newton())``. The same
params serve every size: ``mpe.loo(model, guide, params, X[:n], y[:n])`` is called for 20
sizes ``n``, cycled (pass 1 calls each size once, pass 2 again, ...), 10 passes: 200 calls.

Printed: the number of XLA compilations (a ``jax.monitoring`` listener on
``/jax/core/compile/backend_compile_duration``) and their seconds, in the first pass (the
warm-up: every size is new) and in the later passes; the resident memory (RSS, from
``/proc/self/statm``) before the first pass, after it and at the end; and the time per
call of the later passes against a baseline run in the same process: the same number of
calls at one fixed size (the mean of the sizes), interleaved with them.

The exit status is 1 when a later pass compiles anything or when the RSS at the end
exceeds 1.10 times the RSS after the warm-up; 0 otherwise.

Usage::

    python benchmarks/bench_loo_sizes.py            # 20 sizes from 520 to 3020, 10 passes
    python benchmarks/bench_loo_sizes.py --quick    # 20 sizes from 1100 to 2040, 3 passes
    python benchmarks/bench_loo_sizes.py --passes 4 --json out.json
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import numpyro_mpe as mpe  # noqa: E402
from numpyro_mpe.datasets import load_wells  # noqa: E402

NUM_SIZES = 20
PASSES = 10
MAX_RSS_RATIO = 1.10
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


class CompileCounter:
    """XLA compilations and their seconds, from jax's monitoring events."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            self.count += 1
            self.seconds += duration

    def snapshot(self) -> tuple[int, float]:
        return self.count, self.seconds


def rss_mb() -> float:
    """Current resident memory (Linux ``/proc/self/statm``; else the peak, ``ru_maxrss``)."""
    gc.collect()
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "backend": jax.default_backend(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or "unknown",
        "loadavg": os.getloadavg(),
    }


def run(sizes: list[int], passes: int) -> dict:
    warnings.simplefilter("ignore", mpe.ReliabilityWarning)
    counter = CompileCounter()
    wells = load_wells()
    X, y = wells.design("dist100", "arsenic"), wells.switch
    guide = mpe.AutoGaussian(model)
    fit = mpe.BLR(model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 30, X, y, progress_bar=False
    )
    params = fit.params
    fixed = round(statistics.mean(sizes))

    def call(n):
        start = time.perf_counter()
        result = mpe.loo(model, guide, params, X[:n], y[:n])
        elapsed = time.perf_counter() - start
        assert result.elpd_i.shape == (n,)
        return elapsed, float(result.elpd)

    out: dict = {"sizes": sizes, "passes": passes, "fixed_size": fixed, "machine": machine()}
    out["rss_start_mb"] = rss_mb()
    compiles_before, seconds_before = counter.snapshot()
    start = time.perf_counter()
    for n in sizes:  # warm-up: every size is new
        call(n)
    out["warmup_s"] = time.perf_counter() - start
    compiles, seconds = counter.snapshot()
    out["warmup_compiles"] = compiles - compiles_before
    out["warmup_compile_s"] = seconds - seconds_before
    call(fixed)  # the baseline's size, warm too
    out["rss_warm_mb"] = rss_mb()

    compiles_warm, _ = counter.snapshot()
    pass_rows, varying, baseline = [], [], []
    for index in range(1, passes):
        before = counter.snapshot()
        pass_start = time.perf_counter()
        for n in sizes:
            elapsed, _ = call(n)
            varying.append(elapsed)
            elapsed, _ = call(fixed)
            baseline.append(elapsed)
        after = counter.snapshot()
        pass_rows.append(
            {
                "pass": index + 1,
                "compiles": after[0] - before[0],
                "seconds": time.perf_counter() - pass_start,
                "rss_mb": rss_mb(),
            }
        )
    out["later_compiles"] = counter.snapshot()[0] - compiles_warm
    out["passes_detail"] = pass_rows
    out["rss_end_mb"] = rss_mb()
    out["rss_ratio"] = out["rss_end_mb"] / out["rss_warm_mb"]
    out["total_compiles"] = counter.snapshot()[0]
    out["call_median_s"] = statistics.median(varying) if varying else float("nan")
    out["baseline_median_s"] = statistics.median(baseline) if baseline else float("nan")
    out["call_ratio"] = (
        statistics.median(v / b for v, b in zip(varying, baseline, strict=True))
        if varying
        else float("nan")
    )
    out["buckets"] = _buckets(sizes)
    return out


def _buckets(sizes: list[int]) -> int | None:
    """Distinct padded sizes (None where the package does not pad)."""
    from numpyro_mpe.core import rows

    bucket_size = getattr(rows, "bucket_size", None)
    return None if bucket_size is None else len({bucket_size(n) for n in sizes})


def report(out: dict) -> int:
    sizes = out["sizes"]
    m = out["machine"]
    print(
        f"machine: {m['cpus']} CPUs ({m['cpu']}), {m['backend']} backend, Python "
        f"{m['python']}, jax {m['jax']}, numpyro {m['numpyro']}, load average "
        f"{m['loadavg'][0]:.2f}"
    )
    buckets = out["buckets"]
    print(
        f"{len(sizes)} sizes from {min(sizes)} to {max(sizes)} x {out['passes']} passes = "
        f"{len(sizes) * out['passes']} calls of mpe.loo (wells, logistic, float64); padded "
        f"sizes: {'none' if buckets is None else buckets}"
    )
    per_size = out["warmup_compiles"] / len(sizes)
    print(
        f"warm-up (first pass, every size new): {out['warmup_compiles']} compilations "
        f"({per_size:.1f} per size), {out['warmup_compile_s']:.1f} s compiling, "
        f"{out['warmup_s']:.1f} s in all ({out['warmup_s'] / len(sizes):.2f} s per size)"
    )
    grown = out["rss_warm_mb"] - out["rss_start_mb"]
    print(
        f"RSS: {out['rss_start_mb']:.0f} MB before, {out['rss_warm_mb']:.0f} MB after the "
        f"warm-up (+{grown:.0f} MB, {grown / len(sizes):.1f} MB per size), "
        f"{out['rss_end_mb']:.0f} MB at the end"
    )
    for row in out["passes_detail"]:
        print(
            f"  pass {row['pass']:2d}: {row['compiles']} compilations, "
            f"{row['seconds']:.2f} s (with the baseline's calls), RSS {row['rss_mb']:.0f} MB"
        )
    print(f"compilations: {out['total_compiles']} in all, {out['later_compiles']} after pass 1")
    print(
        f"time per call after the warm-up: {out['call_median_s'] * 1e3:.1f} ms (median) "
        f"against {out['baseline_median_s'] * 1e3:.1f} ms at the fixed size "
        f"{out['fixed_size']}: ratio {out['call_ratio']:.2f} (median of paired ratios)"
    )
    ok_compiles = out["later_compiles"] == 0
    ok_memory = out["rss_ratio"] <= MAX_RSS_RATIO
    print(
        f"RSS end / after warm-up: {out['rss_ratio']:.3f} "
        f"({'meets' if ok_memory else 'MISSES'} <= {MAX_RSS_RATIO}); later passes "
        f"{'compile nothing' if ok_compiles else 'COMPILE'}"
    )
    return 0 if ok_compiles and ok_memory else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one padded size, 3 passes")
    parser.add_argument("--passes", type=int, default=None, help=f"default {PASSES}")
    parser.add_argument("--json", default=None, help="write the raw results to this file")
    options = parser.parse_args(argv)
    low, high = (1100, 2040) if options.quick else (520, 3020)
    sizes = [int(n) for n in np.linspace(low, high, NUM_SIZES).round()]
    passes = options.passes or (3 if options.quick else PASSES)
    if passes < 2:
        parser.error("--passes must be at least 2 (the warm-up, then the measured passes)")
    out = run(sizes, passes)
    status = report(out)
    if options.json:
        with open(options.json, "w") as handle:
            json.dump(out, handle, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(main())
