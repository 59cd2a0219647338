"""MPE-LOO from per-example Jacobian rows (one reverse pass per example, O(N K P))
equals the streaming form (P Jacobian-vector passes over all N)."""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import data_csv, data_json, laplace_fit

import numpyro_mpe as mpe
import numpyro_mpe.core.quadrature as quadrature
from numpyro_mpe.core.model import split_arguments, trace_model
from numpyro_mpe.core.rows import plan_row_slicing

loo_module = sys.modules["numpyro_mpe.crossval.mpe_loo"]


def wells_design():
    """Wells with the four predictors and four interactions: P = 9 > 8 directions."""
    table = data_csv("rstanarm/rstanarm_wells.csv")
    dist100, arsenic, assoc, educ = (
        table["dist"] / 100,
        table["arsenic"],
        table["assoc"],
        table["educ"] / 4,
    )
    columns = [np.ones_like(dist100), dist100, arsenic, assoc, educ]
    columns += [dist100 * arsenic, dist100 * educ, arsenic * educ, assoc * educ]
    return np.stack(columns, axis=1), table["switch"].astype(float)


def logistic(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 2.5).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def heteroscedastic(X, y=None):
    """Location and log scale both linear in ``X``: K = 2 predictor components."""
    beta = numpyro.sample("beta", dist.Normal(0, 10).expand([X.shape[1]]).to_event(1))
    gamma = numpyro.sample("gamma", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, jnp.exp(X @ gamma)), obs=y)


def fixed_size_logistic(X, y=None, num_examples=3020):
    """The plate's size is a Python number: the data cannot be sliced by example."""
    beta = numpyro.sample("beta", dist.Normal(0, 2.5).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", num_examples):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def kidiq_design():
    data = data_json("posteriordb/kidiq.json")
    hs = np.asarray(data["mom_hs"], float)
    iq = (np.asarray(data["mom_iq"], float) - 100) / 15
    X = np.stack([np.ones_like(hs), hs, iq, hs * iq, iq**2], axis=1)
    return X, np.asarray(data["kid_score"], float)


def both_forms(model, covariance, X, y):
    guide, fit = laplace_fit(model, X, y, covariance=covariance)
    mean, precision = guide.mean_precision(fit.params)
    plate_model = trace_model(model, X, y)
    plan = plan_row_slicing(model, None, (X, y), {}, plate_model)
    assert plan.path == "gather", plan.reason
    arrays, static = split_arguments((X, y), {})
    options = {
        "model": model,
        "static": static,
        "plate": None,
        "names": plate_model.predictor.names,
        "method": "cavity",
    }
    rows = loo_module.loo_core(mean, precision, arrays, gathered=plan.gathered, **options)
    streaming = loo_module.loo_core(mean, precision, arrays, **options)
    return guide, fit, rows, streaming


@pytest.mark.parametrize("covariance", ["dense", "diag"])
@pytest.mark.parametrize(
    ("model", "design"), [(logistic, wells_design), (heteroscedastic, kidiq_design)]
)
def test_rows_equal_streaming(x64, model, design, covariance):
    X, y = design()
    guide, fit, rows, streaming = both_forms(model, covariance, X, y)
    for from_rows, from_streaming in zip(rows, streaming, strict=True):
        # Measured 2026-11-28: <= 1.1e-15 relative.
        np.testing.assert_allclose(from_rows, from_streaming, rtol=1e-10, atol=1e-12)
    # The public function takes the row path here (P > 8) and gives the same numbers.
    result = mpe.loo(model, guide, fit.params, X, y)
    np.testing.assert_allclose(result.elpd_i.values, np.asarray(rows[0]), rtol=1e-12)


def test_unsliceable_model_falls_back_to_streaming(x64):
    X, y = wells_design()
    plate_model = trace_model(fixed_size_logistic, X, y)
    plan = plan_row_slicing(fixed_size_logistic, None, (X, y), {}, plate_model)
    assert plan.path == "weights"
    assert "fails on a slice of its rows" in plan.reason
    guide, fit = laplace_fit(fixed_size_logistic, X, y)
    fallback = mpe.loo(fixed_size_logistic, guide, fit.params, X, y)
    guide_rows, fit_rows = laplace_fit(logistic, X, y)
    sliced = mpe.loo(logistic, guide_rows, fit_rows.params, X, y)
    np.testing.assert_allclose(fallback.elpd_i.values, sliced.elpd_i.values, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:loo. the params are not a fit")  # mid-fit or other data
def test_row_slicing_is_probed_once_per_structure(x64, monkeypatch):
    """Repeated ``loo`` calls (MPE-LOO at every checkpoint) do not probe the model again."""
    import numpyro_mpe.core.rows as rows

    X, y = wells_design()
    guide, fit = laplace_fit(logistic, X, y)
    calls = []
    probe = rows.plan_row_slicing
    rows.clear_row_plans()
    monkeypatch.setattr(
        rows, "plan_row_slicing", lambda *a, **k: calls.append(1) or probe(*a, **k)
    )
    first = mpe.loo(logistic, guide, fit.params, X, y)
    second = mpe.loo(logistic, guide, fit.params, X, y)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.elpd_i.values, second.elpd_i.values)
    mpe.loo(logistic, guide, fit.params, X[:100], y[:100])  # new shapes: probed anew
    assert len(calls) == 2


def test_refused_examples_are_integrated_again_on_their_own_rows(x64):
    """Wells plus a column that is 1 for three examples only: their predictive
    variances are large, the 9-node rule refuses them (and a few others), and only
    those are integrated again, on their own rows. The values equal the streaming
    form's, which integrates every example again with 20 nodes, to 1e-9."""
    X, y = wells_design()
    rare = np.zeros((X.shape[0], 1))
    rare[[10, 1000, 2000]] = 1.0
    X = np.hstack([X, rare])
    guide, fit, rows, streaming = both_forms(logistic, "dense", X, y)
    # Which examples the shared 9-node rule refuses, recomputed from the cavity.
    mean, precision = guide.mean_precision(fit.params)
    predictor = trace_model(logistic, X, y).predictor
    f = predictor.fn(mean)
    e, lam = loo_module.likelihood_curvature(predictor, f)
    v, cavity, _ = loo_module.prediction_space_covariances(predictor.fn, mean, precision, lam)
    cavity_mean = f + jnp.einsum("nkl,nl->nk", cavity, e)
    _, accurate = quadrature.embedded_gauss_hermite(
        predictor, cavity_mean[:, 0], cavity[:, 0, 0], ((f[:, 0], v[:, 0, 0]),)
    )
    refused = np.flatnonzero(~np.asarray(accurate))
    assert {10, 1000, 2000} <= set(refused)
    assert len(refused) <= quadrature.REPAIRED_ROWS < X.shape[0]
    for from_rows, from_streaming in zip(rows, streaming, strict=True):
        np.testing.assert_allclose(from_rows, from_streaming, rtol=0, atol=1e-9)
