"""Bad inputs for every public function of ``numpyro_mpe``: one fuzz table, one test.

Each row is a careless call (a list for an array, None, a string for a key, ``y`` with
the wrong number of rows, ``params={}``, a negative count, ``method="laplce"``, NaN in
the data, an index out of range, ...) with the exception it must raise and a regex its
message must match: the argument, site, shape or value at fault. Every row is refused
before any fitting, sampling or LOO pass, so the whole table runs in seconds on the tiny
models below (40 examples, 2 features, float64; params from a Laplace fit in numpy).

Inputs the package does not refuse clearly yet are not in the table (they were reported
instead of being tabulated as failures); ``test_every_public_name_has_rows`` keeps the
table as wide as the public API.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
import xarray as xr
from conftest import logistic_model
from matplotlib.figure import Figure
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoNormal
from numpyro.infer.svi import SVIState

import numpyro_mpe as mpe
from numpyro_mpe import datasets, optim
from numpyro_mpe.crossval.results import make_refit_elpd_data

NUM_EXAMPLES = 40


# --------------------------------------------------------------------------- models


def beta_binomial(at_bats, hits=None):
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    with numpyro.plate("players", at_bats.shape[0]):
        numpyro.sample("hits", dist.Binomial(at_bats, probs=p), obs=hits)


def scaled_logistic(X, y=None, prior_scale=1.0):
    beta = numpyro.sample("beta", dist.Normal(0, prior_scale).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def renamed_logistic(X, y=None):
    weights = numpyro.sample("w", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ weights), obs=y)


def half_logistic(X, y=None):
    """Observes only the first half of the rows: another number of examples."""
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    half = X.shape[0] // 2
    with numpyro.plate("data", half):
        numpyro.sample("y", dist.Bernoulli(logits=X[:half] @ beta), obs=y[:half])


def no_latent(X, y=None):
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)


def no_observation(X, y=None):
    numpyro.sample("b", dist.Normal(0, 1))


def no_plate(X, y=None):
    b = numpyro.sample("b", dist.Normal(0, 1))
    numpyro.sample("y", dist.Normal(b, 1).expand([X.shape[0]]).to_event(1), obs=y)


def subsampled(X, y=None):
    b = numpyro.sample("b", dist.Normal(0, 1))
    with numpyro.plate("data", X.shape[0], subsample_size=10) as index:
        numpyro.sample("y", dist.Normal(b, 1), obs=y[index])


def local_latent(X, y=None):
    with numpyro.plate("data", X.shape[0]):
        b = numpyro.sample("b", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(b, 1), obs=y)


def discrete_latent(X, y=None):
    k = numpyro.sample("k", dist.Bernoulli(0.5))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(k, 1), obs=y)


def failing(X, y=None):
    numpyro.sample("b", dist.Normal(0, 1))
    raise RuntimeError("boom")


def two_plates(X, y=None):
    b = numpyro.sample("b", dist.Normal(0, 1))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Normal(b, 1), obs=y)
    with numpyro.plate("half", X.shape[0] // 2):
        numpyro.sample("z", dist.Normal(b, 1), obs=y[: X.shape[0] // 2])


# --------------------------------------------------------------------------- the tiny fits


class Tiny(NamedTuple):
    """What the rows call with: data, guides and their params, a folder for reports."""

    X: np.ndarray
    y: np.ndarray
    guide: mpe.AutoGaussian
    params: dict
    diag_guide: mpe.AutoGaussian
    diag_params: dict
    at_bats: np.ndarray
    hits: np.ndarray
    beta_guide: mpe.AutoConjugate
    beta_params: dict
    folder: Path
    existing_html: Path


class Fitted:
    """Holds the :class:`Tiny` of the module fixture; rows read it when they run."""

    tiny: Tiny | None = None


def T() -> Tiny:
    assert Fitted.tiny is not None, "the rows need the module fixture `tiny`"
    return Fitted.tiny


def laplace_logistic(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision of the Laplace posterior of ``logistic_model`` (N(0, 1) prior), by
    Newton's method in numpy: the params ``BLR`` with ``optim.newton()`` returns, without
    compiling a fit."""
    beta = np.zeros(X.shape[1])
    for _ in range(50):
        probability = 1 / (1 + np.exp(-X @ beta))
        gradient = X.T @ (y - probability) - beta
        precision = X.T @ (X * (probability * (1 - probability))[:, None]) + np.eye(X.shape[1])
        beta = beta + np.linalg.solve(precision, gradient)
    return beta, precision


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = np.stack([np.ones(NUM_EXAMPLES), rng.normal(size=NUM_EXAMPLES)], axis=1)
    y = (rng.random(NUM_EXAMPLES) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0])))).astype(float)
    at_bats = np.full(10, 45)
    hits = np.arange(10, 20)
    folder = tmp_path_factory.mktemp("reports")
    existing_html = folder / "existing.html"
    existing_html.write_text("<html></html>")
    with jax.enable_x64(True):
        mean, precision = laplace_logistic(X, y)
        guide = mpe.AutoGaussian(logistic_model)
        diag_guide = mpe.AutoGaussian(logistic_model, covariance="diag")
        Fitted.tiny = Tiny(
            X=X,
            y=y,
            guide=guide,
            params=guide.params_from_mean_precision(jnp.asarray(mean), jnp.asarray(precision)),
            diag_guide=diag_guide,
            diag_params=diag_guide.params_from_mean_precision(
                jnp.asarray(mean), jnp.asarray(np.diag(precision))
            ),
            at_bats=at_bats,
            hits=hits,
            beta_guide=mpe.AutoConjugate(beta_binomial),
            # The exact Beta(1, 1) posterior: 1 + hits, 1 + misses.
            beta_params={
                "auto_concentration1": jnp.asarray(1.0 + hits.sum()),
                "auto_concentration0": jnp.asarray(1.0 + (at_bats - hits).sum()),
            },
            folder=folder,
            existing_html=existing_html,
        )
    yield Fitted.tiny
    Fitted.tiny = None


# --------------------------------------------------------------------------- helpers


def key() -> jax.Array:
    return jax.random.PRNGKey(0)


def with_value(array: np.ndarray, index: tuple, value: float) -> np.ndarray:
    """A copy of ``array`` with ``value`` at ``index``."""
    changed = np.array(array, dtype=float)
    changed[index] = value
    return changed


def object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def gaussian(loc, precision) -> dict:
    return {"auto_loc": jnp.asarray(loc, float), "auto_precision": jnp.asarray(precision, float)}


def blr(optimizer=None, *, plate=None) -> mpe.BLR:
    optimizer = optim.newton() if optimizer is None else optimizer
    guide = T().guide if optimizer.covariance in (None, "dense") else T().diag_guide
    return mpe.BLR(logistic_model, guide, optimizer, plate=plate)


DEFAULT = object()


def run(*args, optimizer=None, num_steps: Any = 5, plate=None, rng_key: Any = DEFAULT, **kwargs):
    """``BLR(..., plate=plate).run`` of the logistic model on the tiny data (or on ``args``)."""
    args = args or (T().X, T().y)
    rng_key = key() if rng_key is DEFAULT else rng_key
    return blr(optimizer, plate=plate).run(rng_key, num_steps, *args, progress_bar=False, **kwargs)


def loo(*args, params=None, **kwargs):
    args = args or (T().X, T().y)
    params = T().params if params is None else params
    return mpe.loo(logistic_model, T().guide, params, *args, **kwargs)


def beta_loo(params=None, **kwargs):
    params = T().beta_params if params is None else params
    return mpe.loo(beta_binomial, T().beta_guide, params, T().at_bats, T().hits, **kwargs)


def perturb(remove, *args, params=None, guide=None, **kwargs):
    args = args or (T().X, T().y)
    guide = T().guide if guide is None else guide
    params = T().params if params is None else params
    return mpe.perturb(logistic_model, guide, params, remove, *args, **kwargs)


def beta_perturb(remove, params=None, **kwargs):
    params = T().beta_params if params is None else params
    return mpe.perturb(
        beta_binomial, T().beta_guide, params, remove, T().at_bats, T().hits, **kwargs
    )


def exact_loo(*args, params=None, guide=None, **kwargs):
    args = args or (T().X, T().y)
    guide = T().guide if guide is None else guide
    params = T().params if params is None else params
    return mpe.exact_loo(logistic_model, guide, params, *args, **kwargs)


def lfo(*args, params=None, guide=None, **kwargs):
    """``mpe.lfo`` of the tiny logistic model, its plate read as a time axis."""
    args = args or (T().X, T().y)
    guide = T().guide if guide is None else guide
    params = T().params if params is None else params
    return mpe.lfo(logistic_model, guide, params, *args, **{"min_train": 30} | kwargs)


def exact_lfo(*args, params=None, guide=None, **kwargs):
    """``mpe.exact_lfo`` of the tiny logistic model, its plate read as a time axis."""
    args = args or (T().X, T().y)
    guide = T().guide if guide is None else guide
    params = T().params if params is None else params
    return mpe.exact_lfo(logistic_model, guide, params, *args, **{"min_train": 30} | kwargs)


def psis_lfo(*args, **kwargs):
    """``mpe.psis_lfo`` of the tiny logistic model, its plate read as a time axis."""
    args = args or (T().X, T().y)
    return mpe.psis_lfo(logistic_model, *args, **{"min_train": 30} | kwargs)


def sensitivity(*args, params=None, **kwargs):
    args = args or (T().X, T().y)
    params = T().params if params is None else params
    return mpe.sensitivity(logistic_model, T().guide, params, *args, **kwargs)


def mcmc_loo(*args, **kwargs):
    args = args or (T().X, T().y)
    return mpe.mcmc_loo(logistic_model, *args, **kwargs)


def trace(model=logistic_model, *args, **kwargs):
    args = args or (T().X, T().y)
    return mpe.trace_model(model, *args, **kwargs)


def report(*args, path="report.html", params=None, guide=None, **kwargs):
    args = args or (T().X, T().y)
    guide = T().guide if guide is None else guide
    params = T().params if params is None else params
    path = path if isinstance(path, Path) else T().folder / path
    return mpe.report(logistic_model, guide, params, *args, path=path, **kwargs)


def select_prior(values=(0.5, 1.0), *args, name="prior_scale", **kwargs):
    args = args or (T().X, T().y)
    return mpe.select_prior(scaled_logistic, name, values, *args, **kwargs)


def in_float32(call: Callable[[], Any]) -> Any:
    """``call()`` with jax's default float32 (x64 off), as most users run it."""
    with jax.enable_x64(False):
        return call()


# A (chain, draw, obs) log-likelihood and per-draw log densities for the PSIS rows.
LOG_LIK = np.random.default_rng(1).normal(size=(2, 50, 5)) - 1.0
LOG_P = np.random.default_rng(2).normal(size=(2, 50))
LOG_Q = np.random.default_rng(3).normal(size=(2, 50))


def refit_result(offset: float = 0.0, coords=None):
    """A pointwise LOO result over 4 examples, as ``exact_loo`` builds them."""
    elpd_i = np.array([-0.5, -1.2, -0.7, -2.0]) + offset
    return make_refit_elpd_data(elpd_i, elpd_i + 0.1, dim="data", method="laplace", coords=coords)


class Pointwise:
    """A result-like object whose ``elpd_i`` is given (what ``compare_loo`` reads)."""

    def __init__(self, elpd_i: xr.DataArray):
        self.elpd_i, self.elpd, self.se, self.p = elpd_i, 0.0, 0.0, 0.0


def prior_selection() -> mpe.PriorSelection:
    """A two-value selection, as ``select_prior`` returns it, without the fits."""
    result = refit_result()
    return mpe.PriorSelection(
        name="prior_scale",
        values=np.array([0.5, 1.0]),
        elpd=np.array([-5.0, -4.5]),
        se=np.array([1.0, 1.0]),
        best_value=1.0,
        best_index=1,
        results=(result, result),
        params=(T().params, T().params),
        guide=T().guide,
    )


def svi(model=logistic_model, guide=None, optimizer=None) -> SVI:
    guide = AutoDelta(model) if guide is None else guide
    optimizer = numpyro.optim.optax_to_numpyro(optax.sgd(1e-2)) if optimizer is None else optimizer
    return SVI(model, guide, optimizer, Trace_ELBO())


def sgd_state(size: int = 2) -> SVIState:
    """The state ``SVI(model, AutoDelta(model), optax_to_numpyro(optax.sgd(...)))`` holds
    after some steps: ``(step, (params, optax state))``, built without running SVI."""
    raw = {"beta_auto_loc": jnp.linspace(0.3, 1.0, size)}
    return SVIState((jnp.asarray(3), (raw, optax.sgd(1e-2).init(raw))), None, key())


def optax_state(optimizer, steps: int = 3, loc=(0.3, 1.0)) -> SVIState:
    """As :func:`sgd_state` for any optax ``optimizer`` (its ``init`` moments, so Adam's
    own count is 0), ``steps`` numpyro steps and the AutoDelta locations ``loc``."""
    raw = {"beta_auto_loc": jnp.asarray(loc, float)}
    return SVIState((jnp.asarray(steps), (raw, optimizer.init(raw))), None, key())


def quadratic_loss(theta):
    return 0.5 * jnp.sum((theta - 1.0) ** 2)


def without_x64(call: Callable[[], Any]) -> Any:
    """``call()`` with jax's default float32 (the table runs in float64): overflow rows."""
    with jax.enable_x64(False):
        return call()


def predictive(guide=None, params: Any = None, *args) -> dict:
    """numpyro's ``Predictive`` of the logistic model through ``guide`` (a fresh dense
    AutoGaussian by default), 2 draws, on the tiny data (or on ``args``)."""
    guide = mpe.AutoGaussian(logistic_model) if guide is None else guide
    args = args or (T().X, T().y)
    run = numpyro.infer.Predictive(logistic_model, guide=guide, params=params, num_samples=2)
    return run(key(), *args)


# --------------------------------------------------------------------------- the table


class Case(NamedTuple):
    name: str  # public name; "BLR.run" for a method, "optim.iblr" for the optim module
    case: str
    call: Callable[[], Any]
    error: type[BaseException]
    match: str


ModelError = mpe.ModelError
NotPD = mpe.NotPositiveDefiniteError
NAN, INF = float("nan"), float("inf")

