"""von, dense iBLR and the other BLR optimizers against closed forms and posteriordb draws.

Tolerances are measured values with margin; each test states them. Monte Carlo fits use
fixed seeds, a constant step for the transient and then a ``c / t`` step that averages
the draws' noise out (Robbins-Monro).
"""

from __future__ import annotations

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import TEST_DATA, data_json, linear_model, logistic_model
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpyro.distributions import constraints
from numpyro.infer import init_to_value

import numpyro_mpe as mpe
from numpyro_mpe.infer.blr import blr_update
from numpyro_mpe.optim import iblr_dense_precision_update


def _schedule(constant: float, scale: float):
    """``min(constant, scale / (t + 1))``: a constant transient, then Robbins-Monro."""
    return lambda step: jnp.minimum(constant, scale / (step + 1.0))


@pytest.fixture
def kidiq_exact(kidiq, x64):
    """``(loss_fn, mean, precision)`` of the conjugate kidiq regression (closed form)."""
    X, y = kidiq
    # linear_model's defaults: sigma = 18, beta ~ N(0, 10^2).
    precision = X.T @ X / 18.0**2 + np.eye(3) / 10.0**2
    mean = np.linalg.solve(precision, X.T @ y / 18.0**2)
    plate_model = mpe.trace_model(linear_model, X, y)
    return lambda theta: -plate_model.log_joint(theta), mean, precision


def _optimize(optimizer, loss_fn, mean, num_steps, seed=0):
    """Run ``num_steps`` updates under one ``jit`` (``lax.scan``); ``(state, infos)``."""
    state = optimizer.init(jnp.asarray(mean), loss_fn)

    def step(state, key):  # every optimizer takes rng_key (optim.EXTRAS)
        return optimizer.update(state, loss_fn, rng_key=key)

    keys = jax.random.split(jax.random.PRNGKey(seed), num_steps)
    return jax.jit(lambda state, keys: jax.lax.scan(step, state, keys))(state, keys)


def _errors(optimizer, state, exact_mean, exact_precision, covariance):
    """Largest mean error in posterior sd, and the precision/covariance relative error.

    Dense: ``max |Sigma_fit - Sigma| / sqrt(Sigma_jj Sigma_kk)`` (the covariance error on
    the correlation scale). Diag: ``max |s / diag(H) - 1|``, against the diagonal
    family's fixed point ``s = diag(X^T X / sigma^2 + prior precision)``.
    """
    mean, precision = (np.asarray(a) for a in optimizer.mean_precision(state, covariance))
    covariance_exact = np.linalg.inv(exact_precision)
    sd = np.sqrt(np.diag(covariance_exact))
    mean_error = np.max(np.abs(mean - exact_mean) / sd)
    if covariance == "dense":
        error = np.abs(np.linalg.inv(precision) - covariance_exact) / np.outer(sd, sd)
    else:
        error = np.abs(precision / np.diag(exact_precision) - 1)
    return mean_error, np.max(error)


