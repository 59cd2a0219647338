"""The main job: MPE-LOO beside PSIS-LOO from NUTS on the embedded wells data.

Two Bernoulli-logit models of whether a household switched wells: ``dist100`` alone,
and ``dist100 + arsenic`` (coefficients ~ N(0, 1)). Each is fitted once by Newton
(Laplace) for MPE-LOO and by NUTS for ``az.loo``; ``az.compare`` ranks all four. For the
second model, :func:`numpyro_mpe.compare_loo` then sets MPE-LOO and PSIS-LOO against
brute-force Laplace refits, example by example.
"""

from __future__ import annotations

import time
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import numpyro_mpe as mpe
from numpyro_mpe.crossval.compare import check_figure_path
from numpyro_mpe.datasets import load_wells
from numpyro_mpe.optim.base import check_count

__all__ = ["MIN_DRAWS", "logistic_model", "main", "run_demo"]

#: Fewest NUTS draws in all (``num_samples * num_chains``) for ``az.loo``: PSIS fits its
#: Pareto tail to ``min(S / 5, 3 sqrt(S / r_eff))`` draws and needs at least 5 of them.
MIN_DRAWS = 25


def logistic_model(X, y=None):
    """``y_i ~ Bernoulli(logit^-1(X_i beta))``, ``beta ~ N(0, I)``."""
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def _check_options(*, num_warmup: Any, num_samples: Any, num_chains: Any) -> None:
    check_count("num_warmup", num_warmup, 0)
    check_count("num_samples", num_samples, 1)
    check_count("num_chains", num_chains, 1)
    if num_samples * num_chains < MIN_DRAWS:
        raise ValueError(
            f"num_samples * num_chains must be at least {MIN_DRAWS} draws for PSIS-LOO, got "
            f"{num_samples} * {num_chains} = {num_samples * num_chains}"
        )


def run_demo(
    *, num_warmup: int = 500, num_samples: int = 1000, num_chains: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Fit both models both ways; return the LOO results, the table and timings.

    Raises
    ------
    TypeError, ValueError
        Before any fit: a count that is not an integer, ``num_warmup`` below 0,
        ``num_samples`` or ``num_chains`` below 1, or fewer than :data:`MIN_DRAWS`
        draws in all (``num_samples * num_chains``) for PSIS-LOO.
    """
    _check_options(num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains)
    wells = load_wells()
    designs = {
        "dist": wells.design("dist100"),
        "dist+arsenic": wells.design("dist100", "arsenic"),
    }
    y = jnp.asarray(wells.switch)
    results, timings = {}, {}
    for name, X in designs.items():
        X = jnp.asarray(X)
        start = time.perf_counter()
        guide = mpe.AutoGaussian(logistic_model)
        fit = mpe.BLR(logistic_model, guide, mpe.optim.newton()).run(
            jax.random.PRNGKey(seed), 50, X, y, progress_bar=False
        )
        results[f"{name} (MPE)"] = mpe.loo(logistic_model, guide, fit.params, X, y)
        timings[f"{name} (MPE)"] = time.perf_counter() - start

        start = time.perf_counter()
        mcmc = MCMC(
            NUTS(logistic_model),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="sequential",
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(seed), X, y)
        idata = az.from_numpyro(mcmc, log_likelihood=True)
        results[f"{name} (NUTS+PSIS)"] = az.loo(idata)
        timings[f"{name} (NUTS+PSIS)"] = time.perf_counter() - start
        if name == "dist+arsenic":
            start = time.perf_counter()
            refits = mpe.exact_loo(logistic_model, guide, fit.params, X, y)
            timings[f"{name} (refits)"] = time.perf_counter() - start
            pointwise = {
                "MPE-LOO": results[f"{name} (MPE)"],
                "NUTS+PSIS-LOO": results[f"{name} (NUTS+PSIS)"],
                "Laplace refits": refits,
            }
    table = az.compare(results, round_to="none")
    table["seconds"] = [timings[name] for name in table.index]
    seconds = {
        "MPE-LOO": timings["dist+arsenic (MPE)"],
        "NUTS+PSIS-LOO": timings["dist+arsenic (NUTS+PSIS)"],
        "Laplace refits": timings["dist+arsenic (refits)"],
    }
    pointwise_table = mpe.compare_loo(pointwise, reference="Laplace refits", seconds=seconds)
    return {
        "results": results,
        "table": table,
        "timings": timings,
        "pointwise": pointwise,
        "pointwise_table": pointwise_table,
    }


def main(argv: list[str] | None = None) -> None:
    """Print the comparison table (the README's main job)."""
    import argparse

    parser = argparse.ArgumentParser(prog="numpyro-mpe demo", description=__doc__)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument(
        "--plot", metavar="PATH", help="save the pointwise comparison plot (PNG) here"
    )
    options = parser.parse_args(argv)
    try:  # before the fits: a bad count or --plot path fails now, not minutes later
        _check_options(
            num_warmup=options.num_warmup,
            num_samples=options.num_samples,
            num_chains=options.num_chains,
        )
        check_figure_path(options.plot)
    except (TypeError, ValueError, OSError) as error:
        parser.error(str(error).replace("num_", "--num-").replace("path ", "--plot ", 1))
    jax.config.update("jax_enable_x64", True)
    out = run_demo(
        num_warmup=options.num_warmup,
        num_samples=options.num_samples,
        num_chains=options.num_chains,
    )
    for name, result in out["results"].items():
        print(f"== {name}\n{result}\n")
    columns = ["rank", "elpd", "p", "elpd_diff", "se", "dse", "weight", "seconds"]
    print("== az.compare: both models, MPE-LOO beside NUTS + PSIS-LOO")
    print(out["table"][columns].to_string(float_format=lambda v: f"{v:.2f}"))
    print("\n== compare_loo: dist+arsenic, pointwise against Laplace refits (3020 refits)")
    columns = ["elpd", "se", "p", "max_abs_diff", "rms_diff", "n_poor", "diagnostic", "seconds"]
    formats = {name: "{:.2f}".format for name in ("elpd", "se", "p", "seconds")}
    formats |= {name: "{:.2e}".format for name in ("max_abs_diff", "rms_diff")}
    print(out["pointwise_table"][columns].to_string(formatters=formats))
    if options.plot:
        mpe.plot_loo_comparison(out["pointwise"], "Laplace refits", path=options.plot)
        print(f"\nplot saved to {options.plot}")
