"""Leave-future-out on Lake Huron: MPE-LFO beside exact refits and PSIS-LFO.

The level of Lake Huron, 1875-1972 (98 years), with an AR(4) model of the residuals
around a latent intercept (``numpyro_mpe.time_series.ar_model``: ``ar ~ N(0, 0.5)``, a
latent noise scale), as in Bürkner, Gabry & Vehtari (2020). At each origin ``t >= L =
20`` the score is ``log p(y_{t..t+M-1} | y_{<t})``. Computed five ways:

* MPE-LFO (``numpyro_mpe.lfo``) from the one full-data Laplace fit, no refits, with the
  importance-sampled correction (``method="is"``): its Pareto k flags most origins;
* MPE-LFO with ``refit="unreliable"``: Newton refits at the origins its diagnostics
  flag, each the base of the earlier origins;
* brute-force Laplace refits at every origin (``numpyro_mpe.exact_lfo``);
* PSIS-LFO (``numpyro_mpe.psis_lfo``, ArviZ's ``lfo_cv`` with NUTS refits where the
  Pareto k passes 0.7);
* exact LFO by NUTS refits at every origin (the reference).

The table gives each total, its difference from the NUTS refits, the largest per-origin
difference, the refits made and the wall time of the call, compilation included (every
call is the first of its kind in the process, except that the NUTS refits reuse PSIS-LFO's
compiled sampler; ``benchmarks/bench_lfo.py`` times repeat calls). The figure shows the
per-origin values, their differences from the NUTS refits and the origins refitted.

Run: ``python examples/lfo_lake_huron.py [--horizon 4] [--plot FILE.png]`` (about 1.5
minutes on 2 CPUs, most of it compilation); a test runs it with few NUTS draws
(``tests/tools/test_examples.py``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import NamedTuple

import jax
import numpy as np
from arviz_stats.utils import ELPDDataLFO

import numpyro_mpe as mpe
from numpyro_mpe.datasets import load_lake_huron
from numpyro_mpe.time_series import ar_model

MIN_TRAIN = 20


class Estimate(NamedTuple):
    """One estimate: ArviZ's result, the wall time of its call and the warnings it gave
    (``"Category: message"``)."""

    result: ELPDDataLFO
    seconds: float
    warnings: tuple[str, ...]


def run_all(horizon: int, num_samples: int, num_warmup: int) -> dict[str, Estimate]:
    """Every estimate, by name. Warnings are recorded, not shown: the flags of the MPE
    runs are part of the comparison."""
    y = load_lake_huron().level
    guide = mpe.AutoGaussian(ar_model)
    fit = mpe.BLR(ar_model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 50, y, level=579.0, progress_bar=False
    )
    window = {"min_train": MIN_TRAIN, "horizon": horizon, "level": 579.0}
    nuts = {"num_samples": num_samples, "num_warmup": num_warmup}
    calls = {
        "MPE-LFO, no refits": lambda: mpe.lfo(
            ar_model, guide, fit.params, y, method="is", **window
        ),
        "MPE-LFO, refits where unreliable": lambda: mpe.lfo(
            ar_model, guide, fit.params, y, method="is", refit="unreliable", **window
        ),
        "Laplace refits": lambda: mpe.exact_lfo(ar_model, guide, fit.params, y, **window),
        "PSIS-LFO (NUTS)": lambda: mpe.psis_lfo(ar_model, y, **window, **nuts),
        "NUTS refits": lambda: mpe.psis_lfo(ar_model, y, method="exact", **window, **nuts),
    }
    results = {}
    for name, call in calls.items():
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call()
            seconds = time.perf_counter() - start
        messages = tuple(f"{item.category.__name__}: {item.message}" for item in caught)
        results[name] = Estimate(result, seconds, messages)
    return results


def table(results: dict, reference: str = "NUTS refits") -> list[dict]:
    """Per estimate: total elpd, its difference from the reference, the largest
    per-origin difference, the refits made, the wall time and the warnings."""
    exact = results[reference].result.elpd_i.values
    rows = []
    for name, (result, seconds, messages) in results.items():
        diff = result.elpd_i.values - exact
        rows.append(
            {
                "name": name,
                "elpd": float(result.elpd),
                "diff": float(diff.sum()),
                "max_abs_diff": float(np.max(np.abs(diff))),
                "refits": int(result.n_refits),
                "seconds": seconds,
                "warnings": messages,
            }
        )
    return rows


def plot(results: dict, path: str, horizon: int) -> None:
    """Per-origin elpd of every estimate (top), its difference from the NUTS refits
    (middle, linear within +-0.1 and logarithmic beyond) and the origins where PSIS-LFO
    and MPE-LFO refitted (bottom)."""
    import matplotlib.pyplot as plt

    year = load_lake_huron().year
    reference = results["NUTS refits"].result
    origins = reference.elpd_i["time"].values
    fig, (top, middle, bottom) = plt.subplots(
        3,
        1,
        figsize=(9, 7.5),
        sharex=True,
        height_ratios=(3, 3, 0.7),
        layout="constrained",
    )
    styles = {
        "NUTS refits": {"color": "black", "lw": 2.5},
        "Laplace refits": {"color": "tab:gray", "ls": "--", "lw": 1.2},
        "MPE-LFO, no refits": {"color": "tab:purple", "lw": 1, "alpha": 0.6},
        "MPE-LFO, refits where unreliable": {"color": "tab:blue", "marker": ".", "lw": 1},
        "PSIS-LFO (NUTS)": {"color": "tab:orange", "marker": "x", "lw": 1, "ms": 4},
    }
    for name, style in styles.items():
        values = results[name].result.elpd_i.values
        top.plot(year[origins], values, label=name, **style)
        middle.plot(year[origins], values - reference.elpd_i.values, **style)
    middle.set_yscale("symlog", linthresh=0.1)
    middle.axhspan(-0.1, 0.1, color="0.93", zorder=0)
    largest = max(
        np.max(np.abs(results[name].result.elpd_i.values - reference.elpd_i.values))
        for name in styles
    )
    positive = [tick for tick in (0.1, 1.0, 10.0, 100.0) if tick <= largest]
    ticks = [-tick for tick in positive[::-1]] + [0.0] + positive
    middle.set_yticks(ticks, [f"{tick:g}" for tick in ticks])
    refitted = [
        ("PSIS-LFO (NUTS)", "v", "tab:orange"),
        ("MPE-LFO, refits where unreliable", "^", "tab:blue"),
    ]
    for row, (name, marker, color) in enumerate(refitted):
        refits = np.asarray(results[name].result.refits, dtype=int)
        bottom.plot(year[refits], np.full(refits.size, row), marker, color=color, ms=8)
    bottom.set_yticks(range(len(refitted)), ["PSIS-LFO", "MPE-LFO"])
    bottom.set_ylim(-0.7, len(refitted) - 0.3)
    bottom.set_ylabel("refits")
    block = "y_t" if horizon == 1 else f"y_t..y_t+{horizon - 1}"
    top.set_ylabel(f"log p({block} | y_<t)")
    middle.set_ylabel("minus NUTS refits (linear in grey band)")
    bottom.set_xlabel("forecast origin t (year of y_t)")
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Lake Huron AR(4), leave-future-out, L = {MIN_TRAIN}, M = {horizon}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run every estimate, print the table, save the figure if asked; return
    ``{"results": run_all(...), "rows": table(...)}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=2000, help="NUTS draws per fit")
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--plot", metavar="PATH", help="save the figure here")
    options = parser.parse_args(argv)
    mpe.enable_compilation_cache()  # off with NUMPYRO_MPE_COMPILATION_CACHE=off
    results = run_all(options.horizon, options.num_samples, options.num_warmup)
    rows = table(results)
    print(f"{'':<34} {'elpd':>9} {'- NUTS':>8} {'max |d_t|':>9} {'refits':>6} {'s':>7}")
    for row in rows:
        print(
            f"{row['name']:<34} {row['elpd']:9.2f} {row['diff']:8.2f} "
            f"{row['max_abs_diff']:9.3f} {row['refits']:6d} {row['seconds']:7.1f}"
        )
    print("s: wall time of the call, compilation included")
    for row in rows:
        for message in row["warnings"]:
            print(f"{row['name']}: {message}")
    if options.plot:
        plot(results, options.plot, options.horizon)
    return {"results": results, "rows": rows}


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