# (optimizer, covariance, steps, start offset in sd, mean tolerance in sd, cov tolerance).
# Measured here (seed 0): von exact dense 3.8e-5 sd / 7.4e-5 (the precision is exact up
# to prod(1 - rho_t)); von exact diag 0.084 sd / 4e-15; von price dense 1.6e-8 sd /
# 2.2e-9; von price diag 0.038 sd / 0.046; online_newton diag (deterministic) 7e-10 sd /
# 4e-15; iblr dense 3.6e-5 sd / 3.9e-4; iblr diag 0.011 sd / 0.034. The dense rows are
# exact up to float precision since the control variates (before: von exact 0.055 sd,
# von price 0.007 / 0.009, iblr 0.069 / 0.021). Over seeds 0-4 (von price) or 0-2 (the
# others), before them, the largest were 0.12 sd (von exact diag, iblr diag) and 0.083
# (von price diag's precision); the tolerances leave ~2x margin.
_KIDIQ_CASES = {
    "von-exact-dense": (
        lambda: mpe.optim.von(_schedule(0.5, 2.0), mc_samples=1, precision_init=1.0),
        "dense",
        500,
        None,
        0.1,
        1e-3,
    ),
    "von-exact-diag": (
        lambda: mpe.optim.von(
            _schedule(0.5, 300.0), mc_samples=1, covariance="diag", precision_init=1.0
        ),
        "diag",
        3000,
        None,
        0.25,
        1e-8,
    ),
    # Price's estimate is indefinite far from the fixed point: start 1 sd away.
    "von-price-dense": (
        lambda: mpe.optim.von(_schedule(0.05, 5.0), mc_samples=16, hessian="price"),
        "dense",
        1500,
        1.0,
        0.1,
        0.1,
    ),
    "von-price-diag": (
        lambda: mpe.optim.von(
            _schedule(0.05, 50.0), mc_samples=16, hessian="price", covariance="diag"
        ),
        "diag",
        3000,
        1.0,
        0.15,
        0.2,
    ),
    "online_newton-diag": (
        lambda: mpe.optim.online_newton(0.5, covariance="diag", precision_init=1.0),
        "diag",
        3000,
        None,
        1e-4,
        1e-6,
    ),
    "iblr-dense": (
        lambda: mpe.optim.iblr(
            _schedule(0.3, 30.0),
            beta2=0.99,
            mc_samples=8,
            hess_init=0.001,
            covariance="dense",
            ess=434.0,  # N: the untempered posterior
        ),
        "dense",
        1500,
        None,
        0.15,
        0.1,
    ),
    "iblr-diag": (
        lambda: mpe.optim.iblr(
            _schedule(0.3, 300.0), beta2=0.995, mc_samples=8, hess_init=0.01, ess=434.0
        ),
        "diag",
        3000,
        None,
        0.25,
        0.15,
    ),
}


@pytest.mark.parametrize("case", list(_KIDIQ_CASES))
def test_converges_to_the_conjugate_posterior(kidiq_exact, case):
    """Gaussian-linear kidiq: the VI fixed point is the exact posterior (dense) or
    ``N(m, diag(H)^-1)`` (diag, same mean). Tolerances in ``_KIDIQ_CASES``."""
    loss_fn, exact_mean, exact_precision = kidiq_exact
    make, covariance, num_steps, offset, mean_tol, cov_tol = _KIDIQ_CASES[case]
    optimizer = make()
    if offset is None:
        start = np.zeros_like(exact_mean)
    else:
        sd = np.sqrt(np.diag(np.linalg.inv(exact_precision)))
        start = exact_mean + offset * sd * np.array([1.0, -1.0, 1.0])
    state, infos = _optimize(optimizer, loss_fn, start, num_steps)
    if hasattr(infos, "positive_definite"):
        assert bool(np.all(infos.positive_definite))
    mean_error, cov_error = _errors(optimizer, state, exact_mean, exact_precision, covariance)
    print(f"{case}: mean error {mean_error:.3g} sd, covariance error {cov_error:.3g}")
    assert mean_error < mean_tol
    assert cov_error < cov_tol


def test_von_delta_method_equals_online_newton(kidiq_exact):
    loss_fn, _, _ = kidiq_exact
    von = mpe.optim.von(0.5, mc_samples=0, precision_init=1.0)
    online = mpe.optim.online_newton(0.5, precision_init=1.0)
    von_state, von_infos = _optimize(von, loss_fn, np.zeros(3), 20)
    online_state, online_infos = _optimize(online, loss_fn, np.zeros(3), 20)
    np.testing.assert_allclose(von_state.mean, online_state.mean, rtol=1e-12)
    np.testing.assert_allclose(von_state.precision, online_state.precision, rtol=1e-12)
    np.testing.assert_allclose(von_infos.decrement, online_infos.decrement, rtol=1e-10)


