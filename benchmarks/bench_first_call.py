"""Benchmark: time to the first ``elpd_loo`` in a fresh process, with JAX's persistent
compilation cache off, cold and warm, beside NUTS + PSIS-LOO for the same model.

The model is the demo's dist100 + arsenic logistic regression on the embedded wells
data (N = 3020, float64). Each row is its own Python process, timed from its start
(imports included) to the printed ``elpd_loo``:

* ``MPE``: ``AutoGaussian`` + ``BLR`` with ``optim.newton()`` (50 steps at most), then
  ``loo``;
* ``NUTS + PSIS``: NumPyro's NUTS, 2 chains run one after the other, 500 warmup + 1000
  draws each (the demo's settings), then ``az.loo``.

Cache modes: ``off`` (``NUMPYRO_MPE_COMPILATION_CACHE=off``), ``cold`` (an empty cache
folder) and ``warm`` (the folder the cold run filled), all through
:func:`numpyro_mpe.enable_compilation_cache`. The ratios are to ``NUTS + PSIS`` with the
cache off, run in the same invocation.

Usage::

    python benchmarks/bench_first_call.py             # 6 processes, about 2 min
    python benchmarks/bench_first_call.py --quick     # MPE only, NUTS 100 + 100 draws
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time
start = float(sys.argv[1])
method, num_warmup, num_samples = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import jax
import numpyro_mpe as mpe

mpe.enable_compilation_cache()
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from numpyro_mpe.datasets import load_wells
from numpyro_mpe.tools.demo import logistic_model

wells = load_wells()
X, y = jnp.asarray(wells.design("dist100", "arsenic")), jnp.asarray(wells.switch)
if method == "mpe":
    guide = mpe.AutoGaussian(logistic_model)
    fit = mpe.BLR(logistic_model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 50, X, y, progress_bar=False
    )
    elpd = mpe.loo(logistic_model, guide, fit.params, X, y).elpd
else:
    import arviz as az
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(logistic_model), num_warmup=num_warmup, num_samples=num_samples, num_chains=2,
        chain_method="sequential", progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), X, y)
    elpd = az.loo(az.from_numpyro(mcmc, log_likelihood=True)).elpd
print(f"{time.time() - start:.3f} {elpd:.4f}")
"""


def run_child(method: str, cache: str, folder: str, num_warmup: int, num_samples: int):
    """``(seconds, elpd)`` of one fresh process."""
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["NUMPYRO_MPE_COMPILATION_CACHE"] = "off" if cache == "off" else "on"
    env["XDG_CACHE_HOME"] = folder
    args = [str(time.time()), method, str(num_warmup), str(num_samples)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{method} ({cache}) failed:\n{proc.stderr[-3000:]}")
    seconds, elpd = proc.stdout.split()[-2:]
    return float(seconds), float(elpd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="MPE only, NUTS 100 + 100")
    options = parser.parse_args(argv)
    num_warmup, num_samples = (100, 100) if options.quick else (500, 1000)
    rows = []
    for method in ("nuts", "mpe"):
        with tempfile.TemporaryDirectory() as folder:
            for cache in ("off", "cold", "warm"):
                if options.quick and method == "nuts" and cache != "off":
                    continue
                seconds, elpd = run_child(method, cache, folder, num_warmup, num_samples)
                rows.append((method, cache, seconds, elpd))
    baseline = rows[0][2]
    names = {"mpe": "MPE (Newton + loo)", "nuts": f"NUTS {num_warmup}+{num_samples} x2 + PSIS"}
    print(f"| method | cache | seconds to elpd_loo | ratio to {names['nuts']}, cache off | elpd |")
    print("|---|---|---:|---:|---:|")
    for method, cache, seconds, elpd in rows:
        ratio = seconds / baseline
        print(f"| {names[method]} | {cache} | {seconds:.1f} | {ratio:.2f} | {elpd:.2f} |")


if __name__ == "__main__":
    main()
