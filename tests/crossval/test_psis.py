"""PSIS-LOO against R's loo (exact outputs in tests/data/loo_r_testdata) and arviz-stats.

R's reference values are reproduced to ~1e-13 in float64; the assertions use ``1e-9``
(absolute) so that a different summation order (another backend, GPU) still passes,
well inside the ``1e-6`` the task asks for. float32 runs are checked at tolerances
justified where they are used.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from arviz_base import from_dict
from arviz_stats import loo as arviz_loo
from arviz_stats import loo_approximate_posterior as arviz_loo_approximate_posterior
from conftest import TEST_DATA
from scipy.special import logsumexp

from numpyro_mpe.crossval.psis import (
    ELPDDataPSIS,
    ParetoKWarning,
    approximate_posterior_loo,
    psis_loo,
    relative_eff,
)
from numpyro_mpe.crossval.psis_kernels import top_sorted

R_DIR = TEST_DATA / "loo_r_testdata"
R_LOO = "loo1__loo(LLarr, r_eff=relative_eff(exp(LLarr)))"
ATOL = 1e-9


@pytest.fixture(scope="module")
def r_reference():
    """R's ``loo`` outputs and its input, as ``(chain, draw, obs)`` (the file is draw-major)."""
    reference = json.loads((R_DIR / "r_loo_reference_example_loglik_array.json").read_text())
    log_lik = np.load(R_DIR / "example_loglik_array_500x2x32.npy").transpose(1, 0, 2)
    r_log_weights = np.load(R_DIR / "psis1_log_weights_1000x32.npy")  # unnormalized
    return reference, log_lik, r_log_weights - logsumexp(r_log_weights, axis=0)


@pytest.fixture(scope="module")
def wells_laplace():
    """Wells logistic regression (X: 1, dist100, arsenic) at 2000 Laplace draws."""
    data = np.load(R_DIR / "wells_loo_subsample_vignette.npz")
    eta = data["parameter_draws_laplace"] @ data["X"].T
    log_lik = data["y"][None, :] * eta - np.logaddexp(0.0, eta)
    return log_lik, data["log_p"], data["log_g"]


def _arviz_tree(log_lik: np.ndarray):
    return from_dict(
        {"posterior": {"mu": log_lik[..., 0]}, "log_likelihood": {"y": log_lik}},
    )


# --------------------------------------------------------------------------- R's loo