def test_von_rejects_an_indefinite_step(kidiq, x64):
    """Price's estimate from a far start makes ``S`` indefinite: no NaN, BLR raises."""
    X, y = kidiq
    guide = mpe.AutoGaussian(linear_model)
    blr = mpe.BLR(linear_model, guide, mpe.optim.von(0.5, mc_samples=1, hessian="price"))
    state = blr.init(jax.random.PRNGKey(0), X, y)
    for _ in range(3):
        state, info = blr.update(state, X, y)
    assert not bool(info.positive_definite) and bool(info.converged)
    assert np.all(np.isfinite(state.optim_state.mean))
    assert np.all(np.isfinite(state.optim_state.precision))
    with pytest.raises(mpe.NotPositiveDefiniteError, match="not positive definite"):
        blr.run(jax.random.PRNGKey(0), 50, X, y, progress_bar=False)


def test_von_argument_errors():
    optimizer = mpe.optim.von(0.1, hessian="gauss_newton")
    with pytest.raises(
        ValueError, match=r"Gauss-Newton matrix of the model .* run it through BLR"
    ):
        optimizer.init(jnp.zeros(2), lambda theta: jnp.sum(theta**2))
    with pytest.raises(ValueError, match="hessian must be one of"):
        mpe.optim.von(0.1, hessian="fisher")
    with pytest.raises(ValueError, match=r"hessian='price' needs draws"):
        mpe.optim.von(0.1, mc_samples=0, hessian="price")
    with pytest.raises(ValueError, match="mc_samples must be at least 0"):
        mpe.optim.von(0.1, mc_samples=-1)
    with pytest.raises(ValueError, match=r"lr must be in \(0, 1\]"):
        mpe.optim.von(2.0)
    with pytest.raises(ValueError, match="covariance must be one of"):
        mpe.optim.iblr(0.1, covariance="full")


def _spd(draw_matrix, eigenvalues):
    """``Q diag(eigenvalues) Q^T`` with ``Q`` orthogonal from a QR decomposition."""
    q, _ = np.linalg.qr(draw_matrix)
    return (q * eigenvalues) @ q.T


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    size=st.integers(1, 5),
    data=st.data(),
    rate=st.floats(0.0, 1.0),
)
def test_iblr_dense_precision_update_stays_positive_definite(size, data, rate):
    """``S' >= S / 2`` for SPD ``S`` (eigenvalues 1e-2..1e2) and any symmetric estimate
    with entries up to 1e3 in magnitude (indefinite in general).

    The bound holds in exact arithmetic for any sizes; the ranges keep the condition
    number of ``S'`` below about 1e12, so that float64 can represent the ``S / 2`` floor
    beside the ``G S^-1 G / 2`` term (with entries 1e6 and eigenvalues 1e-3 it is 1e16
    times larger and rounds the floor away).
    """
    elements = st.floats(-1.0, 1.0, allow_nan=False)
    basis = data.draw(hnp.arrays(np.float64, (size, size), elements=elements))
    basis = basis + 3 * np.eye(size)  # full rank for the QR
    eigenvalues = data.draw(hnp.arrays(np.float64, size, elements=st.floats(-2.0, 2.0)))
    precision = _spd(basis, 10.0**eigenvalues)
    raw = data.draw(hnp.arrays(np.float64, (size, size), elements=st.floats(-1e3, 1e3)))
    estimate = 0.5 * (raw + raw.T)
    with jax.enable_x64(True):
        new = np.asarray(iblr_dense_precision_update(precision, estimate, rate))
        assert np.all(np.isfinite(np.linalg.cholesky(new)))
    np.testing.assert_array_equal(new, new.T)
    # S' - S / 2 = (S + b G) S^-1 (S + b G) / 2 is PSD: its eigenvalues are >= 0 up to
    # rounding relative to the largest.
    scale = np.max(np.abs(np.linalg.eigvalsh(new)))
    assert np.linalg.eigvalsh(new - 0.5 * precision).min() >= -1e-9 * scale
    assert np.linalg.eigvalsh(new).min() > 0
    # The factored form equals S + b G + b^2 / 2 G S^-1 G.
    gap = estimate - precision
    expected = precision + rate * gap + rate**2 / 2 * gap @ np.linalg.solve(precision, gap)
    np.testing.assert_allclose(new, expected, rtol=1e-6, atol=1e-8 * scale)