CASES = [
    # ---- AutoGaussian: constructor and the params check every MPE function runs
    Case(
        "AutoGaussian",
        "covariance_full",
        lambda: mpe.AutoGaussian(logistic_model, covariance="full"),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got 'full'",
    ),
    Case(
        "AutoGaussian",
        "covariance_none",
        lambda: mpe.AutoGaussian(logistic_model, covariance=None),
        ValueError,
        r"covariance must be one of .*got None",
    ),
    Case(
        "AutoGaussian",
        "init_precision_zero",
        lambda: mpe.AutoGaussian(logistic_model, init_precision=0),
        ValueError,
        r"init_precision must be in \(0, inf\), got 0",
    ),
    Case(
        "AutoGaussian",
        "init_precision_negative",
        lambda: mpe.AutoGaussian(logistic_model, init_precision=-1.0),
        ValueError,
        r"init_precision must be in \(0, inf\), got -1.0",
    ),
    Case(
        "AutoGaussian",
        "init_precision_nan",
        lambda: mpe.AutoGaussian(logistic_model, init_precision=NAN),
        ValueError,
        r"init_precision must be in \(0, inf\), got nan",
    ),
    Case(
        "AutoGaussian",
        "init_precision_inf",
        lambda: mpe.AutoGaussian(logistic_model, init_precision=INF),
        ValueError,
        r"init_precision must be in \(0, inf\), got inf",
    ),
    Case(
        "AutoGaussian",
        "init_precision_string",
        lambda: mpe.AutoGaussian(logistic_model, init_precision="1"),
        TypeError,
        r"init_precision must be a number, got '1'",
    ),
    Case(
        "AutoGaussian",
        "init_loc_fn_none",
        lambda: mpe.AutoGaussian(logistic_model, init_loc_fn=None),
        TypeError,
        r"init_loc_fn must be a numpyro init strategy .*got NoneType",
    ),
    Case(
        "AutoGaussian",
        "model_none",
        lambda: mpe.AutoGaussian(None),
        TypeError,
        r"AutoGaussian: model must be a NumPyro model \(a callable\), got NoneType",
    ),
    Case(
        "AutoGaussian",
        "predictive_without_params",
        lambda: predictive(),
        ValueError,
        r"AutoGaussian: the params given .* lack 'auto_loc' and 'auto_precision'.*got keys \[\]",
    ),
    Case(
        "AutoGaussian",
        "predictive_params_is_run_result",
        lambda: predictive(None, mpe.BLRRunResult(T().params, None, jnp.zeros(1))),
        ValueError,
        r"lack 'auto_loc' and 'auto_precision', so the guide would draw from its initial "
        r"Gaussian, not the fit; got BLRRunResult",
    ),
    Case(
        "AutoGaussian",
        "predictive_diag_params_in_dense_guide",
        lambda: predictive(None, T().diag_params),
        ValueError,
        r"AutoGaussian: params hold a diag precision \(2,\) but the guide is "
        r"AutoGaussian\(covariance='dense'\)",
    ),
    Case(
        "AutoGaussian",
        "predictive_fresh_guide_without_y",
        lambda: predictive(None, T().params, T().X),
        ModelError,
        r"AutoGaussian: site 'y' is discrete and got no observed value: .*data were not passed",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "params_empty",
        lambda: T().guide.checked_mean_precision({}),
        ValueError,
        r"params lack \['auto_loc', 'auto_precision'\].*got keys \[\]",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "params_list",
        lambda: T().guide.checked_mean_precision([0.0, 1.0]),
        ValueError,
        r"params must be a dict of guide params, got <class 'list'>",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "where_named",
        lambda: T().guide.checked_mean_precision({"auto_loc": 0.0}, where="my_check"),
        ValueError,
        r"^my_check: params lack \['auto_precision'\]",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "mean_2d",
        lambda: T().guide.checked_mean_precision(gaussian(np.zeros((2, 1)), np.eye(2))),
        ValueError,
        r"'auto_loc' must have shape \(P,\), got \(2, 1\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "size_of_another_model",
        lambda: T().guide.checked_mean_precision(T().params, 3),
        ValueError,
        r"params hold 2 latents but the model has P = 3",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "precision_3x3",
        lambda: T().guide.checked_mean_precision(gaussian(np.zeros(2), np.eye(3))),
        ValueError,
        r"'auto_precision' must have shape \(2, 2\), got \(3, 3\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "mean_nan",
        lambda: T().guide.checked_mean_precision(gaussian([0.0, NAN], np.eye(2))),
        ValueError,
        r"'auto_loc' is not finite at index \(1,\) \(nan\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "precision_inf",
        lambda: T().guide.checked_mean_precision(gaussian(np.zeros(2), [[1.0, 0], [0, INF]])),
        ValueError,
        r"'auto_precision' is not finite at index \(1, 1\) \(inf\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "diag_precision_in_dense_guide",
        lambda: T().guide.checked_mean_precision(T().diag_params),
        ValueError,
        r"diag precision \(2,\) but the guide is AutoGaussian\(covariance='dense'\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "dense_precision_in_diag_guide",
        lambda: T().diag_guide.checked_mean_precision(T().params),
        ValueError,
        r"dense precision \(2, 2\) but the guide is AutoGaussian\(covariance='diag'\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "diag_precision_negative",
        lambda: T().diag_guide.checked_mean_precision(gaussian(np.zeros(2), [1.0, -1.0])),
        NotPD,
        r"auto_precision\[1\] = -1.0",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "precision_indefinite",
        lambda: T().guide.checked_mean_precision(gaussian(np.zeros(2), [[1.0, 2.0], [2.0, 1.0]])),
        NotPD,
        r"not positive definite \(smallest eigenvalue -1\)",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "precision_not_symmetric",
        lambda: T().guide.checked_mean_precision(gaussian(np.zeros(2), [[2.0, 0.5], [0.0, 2.0]])),
        ValueError,
        r"'auto_precision' is not symmetric: auto_precision\[0, 1\] = 0.5 but "
        r"auto_precision\[1, 0\] = 0 \(the largest asymmetry, 0.5,",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "mean_complex",
        lambda: T().guide.checked_mean_precision(
            {"auto_loc": np.zeros(2, complex), "auto_precision": np.eye(2)}
        ),
        ValueError,
        r"'auto_loc' must hold real numbers, got dtype complex128",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "precision_bool",
        lambda: T().guide.checked_mean_precision(
            {"auto_loc": np.zeros(2), "auto_precision": np.eye(2, dtype=bool)}
        ),
        ValueError,
        r"'auto_precision' must hold real numbers, got dtype bool",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "mean_string",
        lambda: T().guide.checked_mean_precision({"auto_loc": "ab", "auto_precision": np.eye(2)}),
        ValueError,
        r"'auto_loc' must hold real numbers, got str 'ab'",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "mean_none",
        lambda: T().guide.checked_mean_precision({"auto_loc": None, "auto_precision": np.eye(2)}),
        ValueError,
        r"'auto_loc' must hold real numbers, got None",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "mean_empty",
        lambda: T().guide.checked_mean_precision(gaussian(np.zeros(0), np.zeros((0, 0)))),
        ValueError,
        r"'auto_loc' is empty \(shape \(0,\)\); P must be >= 1",
    ),
    Case(
        "AutoGaussian.checked_mean_precision",
        "num_latents_string",
        lambda: T().guide.checked_mean_precision(T().params, num_latents="2"),
        TypeError,
        r"num_latents must be an integer, got '2'",
    ),
    Case(
        "AutoGaussian.params_from_mean_precision",
        "dense_given_diagonal",
        lambda: T().guide.params_from_mean_precision(jnp.zeros(2), jnp.ones(2)),
        ValueError,
        r"a dense AutoGaussian needs a precision with 2 dimension\(s\), got shape \(2,\)",
    ),
    Case(
        "AutoGaussian.params_from_mean_precision",
        "diag_given_matrix",
        lambda: T().diag_guide.params_from_mean_precision(jnp.zeros(2), jnp.eye(2)),
        ValueError,
        r"a diag AutoGaussian needs a precision with 1 dimension\(s\), got shape \(2, 2\)",
    ),
    Case(
        "AutoGaussian.params_from_mean_precision",
        "mean_of_another_size",
        lambda: T().guide.params_from_mean_precision(jnp.zeros(3), jnp.eye(2)),
        ValueError,
        r"mean and precision must have shapes \(P,\) and \(P, P\), got \(3,\) and \(2, 2\)",
    ),
    Case(
        "AutoGaussian.params_from_mean_precision",
        "mean_2d",
        lambda: T().guide.params_from_mean_precision(jnp.zeros((2, 1)), jnp.eye(2)),
        ValueError,
        r"mean and precision must have shapes \(P,\) and \(P, P\), got \(2, 1\) and \(2, 2\)",
    ),
    Case(
        "AutoGaussian.params_from_mean_precision",
        "precision_complex",
        lambda: T().guide.params_from_mean_precision(np.zeros(2), np.eye(2, dtype=complex)),
        ValueError,
        r"'precision' must hold real numbers, got dtype complex128",
    ),
    Case(
        "AutoGaussian.params_from_natural",
        "eta2_positive_definite",
        lambda: T().guide.params_from_natural(jnp.zeros(2), jnp.eye(2)),
        NotPD,
        r"params_from_natural: the precision is not positive definite \(smallest eigenvalue "
        r"-2\); eta2 = -S / 2 must be negative definite",
    ),
    Case(
        "AutoGaussian.params_from_natural",
        "diag_eta2_positive",
        lambda: T().diag_guide.params_from_natural(jnp.zeros(2), jnp.array([-1.0, 1.0])),
        NotPD,
        r"not positive definite \(smallest eigenvalue -2\); eta2 = -S / 2 must be negative",
    ),
    Case(
        "AutoGaussian.params_from_natural",
        "eta1_of_another_size",
        lambda: T().guide.params_from_natural(jnp.zeros(3), -jnp.eye(2)),
        ValueError,
        r"eta1 and eta2 of shapes \(P,\) and \(P, P\), got \(3,\) and \(2, 2\)",
    ),
    Case(
        "AutoGaussian.params_from_natural",
        "eta2_not_symmetric",
        lambda: T().guide.params_from_natural(jnp.zeros(2), jnp.array([[-1.0, 0.3], [0.0, -1.0]])),
        ValueError,
        r"'eta2' is not symmetric: eta2\[0, 1\] = 0.3 but eta2\[1, 0\] = 0",
    ),
    Case(
        "AutoGaussian.params_from_natural",
        "eta1_nan",
        lambda: T().guide.params_from_natural(jnp.array([0.0, NAN]), -jnp.eye(2)),
        ValueError,
        r"'eta1' is not finite at index \(1,\) \(nan\)",
    ),
    Case(
        "AutoGaussian.quantiles",
        "level_above_one",
        lambda: T().guide.quantiles(T().params, [1.5]),
        ValueError,
        r"AutoGaussian.quantiles: quantiles must be in \(0, 1\), got 1.5 at index 0",
    ),
    Case(
        "AutoGaussian.quantiles",
        "level_zero",
        lambda: T().guide.quantiles(T().params, [0.5, 0.0]),
        ValueError,
        r"quantiles must be in \(0, 1\), got 0.0 at index 1",
    ),
    Case(
        "AutoGaussian.quantiles",
        "level_none",
        lambda: T().guide.quantiles(T().params, None),
        ValueError,
        r"'quantiles' must hold real numbers, got None",
    ),
    Case(
        "AutoGaussian.quantiles",
        "params_empty",
        lambda: T().guide.quantiles({}, [0.5]),
        ValueError,
        r"AutoGaussian.quantiles: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "params_empty",
        lambda: T().guide.sample_posterior(key(), {}, T().X, T().y),
        ValueError,
        r"AutoGaussian.sample_posterior: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "precision_not_symmetric",
        lambda: T().guide.sample_posterior(
            key(), gaussian(np.zeros(2), [[2.0, 0.5], [0.0, 2.0]]), T().X, T().y
        ),
        ValueError,
        r"AutoGaussian.sample_posterior: 'auto_precision' is not symmetric",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "params_of_another_model",
        lambda: mpe.AutoGaussian(logistic_model).sample_posterior(
            key(), gaussian(np.zeros(3), np.eye(3)), T().X, T().y
        ),
        ValueError,
        r"AutoGaussian.sample_posterior: params hold 3 latents but the model has P = 2",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "without_the_model_arguments",
        lambda: mpe.AutoGaussian(logistic_model).sample_posterior(key(), T().params),
        RuntimeError,
        r"the guide has not seen the model yet, and the model failed to trace with the "
        r"arguments given \(TypeError: .*missing 1 required positional argument: 'X'\)",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "sample_shape_negative",
        lambda: T().guide.sample_posterior(key(), T().params, T().X, T().y, sample_shape=(-1,)),
        ValueError,
        r"sample_shape\[0\] must be at least 0, got -1",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "sample_shape_int",
        lambda: T().guide.sample_posterior(key(), T().params, T().X, T().y, sample_shape=100),
        TypeError,
        r"sample_shape must be a tuple of integers, e.g. \(1000,\); got 100",
    ),
    Case(
        "AutoGaussian.sample_posterior",
        "rng_key_none",
        lambda: T().guide.sample_posterior(None, T().params, T().X, T().y),
        TypeError,
        r"AutoGaussian.sample_posterior: rng_key must be a jax PRNG key.*got None",
    ),
    Case(
        "AutoGaussian.median",
        "params_empty",
        lambda: T().guide.median({}),
        ValueError,
        r"AutoGaussian.median: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.median",
        "guide_never_set_up",
        lambda: mpe.AutoGaussian(logistic_model).median(T().params),
        RuntimeError,
        r"AutoGaussian.median: the guide has not seen the model yet .*BLR.run",
    ),
    Case(
        "AutoGaussian.get_posterior",
        "params_empty",
        lambda: T().guide.get_posterior({}),
        ValueError,
        r"AutoGaussian.get_posterior: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.get_posterior",
        "precision_indefinite",
        lambda: T().guide.get_posterior(gaussian(np.zeros(2), [[1.0, 2.0], [2.0, 1.0]])),
        NotPD,
        r"AutoGaussian.get_posterior: the precision is not positive definite",
    ),
    Case(
        "AutoGaussian.get_transform",
        "params_empty",
        lambda: T().guide.get_transform({}),
        ValueError,
        r"AutoGaussian.get_transform: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.get_base_dist",
        "guide_never_set_up",
        lambda: mpe.AutoGaussian(logistic_model).get_base_dist(),
        RuntimeError,
        r"AutoGaussian.get_base_dist: the guide has not seen the model yet",
    ),
    Case(
        "AutoGaussian.natural_params",
        "params_empty",
        lambda: T().guide.natural_params({}),
        ValueError,
        r"AutoGaussian.natural_params: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.natural_params",
        "precision_not_symmetric",
        lambda: T().guide.natural_params(gaussian(np.zeros(2), [[2.0, 0.5], [0.0, 2.0]])),
        ValueError,
        r"AutoGaussian.natural_params: 'auto_precision' is not symmetric",
    ),
    Case(
        "AutoGaussian.mean_precision",
        "params_empty",
        lambda: T().guide.mean_precision({}),
        ValueError,
        r"AutoGaussian.mean_precision: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "AutoGaussian.mean_precision",
        "dense_precision_in_diag_guide",
        lambda: T().diag_guide.mean_precision(T().params),
        ValueError,
        r"dense precision \(2, 2\) but the guide is AutoGaussian\(covariance='diag'\)",
    ),
    # ---- BLR: constructor
    Case(
        "BLR",
        "guide_none",
        lambda: mpe.BLR(logistic_model, None, optim.newton()),
        TypeError,
        r"guide must be a numpyro_mpe.AutoGaussian, got <class 'NoneType'>",
    ),
    Case(
        "BLR",
        "model_none",
        lambda: mpe.BLR(None, T().guide, optim.newton()),
        TypeError,
        r"BLR: model must be a NumPyro model \(a callable\), got NoneType",
    ),
    Case(
        "BLR",
        "guide_of_another_model",
        lambda: mpe.BLR(renamed_logistic, T().guide, optim.newton()),
        ValueError,
        r"BLR: the guide was built for another model \('logistic_model', not "
        r"'renamed_logistic'\)",
    ),
    Case(
        "BLR.get_params",
        "run_result_for_state",
        lambda: blr().get_params(mpe.BLRRunResult(T().params, None, jnp.zeros(1))),
        TypeError,
        r"BLR.get_params: state must be a BLRState .*got BLRRunResult",
    ),
    Case(
        "BLR",
        "guide_numpyro_autonormal",
        lambda: mpe.BLR(logistic_model, AutoNormal(logistic_model), optim.newton()),
        TypeError,
        r"guide must be a numpyro_mpe.AutoGaussian, got .*AutoNormal",
    ),
    Case(
        "BLR",
        "guide_autoconjugate",
        lambda: mpe.BLR(beta_binomial, T().beta_guide, optim.newton()),
        TypeError,
        r"guide must be a numpyro_mpe.AutoGaussian, got .*AutoConjugate",
    ),
    Case(
        "BLR",
        "optimizer_optax",
        lambda: mpe.BLR(logistic_model, T().guide, optax.adam(1e-2)),
        TypeError,
        r"optimizer must be a numpyro_mpe.optim optimizer .*got GradientTransformation",
    ),
    Case(
        "BLR",
        "optimizer_factory_not_called",
        lambda: mpe.BLR(logistic_model, T().guide, optim.newton),
        TypeError,
        r"optimizer must be a numpyro_mpe.optim optimizer .*got function",
    ),
    Case(
        "BLR",
        "diag_optimizer_dense_guide",
        lambda: mpe.BLR(logistic_model, T().guide, optim.iblr(0.1)),
        ValueError,
        r"keeps a diag precision but the guide is AutoGaussian\(covariance='dense'\)",
    ),
    Case(
        "BLR",
        "plate_unknown",
        lambda: run(plate="rows"),
        ModelError,
        r"no observed site is inside plate 'rows'; plates holding observed sites: \['data'\]",
    ),
    # ---- BLR.run
    Case(
        "BLR.run",
        "rng_key_int",
        lambda: run(rng_key=0),
        TypeError,
        r"BLR.run: rng_key must be a jax PRNG key.*got int 0",
    ),
    Case(
        "BLR.run",
        "rng_key_none",
        lambda: run(rng_key=None),
        TypeError,
        r"BLR.run: rng_key must be a jax PRNG key.*got NoneType None",
    ),
    Case(
        "BLR.run",
        "rng_key_float_array",
        lambda: run(rng_key=jnp.zeros(2)),
        TypeError,
        r"rng_key must be a jax PRNG key.*shape \(2,\) and dtype float",
    ),
    Case(
        "BLR.run",
        "num_steps_zero",
        lambda: run(num_steps=0),
        ValueError,
        r"num_steps must be at least 1, got 0",
    ),
    Case(
        "BLR.run",
        "num_steps_negative",
        lambda: run(num_steps=-1),
        ValueError,
        r"num_steps must be at least 1, got -1",
    ),
    Case(
        "BLR.run",
        "num_steps_float",
        lambda: run(num_steps=2.5),
        TypeError,
        r"num_steps must be an integer, got 2.5",
    ),
    Case(
        "BLR.run",
        "num_steps_nan",
        lambda: run(num_steps=NAN),
        TypeError,
        r"num_steps must be an integer, got nan",
    ),
    Case(
        "BLR.run",
        "num_steps_string",
        lambda: run(num_steps="5"),
        TypeError,
        r"num_steps must be an integer, got '5'",
    ),
    Case(
        "BLR.run",
        "num_steps_bool",
        lambda: run(num_steps=True),
        TypeError,
        r"num_steps must be an integer, got True",
    ),
    Case(
        "BLR.run",
        "num_steps_none_without_epochs",
        lambda: run(num_steps=None),
        ValueError,
        r"num_steps is None: pass num_steps, or num_steps=None and epochs",
    ),
    Case(
        "BLR.run",
        "num_steps_and_epochs",
        lambda: run(num_steps=5, epochs=2),
        ValueError,
        r"pass num_steps or epochs, not both \(got num_steps=5, epochs=2\)",
    ),
    Case(
        "BLR.run",
        "epochs_zero",
        lambda: run(num_steps=None, epochs=0),
        ValueError,
        r"epochs must be at least 1, got 0",
    ),
    Case(
        "BLR.run",
        "epochs_float",
        lambda: run(num_steps=None, epochs=1.5),
        TypeError,
        r"epochs must be an integer, got 1.5",
    ),
    Case(
        "BLR.run",
        "batch_size_with_newton",
        lambda: run(batch_size=10),
        ValueError,
        r"batch_size=10: this optimizer \(optim.newton\) needs the full-data loss",
    ),
    Case(
        "BLR.run",
        "batch_size_zero",
        lambda: run(optimizer=optim.online_newton(0.5), batch_size=0),
        ValueError,
        r"batch_size must be in \[1, 40\], got 0",
    ),
    Case(
        "BLR.run",
        "batch_size_above_n",
        lambda: run(optimizer=optim.online_newton(0.5), batch_size=41),
        ValueError,
        r"batch_size must be in \[1, 40\], got 41",
    ),
    Case(
        "BLR.run",
        "batch_size_float",
        lambda: run(optimizer=optim.online_newton(0.5), batch_size=2.5),
        TypeError,
        r"batch_size must be an integer, got 2.5",
    ),
    Case(
        "BLR.run",
        "batch_size_string",
        lambda: run(optimizer=optim.online_newton(0.5), batch_size="4"),
        TypeError,
        r"batch_size must be an integer, got '4'",
    ),
    Case(
        "BLR.run",
        "checkpoint_zero",
        lambda: run(checkpoints=[0]),
        ValueError,
        r"checkpoint steps must be in \[1, 5\], got \[0\]",
    ),
    Case(
        "BLR.run",
        "checkpoint_after_last_step",
        lambda: run(checkpoints=[2, 6]),
        ValueError,
        r"checkpoint steps must be in \[1, 5\], got \[6\]",
    ),
    Case(
        "BLR.run",
        "plate_as_run_keyword",
        lambda: blr().run(key(), 5, T().X, T().y, progress_bar=False, plate="data"),
        TypeError,
        r"BLR.run got plate='data': the plate of examples is set once",
    ),
    Case(
        "BLR.run",
        "init_state_and_init_params",
        lambda: run(init_state=mpe.BLRState(None, key()), init_params=T().params),
        ValueError,
        r"pass init_state or init_params, not both",
    ),
    Case(
        "BLR.run",
        "init_params_empty",
        lambda: run(init_params={}),
        ValueError,
        r"init_params must hold the guide's mean 'auto_loc'; got keys \[\]",
    ),
    Case(
        "BLR.run",
        "init_params_of_another_size",
        lambda: run(init_params={"auto_loc": jnp.zeros(3)}),
        ValueError,
        r"guide latent size \(3,\) differs from the model's \(2,\)",
    ),
    Case(
        "BLR.run",
        "lr_schedule_turns_negative",
        lambda: run(optimizer=optim.online_newton(lambda step: 0.5 - 0.2 * step)),
        ValueError,
        r"the lr schedule gives -0.1 at step 3, outside \(0, 1\]",
    ),
    Case(
        "BLR.run",
        "X_nan",
        lambda: run(with_value(T().X, (3, 1), NAN), T().y),
        ModelError,
        r"positional argument 0 contains nan at index \(3, 1\)",
    ),
    Case(
        "BLR.run",
        "y_inf",
        lambda: run(T().X, with_value(T().y, (5,), INF)),
        ModelError,
        r"positional argument 1 contains inf at index \(5,\)",
    ),
    Case(
        "BLR.run",
        "X_list",
        lambda: run(T().X.tolist(), T().y),
        ModelError,
        r"the model failed to trace before its first site: AttributeError: 'list' object",
    ),
    Case(
        "BLR.run",
        "no_rows",
        lambda: run(T().X[:0], T().y[:0]),
        ModelError,
        r"failed to trace after site 'beta': .*size of plate should be positive",
    ),
    Case(
        "BLR.run",
        "X_beyond_float32",
        lambda: without_x64(lambda: run(T().X * 1e300, T().y)),
        ModelError,
        r"BLR.run: positional argument 0 holds 1e\+300 at index \(0, 0\), beyond the range "
        r"of float32",
    ),
    Case(
        "BLR.run",
        "progress_bar_string",
        lambda: blr().run(key(), 5, T().X, T().y, progress_bar="no"),
        TypeError,
        r"progress_bar must be True or False, got 'no'",
    ),
    # ---- BLR.init / BLR.update, and BLRState built by hand
    Case(
        "BLR.init",
        "rng_key_int",
        lambda: blr().init(0, T().X, T().y),
        TypeError,
        r"BLR.init: rng_key must be a jax PRNG key.*got int 0",
    ),
    Case(
        "BLR.init",
        "batch_size_with_newton",
        lambda: blr().init(key(), T().X, T().y, batch_size=4),
        ValueError,
        r"batch_size=4: this optimizer \(optim.newton\)",
    ),
    Case(
        "BLR.init",
        "batch_size_zero",
        lambda: blr(optim.online_newton(0.5)).init(key(), T().X, T().y, batch_size=0),
        ValueError,
        r"batch_size must be in \[1, 40\], got 0",
    ),
    Case(
        "BLR.init",
        "init_params_without_mean",
        lambda: blr().init(key(), T().X, T().y, init_params={"loc": 1.0}),
        ValueError,
        r"init_params must hold the guide's mean 'auto_loc'; got keys \['loc'\]",
    ),
    Case(
        "BLR.init",
        "plate_as_keyword",
        lambda: blr().init(key(), T().X, T().y, plate="data"),
        TypeError,
        r"BLR.init got plate='data'",
    ),
    Case(
        "BLR.update",
        "plate_as_keyword",
        lambda: blr().update(mpe.BLRState(None, key()), T().X, T().y, plate="data"),
        TypeError,
        r"BLR.update got plate='data'",
    ),
    Case(
        "BLR.update",
        "batch_size_with_newton",
        lambda: blr().update(mpe.BLRState(None, key()), T().X, T().y, batch_size=4),
        ValueError,
        r"batch_size=4: this optimizer \(optim.newton\)",
    ),
    Case(
        "BLR.update",
        "state_none",
        lambda: blr().update(None, T().X, T().y),
        TypeError,
        r"BLR.update: state must be a BLRState .*got NoneType",
    ),
    Case(
        "BLRState",
        "hand_built_state_for_minibatches",
        lambda: blr(optim.online_newton(0.5)).update(
            mpe.BLRState(None, key()), T().X, T().y, batch_size=4
        ),
        ValueError,
        r"minibatches need a BLRState from BLR.init \(step, data_key\)",
    ),
    Case(
        "BLRState",
        "hand_built_state_run_with_minibatches",
        lambda: run(
            optimizer=optim.online_newton(0.5), init_state=mpe.BLRState(None, key()), batch_size=4
        ),
        ValueError,
        r"minibatches need a BLRState from BLR.init \(step, data_key\)",
    ),
    # ---- trace_model
    Case(
        "trace_model",
        "X_nan",
        lambda: trace(logistic_model, with_value(T().X, (3, 1), NAN), T().y),
        ModelError,
        r"positional argument 0 contains nan at index \(3, 1\); NaN and inf are not allowed",
    ),
    Case(
        "trace_model",
        "y_none_entries",
        lambda: trace(logistic_model, T().X, object_array([None] * NUM_EXAMPLES)),
        ModelError,
        r"positional argument 1 contains None at index \(0,\)",
    ),
    Case(
        "trace_model",
        "keyword_argument_inf",
        lambda: mpe.trace_model(scaled_logistic, T().X, T().y, prior_scale=np.array(INF)),
        ModelError,
        r"argument 'prior_scale' contains inf",
    ),
    Case(
        "trace_model",
        "y_outside_support",
        lambda: trace(logistic_model, T().X, with_value(T().y, (2,), -1.0)),
        ModelError,
        r"observed site 'y' has value -1.0 at index \(2,\), outside the support",
    ),
    Case(
        "trace_model",
        "model_not_callable",
        lambda: trace("logistic_model"),
        TypeError,
        r"model must be a NumPyro model \(a function\), got str",
    ),
    Case(
        "trace_model",
        "model_none",
        lambda: mpe.trace_model(None, T().X, T().y),
        TypeError,
        r"model must be a NumPyro model \(a function\), got NoneType",
    ),
    Case(
        "trace_model",
        "y_one_row_short",
        lambda: trace(logistic_model, T().X, T().y[:-1]),
        ModelError,
        r"observed site 'y' has shape \(39,\) but its distribution has shape \(40,\)",
    ),
    Case(
        "trace_model",
        "y_column",
        lambda: trace(logistic_model, T().X, T().y[:, None]),
        ModelError,
        r"observed site 'y' has shape \(40, 1\) but its distribution has shape \(40,\)",
    ),
    Case(
        "trace_model",
        "y_strings",
        lambda: trace(logistic_model, T().X, np.array(["a"] * NUM_EXAMPLES)),
        ModelError,
        r"observed site 'y' holds values of dtype <U1; observations must be numbers",
    ),
    Case(
        "loo",
        "y_one_row_short",
        lambda: loo(T().X, T().y[:-1]),
        ModelError,
        r"observed site 'y' has shape \(39,\) but its distribution has shape \(40,\)",
    ),
    Case(
        "trace_model",
        "unknown_keyword",
        lambda: trace(logistic_model, T().X, T().y, foo=1),
        ModelError,
        r"unexpected keyword argument 'foo'",
    ),
    Case(
        "trace_model",
        "missing_argument",
        lambda: mpe.trace_model(logistic_model),
        ModelError,
        r"missing 1 required positional argument: 'X'",
    ),
    Case(
        "trace_model",
        "plate_unknown",
        lambda: trace(plate="rows"),
        ModelError,
        r"no observed site is inside plate 'rows'",
    ),
    Case(
        "trace_model",
        "plate_int",
        lambda: trace(plate=0),
        TypeError,
        r"plate must be a plate's name \(a str\) or None, got 0",
    ),
    Case(
        "trace_model",
        "plate_list",
        lambda: trace(plate=["data"]),
        TypeError,
        r"plate must be a plate's name \(a str\) or None, got \['data'\]",
    ),
    Case(
        "trace_model",
        "no_latent",
        lambda: trace(no_latent, T().X, T().y),
        ModelError,
        r"the model has no latent site",
    ),
    Case(
        "trace_model",
        "no_observed_site",
        lambda: trace(no_observation, T().X, T().y),
        ModelError,
        r"the model has no observed site; pass data through obs=",
    ),
    Case(
        "trace_model",
        "observation_outside_plates",
        lambda: trace(no_plate, T().X, T().y),
        ModelError,
        r"no observed site is inside a plate.*observed sites: \['y'\]",
    ),
    Case(
        "trace_model",
        "subsampled_plate",
        lambda: trace(subsampled, T().X, T().y),
        ModelError,
        r"plate 'data' is subsampled",
    ),
    Case(
        "trace_model",
        "local_latent",
        lambda: trace(local_latent, T().X, T().y),
        ModelError,
        r"latent site 'b' is local to plate 'data'",
    ),
    Case(
        "trace_model",
        "discrete_latent",
        lambda: trace(discrete_latent, T().X, T().y),
        ModelError,
        r"latent site 'k' is discrete",
    ),
    Case(
        "trace_model",
        "model_raises",
        lambda: trace(failing, T().X, T().y),
        ModelError,
        r"failed to trace after site 'b': RuntimeError: boom",
    ),
    Case(
        "trace_model",
        "plates_of_different_sizes",
        lambda: trace(two_plates, T().X, T().y),
        ModelError,
        r"observed sites are in plates of different sizes: 'y' in plates \['rows'\]",
    ),
    Case(
        "trace_model",
        "y_list",
        lambda: trace(logistic_model, T().X, list(T().y)),
        ModelError,
        r"observed site 'y' got a list of 40 values \(positional argument 1\); numpyro "
        r"distributions need an array",
    ),
    Case(
        "trace_model",
        "y_tuple_keyword",
        lambda: mpe.trace_model(scaled_logistic, T().X, y=tuple(T().y)),
        ModelError,
        r"observed site 'y' got a tuple of 40 values \(argument 'y'\)",
    ),
    Case(
        "trace_model",
        "with_predictor_string",
        lambda: trace(with_predictor="logits"),
        TypeError,
        r"with_predictor must be True, False or a tuple of the observation's parameter "
        r"names .*got 'logits'",
    ),
    Case(
        "trace_model",
        "with_predictor_none",
        lambda: trace(with_predictor=None),
        TypeError,
        r"with_predictor must be True, False or a tuple .*got None",
    ),
    Case(
        "trace_model",
        "with_predictor_unknown_name",
        lambda: trace(with_predictor=("probs",)),
        ModelError,
        r"with_predictor names \['probs'\] are not all parameters of the observed site 'y' "
        r"\(BernoulliLogits\), whose continuous parameters are \['logits'\]",
    ),
    Case(
        "trace_model",
        "X_overflows_float32",
        lambda: in_float32(lambda: trace(logistic_model, with_value(T().X, (3, 1), 1e300), T().y)),
        ModelError,
        r"positional argument 0 holds 1e\+300 at index \(3, 1\), beyond the range of float32",
    ),
    Case(
        "trace_model",
        "y_scalar_for_the_plate",
        lambda: trace(logistic_model, T().X, 1.0),
        ModelError,
        r"observed site 'y' got a value of shape \(\) \(positional argument 1\) for the 40 "
        r"examples of plate 'data'",
    ),
    Case(
        "trace_model",
        "y_not_passed_to_a_continuous_likelihood",
        lambda: trace(no_latent, T().X),
        ModelError,
        r"no observed site.*site 'y' \(in plate 'data'\) got obs=None; were its data passed",
    ),
    # ---- PlateModel (from trace_model): shapes of theta and weights, also under jit
    Case(
        "PlateModel.log_joint",
        "theta_of_another_model",
        lambda: trace().log_joint(jnp.zeros(3)),
        ValueError,
        r"theta must have shape \(P,\) = \(2,\) \(2 flat latents in the model\), got \(3,\)",
    ),
    Case(
        "PlateModel.log_joint",
        "weights_short",
        lambda: trace().log_joint(jnp.zeros(2), jnp.ones(NUM_EXAMPLES - 1)),
        ValueError,
        r"weights must have shape \(N,\) = \(40,\) \(40 examples in the model\), got \(39,\)",
    ),
    Case(
        "PlateModel.log_joint",
        "weights_scalar",
        lambda: trace().log_joint(jnp.zeros(2), 1.0),
        ValueError,
        r"weights must have shape \(N,\) = \(40,\) .*got \(\)",
    ),
    Case(
        "PlateModel.log_joint",
        "weights_column_under_jit",
        lambda: jax.jit(trace().log_joint)(jnp.zeros(2), jnp.ones((NUM_EXAMPLES, 1))),
        ValueError,
        r"weights must have shape \(N,\) = \(40,\) .*got \(40, 1\)",
    ),
    Case(
        "PlateModel.log_lik",
        "theta_batch",
        lambda: trace().log_lik(jnp.zeros((5, 2))),
        ValueError,
        r"theta must have shape \(P,\) = \(2,\) .*got \(5, 2\)",
    ),
    Case(
        "PlateModel.unravel",
        "theta_short",
        lambda: trace().unravel(jnp.zeros(1)),
        ValueError,
        r"theta must have shape \(P,\) = \(2,\) .*got \(1,\)",
    ),
    # ---- loo
    Case(
        "loo",
        "method_misspelt",
        lambda: loo(method="laplce"),
        ValueError,
        r"method must be one of \('cavity', 'paper', 'is'\), got 'laplce'",
    ),
    Case(
        "loo",
        "method_none",
        lambda: loo(method=None),
        ValueError,
        r"method must be one of .*got None",
    ),
    Case(
        "loo",
        "reliability_threshold_zero",
        lambda: loo(reliability_threshold=0),
        ValueError,
        r"reliability_threshold must be in \(0, 1\], got 0",
    ),
    Case(
        "loo",
        "reliability_threshold_above_one",
        lambda: loo(reliability_threshold=1.5),
        ValueError,
        r"reliability_threshold must be in \(0, 1\], got 1.5",
    ),
    Case(
        "loo",
        "reliability_threshold_nan",
        lambda: loo(reliability_threshold=NAN),
        ValueError,
        r"reliability_threshold must be in \(0, 1\], got nan",
    ),
    Case(
        "loo",
        "reliability_threshold_string",
        lambda: loo(reliability_threshold="0.7"),
        TypeError,
        r"reliability_threshold must be a number, got '0.7'",
    ),
    Case(
        "loo",
        "reliability_threshold_none",
        lambda: loo(reliability_threshold=None),
        TypeError,
        r"reliability_threshold must be a number, got None",
    ),
    Case(
        "loo",
        "reliability_threshold_negative",
        lambda: loo(reliability_threshold=-0.5),
        ValueError,
        r"reliability_threshold must be in \(0, 1\], got -0.5",
    ),
    Case(
        "loo",
        "reliability_threshold_array",
        lambda: loo(reliability_threshold=np.array([0.5, 0.7])),
        TypeError,
        r"reliability_threshold must be a number, got array\(\[0.5, 0.7\]\)",
    ),
    Case(
        "loo",
        "num_samples_string",
        lambda: loo(method="is", num_samples="100"),
        TypeError,
        r"num_samples must be an integer >= 2 .*got '100' of type str",
    ),
    Case(
        "loo",
        "num_samples_none",
        lambda: loo(num_samples=None),
        TypeError,
        r"num_samples must be an integer >= 2 .*got None of type NoneType",
    ),
    Case(
        "loo",
        "seed_string",
        lambda: loo(method="is", seed="0"),
        TypeError,
        r"seed must be an integer, got '0'",
    ),
    Case(
        "loo",
        "seed_float",
        lambda: loo(method="is", seed=1.5),
        TypeError,
        r"seed must be an integer, got 1.5",
    ),
    Case(
        "loo",
        "seed_none",
        lambda: loo(seed=None),
        TypeError,
        r"seed must be an integer, got None",
    ),
    Case(
        "loo",
        "seed_negative",
        lambda: loo(method="is", seed=-1),
        ValueError,
        r"seed must be at least 0, got -1",
    ),
    Case(
        "loo",
        "seed_above_int64",
        lambda: loo(method="is", seed=2**63),
        ValueError,
        r"seed must be an integer <= 9223372036854775807, got 9223372036854775808",
    ),
    Case(
        "loo",
        "num_samples_huge",
        lambda: loo(method="is", num_samples=10**300),
        ValueError,
        r"num_samples must be an integer <= 2147483647, got 1e\+300",
    ),
    Case(
        "loo",
        "seed_key",
        lambda: loo(method="is", seed=key()),
        TypeError,
        r"seed must be an integer, got Array\(\[0, 0\]",
    ),
    Case(
        "loo",
        "plate_list",
        lambda: loo(plate=["data"]),
        TypeError,
        r"plate must be a plate's name \(a str\) or None, got \['data'\]",
    ),
    Case(
        "loo",
        "y_list",
        lambda: loo(T().X, list(T().y)),
        ModelError,
        r"observed site 'y' got a list of 40 values \(positional argument 1\)",
    ),
    Case(
        "loo",
        "num_samples_float",
        lambda: loo(num_samples=2.5),
        TypeError,
        r"num_samples must be an integer >= 2 .*got 2.5 of type float",
    ),
    Case(
        "loo",
        "num_samples_bool",
        lambda: loo(method="is", num_samples=True),
        TypeError,
        r"num_samples must be an integer >= 2 .*got True of type bool",
    ),
    Case(
        "loo",
        "importance_misspelt",
        lambda: loo(method="is", importance="some"),
        ValueError,
        r"importance must be 'auto', 'poor', 'all' or indices, got 'some'",
    ),
    Case(
        "loo",
        "importance_misspelt_with_cavity",
        lambda: loo(importance="al"),
        ValueError,
        r"importance must be 'auto', 'poor', 'all' or indices, got 'al'",
    ),
    Case(
        "loo",
        "importance_none",
        lambda: loo(method="is", importance=None),
        ValueError,
        r"importance must be 'auto', 'poor', 'all' or indices, got None",
    ),
    Case(
        "loo",
        "importance_index_n",
        lambda: loo(method="is", importance=[NUM_EXAMPLES]),
        ValueError,
        r"importance index 40 is out of range for 40 examples",
    ),
    Case(
        "loo",
        "importance_index_negative",
        lambda: loo(method="is", importance=[-1]),
        ValueError,
        r"importance index -1 is out of range for 40 examples",
    ),
    Case(
        "loo",
        "importance_float_indices",
        lambda: loo(method="is", importance=[1.0]),
        ValueError,
        r"importance indices must be a 1-d integer array, got float64",
    ),
    Case(
        "loo",
        "importance_2d",
        lambda: loo(method="is", importance=[[1]]),
        ValueError,
        r"importance indices must be a 1-d integer array",
    ),
    Case(
        "loo",
        "importance_boolean_mask",
        lambda: loo(method="is", importance=np.ones(NUM_EXAMPLES, bool)),
        ValueError,
        r"importance indices must be a 1-d integer array, got bool",
    ),
    Case(
        "loo",
        "params_empty",
        lambda: loo(params={}),
        ValueError,
        r"loo: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "loo",
        "params_none",
        lambda: mpe.loo(logistic_model, T().guide, None, T().X, T().y),
        ValueError,
        r"loo: params must be a dict of guide params, got <class 'NoneType'>",
    ),
    Case(
        "loo",
        "params_of_another_model",
        lambda: loo(params=gaussian(np.zeros(3), np.eye(3))),
        ValueError,
        r"loo: params hold 3 latents but the model has P = 2",
    ),
    Case(
        "loo",
        "params_diag_in_dense_guide",
        lambda: loo(params=T().diag_params),
        ValueError,
        r"loo: params hold a diag precision \(2,\)",
    ),
    Case(
        "loo",
        "params_mean_nan",
        lambda: loo(params=gaussian([NAN, 0.0], np.eye(2))),
        ValueError,
        r"loo: 'auto_loc' is not finite at index \(0,\) \(nan\)",
    ),
    Case(
        "loo",
        "params_precision_negative_definite",
        lambda: loo(params=gaussian(np.zeros(2), -np.eye(2))),
        NotPD,
        r"loo: the precision is not positive definite \(smallest eigenvalue -1\)",
    ),
    Case(
        "loo",
        "params_precision_not_symmetric",
        lambda: loo(params=gaussian(np.zeros(2), [[2.0, 0.5], [0.0, 2.0]])),
        ValueError,
        r"loo: 'auto_precision' is not symmetric: auto_precision\[0, 1\] = 0.5",
    ),
    Case(
        "loo",
        "params_mean_complex",
        lambda: loo(params={"auto_loc": np.zeros(2, complex), "auto_precision": np.eye(2)}),
        ValueError,
        r"loo: 'auto_loc' must hold real numbers, got dtype complex128",
    ),
    Case(
        "loo",
        "guide_none",
        lambda: mpe.loo(logistic_model, None, T().params, T().X, T().y),
        TypeError,
        r"loo does not support the guide NoneType",
    ),
    Case(
        "loo",
        "guide_numpyro_autonormal",
        lambda: mpe.loo(logistic_model, AutoNormal(logistic_model), T().params, T().X, T().y),
        TypeError,
        r"loo does not support the guide AutoNormal",
    ),
    Case(
        "loo",
        "y_nan",
        lambda: loo(T().X, with_value(T().y, (0,), NAN)),
        ModelError,
        r"positional argument 1 contains nan at index \(0,\)",
    ),
    Case(
        "loo",
        "plate_unknown",
        lambda: loo(plate="rows"),
        ModelError,
        r"no observed site is inside plate 'rows'",
    ),
    Case(
        "loo",
        "groups_short",
        lambda: loo(groups=np.arange(NUM_EXAMPLES - 1) % 3),
        ValueError,
        r"groups must hold one label per example, shape \(40,\); got shape \(39,\)",
    ),
    Case(
        "loo",
        "groups_2d",
        lambda: loo(groups=np.zeros((NUM_EXAMPLES, 1))),
        ValueError,
        r"groups must hold one label per example, shape \(40,\); got shape \(40, 1\)",
    ),
    Case(
        "loo",
        "groups_scalar",
        lambda: loo(groups=3),
        ValueError,
        r"groups must hold one label per example, shape \(40,\); got shape \(\)",
    ),
    Case(
        "loo",
        "groups_nan",
        lambda: loo(groups=with_value(np.arange(NUM_EXAMPLES) % 3, (4,), NAN)),
        ValueError,
        r"groups holds nan at example 4",
    ),
    Case(
        "loo",
        "groups_none_label",
        lambda: loo(groups=object_array([None] + [1] * (NUM_EXAMPLES - 1))),
        ValueError,
        r"groups holds None at example 0",
    ),
    Case(
        "loo",
        "groups_dict_labels",
        lambda: loo(groups=object_array([{}] * NUM_EXAMPLES)),
        TypeError,
        r"groups must hold numbers or strings; example 0 has the label \{\} of type dict",
    ),
    Case(
        "loo",
        "conjugate_params_empty",
        lambda: beta_loo(params={}),
        ValueError,
        r"params \[\] are not AutoConjugate params \(prefix 'auto'\)",
    ),
    Case(
        "loo",
        "conjugate_gaussian_params",
        lambda: beta_loo(params=T().params),
        ValueError,
        r"params hold a normal posterior but the model is a beta model",
    ),
    Case(
        "loo",
        "conjugate_concentration_negative",
        lambda: beta_loo(
            params={"auto_concentration1": jnp.asarray(-1.0), "auto_concentration0": 2.0}
        ),
        ValueError,
        r"improper beta posterior: concentration1 is not positive",
    ),
    Case(
        "loo",
        "conjugate_concentration_vector",
        lambda: beta_loo(
            params={"auto_concentration1": np.full(3, 300.0), "auto_concentration0": 300.0}
        ),
        ValueError,
        r"loo: 'auto_concentration1' must be a scalar in a beta posterior, got shape \(3,\)",
    ),
    Case(
        "loo",
        "conjugate_groups",
        lambda: beta_loo(groups=np.arange(10) % 2),
        ValueError,
        r"groups is not supported with AutoConjugate; use AutoGaussian",
    ),
    Case(
        "loo",
        "conjugate_method_misspelt",
        lambda: beta_loo(method="laplce"),
        ValueError,
        r"method must be one of .*got 'laplce'",
    ),
    # ---- prepare_loo: argument errors at preparation, params errors at each call
    Case(
        "prepare_loo",
        "method_misspelt",
        lambda: mpe.prepare_loo(logistic_model, T().guide, T().X, T().y, method="full"),
        ValueError,
        r"method must be one of .*got 'full'",
    ),
    Case(
        "prepare_loo",
        "reliability_threshold_negative",
        lambda: mpe.prepare_loo(
            logistic_model, T().guide, T().X, T().y, reliability_threshold=-0.1
        ),
        ValueError,
        r"reliability_threshold must be in \(0, 1\], got -0.1",
    ),
    Case(
        "prepare_loo",
        "num_samples_bool",
        lambda: mpe.prepare_loo(logistic_model, T().guide, T().X, T().y, num_samples=False),
        TypeError,
        r"num_samples must be an integer >= 2 .*got False",
    ),
    Case(
        "prepare_loo",
        "reliability_threshold_string",
        lambda: mpe.prepare_loo(
            logistic_model, T().guide, T().X, T().y, reliability_threshold="high"
        ),
        TypeError,
        r"reliability_threshold must be a number, got 'high'",
    ),
    Case(
        "prepare_loo",
        "seed_string",
        lambda: mpe.prepare_loo(logistic_model, T().guide, T().X, T().y, method="is", seed="1"),
        TypeError,
        r"seed must be an integer, got '1'",
    ),
    Case(
        "prepare_loo",
        "seed_huge",
        lambda: mpe.prepare_loo(logistic_model, T().guide, T().X, T().y, seed=10**40),
        ValueError,
        r"seed must be an integer <= 9223372036854775807, got 1e\+40",
    ),
    Case(
        "prepare_loo",
        "importance_index_out_of_range",
        lambda: mpe.prepare_loo(
            logistic_model, T().guide, T().X, T().y, method="is", importance=[100]
        ),
        ValueError,
        r"importance index 100 is out of range for 40 examples",
    ),
    Case(
        "prepare_loo",
        "guide_string",
        lambda: mpe.prepare_loo(logistic_model, "guide", T().X, T().y),
        TypeError,
        r"loo does not support the guide str",
    ),
    Case(
        "prepare_loo",
        "call_with_params_empty",
        lambda: mpe.prepare_loo(logistic_model, T().guide, T().X, T().y)({}),
        ValueError,
        r"loo: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "prepare_loo",
        "call_with_diag_params",
        lambda: mpe.prepare_loo(logistic_model, T().guide, T().X, T().y)(T().diag_params),
        ValueError,
        r"loo: params hold a diag precision",
    ),
    # ---- perturb
    Case(
        "perturb",
        "remove_fractional_floats",
        lambda: perturb(np.array([0.5, 2.5])),
        TypeError,
        r"remove must be integer indices or a boolean mask",
    ),
    Case(
        "perturb",
        "remove_none_without_weights",
        lambda: perturb(None),
        TypeError,
        r"pass remove \(integer indices or a boolean mask",
    ),
    Case(
        "perturb",
        "remove_string",
        lambda: perturb("0"),
        TypeError,
        r"remove must be integer indices or a boolean mask .*got dtype <U1",
    ),
    Case(
        "perturb",
        "remove_index_n",
        lambda: perturb([NUM_EXAMPLES]),
        ValueError,
        r"index 40 is out of range for 40 examples",
    ),
    Case(
        "perturb",
        "mask_short",
        lambda: perturb(np.ones(NUM_EXAMPLES - 1, bool)),
        ValueError,
        r"a boolean mask must have shape \(40,\), got \(39,\)",
    ),
    Case(
        "perturb",
        "weights_above_one",
        lambda: perturb(None, weights=np.full(NUM_EXAMPLES, 2.0)),
        ValueError,
        r"weight 2.0 at index 0 is outside \[0, 1\]",
    ),
    Case(
        "perturb",
        "weights_and_remove",
        lambda: perturb([1], weights=np.ones(NUM_EXAMPLES)),
        TypeError,
        r"pass either remove .* or weights= .*not both",
    ),
    Case(
        "perturb",
        "weights_with_groups",
        lambda: perturb(None, weights=np.ones(NUM_EXAMPLES), groups=np.arange(NUM_EXAMPLES) % 2),
        TypeError,
        r"weights= gives each example a new weight and cannot be combined with groups",
    ),
    Case(
        "perturb",
        "params_empty",
        lambda: perturb([0], params={}),
        ValueError,
        r"perturb: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "perturb",
        "params_mean_nan",
        lambda: perturb([0], params=gaussian([0.0, NAN], np.eye(2))),
        ValueError,
        r"perturb: 'auto_loc' is not finite at index \(1,\)",
    ),
    Case(
        "perturb",
        "params_of_another_model",
        lambda: perturb([0], params=gaussian(np.zeros(3), np.eye(3))),
        ValueError,
        r"perturb: params hold 3 latents but the model has P = 2",
    ),
    Case(
        "perturb",
        "params_precision_not_symmetric",
        lambda: perturb([0], params=gaussian(np.zeros(2), [[2.0, 0.5], [0.0, 2.0]])),
        ValueError,
        r"perturb: 'auto_precision' is not symmetric: auto_precision\[0, 1\] = 0.5",
    ),
    Case(
        "perturb",
        "guide_none",
        lambda: mpe.perturb(logistic_model, None, T().params, [0], T().X, T().y),
        TypeError,
        r"perturb does not support the guide NoneType",
    ),
    Case(
        "perturb",
        "group_label_missing",
        lambda: perturb([7], groups=np.arange(NUM_EXAMPLES) % 3),
        ValueError,
        r"group 7 is not among the labels in groups",
    ),
    Case(
        "perturb",
        "group_boolean_mask",
        lambda: perturb(np.array([True, False]), groups=np.arange(NUM_EXAMPLES) % 2),
        TypeError,
        r"with groups, remove holds group labels .*not a boolean mask; got booleans of "
        r"shape \(2,\)",
    ),
    Case(
        "perturb",
        "groups_short",
        lambda: perturb([0], groups=np.arange(NUM_EXAMPLES - 1) % 3),
        ValueError,
        r"groups must hold one label per example, shape \(40,\); got shape \(39,\)",
    ),
    Case(
        "perturb",
        "y_inf",
        lambda: perturb([0], T().X, with_value(T().y, (3,), -INF)),
        ModelError,
        r"positional argument 1 contains -inf at index \(3,\)",
    ),
    Case(
        "perturb",
        "y_list",
        lambda: perturb([0], T().X, list(T().y)),
        ModelError,
        r"observed site 'y' got a list of 40 values \(positional argument 1\)",
    ),
    Case(
        "perturb",
        "conjugate_remove_fractional_floats",
        lambda: beta_perturb(np.array([0.5])),
        TypeError,
        r"remove must be integer indices or a boolean mask",
    ),
    Case(
        "perturb",
        "conjugate_index_n",
        lambda: beta_perturb([10]),
        ValueError,
        r"index 10 is out of range for 10 examples",
    ),
    Case(
        "perturb",
        "conjugate_params_empty",
        lambda: beta_perturb([0], params={}),
        ValueError,
        r"params \[\] are not AutoConjugate params",
    ),
    Case(
        "perturb",
        "conjugate_params_without_the_examples",
        lambda: beta_perturb(
            [0, 1], params={"auto_concentration1": 2.0, "auto_concentration0": 2.0}
        ),
        ValueError,
        r"removing these examples leaves an improper beta posterior",
    ),
    Case(
        "perturb",
        "conjugate_concentration_inf",
        lambda: beta_perturb([0], params={"auto_concentration1": INF, "auto_concentration0": 2.0}),
        ValueError,
        r"perturb: 'auto_concentration1' is not finite \(inf\)",
    ),
    # ---- removal_weights
    Case(
        "removal_weights",
        "index_n",
        lambda: mpe.removal_weights([40], 40),
        ValueError,
        r"index 40 is out of range for 40 examples",
    ),
    Case(
        "removal_weights",
        "index_negative",
        lambda: mpe.removal_weights([-1], 40),
        ValueError,
        r"index -1 is out of range for 40 examples",
    ),
    Case(
        "removal_weights",
        "indices_2d",
        lambda: mpe.removal_weights([[1]], 40),
        ValueError,
        r"indices must be 1-d, got shape \(1, 1\)",
    ),
    Case(
        "removal_weights",
        "mask_short",
        lambda: mpe.removal_weights(np.ones(39, bool), 40),
        ValueError,
        r"a boolean mask must have shape \(40,\), got \(39,\)",
    ),
    Case(
        "removal_weights",
        "remove_strings",
        lambda: mpe.removal_weights(["a"], 40),
        TypeError,
        r"remove must be integer indices or a boolean mask .*got dtype <U1",
    ),
    Case(
        "removal_weights",
        "remove_complex",
        lambda: mpe.removal_weights(np.array([1 + 0j]), 40),
        TypeError,
        r"remove must be integer indices or a boolean mask .*got dtype complex128",
    ),
    Case(
        "removal_weights",
        "remove_object_array",
        lambda: mpe.removal_weights(object_array([1, 2]), 40),
        TypeError,
        r"remove must be integer indices or a boolean mask .*got dtype object",
    ),
    Case(
        "removal_weights",
        "remove_float_scalar",
        lambda: mpe.removal_weights(3.5, 40),
        TypeError,
        r"remove must be integer indices .*got a float array of shape \(\)",
    ),
    Case(
        "removal_weights",
        "neither_remove_nor_weights",
        lambda: mpe.removal_weights(None, 40),
        TypeError,
        r"pass remove \(integer indices or a boolean mask \(N,\), True removes\) or weights=",
    ),
    Case(
        "removal_weights",
        "remove_and_weights",
        lambda: mpe.removal_weights([1], 40, weights=np.ones(40)),
        TypeError,
        r"not both",
    ),
    Case(
        "removal_weights",
        "weights_short",
        lambda: mpe.removal_weights(None, 40, weights=np.ones(39)),
        ValueError,
        r"weights must have shape \(40,\), got \(39,\)",
    ),
    Case(
        "removal_weights",
        "weights_above_one",
        lambda: mpe.removal_weights(None, 40, weights=np.full(40, 1.5)),
        ValueError,
        r"weight 1.5 at index 0 is outside \[0, 1\]",
    ),
    Case(
        "removal_weights",
        "weights_negative",
        lambda: mpe.removal_weights(None, 40, weights=with_value(np.ones(40), (7,), -0.5)),
        ValueError,
        r"weight -0.5 at index 7 is outside \[0, 1\]",
    ),
    Case(
        "removal_weights",
        "weights_nan",
        lambda: mpe.removal_weights(None, 40, weights=with_value(np.ones(40), (3,), NAN)),
        ValueError,
        r"weight nan at index 3 is outside \[0, 1\]",
    ),
    Case(
        "removal_weights",
        "weights_bool",
        lambda: mpe.removal_weights(None, 40, weights=np.ones(40, bool)),
        TypeError,
        r"weights must be real numbers in \[0, 1\].*got dtype bool \(for a boolean mask use",
    ),
    Case(
        "removal_weights",
        "weights_strings",
        lambda: mpe.removal_weights(None, 40, weights=np.array(["1"] * 40)),
        TypeError,
        r"weights must be real numbers in \[0, 1\].*got dtype <U1",
    ),
    Case(
        "removal_weights",
        "num_examples_negative",
        lambda: mpe.removal_weights([0], -1),
        ValueError,
        r"num_examples must be at least 0, got -1",
    ),
    Case(
        "removal_weights",
        "num_examples_float",
        lambda: mpe.removal_weights([0], 2.5),
        TypeError,
        r"num_examples must be an integer, got 2.5",
    ),
    Case(
        "removal_weights",
        "num_examples_string",
        lambda: mpe.removal_weights([0], "40"),
        TypeError,
        r"num_examples must be an integer, got '40'",
    ),
    Case(
        "removal_weights",
        "num_examples_none",
        lambda: mpe.removal_weights(None, None, weights=np.ones(40)),
        TypeError,
        r"num_examples must be an integer, got None",
    ),
    Case(
        "removal_weights",
        "num_examples_bool",
        lambda: mpe.removal_weights([0], True),
        TypeError,
        r"num_examples must be an integer, got True",
    ),
    Case(
        "removal_weights",
        "num_examples_huge",
        lambda: mpe.removal_weights([0], 10**30),
        ValueError,
        r"num_examples must be an integer <= 2147483647, got 1e\+30",
    ),
    # ---- sensitivity
    Case(
        "sensitivity",
        "params_empty",
        lambda: sensitivity(params={}),
        ValueError,
        r"sensitivity: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "sensitivity",
        "params_diag_in_dense_guide",
        lambda: sensitivity(params=T().diag_params),
        ValueError,
        r"sensitivity: params hold a diag precision \(2,\)",
    ),
    Case(
        "sensitivity",
        "params_precision_negative_definite",
        lambda: sensitivity(params=gaussian(np.zeros(2), -np.eye(2))),
        NotPD,
        r"sensitivity: the precision is not positive definite",
    ),
    Case(
        "sensitivity",
        "keep_shifts_not_bool",
        lambda: sensitivity(keep_shifts="yes"),
        TypeError,
        r"keep_shifts must be a bool or None, got 'yes'",
    ),
    Case(
        "sensitivity",
        "plate_unknown",
        lambda: sensitivity(plate="rows"),
        ModelError,
        r"no observed site is inside plate 'rows'",
    ),
    Case(
        "sensitivity",
        "X_nan",
        lambda: sensitivity(with_value(T().X, (0, 1), NAN), T().y),
        ModelError,
        r"positional argument 0 contains nan at index \(0, 1\)",
    ),
    Case(
        "sensitivity",
        "y_list",
        lambda: sensitivity(T().X, list(T().y)),
        ModelError,
        r"observed site 'y' got a list of 40 values \(positional argument 1\)",
    ),
    Case(
        "sensitivity",
        "plate_int",
        lambda: sensitivity(plate=1),
        TypeError,
        r"plate must be a plate's name \(a str\) or None, got 1",
    ),
    # ---- lfo
    Case(
        "lfo",
        "min_train_all",
        lambda: lfo(min_train=40),
        ValueError,
        r"min_train must be in 1..T-1 = 1..39 for the 40 time points of plate 'data'",
    ),
    Case(
        "lfo",
        "horizon_past_the_end",
        lambda: lfo(horizon=11),
        ValueError,
        r"min_train \+ horizon = 30 \+ 11 exceeds the 40 time points",
    ),
    Case(
        "lfo",
        "horizon_string",
        lambda: lfo(horizon="1"),
        TypeError,
        r"horizon must be an integer, got '1'",
    ),
    Case(
        "lfo",
        "refit_bool",
        lambda: lfo(refit=True),
        ValueError,
        r"refit must be one of \('never', 'unreliable'\), got True",
    ),
    Case(
        "lfo",
        "params_of_diag_guide",
        lambda: lfo(params=T().diag_params),
        ValueError,
        r"lfo: .*diag precision \(2,\) but the guide is AutoGaussian\(covariance='dense'\)",
    ),
    Case(
        "lfo",
        "optimizer_of_other_covariance",
        lambda: lfo(optimizer=optim.iblr(0.1)),
        ValueError,
        r"lfo: the optimizer keeps a diag precision but the guide is "
        r"AutoGaussian\(covariance='dense'\)",
    ),
    # ---- exact_lfo
    Case(
        "exact_lfo",
        "method_typo",
        lambda: exact_lfo(method="laplce"),
        ValueError,
        r"method must be one of \('laplace', 'nuts'\), got 'laplce'",
    ),
    Case(
        "exact_lfo",
        "min_train_all",
        lambda: exact_lfo(min_train=40),
        ValueError,
        r"min_train must be in 1..T-1 = 1..39 for the 40 time points of plate 'data'",
    ),
    Case(
        "exact_lfo",
        "num_steps_zero",
        lambda: exact_lfo(num_steps=0),
        ValueError,
        r"num_steps must be at least 1, got 0",
    ),
    Case(
        "exact_lfo",
        "guide_autonormal",
        lambda: exact_lfo(guide=AutoNormal(logistic_model)),
        TypeError,
        r"exact_lfo refits an AutoGaussian's family; got guide AutoNormal",
    ),
    # ---- psis_lfo
    Case(
        "psis_lfo",
        "method_typo",
        lambda: psis_lfo(method="exct"),
        ValueError,
        r"method must be one of \('approx', 'exact'\), got 'exct'",
    ),
    Case(
        "psis_lfo",
        "k_threshold_zero",
        lambda: psis_lfo(k_threshold=0),
        ValueError,
        r"k_threshold must be in \(0, inf\), got 0",
    ),
    Case(
        "psis_lfo",
        "num_samples_one",
        lambda: psis_lfo(num_samples=1),
        ValueError,
        r"num_samples must be at least 2, got 1",
    ),
    Case(
        "psis_lfo",
        "horizon_float",
        lambda: psis_lfo(horizon=1.0),
        TypeError,
        r"horizon must be an integer, got 1.0",
    ),
    # ---- exact_loo
    Case(
        "exact_loo",
        "method_misspelt",
        lambda: exact_loo(method="laplce"),
        ValueError,
        r"method must be one of \('laplace', 'nuts'\), got 'laplce'",
    ),
    Case(
        "exact_loo",
        "num_steps_zero",
        lambda: exact_loo(num_steps=0),
        ValueError,
        r"num_steps must be a positive integer, got 0",
    ),
    Case(
        "exact_loo",
        "num_steps_float",
        lambda: exact_loo(num_steps=2.5),
        ValueError,
        r"num_steps must be a positive integer, got 2.5",
    ),
    Case(
        "exact_loo",
        "batch_size_zero",
        lambda: exact_loo(batch_size=0),
        ValueError,
        r"batch_size must be a positive integer, got 0",
    ),
    Case(
        "exact_loo",
        "batch_size_bool",
        lambda: exact_loo(batch_size=True),
        ValueError,
        r"batch_size must be a positive integer, got True",
    ),
    Case(
        "exact_loo",
        "index_n",
        lambda: exact_loo(indices=[NUM_EXAMPLES]),
        ValueError,
        r"index 40 is out of range for 40 examples",
    ),
    Case(
        "exact_loo",
        "index_negative",
        lambda: exact_loo(indices=[-1]),
        ValueError,
        r"index -1 is out of range for 40 examples",
    ),
    Case(
        "exact_loo",
        "indices_float",
        lambda: exact_loo(indices=[1.0]),
        ValueError,
        r"indices must be a 1-d integer array, got float64",
    ),
    Case(
        "exact_loo",
        "indices_2d",
        lambda: exact_loo(indices=[[1]]),
        ValueError,
        r"indices must be a 1-d integer array",
    ),
    Case(
        "exact_loo",
        "indices_boolean_mask",
        lambda: exact_loo(indices=np.ones(NUM_EXAMPLES, bool)),
        ValueError,
        r"indices must be a 1-d integer array, got bool",
    ),
    Case(
        "sensitivity",
        "guide_none",
        lambda: mpe.sensitivity(logistic_model, None, T().params, T().X, T().y),
        TypeError,
        r"sensitivity needs the AutoGaussian the params were fitted with, got guide NoneType",
    ),
    Case(
        "exact_loo",
        "indices_repeated",
        lambda: exact_loo(indices=[0, 0]),
        ValueError,
        r"index 0 is repeated in indices",
    ),
    Case(
        "exact_loo",
        "indices_empty",
        lambda: exact_loo(indices=[]),
        ValueError,
        r"indices is empty: name at least one example",
    ),
    Case(
        "exact_loo",
        "guide_none",
        lambda: exact_loo(guide="guide"),
        TypeError,
        r"exact_loo refits an AutoGaussian's family; got guide str",
    ),
    Case(
        "exact_loo",
        "optimizer_string",
        lambda: exact_loo(optimizer="newton"),
        TypeError,
        r"optimizer must be a numpyro_mpe.optim optimizer .* got str",
    ),
    Case(
        "exact_loo",
        "diag_optimizer_for_dense_guide",
        # Diagonal iBLR refits once passed for refits of the dense guide's family.
        lambda: exact_loo(optimizer=optim.iblr(0.1)),
        ValueError,
        r"exact_loo: the optimizer keeps a diag precision but the guide is "
        r"AutoGaussian\(covariance='dense'\)",
    ),
    Case(
        "exact_loo",
        "num_samples_zero",
        lambda: exact_loo(num_samples=0),
        ValueError,
        r"num_samples must be a positive integer, got 0",
    ),
    Case(
        "exact_loo",
        "num_warmup_float",
        lambda: exact_loo(num_warmup=2.5),
        ValueError,
        r"num_warmup must be a positive integer, got 2.5",
    ),
    Case(
        "exact_loo",
        "seed_string",
        lambda: exact_loo(seed="a"),
        TypeError,
        r"seed must be an integer, got 'a'",
    ),
    Case(
        "exact_loo",
        "seed_negative",
        lambda: exact_loo(seed=-1),
        ValueError,
        r"seed must be at least 0, got -1",
    ),
    Case(
        "exact_loo",
        "seed_above_int64",
        lambda: exact_loo(seed=2**70),
        ValueError,
        r"seed must be an integer <= 9223372036854775807, got 1.18e\+21",
    ),
    Case(
        "exact_loo",
        "num_steps_huge",
        lambda: exact_loo(num_steps=10**30, indices=[0]),
        ValueError,
        r"num_steps must be an integer <= 2147483647, got 1e\+30",
    ),
    Case(
        "exact_loo",
        "num_samples_huge_nuts",
        lambda: exact_loo(method="nuts", num_samples=2**40, indices=[0]),
        ValueError,
        r"num_samples must be an integer <= 2147483647, got 1099511627776",
    ),
    Case(
        "exact_loo",
        "groups_with_nuts",
        lambda: exact_loo(method="nuts", groups=np.arange(NUM_EXAMPLES) % 2),
        ValueError,
        r"groups works with method='laplace' and without indices",
    ),
    Case(
        "exact_loo",
        "groups_with_indices",
        lambda: exact_loo(groups=np.arange(NUM_EXAMPLES) % 2, indices=[0]),
        ValueError,
        r"groups works with method='laplace' and without indices",
    ),
    Case(
        "exact_loo",
        "groups_short",
        lambda: exact_loo(groups=np.arange(NUM_EXAMPLES - 1) % 2),
        ValueError,
        r"groups must hold one label per example, shape \(40,\); got shape \(39,\)",
    ),
    Case(
        "exact_loo",
        "params_empty",
        lambda: exact_loo(params={}),
        ValueError,
        r"exact_loo: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "exact_loo",
        "params_diag_in_dense_guide",
        lambda: exact_loo(params=T().diag_params),
        ValueError,
        r"exact_loo: params hold a diag precision \(2,\)",
    ),
    Case(
        "exact_loo",
        "params_precision_negative_definite",
        lambda: exact_loo(params=gaussian(np.zeros(2), -np.eye(2))),
        NotPD,
        r"exact_loo: the precision is not positive definite",
    ),
    Case(
        "exact_loo",
        "y_nan",
        lambda: exact_loo(T().X, with_value(T().y, (9,), NAN)),
        ModelError,
        r"positional argument 1 contains nan at index \(9,\)",
    ),
    # ---- mcmc_loo
    Case(
        "mcmc_loo",
        "num_warmup_negative",
        lambda: mcmc_loo(num_warmup=-1),
        ValueError,
        r"num_warmup must be an integer >= 0, got -1",
    ),
    Case(
        "mcmc_loo",
        "num_warmup_string",
        lambda: mcmc_loo(num_warmup="10"),
        ValueError,
        r"num_warmup must be an integer >= 0, got '10'",
    ),
    Case(
        "mcmc_loo",
        "num_samples_one",
        lambda: mcmc_loo(num_samples=1),
        ValueError,
        r"num_samples must be an integer >= 2 .*got 1",
    ),
    Case(
        "mcmc_loo",
        "num_samples_float",
        lambda: mcmc_loo(num_samples=2.5),
        ValueError,
        r"num_samples must be an integer >= 2 .*got 2.5",
    ),
    Case(
        "mcmc_loo",
        "num_chains_zero",
        lambda: mcmc_loo(num_chains=0),
        ValueError,
        r"num_chains must be an integer >= 1, got 0",
    ),
    Case(
        "mcmc_loo",
        "num_chains_float",
        lambda: mcmc_loo(num_chains=2.0),
        ValueError,
        r"num_chains must be an integer >= 1, got 2.0",
    ),
    Case(
        "mcmc_loo",
        "chain_method_misspelt",
        lambda: mcmc_loo(chain_method="parralel"),
        ValueError,
        r"chain_method must be one of \('sequential', 'parallel', 'vectorized'\), got 'parralel'",
    ),
    Case(
        "mcmc_loo",
        "chunk_size_zero",
        lambda: mcmc_loo(chunk_size=0),
        ValueError,
        r"chunk_size must be None or an integer >= 1, got 0",
    ),
    Case(
        "mcmc_loo",
        "num_samples_huge",
        lambda: mcmc_loo(num_samples=10**30),
        ValueError,
        r"num_samples must be an integer <= 2147483647, got 1e\+30",
    ),
    Case(
        "mcmc_loo",
        "num_chains_huge",
        lambda: mcmc_loo(num_chains=2**40),
        ValueError,
        r"num_chains must be an integer <= 2147483647, got 1099511627776",
    ),
    Case(
        "mcmc_loo",
        "progress_bar_string",
        lambda: mcmc_loo(progress_bar="no"),
        TypeError,
        r"progress_bar must be True or False, got 'no'",
    ),
    Case(
        "mcmc_loo",
        "y_nan",
        lambda: mcmc_loo(T().X, with_value(T().y, (1,), NAN)),
        ModelError,
        r"positional argument 1 contains nan at index \(1,\)",
    ),
    Case(
        "mcmc_loo",
        "plate_unknown",
        lambda: mcmc_loo(plate="rows"),
        ModelError,
        r"no observed site is inside plate 'rows'",
    ),
    Case(
        "mcmc_loo",
        "rng_key_int",
        lambda: mcmc_loo(rng_key=0),
        TypeError,
        r"mcmc_loo: rng_key must be a jax PRNG key.*got int 0",
    ),
    Case(
        "mcmc_loo",
        "rng_key_string",
        lambda: mcmc_loo(rng_key="0"),
        TypeError,
        r"mcmc_loo: rng_key must be a jax PRNG key.*got str '0'",
    ),
    # ---- psis_loo
    Case(
        "psis_loo",
        "one_dimension",
        lambda: mpe.psis_loo(LOG_LIK[0, :, 0]),
        ValueError,
        r"log_lik must have shape \(chain, draw, obs\) or \(draw, obs\); got ndim=1",
    ),
    Case(
        "psis_loo",
        "four_dimensions",
        lambda: mpe.psis_loo(LOG_LIK[None]),
        ValueError,
        r"got ndim=4 with shape \(1, 2, 50, 5\)",
    ),
    Case(
        "psis_loo",
        "none",
        lambda: mpe.psis_loo(None),
        ValueError,
        r"log_lik must have shape .*got ndim=0",
    ),
    Case(
        "psis_loo",
        "one_draw",
        lambda: mpe.psis_loo(LOG_LIK[:1, :1]),
        ValueError,
        r"log_lik needs at least 2 draws and 1 observation; got shape \(1, 1, 5\)",
    ),
    Case(
        "psis_loo",
        "no_observation",
        lambda: mpe.psis_loo(LOG_LIK[..., :0]),
        ValueError,
        r"log_lik needs at least 2 draws and 1 observation; got shape \(2, 50, 0\)",
    ),
    Case(
        "psis_loo",
        "nan",
        lambda: mpe.psis_loo(with_value(LOG_LIK, (1, 7, 2), NAN)),
        ValueError,
        r"log_lik has 1 non-finite value\(s\); the first is nan at index \(1, 7, 2\)",
    ),
    Case(
        "psis_loo",
        "minus_inf",
        lambda: mpe.psis_loo(with_value(LOG_LIK[0], (3, 4), -INF)),
        ValueError,
        r"the first is -inf at index \(3, 4\) \(draw 3, obs_dim 4\)",
    ),
    Case(
        "psis_loo",
        "float16_inf",
        lambda: mpe.psis_loo(with_value(LOG_LIK, (1, 2, 3), INF).astype(np.float16)),
        ValueError,
        r"log_lik has 1 non-finite value\(s\); the first is inf at index \(1, 2, 3\)",
    ),
    Case(
        "psis_loo",
        "complex",
        lambda: mpe.psis_loo(LOG_LIK + 0j),
        TypeError,
        r"log_lik must be real-valued; got dtype complex128",
    ),
    Case(
        "psis_loo",
        "strings",
        lambda: mpe.psis_loo(LOG_LIK.astype(str)),
        TypeError,
        r"log_lik must be real-valued; got dtype <U",
    ),
    Case(
        "psis_loo",
        "bool",
        lambda: mpe.psis_loo(LOG_LIK > 0),
        TypeError,
        r"log_lik must be real-valued; got dtype bool",
    ),
    Case(
        "psis_loo",
        "r_eff_zero",
        lambda: mpe.psis_loo(LOG_LIK, r_eff=0.0),
        ValueError,
        r"r_eff must be positive and finite; r_eff\[0\] = 0.0",
    ),
    Case(
        "psis_loo",
        "r_eff_inf",
        lambda: mpe.psis_loo(LOG_LIK, r_eff=with_value(np.ones(5), (2,), INF)),
        ValueError,
        r"r_eff must be positive and finite; r_eff\[2\] = inf",
    ),
    Case(
        "psis_loo",
        "r_eff_wrong_length",
        lambda: mpe.psis_loo(LOG_LIK, r_eff=np.ones(4)),
        ValueError,
        r"r_eff must be a scalar or have one value per observation \(5\); got shape \(4,\)",
    ),
    Case(
        "psis_loo",
        "chunk_size_negative",
        lambda: mpe.psis_loo(LOG_LIK[0], chunk_size=-1),
        ValueError,
        r"chunk_size must be at least 1, got -1",
    ),
    Case(
        "psis_loo",
        "chunk_size_zero",
        lambda: mpe.psis_loo(LOG_LIK, chunk_size=0),
        ValueError,
        r"chunk_size must be at least 1, got 0",
    ),
    Case(
        "psis_loo",
        "chunk_size_float",
        lambda: mpe.psis_loo(LOG_LIK, chunk_size=2.5),
        TypeError,
        r"chunk_size must be an integer, got 2.5",
    ),
    Case(
        "psis_loo",
        "chunk_size_bool",
        lambda: mpe.psis_loo(LOG_LIK, chunk_size=True),
        TypeError,
        r"chunk_size must be an integer, got True",
    ),
    Case(
        "psis_loo",
        "return_log_weights_string",
        lambda: mpe.psis_loo(LOG_LIK, return_log_weights="no"),
        TypeError,
        r"return_log_weights must be True or False, got 'no'",
    ),
    Case(
        "psis_loo",
        "r_eff_string",
        lambda: mpe.psis_loo(LOG_LIK, r_eff="1"),
        TypeError,
        r"r_eff must be a real number or real numbers, one per observation; got dtype <U1",
    ),
    Case(
        "psis_loo",
        "r_eff_bool",
        lambda: mpe.psis_loo(LOG_LIK, r_eff=True),
        TypeError,
        r"r_eff must be a real number .*got dtype bool \(True\)",
    ),
    Case(
        "psis_loo",
        "dataset",
        lambda: mpe.psis_loo(xr.Dataset({"y": (("chain", "draw", "obs"), LOG_LIK)})),
        TypeError,
        r"log_lik must be an array or a DataArray .*got a Dataset: pick one variable",
    ),
    Case(
        "psis_loo",
        "dict",
        lambda: mpe.psis_loo({"y": LOG_LIK}),
        TypeError,
        r"log_lik must be an array or a DataArray .*got a dict",
    ),
    Case(
        "psis_loo",
        "ragged_lists",
        lambda: mpe.psis_loo([[0.0, 1.0], [0.0]]),
        ValueError,
        r"log_lik must be a rectangular array of shape \(chain, draw, obs\) or \(draw, obs\)",
    ),
    Case(
        "psis_loo",
        "dataarray_without_draw",
        lambda: mpe.psis_loo(xr.DataArray(LOG_LIK, dims=("chain", "sample", "obs"))),
        ValueError,
        r"needs the sample dimension 'draw'.*got dims \('chain', 'sample', 'obs'\), with no",
    ),
    Case(
        "psis_loo",
        "dataarray_two_observation_dims",
        lambda: mpe.psis_loo(xr.DataArray(LOG_LIK[None], dims=("x", "chain", "draw", "obs"))),
        ValueError,
        r"observation dimensions 2: \('x', 'obs'\)",
    ),
    # ---- relative_eff
    Case(
        "relative_eff",
        "chain_id_with_3d_input",
        lambda: mpe.relative_eff(LOG_LIK, chain_id=np.repeat([0, 1], 50)),
        ValueError,
        r"chain_id is only for a \(draw, obs\) input",
    ),
    Case(
        "relative_eff",
        "chain_id_wrong_length",
        lambda: mpe.relative_eff(LOG_LIK[0], chain_id=np.repeat([0, 1], 20)),
        ValueError,
        r"chain_id must have one entry per draw \(50\); got shape \(40,\)",
    ),
    Case(
        "relative_eff",
        "chains_of_unequal_length",
        lambda: mpe.relative_eff(LOG_LIK[0], chain_id=np.r_[np.zeros(20), np.ones(30)]),
        ValueError,
        r"Every chain must have the same number of draws; got \[20 30\]",
    ),
    Case(
        "relative_eff",
        "one_dimension",
        lambda: mpe.relative_eff(LOG_LIK[0, :, 0]),
        ValueError,
        r"log_lik must have shape \(chain, draw, obs\) or \(draw, obs\); got ndim=1",
    ),
    Case(
        "relative_eff",
        "nan",
        lambda: mpe.relative_eff(with_value(LOG_LIK, (0, 4, 1), NAN)),
        ValueError,
        r"the first is nan at index \(0, 4, 1\) \(chain 0, draw 4, obs_dim 1\)",
    ),
    Case(
        "relative_eff",
        "chunk_size_negative",
        lambda: mpe.relative_eff(LOG_LIK, chunk_size=-1),
        ValueError,
        r"chunk_size must be at least 1, got -1",
    ),
    Case(
        "relative_eff",
        "chunk_size_float",
        lambda: mpe.relative_eff(LOG_LIK, chunk_size=2.0),
        TypeError,
        r"chunk_size must be an integer, got 2.0",
    ),
    Case(
        "relative_eff",
        "log_string",
        lambda: mpe.relative_eff(LOG_LIK, log="no"),
        TypeError,
        r"log must be True or False, got 'no'",
    ),
    Case(
        "relative_eff",
        "log_false_with_log_likelihoods",
        lambda: mpe.relative_eff(LOG_LIK, log=False),
        ValueError,
        r"with log=False, log_lik must hold likelihoods \(>= 0\); .* negative value\(s\), "
        r"the first -?\d.* \(chain 0, draw 0, obs_dim 0\)\. Pass log=True",
    ),
    # ---- approximate_posterior_loo
    Case(
        "approximate_posterior_loo",
        "log_p_too_few_draws",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P[:, :40], LOG_Q),
        ValueError,
        r"log_p must have one value per draw.*100 draws in all; got shape \(2, 40\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_q_3d",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P, LOG_Q[..., None]),
        ValueError,
        r"log_q must have one value per draw.*got shape \(2, 50, 1\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_p_none",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, None, LOG_Q),
        ValueError,
        r"log_p must have one value per draw.*got shape \(\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_p_nan",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, with_value(LOG_P, (1, 3), NAN), LOG_Q),
        ValueError,
        r"log_p has 1 non-finite value\(s\); the first is nan at index \(1, 3\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_q_inf",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P, with_value(LOG_Q, (0, 2), INF)),
        ValueError,
        r"log_q has 1 non-finite value\(s\); the first is inf at index \(0, 2\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_lik_nan",
        lambda: mpe.approximate_posterior_loo(with_value(LOG_LIK, (0, 0, 0), NAN), LOG_P, LOG_Q),
        ValueError,
        r"log_lik has 1 non-finite value\(s\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_lik_one_dimension",
        lambda: mpe.approximate_posterior_loo(LOG_LIK[0, :, 0], LOG_P, LOG_Q),
        ValueError,
        r"log_lik must have shape \(chain, draw, obs\) or \(draw, obs\)",
    ),
    Case(
        "approximate_posterior_loo",
        "chunk_size_negative",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P, LOG_Q, chunk_size=-1),
        ValueError,
        r"chunk_size must be at least 1, got -1",
    ),
    Case(
        "approximate_posterior_loo",
        "log_p_transposed",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P.T, LOG_Q),
        ValueError,
        r"log_p must have one value per draw of log_lik, shape \(chain, draw\) = \(2, 50\) or "
        r"\(100,\) .*got shape \(50, 2\)\. That is \(draw, chain\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_q_transposed",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P, LOG_Q.T),
        ValueError,
        r"log_q must have one value per draw of log_lik, .*got shape \(50, 2\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_q_flat_log_p_not",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P, LOG_Q.ravel()),
        ValueError,
        r"log_q must have the shape of log_p, \(2, 50\); got shape \(100,\)",
    ),
    Case(
        "approximate_posterior_loo",
        "log_p_complex",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P + 1j, LOG_Q),
        TypeError,
        r"log_p must be real-valued; got dtype complex128",
    ),
    Case(
        "approximate_posterior_loo",
        "return_log_weights_string",
        lambda: mpe.approximate_posterior_loo(LOG_LIK, LOG_P, LOG_Q, return_log_weights="yes"),
        TypeError,
        r"return_log_weights must be True or False, got 'yes'",
    ),
    # ---- compare_loo
    Case(
        "compare_loo",
        "no_results",
        lambda: mpe.compare_loo({}),
        ValueError,
        r"results is empty",
    ),
    Case(
        "compare_loo",
        "reference_unknown",
        lambda: mpe.compare_loo({"a": refit_result(), "b": refit_result(0.1)}, reference="c"),
        ValueError,
        r"reference 'c' is not one of the results; choose from \['a', 'b'\]",
    ),
    Case(
        "compare_loo",
        "reference_position",
        lambda: mpe.compare_loo({"a": refit_result(), "b": refit_result(0.1)}, reference=0),
        ValueError,
        r"reference 0 is not one of the results",
    ),
    Case(
        "compare_loo",
        "seconds_of_unknown_result",
        lambda: mpe.compare_loo({"a": refit_result()}, seconds={"c": 1.0}),
        ValueError,
        r"seconds names \['c'\], which are not in results \['a'\]",
    ),
    Case(
        "compare_loo",
        "seconds_negative",
        lambda: mpe.compare_loo({"a": refit_result()}, seconds={"a": -1.0}),
        ValueError,
        r"seconds\['a'\] must be in \[0, inf\), got -1.0",
    ),
    Case(
        "compare_loo",
        "seconds_nan",
        lambda: mpe.compare_loo({"a": refit_result()}, seconds={"a": NAN}),
        ValueError,
        r"seconds\['a'\] must be in \[0, inf\), got nan",
    ),
    Case(
        "compare_loo",
        "seconds_string",
        lambda: mpe.compare_loo({"a": refit_result()}, seconds={"a": "2.5"}),
        TypeError,
        r"seconds\['a'\] must be a number, got '2.5'",
    ),
    Case(
        "compare_loo",
        "seconds_list",
        lambda: mpe.compare_loo({"a": refit_result(), "b": refit_result()}, seconds=[1.0, 2.0]),
        TypeError,
        r"seconds must be a dict \{name: wall time in seconds, ...\}.*got \[1.0, 2.0\]",
    ),
    Case(
        "compare_loo",
        "results_list",
        lambda: mpe.compare_loo([refit_result(), refit_result(0.1)]),
        TypeError,
        r"results must be a dict \{name: ELPDData result, ...\}.*got list",
    ),
    Case(
        "compare_loo",
        "results_one_result",
        lambda: mpe.compare_loo(refit_result()),
        TypeError,
        r"results must be a dict .*got ELPDDataRefit",
    ),
    Case(
        "compare_loo",
        "reference_list",
        lambda: mpe.compare_loo({"a": refit_result(), "b": refit_result()}, reference=["a"]),
        ValueError,
        r"reference \['a'\] is not one of the results",
    ),
    Case(
        "compare_loo",
        "pointwise_nan",
        lambda: mpe.compare_loo(
            {"a": refit_result(), "r": Pointwise(xr.DataArray([0.0, NAN, 0.0, 0.0], dims="d"))}
        ),
        ValueError,
        r"result 'r': elpd_i has 1 non-finite value\(s\); the first is nan at position 1",
    ),
    Case(
        "compare_loo",
        "result_none",
        lambda: mpe.compare_loo({"a": refit_result(), "b": None}),
        ValueError,
        r"result 'b' has no pointwise elpd_i",
    ),
    Case(
        "compare_loo",
        "result_plain_array",
        lambda: mpe.compare_loo({"a": refit_result(), "b": np.zeros(4)}),
        ValueError,
        r"result 'b' has no pointwise elpd_i",
    ),
    Case(
        "compare_loo",
        "mcmc_loo_result_not_its_loo",
        lambda: mpe.compare_loo(
            {"a": refit_result(), "m": mpe.MCMCLooResult(refit_result(), None, None, {})}
        ),
        TypeError,
        r"result 'm' is a MCMCLooResult, not an ELPDData result: pass its .loo",
    ),
    Case(
        "compare_loo",
        "groups_against_examples",
        lambda: mpe.compare_loo(
            {"a": refit_result(), "g": Pointwise(xr.DataArray(np.zeros(2), dims=("group",)))}
        ),
        ValueError,
        r"result 'g' is pointwise over groups \(leave-one-group-out\) but the reference 'a' "
        r"over examples",
    ),
    Case(
        "compare_loo",
        "no_shared_examples",
        lambda: mpe.compare_loo({"a": refit_result(), "c": refit_result(0, np.arange(10, 14))}),
        ValueError,
        r"result 'c' shares no examples with the reference 'a'",
    ),
    Case(
        "compare_loo",
        "pointwise_2d",
        lambda: mpe.compare_loo(
            {"a": refit_result(), "r": Pointwise(xr.DataArray(np.zeros((2, 2)), dims=("u", "v")))}
        ),
        ValueError,
        r"result 'r': elpd_i must be 1-D over the examples; got shape \(2, 2\)",
    ),
    Case(
        "compare_loo",
        "repeated_coordinates",
        lambda: mpe.compare_loo(
            {
                "a": refit_result(),
                "r": Pointwise(
                    xr.DataArray(np.zeros(4), dims=("data",), coords={"data": [0, 0, 1, 2]})
                ),
            }
        ),
        ValueError,
        r"result 'r': the coordinate of elpd_i has repeated values",
    ),
    # ---- plot_loo_comparison
    Case(
        "plot_loo_comparison",
        "only_the_reference",
        lambda: mpe.plot_loo_comparison({"a": refit_result()}),
        ValueError,
        r"nothing to compare: results holds only the reference 'a'",
    ),
    Case(
        "plot_loo_comparison",
        "no_results",
        lambda: mpe.plot_loo_comparison({}),
        ValueError,
        r"results is empty",
    ),
    Case(
        "plot_loo_comparison",
        "reference_unknown",
        lambda: mpe.plot_loo_comparison({"a": refit_result(), "b": refit_result()}, "z"),
        ValueError,
        r"reference 'z' is not one of the results",
    ),
    Case(
        "plot_loo_comparison",
        "axes_count",
        lambda: mpe.plot_loo_comparison(
            {"a": refit_result(), "b": refit_result(0.1)}, ax=Figure().subplots(1, 2)
        ),
        ValueError,
        r"ax must hold one Axes per result besides the reference \(1\); got 2",
    ),
    Case(
        "plot_loo_comparison",
        "ax_string",
        lambda: mpe.plot_loo_comparison({"a": refit_result(), "b": refit_result(0.1)}, ax="ax"),
        TypeError,
        r"ax must be a matplotlib Axes or a sequence of Axes.*got str 'ax'",
    ),
    Case(
        "plot_loo_comparison",
        "ax_list_of_none",
        lambda: mpe.plot_loo_comparison({"a": refit_result(), "b": refit_result(0.1)}, ax=[None]),
        TypeError,
        r"ax must be a matplotlib Axes .*got NoneType None \(entry 0\)",
    ),
    Case(
        "plot_loo_comparison",
        "path_in_missing_folder",
        lambda: mpe.plot_loo_comparison(
            {"a": refit_result(), "b": refit_result(0.1)}, path=T().folder / "missing" / "c.png"
        ),
        FileNotFoundError,
        r"path '.*c\.png': folder '.*missing' does not exist",
    ),
    Case(
        "plot_loo_comparison",
        "path_is_a_folder",
        lambda: mpe.plot_loo_comparison(
            {"a": refit_result(), "b": refit_result(0.1)}, path=T().folder
        ),
        ValueError,
        r"path '.*reports\d*' is a folder; give a file name",
    ),
    Case(
        "plot_loo_comparison",
        "path_unknown_format",
        lambda: mpe.plot_loo_comparison(
            {"a": refit_result(), "b": refit_result(0.1)}, path=T().folder / "c.csv"
        ),
        ValueError,
        r"path '.*c\.csv': matplotlib cannot save a '\.csv' file; use one of .*png",
    ),
    Case(
        "plot_loo_comparison",
        "results_list",
        lambda: mpe.plot_loo_comparison([refit_result(), refit_result(0.1)]),
        TypeError,
        r"results must be a dict \{name: ELPDData result, ...\}.*got list",
    ),
    Case(
        "plot_loo_comparison",
        "no_shared_examples",
        lambda: mpe.plot_loo_comparison(
            {"a": refit_result(), "c": refit_result(0, np.arange(10, 14))}
        ),
        ValueError,
        r"result 'c' shares no examples with the reference 'a'",
    ),
    Case(
        "plot_loo_comparison",
        "mcmc_loo_result_not_its_loo",
        lambda: mpe.plot_loo_comparison(
            {"a": refit_result(), "m": mpe.MCMCLooResult(refit_result(), None, None, {})}
        ),
        TypeError,
        r"result 'm' is a MCMCLooResult, not an ELPDData result: pass its .loo",
    ),
    # ---- select_prior
    Case(
        "select_prior",
        "name_not_an_argument",
        lambda: select_prior(name="tau"),
        ValueError,
        r"the model 'scaled_logistic' has no argument 'tau' \(its arguments: X, y, prior_scale\)",
    ),
    Case(
        "select_prior",
        "name_int",
        lambda: select_prior(name=3),
        ValueError,
        r"has no argument '3'",
    ),
    Case(
        "select_prior",
        "values_empty",
        lambda: select_prior([]),
        ValueError,
        r"values must be a non-empty 1-d sequence, got shape \(0,\)",
    ),
    Case(
        "select_prior",
        "values_scalar",
        lambda: select_prior(1.0),
        ValueError,
        r"values must be a non-empty 1-d sequence, got shape \(\)",
    ),
    Case(
        "select_prior",
        "values_2d",
        lambda: select_prior([[1.0]]),
        ValueError,
        r"values must be a non-empty 1-d sequence, got shape \(1, 1\)",
    ),
    Case(
        "select_prior",
        "values_nan",
        lambda: select_prior([1.0, NAN]),
        ValueError,
        r"values holds nan at index 1",
    ),
    Case(
        "select_prior",
        "values_inf",
        lambda: select_prior([INF]),
        ValueError,
        r"values holds inf at index 0",
    ),
    Case(
        "select_prior",
        "values_strings",
        lambda: select_prior(["a"]),
        TypeError,
        r"values must be a 1-d sequence of numbers, got list \['a'\]",
    ),
    Case(
        "select_prior",
        "values_bools",
        lambda: select_prior([True, False]),
        TypeError,
        r"values must be a 1-d sequence of numbers, got list \[True, False\]",
    ),
    Case(
        "select_prior",
        "values_none",
        lambda: select_prior(None),
        TypeError,
        r"values must be a 1-d sequence of numbers, got NoneType None",
    ),
    Case(
        "select_prior",
        "values_negative_scale_after_a_valid_one",
        lambda: select_prior([1.0, -1.0]),
        ModelError,
        r"the model fails at prior_scale = -1 \(values\[1\]\); each value must be valid for "
        r"the model, a scale positive: .*Normal distribution got invalid scale parameter",
    ),
    Case(
        "select_prior",
        "values_zero_scale",
        lambda: select_prior([0.0]),
        ModelError,
        r"the model fails at prior_scale = 0 \(values\[0\]\)",
    ),
    Case(
        "select_prior",
        "model_none",
        lambda: mpe.select_prior(None, "prior_scale", [1.0], T().X, T().y),
        TypeError,
        r"model must be a NumPyro model \(a function\), got NoneType",
    ),
    Case(
        "select_prior",
        "method_typo",
        lambda: select_prior(method="laplce"),
        ValueError,
        r"method must be one of \('cavity', 'paper', 'is'\), got 'laplce'",
    ),
    Case(
        "select_prior",
        "seed_string",
        lambda: select_prior(seed="a"),
        TypeError,
        r"seed must be an integer, got 'a'",
    ),
    Case(
        "select_prior",
        "seed_float",
        lambda: select_prior(seed=1.5),
        TypeError,
        r"seed must be an integer, got 1.5",
    ),
    Case(
        "select_prior",
        "seed_negative",
        lambda: select_prior(seed=-1),
        ValueError,
        r"seed must be at least 0, got -1",
    ),
    Case(
        "select_prior",
        "swept_argument_passed_too",
        lambda: select_prior(prior_scale=2.0),
        ValueError,
        r"'prior_scale' is swept by select_prior; do not pass it as well",
    ),
    Case(
        "select_prior",
        "covariance_full",
        lambda: select_prior(covariance="full"),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got 'full'",
    ),
    Case(
        "select_prior",
        "optimizer_string",
        lambda: select_prior(optimizer="newton"),
        TypeError,
        r"optimizer must be a numpyro_mpe.optim optimizer .*got str",
    ),
    Case(
        "select_prior",
        "plate_unknown",
        lambda: select_prior(plate="rows"),
        ModelError,
        r"no observed site is inside plate 'rows'",
    ),
    Case(
        "select_prior",
        "values_underflow_float32",
        lambda: in_float32(lambda: select_prior((1e-300, 1.0))),
        ModelError,
        r"argument 'prior_scale' holds 1e-300 at index \(0,\), below the smallest float32",
    ),
    Case(
        "select_prior",
        "values_overflow_float32",
        lambda: in_float32(lambda: select_prior((1.0, 1e300))),
        ModelError,
        r"argument 'prior_scale' holds 1e\+300 at index \(1,\), beyond the range of float32",
    ),
    # ---- plot_prior_selection
    Case(
        "plot_prior_selection",
        "reference_of_another_length",
        lambda: mpe.plot_prior_selection(
            prior_selection(), {"refits": [1.0, 2.0, 3.0]}, ax=Figure().subplots()
        ),
        ValueError,
        r"reference 'refits' has shape \(3,\); expected \(2,\)",
    ),
    Case(
        "plot_prior_selection",
        "reference_2d",
        lambda: mpe.plot_prior_selection(
            prior_selection(), {"test": [[1.0, 2.0]]}, ax=Figure().subplots()
        ),
        ValueError,
        r"reference 'test' has shape \(1, 2\); expected \(2,\)",
    ),
    Case(
        "plot_prior_selection",
        "selection_none",
        lambda: mpe.plot_prior_selection(None),
        TypeError,
        r"selection must be the PriorSelection that select_prior returns, got NoneType",
    ),
    Case(
        "plot_prior_selection",
        "selection_dict",
        lambda: mpe.plot_prior_selection({"values": [0.5, 1.0]}),
        TypeError,
        r"selection must be the PriorSelection that select_prior returns, got dict",
    ),
    Case(
        "plot_prior_selection",
        "references_list",
        lambda: mpe.plot_prior_selection(prior_selection(), [1.0, 2.0]),
        TypeError,
        r"references must be a dict of label to curve .*got list",
    ),
    Case(
        "plot_prior_selection",
        "reference_strings",
        lambda: mpe.plot_prior_selection(prior_selection(), {"test": ["a", "b"]}),
        TypeError,
        r"reference 'test' must be numbers, one per value, got \['a', 'b'\]",
    ),
    Case(
        "plot_prior_selection",
        "reference_nan",
        lambda: mpe.plot_prior_selection(
            prior_selection(), {"refits": [NAN, -4.0]}, ax=Figure().subplots()
        ),
        ValueError,
        r"reference 'refits' holds nan at index 0 \(prior_scale = 0.5\)",
    ),
    Case(
        "plot_prior_selection",
        "ax_string",
        lambda: mpe.plot_prior_selection(prior_selection(), ax="left"),
        TypeError,
        r"ax must be a matplotlib Axes, got str",
    ),
    Case(
        "plot_prior_selection",
        "log_scale_with_a_zero_value",
        lambda: mpe.plot_prior_selection(
            prior_selection()._replace(values=np.array([0.0, 1.0])), ax=Figure().subplots()
        ),
        ValueError,
        r"log_scale needs positive values; prior_scale holds 0 at index 0: pass "
        r"log_scale=False",
    ),
    # ---- report
    Case(
        "report",
        "top_zero",
        lambda: report(top=0),
        ValueError,
        r"top must be a positive integer, got 0",
    ),
    Case(
        "report",
        "top_float",
        lambda: report(top=2.5),
        ValueError,
        r"top must be a positive integer, got 2.5",
    ),
    Case(
        "report",
        "top_bool",
        lambda: report(top=True),
        ValueError,
        r"top must be a positive integer, got True",
    ),
    Case(
        "report",
        "path_csv",
        lambda: report(path="report.csv"),
        ValueError,
        r"path '.*report.csv' must end in .html or .htm; refusing to write a report to a .csv",
    ),
    Case(
        "report",
        "path_folder",
        lambda: report(path=T().folder),
        ValueError,
        r"path '.*reports\d*' must end in .html or .htm",
    ),
    Case(
        "report",
        "path_exists",
        lambda: report(path=T().existing_html),
        FileExistsError,
        r"path '.*existing.html' exists; pass overwrite=True",
    ),
    Case(
        "report",
        "overwrite_string",
        lambda: report(path=T().existing_html, overwrite="no"),
        TypeError,
        r"overwrite must be True or False, got 'no'",
    ),
    Case(
        "report",
        "path_none",
        lambda: mpe.report(logistic_model, T().guide, T().params, T().X, T().y, path=None),
        TypeError,
        r"path must be a file name \(a str or a pathlib.Path\), got NoneType None",
    ),
    Case(
        "report",
        "guide_autoconjugate",
        lambda: report(guide=mpe.AutoConjugate(logistic_model)),
        TypeError,
        r"report needs the model's fitted numpyro_mpe.AutoGaussian .*got guide AutoConjugate",
    ),
    Case(
        "report",
        "path_in_missing_folder",
        lambda: report(path=T().folder / "missing" / "report.html"),
        FileNotFoundError,
        r"path '.*report.html': folder '.*missing' does not exist",
    ),
    Case(
        "report",
        "data_column_short",
        lambda: report(data={"income": np.zeros(NUM_EXAMPLES - 1)}),
        ValueError,
        r"data column 'income' has shape \(39,\); the report needs one value per example",
    ),
    Case(
        "report",
        "data_list",
        lambda: report(data=[1, 2]),
        TypeError,
        r"data must be a mapping of column name to array, a numpy structured array or a "
        r"pandas DataFrame, got list",
    ),
    Case(
        "report",
        "models_of_another_size",
        lambda: report(models={"half": (half_logistic, T().guide, T().params)}),
        ValueError,
        r"model 'half' in models has 20 examples, this model 40",
    ),
    Case(
        "report",
        "models_list",
        lambda: report(models=[(logistic_model, T().guide, T().params)]),
        TypeError,
        r"models must be a mapping of name to \(model, guide, params\), got list",
    ),
    Case(
        "report",
        "models_value_a_model",
        lambda: report(models={"plain": logistic_model}),
        TypeError,
        r"model 'plain' in models must be a tuple \(model, guide, params\), got function",
    ),
    Case(
        "report",
        "models_value_a_pair",
        lambda: report(models={"plain": (logistic_model, T().guide)}),
        TypeError,
        r"model 'plain' in models must be a tuple \(model, guide, params\), got a tuple of "
        r"length 2",
    ),
    Case(
        "report",
        "models_model_a_string",
        lambda: report(models={"plain": ("logistic_model", T().guide, T().params)}),
        TypeError,
        r"model 'plain' in models: its model must be a NumPyro model \(a function\), got str",
    ),
    Case(
        "report",
        "models_guide_none",
        lambda: report(models={"plain": (logistic_model, None, T().params)}),
        TypeError,
        r"model 'plain' in models: its guide must be a numpyro_mpe.AutoGaussian or "
        r"numpyro_mpe.AutoConjugate, got NoneType",
    ),
    Case(
        "report",
        "models_params_empty",
        lambda: report(models={"plain": (logistic_model, T().guide, {})}),
        ValueError,
        r"model 'plain' in models: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "report",
        "models_params_of_the_diagonal_guide",
        lambda: report(models={"plain": (logistic_model, T().guide, T().diag_params)}),
        ValueError,
        r"model 'plain' in models: params hold a diag precision \(2,\) but the guide is "
        r"AutoGaussian\(covariance='dense'\)",
    ),
    Case(
        "report",
        "models_model_without_observations",
        lambda: report(models={"prior": (no_observation, T().guide, T().params)}),
        ModelError,
        r"model 'prior' in models: ",
    ),
    Case(
        "report",
        "models_two_named_alike",
        lambda: report(
            models={
                1: (logistic_model, T().guide, T().params),
                "1": (logistic_model, T().guide, T().params),
            }
        ),
        ValueError,
        r"models has two models named '1'",
    ),
    Case(
        "report",
        "params_empty",
        lambda: report(params={}),
        ValueError,
        r"report: params lack \['auto_loc', 'auto_precision'\]",
    ),
    Case(
        "report",
        "params_of_another_size",
        lambda: report(params=gaussian([0.0], [[1.0]])),
        ValueError,
        r"report: params hold 1 latents but the model has P = 2",
    ),
    Case(
        "report",
        "y_nan",
        lambda: report(T().X, with_value(T().y, (1,), NAN)),
        ModelError,
        r"positional argument 1 contains nan at index \(1,\)",
    ),
    Case(
        "report",
        "params_and_data_swapped",
        lambda: mpe.report(
            logistic_model, T().guide, T().X, T().params, T().y, path=T().folder / "swap.html"
        ),
        TypeError,
        r"params must be the guide's params \(a dict\), got ndarray",
    ),
    # ---- posterior_from_svi
    Case(
        "posterior_from_svi",
        "svi_none",
        lambda: mpe.posterior_from_svi(None, sgd_state(), T().X, T().y),
        TypeError,
        r"posterior_from_svi takes a numpyro.infer.SVI first, got NoneType",
    ),
    Case(
        "posterior_from_svi",
        "guide_autonormal",
        lambda: mpe.posterior_from_svi(
            svi(guide=AutoNormal(logistic_model)), sgd_state(), T().X, T().y
        ),
        TypeError,
        r"svi.guide must be an AutoDelta, got AutoNormal",
    ),
    Case(
        "posterior_from_svi",
        "numpyro_optimizer_state",
        lambda: mpe.posterior_from_svi(
            svi(optimizer=numpyro.optim.Adam(1e-2)),
            SVIState((jnp.asarray(3), jnp.zeros(3)), None, key()),
            T().X,
            T().y,
        ),
        TypeError,
        r"posterior_from_svi reads the state of an optax optimizer; svi.optim is Adam",
    ),
    Case(
        "posterior_from_svi",
        "state_none",
        lambda: mpe.posterior_from_svi(svi(), None, T().X, T().y),
        TypeError,
        r"svi_state must be an SVIState .*got NoneType",
    ),
    Case(
        "posterior_from_svi",
        "state_is_params",
        lambda: mpe.posterior_from_svi(svi(), {"beta_auto_loc": jnp.zeros(2)}, T().X, T().y),
        TypeError,
        r"svi_state must be an SVIState .*got dict",
    ),
    Case(
        "posterior_from_svi",
        "state_of_another_model",
        lambda: mpe.posterior_from_svi(svi(renamed_logistic), sgd_state(), T().X, T().y),
        ValueError,
        r"the AutoDelta params have no 'w_auto_loc' for latent site 'w'",
    ),
    Case(
        "posterior_from_svi",
        "data_with_another_latent_size",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), np.c_[T().X, T().X[:, 1]], T().y),
        ValueError,
        r"AutoDelta latent size \(2,\) differs from the model's \(3,\)",
    ),
    Case(
        "posterior_from_svi",
        "prior_precision_negative",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), T().X, T().y, prior_precision=-100.0),
        ValueError,
        r"prior_precision must be in \[0, inf\), got -100.0",
    ),
    Case(
        "posterior_from_svi",
        "sgd_precision_negative",
        lambda: mpe.posterior_from_svi(
            svi(), sgd_state(), T().X, T().y, sgd_precision=-1e6, prior_precision=1.0
        ),
        ValueError,
        r"sgd_precision must be in \(0, inf\), got -1000000.0",
    ),
    Case(
        "posterior_from_svi",
        "prior_precision_inf",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), T().X, T().y, prior_precision=INF),
        ValueError,
        r"prior_precision must be in \[0, inf\), got inf",
    ),
    Case(
        "posterior_from_svi",
        "prior_precision_entry_nan",
        lambda: mpe.posterior_from_svi(
            svi(), sgd_state(), T().X, T().y, prior_precision=np.array([1.0, NAN])
        ),
        ValueError,
        r"prior_precision must be finite and >= 0, got nan at index \(1,\)",
    ),
    Case(
        "posterior_from_svi",
        "prior_precision_of_another_length",
        lambda: mpe.posterior_from_svi(
            svi(), sgd_state(), T().X, T().y, prior_precision=np.ones(3)
        ),
        ValueError,
        r"prior_precision must be a scalar or of shape \(2,\) \(the flat latent vector\), "
        r"got shape \(3,\)",
    ),
    Case(
        "posterior_from_svi",
        "prior_precision_by_site",
        lambda: mpe.posterior_from_svi(
            svi(), sgd_state(), T().X, T().y, prior_precision={"beta": np.ones(2)}
        ),
        TypeError,
        r"prior_precision must be a number or a \(P,\) array of numbers .*got dict",
    ),
    Case(
        "posterior_from_svi",
        "sgd_precision_inf",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), T().X, T().y, sgd_precision=INF),
        ValueError,
        r"sgd_precision must be in \(0, inf\), got inf",
    ),
    Case(
        "posterior_from_svi",
        "sgd_precision_string",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), T().X, T().y, sgd_precision="5"),
        TypeError,
        r"sgd_precision must be a number, got '5'",
    ),
    Case(
        "posterior_from_svi",
        "sgd_precision_for_adam",
        lambda: mpe.posterior_from_svi(
            svi(), optax_state(optax.adam(1e-2)), T().X, T().y, sgd_precision=40.0
        ),
        ValueError,
        r"sgd_precision=40.0 is for an SGD state, but this optax state is adam's",
    ),
    Case(
        "posterior_from_svi",
        "decay_one",
        lambda: mpe.posterior_from_svi(
            svi(), optax_state(optax.adam(1e-2)), T().X, T().y, decay=1.0
        ),
        ValueError,
        r"decay must be in \[0, 1\), got 1.0",
    ),
    Case(
        "posterior_from_svi",
        "decay_negative",
        lambda: mpe.posterior_from_svi(
            svi(), optax_state(optax.rmsprop(1e-2)), T().X, T().y, decay=-1
        ),
        ValueError,
        r"decay must be in \[0, 1\), got -1",
    ),
    Case(
        "posterior_from_svi",
        "decay_nan",
        lambda: mpe.posterior_from_svi(
            svi(), optax_state(optax.adam(1e-2)), T().X, T().y, decay=NAN
        ),
        ValueError,
        r"decay must be in \[0, 1\), got nan",
    ),
    Case(
        "posterior_from_svi",
        "decay_for_sgd",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), T().X, T().y, decay=0.9),
        ValueError,
        r"decay=0.9 is the decay of Adam's or RMSprop's squared-gradient average, but this "
        r"optax state has none \(SGD\)",
    ),
    Case(
        "posterior_from_svi",
        "adam_state_without_steps",
        lambda: mpe.posterior_from_svi(svi(), optax_state(optax.adam(1e-2)), T().X, T().y),
        ValueError,
        r"svi_state has taken 0 optimizer steps \(the state of svi.init\)",
    ),
    Case(
        "posterior_from_svi",
        "sgd_state_without_steps",
        lambda: mpe.posterior_from_svi(svi(), optax_state(optax.sgd(1e-2), steps=0), T().X, T().y),
        ValueError,
        r"svi_state has taken 0 optimizer steps",
    ),
    Case(
        "posterior_from_svi",
        "diverged_params",
        lambda: mpe.posterior_from_svi(
            svi(), optax_state(optax.sgd(1e-2), loc=(0.3, NAN)), T().X, T().y
        ),
        ValueError,
        r"the AutoDelta params hold nan at flat latent index 1: the SVI run diverged",
    ),
    Case(
        "posterior_from_svi",
        "y_nan",
        lambda: mpe.posterior_from_svi(svi(), sgd_state(), T().X, with_value(T().y, (0,), NAN)),
        ModelError,
        r"positional argument 1 contains nan at index \(0,\)",
    ),
    # ---- AutoConjugate
    Case(
        "AutoConjugate",
        "model_not_conjugate",
        lambda: mpe.AutoConjugate(logistic_model).posterior_params(T().X, T().y),
        ModelError,
        r"AutoConjugate does not support prior Normal on 'beta' with observation BernoulliLogits",
    ),
    Case(
        "AutoConjugate",
        "hits_above_at_bats",
        lambda: T().beta_guide.posterior_params(T().at_bats, T().hits + 40),
        ModelError,
        r"observed site 'hits' holds 50 at example 0, outside the support of BinomialProbs",
    ),
    Case(
        "AutoConjugate",
        "hits_column",
        lambda: T().beta_guide.posterior_params(T().at_bats, T().hits[:, None]),
        ModelError,
        r"observed site 'hits' has shape \(10, 1\) but its distribution has shape \(10,\)",
    ),
    Case(
        "AutoConjugate",
        "model_none",
        lambda: mpe.AutoConjugate(None),
        TypeError,
        r"AutoConjugate: model must be a NumPyro model \(a callable\), got NoneType",
    ),
    Case(
        "AutoConjugate",
        "hits_fractional",
        lambda: T().beta_guide.posterior_params(T().at_bats, T().hits + 0.5),
        ModelError,
        r"observed site 'hits' holds 10.5 at example 0",
    ),
    Case(
        "AutoConjugate",
        "hits_nan",
        lambda: T().beta_guide.posterior_params(T().at_bats, with_value(T().hits, (2,), NAN)),
        ModelError,
        r"positional argument 1 contains nan at index \(2,\)",
    ),
    Case(
        "AutoConjugate",
        "plate_unknown",
        lambda: mpe.AutoConjugate(beta_binomial, plate="rows").posterior_params(
            T().at_bats, T().hits
        ),
        ModelError,
        r"no observed site is inside plate 'rows'; plates holding observed sites: \['players'\]",
    ),
    Case(
        "AutoConjugate",
        "natural_params_of_empty_params",
        lambda: T().beta_guide.natural_params({}),
        ValueError,
        r"params \[\] are not AutoConjugate params \(prefix 'auto'\)",
    ),
    Case(
        "AutoConjugate",
        "family_with_another_prefix",
        lambda: mpe.AutoConjugate(beta_binomial, prefix="post").family(T().beta_params),
        ValueError,
        r"params \['auto_concentration0', 'auto_concentration1'\] are not AutoConjugate "
        r"params \(prefix 'post'\)",
    ),
    Case(
        "AutoConjugate",
        "plate_int",
        lambda: mpe.AutoConjugate(beta_binomial, plate=3),
        TypeError,
        r"plate must be a plate's name \(a str\) or None, got 3",
    ),
    Case(
        "AutoConjugate.family",
        "params_none",
        lambda: T().beta_guide.family(None),
        ValueError,
        r"AutoConjugate.family: params must be a dict of guide params, got <class 'NoneType'>",
    ),
    Case(
        "AutoConjugate.natural_params",
        "key_misspelt",
        lambda: T().beta_guide.natural_params(
            {"auto_concentraton1": 2.0, "auto_concentration0": 3.0}
        ),
        ValueError,
        r"are not AutoConjugate params \(prefix 'auto'\); each family holds these keys: "
        r"beta \['auto_concentration1', 'auto_concentration0'\]",
    ),
    Case(
        "AutoConjugate.natural_params",
        "concentration_vector",
        lambda: T().beta_guide.natural_params(
            {"auto_concentration1": np.ones(3), "auto_concentration0": 2.0}
        ),
        ValueError,
        r"'auto_concentration1' must be a scalar in a beta posterior, got shape \(3,\)",
    ),
    Case(
        "AutoConjugate.natural_params",
        "concentration_inf",
        lambda: T().beta_guide.natural_params(
            {"auto_concentration1": INF, "auto_concentration0": 2.0}
        ),
        ValueError,
        r"'auto_concentration1' is not finite \(inf\)",
    ),
    Case(
        "AutoConjugate.natural_params",
        "concentration_complex",
        lambda: T().beta_guide.natural_params(
            {"auto_concentration1": 1 + 1j, "auto_concentration0": 2.0}
        ),
        ValueError,
        r"'auto_concentration1' must hold real numbers, got dtype complex128",
    ),
    Case(
        "AutoConjugate.natural_params",
        "normal_precision_not_symmetric",
        lambda: T().beta_guide.natural_params(gaussian(np.zeros(2), [[2.0, 0.5], [0.0, 2.0]])),
        ValueError,
        r"'auto_precision' is not symmetric: auto_precision\[0, 1\] = 0.5",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "family_misspelt",
        lambda: T().beta_guide.params_from_natural("betta", (1.0, 2.0)),
        ValueError,
        r"family must be one of \('beta', 'gamma', 'dirichlet', 'normal', 'nig'\), got 'betta'",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "concentration_vector",
        lambda: T().beta_guide.params_from_natural("beta", (jnp.ones(3), 2.0)),
        ValueError,
        r"'eta\[0\]' must be a scalar in a beta posterior, got shape \(3,\)",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "concentration_inf",
        lambda: T().beta_guide.params_from_natural("beta", (INF, 2.0)),
        ValueError,
        r"'eta\[0\]' is not finite \(inf\)",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "eta_too_short",
        lambda: T().beta_guide.params_from_natural("beta", (1.0,)),
        ValueError,
        r"eta must be a tuple of the 2 natural parameters of the beta family, got 1 entries",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "concentration_negative",
        lambda: T().beta_guide.params_from_natural("beta", (-5.0, 2.0)),
        ValueError,
        r"improper beta posterior: concentration1 is not positive \(auto_concentration1 = -4.0\)",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "normal_eta_positive_definite",
        lambda: T().beta_guide.params_from_natural("normal", (jnp.zeros(2), jnp.eye(2))),
        NotPD,
        r"smallest eigenvalue -2\); eta\[1\] = -P / 2 must be negative definite",
    ),
    Case(
        "AutoConjugate.params_from_natural",
        "normal_sizes_differ",
        lambda: T().beta_guide.params_from_natural("normal", (jnp.zeros(3), -jnp.eye(2))),
        ValueError,
        r"'eta\[0\]' \(3,\) and 'eta\[1\]' \(2, 2\) must have shapes \(D,\) and \(D, D\)",
    ),
    Case(
        "AutoConjugate.sample_posterior",
        "params_empty",
        lambda: T().beta_guide.sample_posterior(key(), {}, T().at_bats, T().hits),
        ValueError,
        r"AutoConjugate.sample_posterior: params \[\] are not AutoConjugate params",
    ),
    Case(
        "AutoConjugate.sample_posterior",
        "params_of_another_family",
        lambda: T().beta_guide.sample_posterior(key(), T().params, T().at_bats),
        ValueError,
        r"AutoConjugate.sample_posterior: params hold a normal posterior but the model is a "
        r"beta model",
    ),
    Case(
        "AutoConjugate.sample_posterior",
        "sample_shape_negative",
        lambda: T().beta_guide.sample_posterior(
            key(), T().beta_params, T().at_bats, sample_shape=(-2,)
        ),
        ValueError,
        r"sample_shape\[0\] must be at least 0, got -2",
    ),
    Case(
        "AutoConjugate.sample_posterior",
        "sample_shape_fractional",
        lambda: T().beta_guide.sample_posterior(
            key(), T().beta_params, T().at_bats, sample_shape=(2.5,)
        ),
        TypeError,
        r"sample_shape\[0\] must be an integer, got 2.5",
    ),
    Case(
        "AutoConjugate.sample_posterior",
        "rng_key_none",
        lambda: T().beta_guide.sample_posterior(None, T().beta_params, T().at_bats),
        TypeError,
        r"AutoConjugate.sample_posterior: rng_key must be a jax PRNG key",
    ),
    # ---- optim factories and the update functions of the optimizers they return
    Case(
        "optim.newton",
        "damping_factor_one",
        lambda: optim.newton(damping_factor=1.0),
        ValueError,
        r"damping_factor must be in \(1, inf\), got 1.0",
    ),
    Case(
        "optim.newton",
        "damping_factor_nan",
        lambda: optim.newton(damping_factor=NAN),
        ValueError,
        r"damping_factor must be in \(1, inf\), got nan",
    ),
    Case(
        "optim.newton",
        "positional_setting",
        lambda: optim.newton(1e-8),
        TypeError,
        r"newton\(\) takes 0 positional arguments but 1 was given",
    ),
    Case(
        "optim.online_newton",
        "lr_zero",
        lambda: optim.online_newton(0.0),
        ValueError,
        r"lr must be in \(0, 1\] or a schedule, got 0.0",
    ),
    Case(
        "optim.online_newton",
        "lr_above_one",
        lambda: optim.online_newton(1.5),
        ValueError,
        r"lr must be in \(0, 1\] or a schedule, got 1.5",
    ),
    Case(
        "optim.online_newton",
        "lr_nan",
        lambda: optim.online_newton(NAN),
        ValueError,
        r"lr must be in \(0, 1\] or a schedule, got nan",
    ),
    Case(
        "optim.online_newton",
        "covariance_full",
        lambda: optim.online_newton(0.5, covariance="full"),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got 'full'",
    ),
    Case(
        "optim.von",
        "lr_zero",
        lambda: optim.von(0.0),
        ValueError,
        r"lr must be in \(0, 1\] or a schedule, got 0.0",
    ),
    Case(
        "optim.von",
        "mc_samples_negative",
        lambda: optim.von(0.1, mc_samples=-1),
        ValueError,
        r"mc_samples must be at least 0, got -1",
    ),
    Case(
        "optim.von",
        "mc_samples_float",
        lambda: optim.von(0.1, mc_samples=2.5),
        TypeError,
        r"mc_samples must be an integer, got 2.5",
    ),
    Case(
        "optim.von",
        "mc_samples_bool",
        lambda: optim.von(0.1, mc_samples=True),
        TypeError,
        r"mc_samples must be an integer, got True",
    ),
    Case(
        "optim.newton",
        "tol_negative",
        lambda: optim.newton(tol=-1.0),
        ValueError,
        r"tol must be in \[0, inf\), got -1.0",
    ),
    Case(
        "optim.newton",
        "tol_string",
        lambda: optim.newton(tol="1e-8"),
        TypeError,
        r"tol must be a number, got '1e-8'",
    ),
    Case(
        "optim.newton",
        "max_damping_steps_float",
        lambda: optim.newton(max_damping_steps=2.5),
        TypeError,
        r"max_damping_steps must be an integer, got 2.5",
    ),
    Case(
        "optim.newton",
        "mean_precision_covariance_full",
        lambda: optim.newton().mean_precision(
            optim.newton().init(jnp.zeros(2), quadratic_loss), "full"
        ),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got 'full'",
    ),
    Case(
        "optim.newton",
        "init_mean_matrix",
        lambda: optim.newton().init(jnp.zeros((2, 2)), quadratic_loss),
        ValueError,
        r"newton.init: mean must have shape \(P,\) with P >= 1, got \(2, 2\)",
    ),
    Case(
        "optim.newton",
        "init_mean_integers",
        lambda: optim.newton().init(np.array([0, 0]), quadratic_loss),
        TypeError,
        r"newton.init: mean must be floating point, got dtype int64",
    ),
    Case(
        "optim.newton",
        "init_mean_nan",
        lambda: optim.newton().init(jnp.array([0.0, NAN]), quadratic_loss),
        ValueError,
        r"newton.init: mean contains nan at index 1",
    ),
    Case(
        "optim.newton",
        "init_loss_fn_none",
        lambda: optim.newton().init(jnp.zeros(2), None),
        TypeError,
        r"newton.init: loss_fn must be a callable theta -> scalar loss, got NoneType",
    ),
    Case(
        "optim.newton",
        "init_loss_fn_per_coordinate",
        lambda: optim.newton().init(jnp.zeros(2), lambda theta: (theta - 1.0) ** 2),
        TypeError,
        r"newton.init: loss_fn must return a floating-point scalar .*got shape \(2,\)",
    ),
    Case(
        "optim.newton",
        "update_state_of_iblr",
        lambda: optim.newton().update(
            optim.iblr(0.1, ess=10.0).init(jnp.zeros(2), quadratic_loss), quadratic_loss
        ),
        TypeError,
        r"newton.update: state must be a NewtonState .*got IBLRState",
    ),
    Case(
        "optim.online_newton",
        "lr_string",
        lambda: optim.online_newton("0.5"),
        TypeError,
        r"lr must be a number or a schedule, got '0.5'",
    ),
    Case(
        "optim.online_newton",
        "rtol_nan",
        lambda: optim.online_newton(rtol=float("nan")),
        ValueError,
        r"rtol must be in \[0, inf\), got nan",
    ),
    Case(
        "optim.online_newton",
        "precision_init_negative",
        lambda: optim.online_newton(precision_init=-1),
        ValueError,
        r"precision_init must be in \(0, inf\), got -1",
    ),
    Case(
        "optim.online_newton",
        "precision_init_entry_zero",
        lambda: optim.online_newton(covariance="diag", precision_init=np.array([1.0, 0.0])),
        ValueError,
        r"precision_init must be positive, got 0.0 at index 1",
    ),
    Case(
        "optim.online_newton",
        "precision_init_indefinite",
        lambda: optim.online_newton(precision_init=np.array([[1.0, 2.0], [2.0, 1.0]])),
        ValueError,
        r"precision_init must be positive definite, got smallest eigenvalue -1",
    ),
    Case(
        "optim.online_newton",
        "precision_init_string",
        lambda: optim.online_newton(precision_init="1"),
        TypeError,
        r"precision_init must be a positive number or an array of them, got '1'",
    ),
    Case(
        "optim.online_newton",
        "precision_init_matrix_for_diag",
        lambda: optim.online_newton(covariance="diag", precision_init=np.eye(2)),
        ValueError,
        r"precision_init must have shape \(\) or \(P,\) for covariance='diag', got \(2, 2\)",
    ),
    Case(
        "optim.online_newton",
        "init_precision_init_of_another_length",
        lambda: optim.online_newton(precision_init=np.ones(3)).init(jnp.zeros(2), quadratic_loss),
        ValueError,
        r"online_newton.init: precision_init has shape \(3,\); for a mean of 2 entries and "
        r"covariance='dense' it must have shape \(\), \(2,\) or \(2, 2\)",
    ),
    Case(
        "optim.online_newton",
        "init_mean_scalar",
        lambda: optim.online_newton().init(jnp.zeros(()), quadratic_loss),
        ValueError,
        r"online_newton.init: mean must have shape \(P,\) with P >= 1, got \(\)",
    ),
    Case(
        "optim.online_newton",
        "init_precision_init_overflows_float32",
        lambda: optim.online_newton(precision_init=1e300).init(
            jnp.zeros(2, jnp.float32), quadratic_loss
        ),
        ValueError,
        r"online_newton.init: precision_init = 1e\+300 overflows float32",
    ),
    Case(
        "optim.online_newton",
        "update_state_of_the_dense_family",
        lambda: optim.online_newton(0.5, covariance="diag").update(
            optim.online_newton(0.5).init(jnp.zeros(2), quadratic_loss), quadratic_loss
        ),
        ValueError,
        r"online_newton.update: the state's precision has shape \(2, 2\), but this optimizer "
        r"keeps a covariance='diag' precision \(2,\)",
    ),
    Case(
        "optim.online_newton",
        "mean_precision_covariance_none",
        lambda: optim.online_newton().mean_precision(
            optim.online_newton().init(jnp.zeros(2), quadratic_loss), None
        ),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got None",
    ),
    Case(
        "optim.iblr",
        "ess_zero",
        lambda: optim.iblr(0.1, ess=0.0),
        ValueError,
        r"ess must be in \(0, inf\), got 0.0",
    ),
    Case(
        "optim.iblr",
        "lr_inf",
        lambda: optim.iblr(float("inf")),
        ValueError,
        r"lr must be in \(0, inf\) or a schedule, got inf",
    ),
    Case(
        "optim.iblr",
        "mc_samples_string",
        lambda: optim.iblr(0.1, mc_samples="2"),
        TypeError,
        r"mc_samples must be an integer, got '2'",
    ),
    Case(
        "optim.von",
        "hessian_misspelt",
        lambda: optim.von(0.1, hessian="hessian"),
        ValueError,
        r"hessian must be one of \('exact', 'gauss_newton', 'price'\), got 'hessian'",
    ),
    Case(
        "optim.von",
        "price_without_draws",
        lambda: optim.von(0.1, mc_samples=0, hessian="price"),
        ValueError,
        r"hessian='price' needs draws \(mc_samples >= 1\)",
    ),
    Case(
        "optim.von",
        "covariance_full",
        lambda: optim.von(0.1, covariance="full"),
        ValueError,
        r"covariance must be one of .*got 'full'",
    ),
    Case(
        "optim.von",
        "gauss_newton_init_outside_blr",
        lambda: optim.von(0.1, hessian="gauss_newton").init(jnp.zeros(2), quadratic_loss),
        ValueError,
        r"von\(hessian='gauss_newton'\) needs the Gauss-Newton matrix .*gauss_newton_fn",
    ),
    Case(
        "optim.von",
        "precision_init_zero",
        lambda: optim.von(0.1, precision_init=0.0),
        ValueError,
        r"precision_init must be in \(0, inf\), got 0.0",
    ),
    Case(
        "optim.von",
        "precision_init_nan_entry",
        lambda: optim.von(0.1, precision_init=np.array([1.0, NAN])),
        ValueError,
        r"precision_init must be finite, got \[ 1. nan\]",
    ),
    Case(
        "optim.von",
        "gauss_newton_fn_of_another_size",
        lambda: optim.von(0.1, mc_samples=0, hessian="gauss_newton").init(
            jnp.zeros(2), quadratic_loss, gauss_newton_fn=lambda theta: jnp.eye(3)
        ),
        ValueError,
        r"von: gauss_newton_fn returned shape \(3, 3\); the mean has 2 entries, so it must "
        r"be \(2, 2\)",
    ),
    Case(
        "optim.von",
        "init_rng_key_int",
        lambda: optim.von(0.1).init(jnp.zeros(2), quadratic_loss, rng_key=0),
        TypeError,
        r"von.init: rng_key must be a jax PRNG key.*got int 0",
    ),
    Case(
        "optim.von",
        "update_rng_key_int",
        lambda: optim.von(0.1).update(
            optim.von(0.1).init(jnp.zeros(2), quadratic_loss), quadratic_loss, rng_key=0
        ),
        TypeError,
        r"von.update: rng_key must be a jax PRNG key.*got int 0",
    ),
    Case(
        "optim.von",
        "update_state_of_online_newton",
        lambda: optim.von(0.1).update(
            optim.online_newton().init(jnp.zeros(2), quadratic_loss), quadratic_loss
        ),
        TypeError,
        r"von.update: state must be a VONState .*got OnlineNewtonState",
    ),
    Case(
        "optim.von",
        "mean_precision_covariance_full",
        lambda: optim.von(0.1).mean_precision(
            optim.von(0.1).init(jnp.zeros(2), quadratic_loss), "full"
        ),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got 'full'",
    ),
    Case(
        "optim.iblr",
        "lr_zero",
        lambda: optim.iblr(0.0),
        ValueError,
        r"lr must be in \(0, inf\) or a schedule, got 0.0",
    ),
    Case(
        "optim.iblr",
        "lr_negative",
        lambda: optim.iblr(-1.0),
        ValueError,
        r"lr must be in \(0, inf\) or a schedule, got -1.0",
    ),
    Case(
        "optim.iblr",
        "lr_missing",
        lambda: optim.iblr(),
        TypeError,
        r"iblr\(\) missing 1 required positional argument: 'lr'",
    ),
    Case(
        "optim.iblr",
        "beta1_one",
        lambda: optim.iblr(0.1, beta1=1.0),
        ValueError,
        r"beta1 must be in \[0, 1\), got 1.0",
    ),
    Case(
        "optim.iblr",
        "beta2_negative",
        lambda: optim.iblr(0.1, beta2=-0.1),
        ValueError,
        r"beta2 must be in \[0, 1\), got -0.1",
    ),
    Case(
        "optim.iblr",
        "beta2_nan",
        lambda: optim.iblr(0.1, beta2=NAN),
        ValueError,
        r"beta2 must be in \[0, 1\), got nan",
    ),
    Case(
        "optim.iblr",
        "hess_init_zero",
        lambda: optim.iblr(0.1, hess_init=0.0),
        ValueError,
        r"hess_init must be in \(0, inf\), got 0.0",
    ),
    Case(
        "optim.iblr",
        "mc_samples_zero",
        lambda: optim.iblr(0.1, mc_samples=0),
        ValueError,
        r"mc_samples must be at least 1, got 0",
    ),
    Case(
        "optim.iblr",
        "covariance_full",
        lambda: optim.iblr(0.1, covariance="full"),
        ValueError,
        r"covariance must be one of .*got 'full'",
    ),
    Case(
        "optim.iblr",
        "init_without_num_examples",
        lambda: optim.iblr(0.1).init(jnp.zeros(2), quadratic_loss),
        ValueError,
        r"iblr needs ess or num_examples \(N\) to set the precision",
    ),
    Case(
        "optim.iblr",
        "update_without_rng_key",
        lambda: optim.iblr(0.1, ess=10.0).update(
            optim.iblr(0.1, ess=10.0).init(jnp.zeros(2), quadratic_loss), quadratic_loss
        ),
        ValueError,
        r"iblr.update needs rng_key",
    ),
    Case(
        "optim.iblr",
        "beta1_string",
        lambda: optim.iblr(0.1, beta1="0.9"),
        TypeError,
        r"beta1 must be a number, got '0.9'",
    ),
    Case(
        "optim.iblr",
        "init_num_examples_zero",
        lambda: optim.iblr(0.1).init(jnp.zeros(2), quadratic_loss, num_examples=0),
        ValueError,
        r"num_examples must be at least 1, got 0",
    ),
    Case(
        "optim.iblr",
        "init_num_examples_negative_with_ess",
        lambda: optim.iblr(0.1, ess=10.0).init(jnp.zeros(2), quadratic_loss, num_examples=-1),
        ValueError,
        r"num_examples must be at least 1, got -1",
    ),
    Case(
        "optim.iblr",
        "init_num_examples_float",
        lambda: optim.iblr(0.1).init(jnp.zeros(2), quadratic_loss, num_examples=2.5),
        TypeError,
        r"num_examples must be an integer, got 2.5",
    ),
    Case(
        "optim.iblr",
        "init_ess_overflows_float32",
        lambda: optim.iblr(0.1, ess=1e300).init(jnp.zeros(2, jnp.float32), quadratic_loss),
        ValueError,
        r"iblr.init: the initial precision .* = 1e\+300 overflows float32",
    ),
    Case(
        "optim.iblr",
        "init_mean_matrix",
        lambda: optim.iblr(0.1, ess=10.0).init(jnp.zeros((2, 2)), quadratic_loss),
        ValueError,
        r"iblr.init: mean must have shape \(P,\) with P >= 1, got \(2, 2\)",
    ),
    Case(
        "optim.iblr",
        "update_rng_key_int",
        lambda: optim.iblr(0.1, ess=10.0).update(
            optim.iblr(0.1, ess=10.0).init(jnp.zeros(2), quadratic_loss),
            quadratic_loss,
            rng_key=0,
        ),
        TypeError,
        r"iblr.update: rng_key must be a jax PRNG key.*got int 0",
    ),
    Case(
        "optim.iblr",
        "update_state_of_the_diag_family",
        lambda: optim.iblr(0.1, ess=10.0, covariance="dense").update(
            optim.iblr(0.1, ess=10.0).init(jnp.zeros(2), quadratic_loss),
            quadratic_loss,
            rng_key=key(),
        ),
        ValueError,
        r"iblr.update: the state's precision has shape \(2,\), but this optimizer keeps a "
        r"covariance='dense' precision \(2, 2\)",
    ),
    Case(
        "optim.iblr",
        "mean_precision_covariance_full",
        lambda: optim.iblr(0.1, ess=10.0).mean_precision(
            optim.iblr(0.1, ess=10.0).init(jnp.zeros(2), quadratic_loss), "full"
        ),
        ValueError,
        r"covariance must be one of \('dense', 'diag'\), got 'full'",
    ),
    # ---- optim's iBLR precision steps: shapes always, values where known (not traced)
    Case(
        "optim.iblr_precision_update",
        "rate_above_one",
        lambda: optim.iblr_precision_update(jnp.ones(2), jnp.ones(2), 1.5),
        ValueError,
        r"rate must be in \[0, 1\], got 1.5",
    ),
    Case(
        "optim.iblr_precision_update",
        "rate_array_negative",
        lambda: optim.iblr_precision_update(jnp.ones(2), jnp.ones(2), jnp.array([0.5, -0.1])),
        ValueError,
        r"iblr_precision_update: rate must be in \[0, 1\], got \[ 0.5 -0.1\]",
    ),
    Case(
        "optim.iblr_precision_update",
        "precision_negative",
        lambda: optim.iblr_precision_update(jnp.array([1.0, -1.0]), jnp.ones(2), 0.5),
        ValueError,
        r"iblr_precision_update: precision must be positive and finite, got -1.0 at index 1",
    ),
    Case(
        "optim.iblr_precision_update",
        "estimate_of_another_length",
        lambda: optim.iblr_precision_update(jnp.ones(2), jnp.ones(3), 0.5),
        ValueError,
        r"iblr_precision_update: precision_estimate has shape \(3,\), precision \(2,\)",
    ),
    Case(
        "optim.iblr_precision_update",
        "estimate_scalar",
        lambda: optim.iblr_precision_update(jnp.ones(2), 1.0, 0.5),
        ValueError,
        r"iblr_precision_update: precision_estimate has shape \(\), precision \(2,\)",
    ),
    Case(
        "optim.iblr_precision_update",
        "estimate_nan",
        lambda: optim.iblr_precision_update(jnp.ones(2), jnp.array([1.0, NAN]), 0.5),
        ValueError,
        r"iblr_precision_update: precision_estimate is not finite",
    ),
    Case(
        "optim.iblr_dense_precision_update",
        "precision_vector",
        lambda: optim.iblr_dense_precision_update(jnp.ones(2), jnp.ones(2), 0.5),
        ValueError,
        r"iblr_dense_precision_update: precision must be a square \(P, P\) matrix, got shape "
        r"\(2,\)",
    ),
    Case(
        "optim.iblr_dense_precision_update",
        "estimate_of_another_size",
        lambda: optim.iblr_dense_precision_update(jnp.eye(2), jnp.eye(3), 0.5),
        ValueError,
        r"iblr_dense_precision_update: precision_estimate has shape \(3, 3\), precision "
        r"\(2, 2\)",
    ),
    Case(
        "optim.iblr_dense_precision_update",
        "precision_indefinite",
        lambda: optim.iblr_dense_precision_update(-jnp.eye(2), jnp.eye(2), 0.5),
        ValueError,
        r"iblr_dense_precision_update: precision must be positive definite, got smallest "
        r"eigenvalue -1",
    ),
    Case(
        "optim.iblr_dense_precision_update",
        "rate_negative",
        lambda: optim.iblr_dense_precision_update(jnp.eye(2), jnp.eye(2), -0.5),
        ValueError,
        r"rate must be in \[0, 1\], got -0.5",
    ),
    Case(
        "optim.iblr_dense_precision_update",
        "rate_per_entry",
        lambda: optim.iblr_dense_precision_update(jnp.eye(2), jnp.eye(2), jnp.full(2, 0.5)),
        ValueError,
        r"iblr_dense_precision_update: rate must be a scalar, got shape \(2,\)",
    ),
    # ---- enable_compilation_cache: checked even when the cache is switched off
    Case(
        "enable_compilation_cache",
        "directory_number",
        lambda: mpe.enable_compilation_cache(3),
        TypeError,
        r"enable_compilation_cache: directory must be a path \(str or os.PathLike\), got int",
    ),
    Case(
        "enable_compilation_cache",
        "directory_is_a_file",
        lambda: mpe.enable_compilation_cache(__file__),
        ValueError,
        r"enable_compilation_cache: '.*test_bad_inputs.py' exists and is not a folder",
    ),
    # ---- datasets: the loaders take no input; Wells.design takes column names
    Case(
        "datasets.Wells.design",
        "unknown_column",
        lambda: datasets.load_wells().design("income"),
        ValueError,
        r"design: unknown column 'income'; the columns are \('arsenic', 'dist', 'assoc', "
        r"'educ', 'dist100'\)",
    ),
    Case(
        "datasets.Wells.design",
        "column_index",
        lambda: datasets.load_wells().design(3),
        TypeError,
        r"design takes column names, one of \('arsenic', .*'dist100'\); got 3 \(int\) at "
        r"position 0",
    ),
    Case(
        "datasets.Wells.design",
        "method_name",
        lambda: datasets.load_wells().design("count"),
        ValueError,
        r"design: unknown column 'count'",
    ),
    Case(
        "datasets.Wells.design",
        "column_repeated",
        lambda: datasets.load_wells().design("dist100", "arsenic", "dist100"),
        ValueError,
        r"design: column 'dist100' given twice",
    ),
    Case(
        "datasets.Wells.design",
        "dist_and_dist100",
        lambda: datasets.load_wells().design("dist", "arsenic", "dist100"),
        ValueError,
        r"design: columns 'dist' and 'dist100' are the same column",
    ),
    Case(
        "datasets.Wells.design",
        "outcome_as_a_column",
        lambda: datasets.load_wells().design("arsenic", "switch"),
        ValueError,
        r"design: 'switch' is the outcome y",
    ),
]


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=f"{case.name}-{case.case}") for case in CASES]
)
def test_bad_input_is_refused_naming_the_fault(case, tiny, x64):
    with pytest.raises(case.error, match=case.match):
        case.call()


