"""MPE-LOO on the wells data: fit, leave-one-out, influence, and a check against refits.

Run: ``python examples/wells_loo.py [--plot wells_loo.png]``. A test runs it
(``tests/tools/test_examples.py``).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import numpyro_mpe as mpe
from numpyro_mpe.datasets import load_wells


def model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", metavar="PATH", help="save the pointwise plot here")
    parser.add_argument("--refits", type=int, default=300, help="examples to refit")
    options = parser.parse_args(argv)
    mpe.enable_compilation_cache()  # off with NUMPYRO_MPE_COMPILATION_CACHE=off

    wells = load_wells()
    X, y = wells.design("dist100", "arsenic"), wells.switch
    guide = mpe.AutoGaussian(model)
    fit = mpe.BLR(model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), 50, X, y, progress_bar=False
    )
    print("posterior median:", guide.median(fit.params))

    elpd = mpe.loo(model, guide, fit.params, X, y)
    print(elpd)

    # The most influential households: largest shift of the posterior mean when removed.
    mean = fit.params["auto_loc"]
    influence = []
    for i in np.argsort(-elpd.reliability.values)[:5]:
        shifted = mpe.perturb(model, guide, fit.params, [int(i)], X, y)["auto_loc"]
        influence.append((int(i), float(np.abs(shifted - mean).max())))
    print("most influential (index, max |shift| of beta):", influence)

    subset = np.linspace(0, len(y) - 1, options.refits).astype(int)
    refits = mpe.exact_loo(model, guide, fit.params, X, y, indices=subset)
    table = mpe.compare_loo({"MPE-LOO": elpd, "refits": refits}, reference="refits")
    print(table[["elpd_subset", "max_abs_diff", "rms_diff", "n_poor", "seconds"]])
    if options.plot:
        mpe.plot_loo_comparison({"MPE-LOO": elpd, "refits": refits}, "refits", path=options.plot)
    return {"elpd": elpd, "refits": refits, "table": table, "influence": influence}


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