@pytest.mark.parametrize(
    ("make", "covariance"),
    [
        (lambda: mpe.optim.von(0.1, mc_samples=2), "dense"),
        (lambda: mpe.optim.von(0.1, mc_samples=2, hessian="price", covariance="diag"), "diag"),
        (lambda: mpe.optim.iblr(0.1, beta2=0.99, covariance="dense"), "dense"),
    ],
    ids=["von-exact-dense", "von-price-diag", "iblr-dense"],
)
def test_second_update_does_not_recompile(wells, x64, make, covariance):
    X, y = wells
    guide = mpe.AutoGaussian(logistic_model, covariance=covariance)
    blr = mpe.BLR(logistic_model, guide, make())
    state = blr.init(jax.random.PRNGKey(0), X, y)
    state, _ = blr.update(state, X, y)
    compiled = blr_update._cache_size()
    losses = []
    for _ in range(3):
        state, info = blr.update(state, X, y)
        losses.append(float(info.loss))
    assert blr_update._cache_size() == compiled
    assert np.all(np.isfinite(losses)) and len(set(losses)) == len(losses)


def _flat_regression(X, y=None, sigma_scale=None):
    """posteriordb's kidscore_momhsiq (``sigma_scale=2.5``) and logearn_height (None).

    Flat priors on the coefficients, as the Stan programs; ``sigma`` half-Cauchy or flat.
    """
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (X.shape[1],)))
    if sigma_scale is None:
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    else:
        sigma = numpyro.sample("sigma", dist.HalfCauchy(sigma_scale))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def _reference_draws(name: str, coefficient_scale) -> np.ndarray:
    """posteriordb gold-standard draws ``(10000, P)``: beta (times ``coefficient_scale``)
    and log sigma, the unconstrained coordinates of :func:`_flat_regression`."""
    with zipfile.ZipFile(TEST_DATA / "reference_draws" / f"{name}.json.zip") as archive:
        chains = json.loads(archive.read(archive.namelist()[0]))
    names = [key for key in chains[0] if key.startswith("beta")] + ["sigma"]
    draws = np.concatenate([np.stack([chain[key] for key in names], 1) for chain in chains])
    return np.concatenate([draws[:, :-1] * coefficient_scale, np.log(draws[:, -1:])], axis=1)


@pytest.fixture(scope="module", params=["kidiq", "earnings"])
def posteriordb_problem(request):
    """``(name, X, y, sigma_scale, reference draws)``.

    kidiq uses ``mom_iq / 10`` (as the ``kidiq`` fixture): the draws of ``beta[3]`` are
    scaled by 10 to match, an exact reparameterisation under the flat prior.
    """
    if request.param == "kidiq":
        data = data_json("posteriordb/kidiq.json")
        mom_iq = np.asarray(data["mom_iq"], float) / 10
        X = np.stack([np.ones_like(mom_iq), np.asarray(data["mom_hs"], float), mom_iq], 1)
        y = np.asarray(data["kid_score"], float)
        draws = _reference_draws("kidiq-kidscore_momhsiq", np.array([1.0, 1.0, 10.0]))
        return "kidiq", X, y, 2.5, draws
    data = data_json("posteriordb/earnings.json")
    height = np.asarray(data["height"], float)
    X = np.stack([np.ones_like(height), height], 1)
    y = np.log(np.asarray(data["earn"], float))
    return "earnings", X, y, None, _reference_draws("earnings-logearn_height", 1.0)


