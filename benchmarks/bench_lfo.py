"""Benchmark: MPE leave-future-out against one MPE-LOO call and against brute-force refits.

Model: ``numpyro_mpe.time_series.ar_model`` (AR(4) on residuals, latent intercept and
noise scale, P = 6) on the Lake Huron series (T = 98, L = 20: 78 origins), and on a
simulated AR(4) series of T = 1000 (L = 100: 900 origins). For each, in a fresh
subprocess per measurement (so that the first call includes every compilation, as a
user's first call does):

* ``loo``: one ``numpyro_mpe.loo`` call (the baseline);
* ``lfo_cavity`` / ``lfo_is``: ``numpyro_mpe.lfo`` with ``method="cavity"`` / ``"is"``
  (1000 draws), ``refit="never"``, horizon 1;
* ``lfo_refit``: ``numpyro_mpe.lfo(method="is", refit="unreliable")`` (Lake Huron only);
* ``exact_lfo``: ``numpyro_mpe.exact_lfo(method="laplace")``, a Newton refit per origin
  (Lake Huron only).

Each prints the first call (compile included), the median of 5 repeat calls (2 when a
call takes over 10 s), the ratios to ``loo`` measured the same way, the elpd and the
refits. Target (issue 12): MPE-LFO for all origins at most 3x one MPE-LOO call.

Usage::

    python benchmarks/bench_lfo.py            # both series (~5 min on 2 CPUs)
    python benchmarks/bench_lfo.py --quick    # Lake Huron only (~2.5 min)

Results and the verdict: ``benchmarks/README.md``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

import numpyro_mpe as mpe  # noqa: E402
from numpyro_mpe.datasets import load_lake_huron  # noqa: E402
from numpyro_mpe.time_series import ar_model  # noqa: E402

MEASUREMENTS = ("loo", "lfo_cavity", "lfo_is", "lfo_refit", "exact_lfo")
#: Lake Huron only: at T = 1000 they would take minutes per call.
SHORT_SERIES_ONLY = ("lfo_refit", "exact_lfo")


def series(name: str) -> tuple[np.ndarray, int]:
    """The series and ``min_train``."""
    if name == "lake_huron":
        return load_lake_huron().level, 20
    rng = np.random.default_rng(0)
    y = np.zeros(1000)
    for t in range(1000):
        past = [y[t - k - 1] - 579.0 if t > k else 0.0 for k in range(4)]
        y[t] = 579.0 + np.dot([1.0, -0.3, 0.03, 0.07], past) + 0.7 * rng.normal()
    return y, 100


def measure(what: str, name: str, repeats: int = 5) -> dict:
    """First-call and median repeat time of one measurement, its elpd and refits."""
    y, min_train = series(name)
    guide = mpe.AutoGaussian(ar_model)
    fit = mpe.BLR(ar_model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 50, y, level=579.0, progress_bar=False
    )
    calls = {
        "loo": lambda: mpe.loo(ar_model, guide, fit.params, y, level=579.0),
        "lfo_cavity": lambda: mpe.lfo(
            ar_model, guide, fit.params, y, min_train=min_train, method="cavity", level=579.0
        ),
        "lfo_is": lambda: mpe.lfo(
            ar_model, guide, fit.params, y, min_train=min_train, method="is", level=579.0
        ),
        "lfo_refit": lambda: mpe.lfo(
            ar_model,
            guide,
            fit.params,
            y,
            min_train=min_train,
            method="is",
            refit="unreliable",
            level=579.0,
        ),
        "exact_lfo": lambda: mpe.exact_lfo(
            ar_model, guide, fit.params, y, min_train=min_train, level=579.0
        ),
    }
    times, results = [], []

    def timed_call() -> None:
        start = time.perf_counter()
        results.append(calls[what]())
        times.append(time.perf_counter() - start)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timed_call()  # the first call: every compilation
        timed_call()
        while len(times) < 1 + (repeats if times[1] < 10 else 2):
            timed_call()
    result = results[-1]
    return {
        "first": times[0],
        "repeat": statistics.median(times[1:]),
        "elpd": float(result.elpd),
        "refits": int(getattr(result, "n_refits", 0) or 0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Lake Huron only")
    parser.add_argument("--one", nargs=2, metavar=("WHAT", "SERIES"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.one:
        print(json.dumps(measure(*options.one)))
        return
    names = ("lake_huron",) if options.quick else ("lake_huron", "simulated_1000")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"{'series':<16} {'what':<11} {'first s':>8} {'x loo':>7} {'repeat s':>9} {'x loo':>7} "
        f"{'elpd':>9} {'refits':>6}"
    )
    for name in names:
        rows = {}
        for what in MEASUREMENTS:
            if what in SHORT_SERIES_ONLY and name != "lake_huron":
                continue
            done = subprocess.run(
                [sys.executable, __file__, "--one", what, name],
                capture_output=True,
                text=True,
                check=True,
            )
            rows[what] = json.loads(done.stdout.strip().splitlines()[-1])
            row, base = rows[what], rows["loo"]
            print(
                f"{name:<16} {what:<11} {row['first']:8.2f} {row['first'] / base['first']:7.2f} "
                f"{row['repeat']:9.3f} {row['repeat'] / base['repeat']:7.2f} "
                f"{row['elpd']:9.2f} {row['refits']:6d}",
                flush=True,
            )
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
