"""Leave-one-county-out refits of radon with latent scales, stored as a test reference.

``tests/crossval/test_groups.py`` checks ``loo(..., groups=county)`` on the non-centered
radon model with latent scales (``tests/models.py``: ``radon_latent_scales``, posteriordb
radon_mn, 919 homes in 85 counties) against brute-force refits. The refits take most of
that test's time, so they are computed here once, with more draws than a test could
afford, and kept in ``tests/references``:

- ``loo_radon_counties_refits.csv``: ``county, elpd``, one row per county: ``log p(y_G |
  y_{-G})`` of the county's homes, jointly;
- ``loo_radon_counties_examples.csv``: ``index, county, example_elpd``, one row per home:
  ``log p(y_i | y_{-G(i)})``, the home's density given the data without its county.

They are written by :func:`numpyro_mpe.exact_loo` with ``groups=county`` (float64): a
Newton refit without each county, from the full-data Laplace fit, to a decrement below
``1e-10``, then the county's likelihood integrated against the refit by importance
sampling from the Laplace approximation of ``p(y_G | theta) q_-G(theta)`` with
``NUM_SAMPLES = 16000`` draws (PSIS), seed 0. That estimator is exact for quadratic
``l_G``, which ``test_exact_group_refits_equal_closed_form`` checks against the closed
form of the fixed-scale model. Here the Pareto k of a few counties is above 0.7 (the
script prints the warning), so their values carry some bias: between 2000 and 16000
draws they moved by up to 0.049, 0.28 in the total.

Run from the repository root in the project's virtual environment::

    python benchmarks/group_references.py

It takes about a minute on 2 cores.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from models import radon, radon_latent_scales  # noqa: E402

import numpyro_mpe as mpe  # noqa: E402

NUM_SAMPLES = 16000
REFERENCES = ROOT / "tests" / "references"
COUNTIES_CSV = REFERENCES / "loo_radon_counties_refits.csv"
EXAMPLES_CSV = REFERENCES / "loo_radon_counties_examples.csv"


def county_refits(num_samples: int = NUM_SAMPLES, seed: int = 0):
    """``exact_loo(..., groups=county)`` on radon with latent scales (float64):
    ``(county, floor, y, result)``."""
    county, floor, y = radon()
    guide = mpe.AutoGaussian(radon_latent_scales)
    fit = mpe.BLR(radon_latent_scales, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 50, county, floor, y, progress_bar=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = mpe.exact_loo(
            radon_latent_scales,
            guide,
            fit.params,
            county,
            floor,
            y,
            groups=county,
            num_samples=num_samples,
            seed=seed,
        )
    for warning in caught:
        print(f"{warning.category.__name__}: {warning.message}")
    return county, floor, y, result


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    start = time.perf_counter()
    county, _, _, result = county_refits()
    counties = np.asarray(result.elpd_i.coords["group"].values)
    with COUNTIES_CSV.open("w") as out:
        out.write("county,elpd\n")
        for label, elpd in zip(counties, result.elpd_i.values, strict=True):
            out.write(f"{label},{elpd:.12g}\n")
    with EXAMPLES_CSV.open("w") as out:
        out.write("index,county,example_elpd\n")
        for index, (label, value) in enumerate(
            zip(county, result.example_elpd.values, strict=True)
        ):
            out.write(f"{index},{label},{value:.12g}\n")
    total = float(result.elpd_i.values.sum())
    seconds = time.perf_counter() - start
    print(
        f"{counties.size} county refits, {NUM_SAMPLES} draws: total {total:.4f}; {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
