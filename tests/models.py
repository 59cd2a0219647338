"""Models and closed forms shared by tests in several folders (import ``from models``).

Test modules never import each other: what two of them share lives here or in
``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from conftest import data_csv, data_json

#: Noise and prior scales of the Gaussian-linear kidiq model (``conftest.linear_model``).
SIGMA, PRIOR_SCALE = 18.0, 10.0


def closed_form_posterior(X, y, keep=None):
    keep = np.ones(len(y), bool) if keep is None else keep
    precision = X[keep].T @ X[keep] / SIGMA**2 + np.eye(X.shape[1]) / PRIOR_SCALE**2
    mean = np.linalg.solve(precision, X[keep].T @ y[keep] / SIGMA**2)
    return mean, precision


def closed_form_loo(X, y):
    """Exact log p(y_i | y_-i) by refitting the conjugate posterior without each i."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        mean, precision = closed_form_posterior(X, y, keep)
        variance = SIGMA**2 + X[i] @ np.linalg.solve(precision, X[i])
        out[i] = -0.5 * (np.log(2 * np.pi * variance) + (y[i] - X[i] @ mean) ** 2 / variance)
    return out


def eight_schools_centered(sigma, y=None, tau=5.0):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([8]).to_event(1))
    with numpyro.plate("schools", 8):
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_closed_form(sigma, y, keep, tau=5.0):
    # Joint Gaussian over (mu, theta): prior precision plus the kept likelihood terms.
    precision = np.zeros((9, 9))
    precision[0, 0] = 1 / 25 + 8 / tau**2
    precision[0, 1:] = precision[1:, 0] = -1 / tau**2
    precision[1:, 1:] = np.eye(8) / tau**2 + np.diag(keep / sigma**2)
    rhs = np.concatenate([[0.0], keep * y / sigma**2])
    return np.linalg.solve(precision, rhs), precision


def mom_work_design():
    """``(X, y)``: intercept, mom_hs, scaled mom_iq and kid_score; mom_work in 0..3
    (posteriordb kidiq_with_mom_work, N = 434)."""
    data = data_json("posteriordb/kidiq_with_mom_work.json")
    kid_score = np.asarray(data["kid_score"], float)
    X = np.stack(
        [
            np.ones_like(kid_score),
            np.asarray(data["mom_hs"], float),
            (np.asarray(data["mom_iq"], float) - 100) / 15,
            (kid_score - 87) / 20,
        ],
        axis=1,
    )
    return X, np.asarray(data["mom_work"]) - 1


def mom_work_softmax(X, y=None):
    weights = numpyro.sample("w", dist.Normal(0, 1).expand([X.shape[1], 4]).to_event(2))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=X @ weights), obs=y)


def roaches_model(X, offset, y=None):
    intercept = numpyro.sample("intercept", dist.Normal(0, 5))
    beta = numpyro.sample("beta", dist.Normal(0, 2.5).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Poisson(jax.numpy.exp(intercept + X @ beta + offset)), obs=y)


def roaches():
    table = data_csv("rstanarm/rstanarm_roaches.csv")
    X = np.stack([np.sqrt(table["roach1"]), table["treatment"], table["senior"]], 1)
    return X, np.log(table["exposure2"]), table["y"]


#: Known noise scale of ``gaussian_ar`` (the Lake Huron level's residual sd, about).
AR_SIGMA = 0.7


def gaussian_ar(y, order=2):
    """AR(``order``) with known noise, linear in its latents ``w`` (intercept and lags of
    ``y - 579``): every term is Gaussian-linear, so MPE-LFO is exact."""
    from numpyro_mpe.time_series import lagged_values

    X = jax.numpy.concatenate(
        [jax.numpy.ones((y.shape[0], 1)), lagged_values(y - 579.0, order)], 1
    )
    w = numpyro.sample("w", dist.Normal(0, 2).expand([order + 1]).to_event(1))
    with numpyro.plate("time", y.shape[0]):
        numpyro.sample("y", dist.Normal(579.0 + X @ w, AR_SIGMA), obs=y)