# --------------------------------------------------------------------------- the meta-tests

# Names of numpyro_mpe.__all__ that take no user input to check: warning and exception
# classes (raised by the package, not called), result containers the package builds and
# returns (NamedTuples and ArviZ dataclasses), and the optim module itself (its functions
# are held to the same rule by test_every_optimizer_function_has_rows).
NO_USER_INPUT = {
    "ConvergenceWarning",
    "ModelError",
    "NotPositiveDefiniteError",
    "ParetoKWarning",
    "ReliabilityWarning",
    "BLRRunResult",
    "ELPDDataMPE",
    "ELPDDataMPELFO",
    "ELPDDataPSIS",
    "ELPDDataRefit",
    "MCMCLooResult",
    "Predictor",
    "PriorSelection",
    "Sensitivity",
    "optim",
}

# numpyro_mpe.optim.__all__ without user input of its own: the extras' names, the
# optimizer contract (a NamedTuple of functions) and the optimizers' states and infos.
OPTIM_NO_USER_INPUT = {
    "EXTRAS",
    "NaturalGradientOptimizer",
    "NewtonState",
    "NewtonInfo",
    "OnlineNewtonState",
    "OnlineNewtonInfo",
    "VONState",
    "VONInfo",
    "IBLRState",
    "IBLRInfo",
}