def test_psis_loo_reproduces_r(r_reference):
    reference, log_lik, r_log_weights = r_reference
    r_loo = reference[R_LOO]
    pointwise = np.asarray(r_loo["pointwise"]["values"])  # elpd, mcse, p, looic, k
    estimates = np.asarray(r_loo["estimates"]["values"])  # (elpd, p, looic) x (est, se)
    with jax.enable_x64(True):
        result = psis_loo(log_lik)  # r_eff defaults to relative_eff, as R's example
    assert isinstance(result, ELPDDataPSIS)
    np.testing.assert_allclose(result.r_eff, reference["relative_eff(exp(LLarr))"], atol=ATOL)
    np.testing.assert_allclose(result.elpd_i, pointwise[:, 0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.mcse_elpd_i, pointwise[:, 1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.p_loo_i, pointwise[:, 2], atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.pareto_k, r_loo["diagnostics"]["pareto_k"], atol=ATOL)
    np.testing.assert_allclose(result.n_eff_i, r_loo["diagnostics"]["n_eff"], rtol=1e-12)
    log_weights = result.log_weights.values.reshape(1000, 32)  # chain 1 then chain 2
    np.testing.assert_allclose(log_weights, r_log_weights, atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        [result.elpd, result.se, result.p], estimates[[0, 0, 1], [0, 1, 0]], atol=ATOL, rtol=0
    )
    assert result.mcse_elpd == pytest.approx(np.sqrt(np.sum(pointwise[:, 1] ** 2)), abs=ATOL)
    assert result.good_k == pytest.approx(1 - 1 / np.log10(1000))
    assert result.n_samples == 1000 and result.n_data_points == 32
    # No warning was raised either: pytest turns warnings into errors.
    assert result.scale == "log" and result.warning is False and not result.approx_posterior
    assert "Monte Carlo SE of elpd_loo" in str(result)


def test_mcse_without_r_eff_matches_r(r_reference):
    reference, log_lik, _ = r_reference
    with jax.enable_x64(True):
        result = psis_loo(log_lik, r_eff=1.0)
    r_mcse = reference["mcse_loo(loo(LLarr)) [print_plot test, loo1 WITHOUT r_eff]"][0]
    assert result.mcse_elpd == pytest.approx(r_mcse, abs=ATOL)
    np.testing.assert_array_equal(result.r_eff, 1.0)


def test_relative_eff_matches_r(r_reference):
    reference, log_lik, _ = r_reference
    expected = reference["relative_eff(exp(LLarr))"]
    matrix = log_lik.reshape(1000, 32)
    with jax.enable_x64(True):
        np.testing.assert_allclose(relative_eff(log_lik), expected, atol=ATOL, rtol=0)
        # R's matrix method: rows labelled by chain (any labels, any order of chains).
        by_label = relative_eff(matrix, chain_id=np.repeat([2, 1], 500))
        np.testing.assert_allclose(by_label, expected, atol=ATOL, rtol=0)
        likelihood = relative_eff(np.exp(matrix), np.repeat(["a", "b"], 500), log=False)
        np.testing.assert_allclose(likelihood, expected, atol=ATOL, rtol=0)
        # One chain without chain_id; a constant observation gives NaN, as R.
        single = relative_eff(np.concatenate([matrix[:, :2], np.zeros((1000, 1))], axis=1))
    assert np.all(np.isfinite(single[:2])) and np.isnan(single[2])


def test_float32_matches_r_loosely(r_reference):
    # float32 has eps ~ 1.2e-7; the smoothed tail uses exp(lw) - exp(cutoff) on weights
    # in (0, 1], so Pareto k and log weights carry ~1e-6 absolute error (3e-6 observed
    # for k, 1.4e-6 for the log weights, 5e-7 for elpd_i); 1e-4 leaves a margin.
    reference, log_lik, r_log_weights = r_reference
    r_loo = reference[R_LOO]
    pointwise = np.asarray(r_loo["pointwise"]["values"])
    with jax.enable_x64(False):
        result = psis_loo(log_lik.astype(np.float32))
    assert result.elpd_i.dtype == np.float32
    np.testing.assert_allclose(result.elpd_i, pointwise[:, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.mcse_elpd_i, pointwise[:, 1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.pareto_k, r_loo["diagnostics"]["pareto_k"], atol=1e-4)
    np.testing.assert_allclose(
        result.log_weights.values.reshape(1000, 32), r_log_weights, atol=1e-4, rtol=0
    )
    assert result.elpd == pytest.approx(r_loo["estimates"]["values"][0][0], abs=1e-3)


# --------------------------------------------------------------------------- arviz-stats


def test_agrees_with_arviz_loo(r_reference):
    # arviz takes floor(3 sqrt(S / r_eff)) tail draws where R takes the ceiling; with
    # S / r_eff = 1024 both use 96, and then everything agrees to rounding.
    _, log_lik, _ = r_reference
    r_eff = 1000 / 1024
    expected = arviz_loo(_arviz_tree(log_lik), pointwise=True, reff=r_eff)
    with jax.enable_x64(True):
        result = psis_loo(log_lik, r_eff=r_eff)
    for name in ("elpd", "se", "p", "good_k"):
        assert getattr(result, name) == pytest.approx(getattr(expected, name), abs=ATOL)
    np.testing.assert_allclose(result.elpd_i, expected.elpd_i, atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.pareto_k, expected.pareto_k, atol=ATOL, rtol=0)
    expected_weights = expected.log_weights.transpose("chain", "draw", ...).values
    np.testing.assert_allclose(result.log_weights, expected_weights, atol=ATOL, rtol=0)
    assert result.warning == expected.warning


def test_high_pareto_k_warns_like_arviz():
    rng = np.random.default_rng(3)
    theta = rng.standard_t(3, size=(2, 450, 1))
    y = np.concatenate([rng.normal(size=20), [8.0, -12.0]])
    log_lik = -0.5 * np.log(2 * np.pi) - 0.5 * (y - theta) ** 2
    r_eff = 900 / 1024  # 3 sqrt(S / r_eff) = 96 for both conventions
    with pytest.warns(UserWarning, match="greater than"):
        expected = arviz_loo(_arviz_tree(log_lik), pointwise=True, reff=r_eff)
    high = r"greater than 0\.66 for \d+ of 22 observations"
    with jax.enable_x64(True), pytest.warns(ParetoKWarning, match=high):
        result = psis_loo(log_lik, r_eff=r_eff)
    assert result.warning and expected.warning
    np.testing.assert_allclose(result.pareto_k, expected.pareto_k, rtol=1e-9)
    np.testing.assert_allclose(result.elpd_i, expected.elpd_i, atol=ATOL, rtol=0)


def test_approximate_posterior_wells_agrees_with_arviz(wells_laplace):
    # No R output for these draws is stored, so arviz-stats is the reference (on the
    # first 320 observations, to keep the test fast). With the first 1600 draws,
    # 3 sqrt(S) = 120 tail draws under both tail-length conventions: exact agreement.
    log_lik, log_p, log_g = wells_laplace
    draws, obs = slice(0, 1600), slice(0, 320)
    arrays = (log_lik[draws, obs], log_p[draws], log_g[draws])
    expected = arviz_loo_approximate_posterior(
        _arviz_tree(arrays[0][None]), arrays[1][None], arrays[2][None], pointwise=True
    )
    with jax.enable_x64(True):
        result = approximate_posterior_loo(*arrays)
        full = approximate_posterior_loo(log_lik, log_p, log_g)
    assert result.approx_posterior and expected.approx_posterior
    for name in ("elpd", "se", "p", "good_k"):
        assert getattr(result, name) == pytest.approx(getattr(expected, name), abs=ATOL)
    np.testing.assert_allclose(result.elpd_i, expected.elpd_i, atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.pareto_k, expected.pareto_k, atol=1e-8, rtol=0)
    np.testing.assert_array_equal(result.r_eff, 1.0)
    # All 2000 draws, 3020 observations: pinned totals. arviz-stats gives -1968.41401
    # (SE 15.58266): its 134 tail draws against R's 135 move elpd_i by at most 2.3e-5.
    assert full.elpd == pytest.approx(-1968.41400, abs=1e-4)
    assert full.se == pytest.approx(15.58266, abs=1e-4)
    assert full.n_samples == 2000 and full.n_data_points == 3020 and not full.warning


def test_approximate_posterior_is_plain_psis_when_q_is_p(r_reference):
    _, log_lik, _ = r_reference
    constant = np.full(log_lik.shape[:2], 3.0)
    with jax.enable_x64(True):
        approx = approximate_posterior_loo(log_lik, constant, constant)
        plain = psis_loo(log_lik, r_eff=1.0)
    np.testing.assert_allclose(approx.elpd_i, plain.elpd_i, atol=ATOL, rtol=0)
    np.testing.assert_allclose(approx.log_weights, plain.log_weights, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- inputs


def test_chunks_and_input_types_agree(r_reference):
    _, log_lik, _ = r_reference
    coords = {"car": [f"car{i}" for i in range(32)]}
    data_array = xr.DataArray(log_lik, dims=("chain", "draw", "car"), coords=coords)
    with jax.enable_x64(True):
        whole = psis_loo(log_lik, r_eff=1.0)
        for chunk_size in (5, 32):  # 5 does not divide 32: the last block is shifted
            chunked = psis_loo(jnp.asarray(log_lik), r_eff=1.0, chunk_size=chunk_size)
            np.testing.assert_allclose(chunked.log_weights, whole.log_weights, atol=1e-13)
            np.testing.assert_allclose(chunked.elpd_i, whole.elpd_i, atol=1e-13)
        labelled = psis_loo(data_array, r_eff=1.0, chunk_size=5, return_log_weights=False)
        flat = psis_loo(log_lik.reshape(1000, 32))  # (draw, obs): one chain, r_eff = 1
    assert labelled.elpd_i.dims == ("car",) and list(labelled.elpd_i.car.values) == coords["car"]
    assert labelled.pareto_k.dims == ("car",) and labelled.log_weights is None
    np.testing.assert_allclose(labelled.elpd_i, whole.elpd_i, atol=1e-13)
    assert flat.log_weights.dims == ("chain", "draw", "obs_dim")
    assert flat.log_weights.shape == (1, 1000, 32)
    np.testing.assert_allclose(flat.elpd_i, whole.elpd_i, atol=1e-13)


def test_relative_eff_does_not_depend_on_the_chunk_size(r_reference):
    # chunk_size=-1 once ran no block and returned r_eff about 100x too small; every
    # positive chunk size must give the same values (the same kernel per column).
    _, log_lik, _ = r_reference
    with jax.enable_x64(True):
        whole = relative_eff(log_lik)
        for chunk_size in (1, 5, 32, 1000):
            np.testing.assert_allclose(relative_eff(log_lik, chunk_size=chunk_size), whole, 1e-13)
    for chunk_size in (-1, 0):
        with pytest.raises(ValueError, match=f"chunk_size must be at least 1, got {chunk_size}"):
            relative_eff(log_lik, chunk_size=chunk_size)


@pytest.mark.filterwarnings("ignore::numpyro_mpe.crossval.psis.ParetoKWarning")
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_computed_in_float32(r_reference, dtype):
    # float16 once failed in relative_eff's FFT and bfloat16 was refused as "not
    # real-valued": both are computed in float32 on the rounded values, so they agree
    # exactly with a float32 input holding the same values (same kernel, same inputs).
    _, log_lik, _ = r_reference
    half = jnp.asarray(log_lik, dtype)
    expected = psis_loo(half.astype(jnp.float32))
    for given in (half, np.asarray(half)):
        result = psis_loo(given)
        assert result.elpd_i.dtype == np.float32
        np.testing.assert_array_equal(result.elpd_i, expected.elpd_i)
        np.testing.assert_array_equal(result.r_eff, expected.r_eff)


@pytest.mark.filterwarnings("ignore::numpyro_mpe.crossval.psis.ParetoKWarning")
def test_approximate_posterior_reads_densities_by_dimension_name(r_reference):
    # A (draw, chain) log_p was once read as (chain, draw) when its size matched; a
    # DataArray is now read by its dims, a plain array refused (see test_bad_inputs).
    _, log_lik, _ = r_reference
    rng = np.random.default_rng(4)
    log_p = rng.normal(size=log_lik.shape[:2])
    log_q = rng.normal(size=log_lik.shape[:2])
    named = [xr.DataArray(value.T, dims=("draw", "chain")) for value in (log_p, log_q)]
    with jax.enable_x64(True):
        expected = approximate_posterior_loo(log_lik, log_p, log_q)
        result = approximate_posterior_loo(log_lik, *named)
        flat = approximate_posterior_loo(log_lik, log_p.reshape(-1), log_q.reshape(-1))
    np.testing.assert_array_equal(result.elpd_i, expected.elpd_i)
    np.testing.assert_array_equal(flat.elpd_i, expected.elpd_i)
    with pytest.raises(ValueError, match=r"got shape \(500, 2\)\. That is \(draw, chain\)"):
        approximate_posterior_loo(log_lik, log_p.T, log_q.T)


def test_selection_matches_stable_sort():
    # Repeated MCMC draws give ties; a long run of ties at the threshold forces the
    # adjacent-floats branch. Order must match R's stable ascending sort, reversed.
    rng = np.random.default_rng(0)
    values = rng.normal(size=(400, 6))
    values[0:399:3, 1] = values[1:400:3, 1]  # many pairs of ties
    values[:, 2] = np.round(values[:, 2], 1)  # a few distinct values, heavily tied
    values[:300, 3] = 0.25  # 300 ties straddling the top 33
    values[:, 4] = 1.0  # constant
    with jax.enable_x64(True):
        top, index = top_sorted(jnp.asarray(values), 33, 60)
    for column in range(values.shape[1]):
        order = np.argsort(values[:, column], kind="stable")[::-1][:33]
        np.testing.assert_array_equal(index[:, column], order)
        np.testing.assert_array_equal(top[:, column], values[order, column])


def test_constant_observation_is_exact_not_nan(r_reference):
    _, log_lik, _ = r_reference
    log_lik = log_lik.copy()
    log_lik[:, :, 3] = -1.25
    with jax.enable_x64(True), pytest.warns(ParetoKWarning, match="could not be estimated"):
        result = psis_loo(log_lik)
    assert np.isinf(result.pareto_k.values[3]) and result.warning
    assert result.elpd_i.values[3] == pytest.approx(-1.25, abs=1e-12)
    assert result.mcse_elpd_i.values[3] == 0.0 and result.r_eff.values[3] == 1.0
    for name in ("elpd_i", "p_loo_i", "mcse_elpd_i", "n_eff_i", "log_weights"):
        assert np.all(np.isfinite(getattr(result, name).values)), name


@pytest.mark.parametrize(
    ("log_lik", "match"),
    [
        (np.zeros(10), r"\(chain, draw, obs\) or \(draw, obs\); got ndim=1"),
        (np.zeros((2, 3, 4, 5)), "got ndim=4"),
        (np.zeros((1, 4)), "at least 2 draws"),
    ],
)
def test_bad_shapes_raise(log_lik, match):
    with pytest.raises(ValueError, match=match):
        psis_loo(log_lik)


def test_non_finite_values_name_the_first_index():
    log_lik = np.zeros((2, 50, 9))
    log_lik[1, 3, 7] = np.nan
    log_lik[1, 40, 2] = -np.inf
    with pytest.raises(
        ValueError, match=r"2 non-finite value\(s\); the first is nan at index \(1, 3, 7\)"
    ):
        psis_loo(log_lik)
    with pytest.raises(ValueError, match=r"first is nan at index \(1, 3, 7\)"):
        psis_loo(jnp.asarray(log_lik, jnp.float32))
    with pytest.raises(ValueError, match=r"log_p has 1 non-finite"):
        approximate_posterior_loo(np.zeros((10, 3)), np.r_[np.nan, np.zeros(9)], np.zeros(10))


def test_bad_r_eff_and_densities_raise():
    log_lik = np.zeros((2, 50, 4))
    with pytest.raises(ValueError, match="one value per observation"):
        psis_loo(log_lik, r_eff=np.ones(3))
    with pytest.raises(ValueError, match=r"r_eff\[1\] = -1"):
        psis_loo(log_lik, r_eff=np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="log_q must have one value per draw"):
        approximate_posterior_loo(log_lik, np.zeros(100), np.zeros(99))
    with pytest.raises(ValueError, match="same number of draws"):
        relative_eff(np.zeros((9, 2)), chain_id=[1] * 5 + [2] * 4)
    with pytest.raises(ValueError, match="only for a \\(draw, obs\\) input"):
        relative_eff(log_lik, chain_id=[1] * 50)


def test_non_finite_values_are_named_by_dimension():
    log_lik = np.zeros((2, 50, 9))
    log_lik[0, 7, 4] = np.inf
    with pytest.raises(ValueError, match=r"first is inf at index \(0, 7, 4\) \(chain 0, draw 7, "):
        psis_loo(log_lik)
    with pytest.raises(ValueError, match=r"first is -inf at index \(7, 4\) \(draw 7, obs_dim 4\)"):
        relative_eff(-log_lik[0])


# --------------------------------------------------------------------------- overflow


def _refuse_work(*_args, **_kwargs):
    raise AssertionError("the blocks were streamed: the input was not refused before work")


def test_values_overflowing_float32_are_refused_before_work(monkeypatch):
    # Was: numpy's "overflow encountered in cast" (float64 -> float32 gives inf), then
    # a search loop in top_sorted that never ended. The streaming is stubbed out, so
    # a regression fails here instead of hanging.
    monkeypatch.setattr("numpyro_mpe.crossval.psis.stream_blocks", _refuse_work)
    log_lik = np.random.default_rng(0).normal(size=(4, 100, 10)) * 1e300
    expected = (
        r"log_lik has 4000 value\(s\) too large in magnitude for PSIS-LOO in float32; the "
        r"first is 1\.2573e\+299 at index \(0, 0, 0\) \(chain 0, draw 0, obs_dim 0\)\. "
        r"\|log_lik\| must be at most 4\.25e\+37"
    )
    with pytest.raises(ValueError, match=expected):
        psis_loo(log_lik)
    with pytest.raises(ValueError, match="too large in magnitude for PSIS-LOO in float32"):
        relative_eff(log_lik)
    with pytest.raises(ValueError, match=r"the first is -4e\+38 at index \(3, 1\)"):
        psis_loo(np.r_[np.zeros((3, 2)), [[0.0, -4e38]]])  # beyond float32's largest
    with jax.enable_x64(True), pytest.raises(ValueError, match=r"in float64; the first is"):
        # 1e307 fits float64, but its differences and the sum over 10 observations do not.
        psis_loo(np.random.default_rng(0).normal(size=(4, 100, 10)) * 1e307)


def test_approximate_posterior_correction_overflow_is_refused(monkeypatch):
    monkeypatch.setattr("numpyro_mpe.crossval.psis.stream_blocks", _refuse_work)
    log_lik = np.zeros((20, 3))
    log_p = np.zeros(20)
    log_q = np.zeros(20)
    log_q[6] = 1e38  # log_p - log_q at draw 6 lies 1e38 below the maximum
    expected = r"log_p - log_q spans too wide a range for PSIS-LOO in float32: at index \(6,\)"
    with pytest.raises(ValueError, match=expected):
        approximate_posterior_loo(log_lik, log_p, log_q)
    log_q[6] = 0.0
    log_p[2], log_q[2] = 1e308, -1e308  # log_p - log_q overflows float64 at draw 2
    with pytest.raises(
        ValueError, match=r"log_p - log_q has 1 non-finite value\(s\); the first is inf"
    ):
        approximate_posterior_loo(log_lik, log_p, log_q)


TOP_SORTED_CHILD = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from numpyro_mpe.crossval.psis_kernels import top_sorted
rng = np.random.default_rng(0)
bad = rng.normal(size=(200, 4))
bad[5, 0], bad[6, 1], bad[7, 2] = np.inf, -np.inf, np.nan
bad[:, 3] = np.inf
top, index = top_sorted(jnp.asarray(bad), 9, 20)
print("terminated", top.shape)
# -inf is a zero weight (MPE-IS can meet one): selected exactly, as R's stable sort.
values = rng.normal(size=(400, 3))
values[rng.random((400, 3)) < 0.3] = -np.inf
values[10:, 1] = -np.inf  # fewer finite values (10) than selected (33)
top, index = top_sorted(jnp.asarray(values), 33, 60)
for column in range(3):
    order = np.argsort(values[:, column], kind="stable")[::-1][:33]
    assert np.array_equal(np.asarray(index[:, column]), order), column
    assert np.array_equal(np.asarray(top[:, column]), values[order, column]), column
print("exact")
"""


def test_top_sorted_terminates_on_non_finite_values_and_selects_around_minus_inf():
    # The search's stopping test was "lo >= hi" (never true once a bound is NaN, as an
    # inf makes it) with no cap on its steps, and its window started at the minimum, so
    # one -inf (a zero weight) hung it too. Run in a child process so a regression times
    # out instead of hanging the suite; public entry points refuse NaN and inf.
    done = subprocess.run(
        [sys.executable, "-c", TOP_SORTED_CHILD],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["terminated", "(9,", "4)", "exact"]


def test_huge_log_likelihoods_in_float64_give_finite_totals(x64):
    # Was se = inf: np.var squared deviations of ~1e201 (beyond float64).
    rng = np.random.default_rng(0)
    log_lik = rng.normal(size=(4, 100, 10)) * 1e200
    with pytest.warns(ParetoKWarning):
        result = psis_loo(log_lik)
    elpd_i = result.elpd_i.values
    scaled = np.sqrt(10 * np.var(elpd_i / 1e200, ddof=1)) * 1e200
    assert np.isfinite(result.se) and result.se == pytest.approx(scaled, rel=1e-12)
    for name in ("elpd", "p", "mcse_elpd"):
        assert np.isfinite(getattr(result, name)), name


def test_log_likelihoods_whose_exponentials_overflow_shift_exactly(x64):
    # exp(800) overflows float64; every quantity is computed from shifted logs, so
    # elpd_i moves by the shift and p, se, mcse, r_eff and k do not move.
    rng = np.random.default_rng(0)
    theta = 0.3 * rng.normal(size=(4, 250, 1))
    log_lik = -0.5 * (rng.normal(size=30) - theta) ** 2
    base = psis_loo(log_lik)
    for shift in (800.0, -800.0):
        shifted = psis_loo(log_lik + shift)
        np.testing.assert_allclose(shifted.elpd_i - shift, base.elpd_i, atol=1e-9, rtol=0)
        for name in ("p", "se", "mcse_elpd"):
            assert getattr(shifted, name) == pytest.approx(getattr(base, name), abs=1e-9)
        np.testing.assert_allclose(shifted.r_eff, base.r_eff, rtol=1e-9)
        np.testing.assert_allclose(shifted.pareto_k, base.pareto_k, atol=1e-9)


# --------------------------------------------------------------------------- DataArray


def test_data_array_is_read_by_dimension_names(r_reference):
    _, log_lik, _ = r_reference
    coords = {"car": [f"car{i}" for i in range(32)], "chain": [7, 8]}
    standard = xr.DataArray(log_lik, dims=("chain", "draw", "car"), coords=coords)
    with jax.enable_x64(True):
        expected = psis_loo(standard)
        reordered = psis_loo(standard.transpose("car", "draw", "chain"))
        # (obs, draw) with no chain dim: one chain, as psis_loo(numpy (draw, obs)).
        one_chain = xr.DataArray(log_lik[0].T, dims=("obs", "draw"))
        single = psis_loo(one_chain)
        flat = psis_loo(log_lik[0])
    np.testing.assert_allclose(reordered.elpd_i, expected.elpd_i, atol=1e-13)
    assert reordered.log_weights.dims == ("chain", "draw", "car")
    assert list(reordered.log_weights.chain.values) == [7, 8]
    assert single.elpd_i.dims == ("obs",) and single.elpd_i.shape == (32,)
    assert single.log_weights.shape == (1, 500, 32)
    np.testing.assert_allclose(single.elpd_i, flat.elpd_i, atol=1e-13)


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        (("sample", "obs"), r"got dims \('sample', 'obs'\), with no 'draw'"),
        (("chain", "obs"), r"with no 'draw'"),
        (("chain", "draw"), r"observation dimensions none"),
        (("draw", "school", "arm"), r"observation dimensions 2: .*stack them into one"),
    ],
)
def test_data_array_with_unexpected_dims_names_the_expected_ones(dims, match):
    data = xr.DataArray(np.zeros((4,) * len(dims)), dims=dims)
    with pytest.raises(ValueError, match=r"sample dimension 'draw' \(and optionally 'chain'"):
        psis_loo(data)
    with pytest.raises(ValueError, match=match):
        relative_eff(data)