def gaussian_ar_closed_form_lfo(y, min_train, horizon, order=2):
    """Exact ``log p(y_{t..t+M-1} | y_{<t})`` per origin ``t = L..T-M`` for
    ``gaussian_ar``: the Bayesian linear regression's joint Gaussian predictive."""
    lags = np.zeros((len(y), order))
    for k in range(order):
        lags[k + 1 :, k] = y[: len(y) - k - 1] - 579.0
    X = np.concatenate([np.ones((len(y), 1)), lags], 1)
    out = []
    for t in range(min_train, len(y) - horizon + 1):
        precision = X[:t].T @ X[:t] / AR_SIGMA**2 + np.eye(order + 1) / 4
        mean = np.linalg.solve(precision, X[:t].T @ (y[:t] - 579.0) / AR_SIGMA**2)
        block = X[t : t + horizon]
        covariance = block @ np.linalg.solve(precision, block.T) + AR_SIGMA**2 * np.eye(horizon)
        residual = y[t : t + horizon] - 579.0 - block @ mean
        _, log_det = np.linalg.slogdet(covariance)
        quad = residual @ np.linalg.solve(covariance, residual)
        out.append(-0.5 * (horizon * np.log(2 * np.pi) + log_det + quad))
    return np.array(out)


#: Leave-future-out references computed by this project (``tests/references/README.md``).
REFERENCES = Path(__file__).resolve().parent / "references"


def nuts_lfo_reference(name: str, horizon: int) -> np.ndarray:
    """Exact LFO by NUTS refits at every origin (L = 20) of ``"lake_huron"`` or
    ``"poisson_ar"``: ``elpd_t`` per origin, ``(T - horizon - 19,)``."""
    table = np.genfromtxt(REFERENCES / f"lfo_{name}_nuts.csv", delimiter=",", names=True)
    return table["elpd"][table["horizon"] == horizon]


def poisson_ar_series() -> np.ndarray:
    """The simulated count series of ``tests/references`` (T = 100)."""
    return np.genfromtxt(REFERENCES / "poisson_ar_series.csv", delimiter=",", names=True)["y"]


def breast_cancer():
    """sklearn's breast-cancer table (``tests/data/uci/breast_cancer.csv``, N = 569): ``X``
    ``(569, 31)``, the 30 features standardised, ``(x - mean) / std`` per column (``std``
    with ``ddof = 0``), then a column of ones; ``y`` ``(569,)`` in {0, 1} (1 = benign)."""
    table = data_csv("uci/breast_cancer.csv")
    features = np.stack([table[name] for name in table.dtype.names[:-1]], 1).astype(np.float64)
    standardised = (features - features.mean(0)) / features.std(0)
    X = np.concatenate([standardised, np.ones((len(table), 1))], 1)
    return X, table["target"].astype(np.float64)


def breast_cancer_model(X, y=None):
    """Near-separable logistic regression: ``w ~ Normal(0, 1)`` of shape ``(P,)``,
    ``y_i ~ Bernoulli(logits = x_i^T w)`` in the plate ``"data"``."""
    weights = numpyro.sample("w", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ weights), obs=y)


#: Minnesota counties of posteriordb's radon_mn.
NUM_COUNTIES = 85


def radon():
    """County codes (0-based), floor and log radon (posteriordb radon_mn, N = 919)."""
    data = data_json("posteriordb/radon_mn.json")
    county = np.asarray(data["county_idx"]) - 1
    return county, np.asarray(data["floor_measure"], float), np.asarray(data["log_radon"], float)


def radon_latent_scales(county, floor, y=None):
    """Non-centered hierarchical county intercepts with latent scales: not conjugate."""
    mu = numpyro.sample("mu", dist.Normal(0, 10))
    beta = numpyro.sample("beta", dist.Normal(0, 10))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(1))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1))
    with numpyro.plate("counties", NUM_COUNTIES):
        z = numpyro.sample("z", dist.Normal(0, 1))
    with numpyro.plate("data", county.shape[0]):
        loc = mu + sigma_alpha * z[county] + beta * floor
        numpyro.sample("y", dist.Normal(loc, sigma_y), obs=y)