def _posteriordb_fit(problem, optimizer, covariance, num_steps):
    """Fit from ``beta = 0, sigma = sd(y)``; ``(mean error in ref sd, variance ratio)``."""
    _, X, y, sigma_scale, draws = problem
    start = init_to_value(values={"beta": np.zeros(X.shape[1]), "sigma": y.std()})
    guide = mpe.AutoGaussian(_flat_regression, covariance=covariance, init_loc_fn=start)
    result = mpe.BLR(_flat_regression, guide, optimizer).run(
        jax.random.PRNGKey(0), num_steps, X, y, sigma_scale, progress_bar=False
    )
    mean, precision = guide.mean_precision(result.params)
    variance = np.diag(np.linalg.inv(precision)) if covariance == "dense" else 1 / precision
    error = (np.asarray(mean) - draws.mean(0)) / draws.std(0)
    return error, np.asarray(variance) / draws.var(0)


def test_posteriordb_newton(posteriordb_problem, x64):
    """Laplace vs NUTS. Measured |mean error| (ref sd): kidiq 0.011, 0.017, 0.015, 0.123;
    earnings 0.007, 0.007, 0.058; variance ratios 0.982-0.996. log sigma's 0.12 sd on
    kidiq is Laplace's joint-mode bias (mode at ``RSS / N`` rather than ``RSS / (N - P)``:
    ``log((N + 1) / (N - 2)) / 2 ~ 0.0035 = 0.1 sd``), not an optimizer error."""
    name = posteriordb_problem[0]
    error, ratio = _posteriordb_fit(posteriordb_problem, mpe.optim.newton(), "dense", 100)
    print(f"newton {name}: mean error {error.round(3)} sd, variance ratio {ratio.round(3)}")
    assert np.all(np.abs(error[:-1]) < 0.1) and abs(error[-1]) < 0.15
    np.testing.assert_allclose(ratio, 1.0, rtol=0.2)


def test_posteriordb_iblr_dense(posteriordb_problem, x64):
    """Full-covariance iBLR vs NUTS: means within 0.1 ref sd, variances within 20%."""
    name = posteriordb_problem[0]
    optimizer = mpe.optim.iblr(
        _schedule(0.3, 30.0), beta2=0.98, mc_samples=8, hess_init=0.01, covariance="dense"
    )
    error, ratio = _posteriordb_fit(posteriordb_problem, optimizer, "dense", 2000)
    print(f"iblr dense {name}: mean error {error.round(3)} sd, variance ratio {ratio.round(3)}")
    assert np.all(np.abs(error) < 0.1)
    np.testing.assert_allclose(ratio, 1.0, rtol=0.2)


def _warm_constant_decay(peak: float, warmup: int, decay_from: int, decay_scale: float):
    """Linear warm-up to ``peak`` over ``warmup`` steps, constant, then ``exp(-(t -
    decay_from) / decay_scale)``: long enough at ``peak`` for the slow directions, then
    small steps so the Monte Carlo noise of the final mean dies out."""

    def schedule(step):
        warm = jnp.minimum(1.0, (step + 1.0) / warmup)
        return peak * warm * jnp.minimum(1.0, jnp.exp(-(step - decay_from) / decay_scale))

    return schedule


@pytest.mark.slow
def test_posteriordb_iblr_diag(posteriordb_problem, x64):
    """Diagonal iBLR vs NUTS: means within 0.1 ref sd; variances within 20% of the
    diagonal family's ``1 / (Sigma^-1)_jj``, whose ratio to the true variance is ``1 /
    (Sigma_jj (Sigma^-1)_jj) <= 1`` (``1 - rho^2`` for two coordinates), computed from
    the reference draws.

    earnings' intercept and slope have correlation -0.998: diagonally preconditioned
    steps contract that direction by ``~lr (1 - |rho|)`` per step, so the schedule holds
    ``lr = 0.6`` for 5000 steps before decaying (with ``min(0.3, 300 / (t + 1))`` the
    coefficients were still 1.4 sd off after 3000 steps). The 500-step warm-up matters:
    without it one seed in six diverged in its first 50 steps. Measured over seeds 0-5:
    largest |mean error| 0.085 sd (earnings) and 0.035 sd (kidiq); seed 0: 0.031, 0.025.
    """
    name = posteriordb_problem[0]
    draws = posteriordb_problem[-1]
    schedule = _warm_constant_decay(0.6, warmup=500, decay_from=5000, decay_scale=400.0)
    optimizer = mpe.optim.iblr(schedule, beta2=0.99, mc_samples=8, hess_init=1.0)
    error, ratio = _posteriordb_fit(posteriordb_problem, optimizer, "diag", 7000)
    covariance = np.cov(draws.T)
    bound = 1 / (np.diag(covariance) * np.diag(np.linalg.inv(covariance)))
    print(
        f"iblr diag {name}: mean error {error.round(3)} sd, variance ratio {ratio.round(4)}, "
        f"diagonal-family ratio {bound.round(4)}"
    )
    np.testing.assert_allclose(ratio, bound, rtol=0.2)
    assert np.all(np.abs(error) < 0.1)