# Functions of numpyro_mpe.optim that check none of their inputs yet, so there is no
# refusal to tabulate (none left: the iBLR precision steps check shapes, and values
# where they are not traced).
OPTIM_UNCHECKED: set[str] = set()


def _rows_per_name(prefix: str = "") -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in CASES:
        if case.name.startswith(prefix):
            top = case.name.removeprefix(prefix).split(".")[0]
            counts[top] = counts.get(top, 0) + 1
    return counts


def test_every_public_name_has_rows():
    counts = _rows_per_name()
    assert NO_USER_INPUT <= set(mpe.__all__), NO_USER_INPUT - set(mpe.__all__)
    for name in sorted(set(mpe.__all__) - NO_USER_INPUT):
        public = getattr(mpe, name)
        assert inspect.isfunction(public) or inspect.isclass(public), name
        assert counts.get(name, 0) >= 2, f"{name} has {counts.get(name, 0)} rows"


def test_every_optimizer_function_has_rows():
    counts = _rows_per_name("optim.")
    exempt = OPTIM_NO_USER_INPUT | OPTIM_UNCHECKED
    assert exempt <= set(optim.__all__), exempt - set(optim.__all__)
    for name in sorted(set(optim.__all__) - exempt):
        assert callable(getattr(optim, name)), name
        assert counts.get(name, 0) >= 2, f"optim.{name} has {counts.get(name, 0)} rows"
    assert not OPTIM_UNCHECKED & set(counts), "a checked function left in OPTIM_UNCHECKED"


def test_the_datasets_loaders_take_no_input():
    for name in datasets.__all__:
        loader = getattr(datasets, name)
        if name.startswith("load_"):
            assert not inspect.signature(loader).parameters, name


def test_rows_name_public_things_and_are_unique():
    ids = [f"{case.name}-{case.case}" for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    for case in CASES:
        owner: Any = {"optim": optim, "datasets": datasets}.get(case.name.split(".")[0], mpe)
        parts = case.name.split(".")
        if parts[0] in ("optim", "datasets"):
            parts = parts[1:]
        for part in parts:
            assert hasattr(owner, part), f"{case.name} is not a public name"
            owner = getattr(owner, part)
