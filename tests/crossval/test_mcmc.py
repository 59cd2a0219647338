"""mcmc_loo: NUTS + PSIS-LOO, against arviz on the same draws; log-likelihood; errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import arviz as az
import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import logistic_model

import numpyro_mpe.crossval.mcmc as mcmc_module
from numpyro_mpe import ModelError, ParetoKWarning
from numpyro_mpe.crossval.mcmc import MCMCLooResult, mcmc_loo

# Agreement of two float64 computations of the same quantity from the same draws.
ATOL = 1e-8


@pytest.fixture(scope="module")
def wells_run(wells):
    """Wells logistic regression (N = 3020), 2 chains x 50 draws, float64.

    S = 100 draws makes the PSIS tail ``min(0.2 S, 3 sqrt(S / r_eff))`` equal 20 for
    both R's rounding (ours) and arviz's: ``r_eff <= log10(S) = 2`` (the ESS cap), so
    ``3 sqrt(S / r_eff) >= 21.2``; then arviz's scalar ``reff`` and our per-example
    ``r_eff`` give the same smoothed weights. With 100 draws a few Pareto k exceed
    ``good_k = 1 - 1 / log10(100) = 0.5``.
    """
    X, y = wells
    with jax.enable_x64(True):
        with pytest.warns(ParetoKWarning, match=r"greater than 0\.50 for \d+ of 3020"):
            result = mcmc_loo(
                logistic_model,
                X,
                y,
                num_warmup=200,
                num_samples=50,
                num_chains=2,
                rng_key=jax.random.PRNGKey(0),
            )
        arviz_tree = az.from_numpyro(result.mcmc, log_likelihood=True)
        with pytest.warns(UserWarning, match="greater than 0.50"):
            arviz_result = az.loo(arviz_tree, pointwise=True)
    return result, arviz_tree, arviz_result


def test_matches_arviz_on_the_same_draws(wells_run):
    result, arviz_tree, expected = wells_run
    assert isinstance(result, MCMCLooResult)
    ours = result.posterior.log_likelihood["y"]
    assert ours.dims == ("chain", "draw", "data") and ours.shape == (2, 50, 3020)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours.values, arviz_tree.log_likelihood["y"].values, atol=1e-12)
    assert np.all(result.loo.r_eff.values <= np.log10(100))  # see the fixture's docstring

    loo = result.loo
    for name in ("elpd", "se", "p", "good_k"):
        assert getattr(loo, name) == pytest.approx(getattr(expected, name), abs=ATOL), name
    np.testing.assert_allclose(loo.elpd_i.values, expected.elpd_i.values, atol=ATOL, rtol=0)
    np.testing.assert_allclose(loo.pareto_k.values, expected.pareto_k.values, atol=ATOL, rtol=0)
    expected_weights = expected.log_weights.transpose("chain", "draw", ...).values
    np.testing.assert_allclose(loo.log_weights.values, expected_weights, atol=ATOL, rtol=0)
    assert loo.n_samples == 100 and loo.n_data_points == 3020 and loo.warning


def test_result_layout(wells_run):
    result, _, _ = wells_run
    assert set(result.seconds) == {"sampling", "log_lik", "psis"}
    assert all(seconds > 0 for seconds in result.seconds.values())
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(
        result.posterior.children
    )
    assert result.posterior.posterior["beta"].shape[:2] == (2, 50)
    stats = result.posterior.sample_stats
    assert {"diverging", "n_steps", "acceptance_rate", "lp", "energy"} <= set(stats.data_vars)
    assert result.loo.elpd_i.dims == ("data",)
    # The returned tree is what arviz reads: az.loo on it gives the same numbers.
    with pytest.warns(UserWarning, match="greater than 0.50"):
        again = az.loo(result.posterior)
    assert again.elpd == pytest.approx(result.loo.elpd, abs=ATOL)


def kidiq_model(X, y=None):
    """Linear regression with an unknown noise scale: a positive latent to map back."""
    beta = numpyro.sample("beta", dist.Normal(0, 10.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(20.0))
    numpyro.deterministic("sigma_squared", sigma**2)
    with numpyro.plate("children", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def test_constrained_latent_and_uneven_chunks(kidiq, x64):
    # sigma > 0 goes through log and back (a few ulps); 1 chain of 61 draws in chunks of
    # 7 pads the last chunk (61 = 8 * 7 + 5).
    X, y = kidiq
    # good_k = 1 - 1 / log10(61) = 0.44: some of 434 examples exceed it with 61 draws.
    with pytest.warns(ParetoKWarning, match=r"greater than 0\.44 for \d+ of 434"):
        result = mcmc_loo(
            kidiq_model,
            X,
            y,
            num_warmup=300,
            num_samples=61,
            num_chains=1,
            chunk_size=7,
            rng_key=jax.random.PRNGKey(1),
        )
    ours = result.posterior.log_likelihood["y"]
    assert ours.dims == ("chain", "draw", "children") and ours.shape == (1, 61, 434)
    samples = result.mcmc.get_samples(group_by_chain=True)
    expected = numpyro.infer.log_likelihood(kidiq_model, samples, X, y, batch_ndims=2)["y"]
    np.testing.assert_allclose(ours.values, expected, rtol=1e-12, atol=0)
    assert result.loo.elpd_i.dims == ("children",)
    assert np.all(np.isfinite(result.loo.elpd_i.values))


def test_several_observed_sites_are_summed_per_example(x64):
    def two_sites(x, y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("a", dist.Normal(mu * x, 1.0), obs=y)
            numpyro.sample("b", dist.Normal(mu, 2.0), obs=y)

    x = np.linspace(-1.0, 1.0, 12)
    y = np.cos(3.0 * x)
    # good_k = 1 - 1 / log10(40) = 0.38: exceeded by some of the 12 examples.
    with pytest.warns(ParetoKWarning, match=r"greater than 0\.38 for \d+ of 12"):
        result = mcmc_loo(two_sites, x, y, num_warmup=100, num_samples=40, num_chains=1)
    samples = result.mcmc.get_samples(group_by_chain=True)
    expected = numpyro.infer.log_likelihood(two_sites, samples, x, y, batch_ndims=2)
    np.testing.assert_allclose(
        result.posterior.log_likelihood["log_lik"].values,
        expected["a"] + expected["b"],
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_chains": 0}, "num_chains must be an integer >= 1, got 0"),
        ({"num_chains": 2.0}, "num_chains must be an integer"),
        ({"num_samples": 1}, r"num_samples must be an integer >= 2 .*got 1"),
        ({"num_warmup": -1}, "num_warmup must be an integer >= 0, got -1"),
        ({"chain_method": "threads"}, "chain_method must be one of"),
        ({"chunk_size": 0}, "chunk_size must be None or an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_before_sampling(options, match, wells, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("MCMC was constructed before the arguments were checked")

    monkeypatch.setattr(mcmc_module, "MCMC", no_sampling)
    X, y = wells
    with pytest.raises(ValueError, match=match):
        mcmc_loo(logistic_model, X[:10], y[:10], **options)


def test_model_errors_raise_before_sampling(wells, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("MCMC was constructed before the model was checked")

    monkeypatch.setattr(mcmc_module, "MCMC", no_sampling)
    X, y = wells
    with pytest.raises(ModelError, match="no observed site is inside plate 'rows'"):
        mcmc_loo(logistic_model, X[:10], y[:10], plate="rows")
    y_nan = y[:10].copy()
    y_nan[3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        mcmc_loo(logistic_model, X[:10], y_nan)


@pytest.mark.parametrize("rng_key", [0, "0", np.zeros(2)])
def test_bad_rng_key_raises_before_sampling(rng_key, monkeypatch):
    # An int key once reached numpyro's MCMC.run and failed there, unclearly.
    def no_sampling(*args, **kwargs):
        raise AssertionError("MCMC was constructed before rng_key was checked")

    monkeypatch.setattr(mcmc_module, "MCMC", no_sampling)
    X = np.stack([np.ones(10), np.linspace(-1, 1, 10)], axis=1)
    y = (X[:, 1] > 0).astype(float)
    with pytest.raises(TypeError, match="mcmc_loo: rng_key must be a jax PRNG key"):
        mcmc_loo(logistic_model, X, y, rng_key=rng_key)


@pytest.mark.slow
def test_benchmark_quick_runs():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_mpe_vs_nuts.py"
    # Smaller than --quick (N = 1e3, 200 + 200 draws, 50 refits): the script runs end to end.
    settings = "--sizes 300 --num-warmup 100 --num-samples 100 --num-refits 20 --repeats 1"
    proc = subprocess.run(
        [sys.executable, str(script), *settings.split()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 300 |")]
    assert len(rows) == 2 and "exit code" not in proc.stdout
