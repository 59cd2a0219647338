"""``loo`` at many data sizes: padded to a few bucket sizes, compiled once per bucket, the
values of the unpadded computation, and bounded compilation caches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import compilations, laplace_fit, linear_model, logistic_model

import numpyro_mpe as mpe
import numpyro_mpe.core.rows as rows
from numpyro_mpe.core.model import split_arguments, trace_model
from numpyro_mpe.crossval.mpe_loo import loo_core
from numpyro_mpe.infer.blr import blr_update

# The tests below use one fit's params at several data sizes (as when the compilations of a
# learning curve are counted), so loo warns that they are not a fit to the smaller data.
_OTHER_DATA = pytest.mark.filterwarnings("ignore:loo. the params are not a fit")


def unpadded_loo(model, guide, params, X, y, method):
    """``(elpd_i, lppd_i, reliability)`` of ``loo_core`` on the data as given (N rows)."""
    plate_model = trace_model(model, X, y)
    arrays, static = split_arguments((X, y), {})
    mean, precision = guide.mean_precision(params)
    return loo_core(
        mean,
        precision,
        arrays,
        model=model,
        static=static,
        plate=None,
        names=plate_model.predictor.names,
        method=method,
    )


def standardized_logistic(X, y=None):
    """Standardises its features over the rows it is given: not per example."""
    Z = (X[:, 1:] - X[:, 1:].mean(0)) / X[:, 1:].std(0)
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=beta[0] + Z @ beta[1:]), obs=y)


def test_bucket_sizes():
    sizes = np.unique(np.geomspace(1, 2e6, 4000).astype(int))
    buckets = np.array([rows.bucket_size(int(n)) for n in sizes])
    assert np.all(buckets >= sizes) and np.all(np.diff(buckets) >= 0)
    small = sizes <= 2**16
    assert np.all(buckets[small] <= np.maximum(16, 2 * sizes[small]))
    assert np.all(buckets[~small] <= 1.25 * sizes[~small])
    # 13 powers of two from 16 to 2^16, then 4 per doubling up to 2^21.
    assert len(np.unique(buckets)) == 13 + 4 * 5


@_OTHER_DATA
@pytest.mark.parametrize("method", ["cavity", "paper"])
@pytest.mark.parametrize(
    ("model", "data", "sizes"),
    [(logistic_model, "wells", (3020, 1500)), (linear_model, "kidiq", (434, 300))],
)
def test_padded_equals_unpadded(request, x64, model, data, sizes, method):
    X, y = request.getfixturevalue(data)
    guide, fit = laplace_fit(model, X, y)
    # An earlier test's call of the same model and shapes can leave "not padded" cached
    # (seen after tests/infer and tests/optim in one process; results are unpadded then,
    # still right): probe afresh.
    rows.clear_row_plans()
    for n in sizes:
        padded = rows.pad_examples(model, None, (X[:n], y[:n]), {})
        assert padded is not None and padded.num_examples == n
        assert padded.plate_model.num_examples == rows.bucket_size(n) > n
        result = mpe.loo(model, guide, fit.params, X[:n], y[:n], method=method)
        expected = unpadded_loo(model, guide, fit.params, X[:n], y[:n], method)
        values = (result.elpd_i, result.lppd_i, result.reliability)
        targets = (expected.elpd, expected.lppd, expected.reliability)
        for value, target in zip(values, targets, strict=True):
            assert value.shape == (n,)
            # Row by row, the same operations: equal to float64 rounding (measured: equal).
            np.testing.assert_allclose(value.values, np.asarray(target), rtol=1e-12, atol=0)


@_OTHER_DATA
def test_new_size_in_a_bucket_compiles_nothing(wells_fit):
    X, y, guide, fit = wells_fit
    mpe.loo(logistic_model, guide, fit.params, X[:1500], y[:1500])  # compiles for 2048
    with compilations() as compiled:
        for n in (1500, 1501, 2000, 1025):
            result = mpe.loo(logistic_model, guide, fit.params, X[:n], y[:n])
            assert result.elpd_i.shape == (n,)
        mpe.prepare_loo(logistic_model, guide, X[:1800], y[:1800])(fit.params)
    assert compiled == []


def test_model_not_per_example_is_not_padded(wells, x64):
    X, y = wells
    n = 1500
    assert rows.pad_examples(standardized_logistic, None, (X[:n], y[:n]), {}) is None
    guide, fit = laplace_fit(standardized_logistic, X[:n], y[:n])
    result = mpe.loo(standardized_logistic, guide, fit.params, X[:n], y[:n])
    expected = unpadded_loo(standardized_logistic, guide, fit.params, X[:n], y[:n], "cavity")
    np.testing.assert_array_equal(result.elpd_i.values, np.asarray(expected[0]))


def test_compilations_are_bounded(monkeypatch):
    monkeypatch.setattr(rows, "MAX_COMPILATIONS", 2)
    add_one = jax.jit(lambda x, *, power: x**power + 1)
    for n in (1, 2, 1, 3, 4, 5, 5):
        rows.limit_compilations(add_one, (jnp.zeros(n),), {"power": 2})
        add_one(jnp.zeros(n), power=2)
        assert add_one._cache_size() <= 2
    # Held signatures (here the last one) are not recompiled.
    with compilations() as compiled:
        rows.limit_compilations(add_one, (jnp.zeros(5),), {"power": 2})
        add_one(jnp.zeros(5), power=2)
    assert compiled == []


def test_blr_steps_at_many_sizes_keep_bounded_compilations(monkeypatch, wells, x64):
    monkeypatch.setattr(rows, "MAX_COMPILATIONS", 2)
    X, y = wells
    blr = mpe.BLR(logistic_model, mpe.AutoGaussian(logistic_model), mpe.optim.newton())
    for n in (100, 101, 102, 103, 101):
        blr.run(jax.random.PRNGKey(0), 10, X[:n], y[:n], progress_bar=False)
        assert blr_update._cache_size() <= 2
    # A held signature (here the last size) is not recompiled.
    with compilations() as compiled:
        blr.run(jax.random.PRNGKey(0), 10, X[:101], y[:101], progress_bar=False)
    assert compiled == []


def poisson_model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Poisson(jnp.exp(X @ beta)), obs=y)


# 100 draws per example: Pareto k above 0.5 for some; this test counts compilations only.
@pytest.mark.filterwarnings("ignore:MPE-IS")
def test_importance_sampling_compiles_once_per_padded_count(x64):
    rng = np.random.default_rng(0)
    X = np.stack([np.ones(60), rng.normal(size=60)], axis=1)
    y = rng.poisson(np.exp(X @ np.array([0.5, 0.3]))).astype(float)
    guide, fit = laplace_fit(poisson_model, X, y)
    options = {"method": "is", "num_samples": 100}
    mpe.loo(poisson_model, guide, fit.params, X, y, importance=[0, 1, 2, 3, 4], **options)
    with compilations() as compiled:
        for selected in ([5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5]):  # 5 and 6 pad to 6 draws
            result = mpe.loo(
                poisson_model, guide, fit.params, X, y, importance=selected, **options
            )
            assert np.isfinite(result.elpd_i.values).all()
    assert compiled == []