def test_gauss_newton_equals_the_hessian_for_a_canonical_link(wells, x64):
    """Bernoulli logits linear in theta: J^T Lambda J is the exact likelihood Hessian."""
    from numpyro_mpe.core.model import split_arguments
    from numpyro_mpe.infer.blr import gauss_newton_fn, negative_log_joint

    X, y = wells
    arrays, static = split_arguments((X, y), {})
    theta = jnp.array([0.1, -0.5, 0.4])
    gauss_newton = gauss_newton_fn(logistic_model, None, static, arrays, ("logits",))(theta)
    loss_fn, _ = negative_log_joint(logistic_model, None, static, arrays)
    np.testing.assert_allclose(gauss_newton, jax.hessian(loss_fn)(theta), rtol=1e-10)


@pytest.mark.parametrize("covariance", ["dense", "diag"])
def test_von_gauss_newton_converges_on_kidiq(kidiq, x64, covariance):
    """Through BLR (which supplies the Gauss-Newton matrix), with draws: the exact
    posterior (dense) or the diagonal family's fixed point, as ``hessian="exact"``."""
    X, y = kidiq
    guide = mpe.AutoGaussian(linear_model, covariance=covariance)
    # The diagonal family steps with diag(S): slow along correlated latents, so a longer
    # constant phase (as "von-exact-diag" above).
    schedule, num_steps = ((0.5, 2.0), 300) if covariance == "dense" else ((0.5, 300.0), 3000)
    optimizer = mpe.optim.von(
        _schedule(*schedule), mc_samples=1, hessian="gauss_newton", covariance=covariance
    )
    fit = mpe.BLR(linear_model, guide, optimizer).run(
        jax.random.PRNGKey(0), num_steps, X, y, progress_bar=False
    )
    mean, precision = guide.mean_precision(fit.params)
    exact_precision = X.T @ X / 18.0**2 + np.eye(3) / 10.0**2
    exact_mean = np.linalg.solve(exact_precision, X.T @ y / 18.0**2)
    sd = np.sqrt(np.diag(np.linalg.inv(exact_precision)))
    expected_precision = exact_precision if covariance == "dense" else np.diag(exact_precision)
    # The Gauss-Newton matrix of a Gaussian-linear model is its constant Hessian, so the
    # precision is exact up to prod(1 - rho_t); the mean carries Monte Carlo noise.
    np.testing.assert_allclose(precision, expected_precision, rtol=1e-6)
    assert np.max(np.abs(mean - exact_mean) / sd) < (0.1 if covariance == "dense" else 0.25)


def test_von_gauss_newton_needs_a_predictor(kidiq, x64):
    X, y = kidiq

    def two_observations(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 10).expand([X.shape[1]]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, 18.0), obs=y)
            numpyro.sample("z", dist.Normal(X @ beta, 18.0), obs=y)

    guide = mpe.AutoGaussian(two_observations)
    blr = mpe.BLR(two_observations, guide, mpe.optim.von(0.5, hessian="gauss_newton"))
    with pytest.raises(mpe.ModelError, match="Gauss-Newton Hessian needs an observation"):
        blr.run(jax.random.PRNGKey(0), 5, X, y, progress_bar=False)
