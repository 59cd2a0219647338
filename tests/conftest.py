"""Shared fixtures: real data from ``tests/data`` and a contained float64 switch."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

#: Real data and reference outputs the tests read, inside the repository (sources and
#: licences in ``tests/data/README.md``).
TEST_DATA = Path(__file__).resolve().parent / "data"

# The command line and the examples keep compiled programs in a user cache folder
# (numpyro_mpe.enable_compilation_cache); tests neither write nor read one, and neither do
# the subprocesses they start, which inherit this.
os.environ["NUMPYRO_MPE_COMPILATION_CACHE"] = "off"


@contextlib.contextmanager
def compilations():
    """The list of XLA compilations (one entry each) made inside the block."""
    seen = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def x64():
    """Run the test with float64 (jax's switch is process-wide, so restore it after)."""
    with jax.enable_x64(True):
        yield


def data_csv(relative: str) -> np.ndarray:
    """A CSV under ``tests/data`` as a structured array (columns by header name)."""
    return np.genfromtxt(TEST_DATA / relative, delimiter=",", names=True)


def data_json(relative: str) -> dict:
    """A JSON file under ``tests/data``."""
    return json.loads((TEST_DATA / relative).read_text())


@pytest.fixture(scope="session")
def wells():
    """X = [1, dist/100, arsenic], y = switch (rstanarm wells, N = 3020)."""
    table = data_csv("rstanarm/rstanarm_wells.csv")
    X = np.stack([np.ones(len(table)), table["dist"] / 100, table["arsenic"]], axis=1)
    return X, table["switch"].astype(float)


@pytest.fixture(scope="session")
def kidiq():
    """X = [1, mom_hs, mom_iq / 10], y = kid_score (posteriordb kidiq, N = 434)."""
    data = data_json("posteriordb/kidiq.json")
    mom_hs = np.asarray(data["mom_hs"], float)
    mom_iq = np.asarray(data["mom_iq"], float)
    X = np.stack([np.ones_like(mom_hs), mom_hs, mom_iq / 10], axis=1)
    return X, np.asarray(data["kid_score"], float)


def logistic_model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def linear_model(X, y=None, sigma=18.0, prior_scale=10.0):
    """Gaussian-linear regression with known noise scale: the conjugate case."""
    beta = numpyro.sample("beta", dist.Normal(0, prior_scale).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def laplace_fit(model, *args, covariance="dense", num_steps=50, **kwargs):
    """``(guide, BLR result)`` of a Newton (Laplace) fit, no progress bar."""
    import numpyro_mpe as mpe

    guide = mpe.AutoGaussian(model, covariance=covariance)
    result = mpe.BLR(model, guide, mpe.optim.newton()).run(
        jax.random.PRNGKey(0), num_steps, *args, progress_bar=False, **kwargs
    )
    return guide, result


@pytest.fixture(scope="module")
def small_logistic_fit():
    """``(X, y, guide, BLR result)``: ``logistic_model`` on 40 random rows, Laplace (float64)."""
    rng = np.random.default_rng(0)
    X = np.c_[np.ones(40), rng.normal(size=40)]
    y = (rng.random(40) < 0.4).astype(float)
    with jax.enable_x64(True):
        return (X, y, *laplace_fit(logistic_model, X, y, num_steps=20))


@pytest.fixture
def kidiq_fit(kidiq, x64):
    """Conjugate linear regression on kidiq: ``(X, y, guide, result)``."""
    X, y = kidiq
    return (X, y, *laplace_fit(linear_model, X, y))


@pytest.fixture
def wells_fit(wells, x64):
    """Logistic regression on wells: ``(X, y, guide, result)``."""
    X, y = wells
    return (X, y, *laplace_fit(logistic_model, X, y))
