"""Leave-one-group-out: exact on radon with fixed variances, measured against refits
otherwise (radon with latent scales; leave-one-class-out on a softmax regression, where
the groups far from one MPE step are corrected by Newton steps)."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import laplace_fit, linear_model
from models import NUM_COUNTIES, mom_work_design, mom_work_softmax, radon_latent_scales
from models import radon as load_radon

import numpyro_mpe as mpe
from numpyro_mpe.core.model import split_arguments, trace_model
from numpyro_mpe.crossval.groups import group_codes, group_loo_core
from numpyro_mpe.crossval.newton_correction import (
    CORRECTION_TOL,
    MAX_NEWTON_STEPS,
    group_decrement_message,
)

SIGMA_Y, SIGMA_ALPHA = 0.73, 0.33


@pytest.fixture(scope="module")
def radon():
    """County codes (0-based), floor and log radon (posteriordb radon_mn, N = 919)."""
    return load_radon()


def radon_fixed_scales(county, floor, y=None):
    """County intercepts around ``mu``, known scales: Gaussian-linear."""
    mu = numpyro.sample("mu", dist.Normal(0, 10))
    beta = numpyro.sample("beta", dist.Normal(0, 10))
    with numpyro.plate("counties", NUM_COUNTIES):
        alpha = numpyro.sample("alpha", dist.Normal(mu, SIGMA_ALPHA))
    with numpyro.plate("data", county.shape[0]):
        numpyro.sample("y", dist.Normal(alpha[county] + beta * floor, SIGMA_Y), obs=y)


def closed_form_posterior(county, floor, y, keep):
    """Exact posterior ``(mean, covariance)`` of ``(mu, beta, alpha)`` from ``y[keep]``,
    and the design matrix."""
    size = 2 + NUM_COUNTIES
    prior = np.zeros((size, size))
    prior[0, 0] = prior[1, 1] = 1 / 100
    for j in range(NUM_COUNTIES):
        # -(alpha_j - mu)^2 / (2 sigma_alpha^2)
        prior[np.ix_([0, 2 + j], [0, 2 + j])] += np.array([[1, -1], [-1, 1]]) / SIGMA_ALPHA**2
    X = np.zeros((len(y), size))
    X[:, 1] = floor
    X[np.arange(len(y)), 2 + county] = 1
    covariance = np.linalg.inv(prior + X[keep].T @ X[keep] / SIGMA_Y**2)
    return covariance @ (X[keep].T @ y[keep] / SIGMA_Y**2), covariance, X


def gaussian_log_density(y, mean, covariance):
    _, log_det = np.linalg.slogdet(covariance)
    residual = y - mean
    quad = residual @ np.linalg.solve(covariance, residual)
    return -0.5 * (len(y) * np.log(2 * np.pi) + log_det + quad)


@pytest.fixture(scope="module")
def radon_fixed_fit(radon):
    with jax.enable_x64(True):
        yield laplace_fit(radon_fixed_scales, *radon, num_steps=20)


@pytest.mark.parametrize("method", ["cavity", "is"])
def test_leave_one_county_out_equals_closed_form(radon, radon_fixed_fit, x64, method):
    county, floor, y = radon
    guide, fit = radon_fixed_fit
    # Some counties carry most of the information about their intercept: reliability
    # above 0.7 is warned about even though the division is exact here.
    with pytest.warns(mpe.ReliabilityWarning, match="groups have a reliability value"):
        result = mpe.loo(
            radon_fixed_scales, guide, fit.params, county, floor, y, groups=county, method=method
        )
    expected, expected_examples = [], np.zeros(len(y))
    for j in range(NUM_COUNTIES):
        in_county = county == j
        mean, covariance, X = closed_form_posterior(county, floor, y, ~in_county)
        design = X[in_county]
        predictive = design @ covariance @ design.T + SIGMA_Y**2 * np.eye(in_county.sum())
        expected.append(gaussian_log_density(y[in_county], design @ mean, predictive))
        variance = np.diag(predictive)
        residual = y[in_county] - design @ mean
        expected_examples[in_county] = -0.5 * (
            np.log(2 * np.pi * variance) + residual**2 / variance
        )
    # Measured 2026-11-28: 6.9e-14 relative.
    np.testing.assert_allclose(result.elpd_i.values, expected, rtol=1e-8)
    np.testing.assert_allclose(result.example_elpd.values, expected_examples, rtol=1e-8)
    assert list(result.elpd_i.coords["group"].values) == list(range(NUM_COUNTIES))
    np.testing.assert_array_equal(result.group_of_example.values, county)
    assert float(result.group_newton_decrement.max()) < 1e-8
    if method == "is":
        # Quadratic group terms: every importance ratio is equal, nothing to smooth.
        assert np.all(np.isneginf(result.importance_pareto_k.values))


def test_perturb_removes_a_whole_county_exactly(radon, radon_fixed_fit, x64):
    county, floor, y = radon
    guide, fit = radon_fixed_fit
    removed = [3, 40]
    params = mpe.perturb(
        radon_fixed_scales, guide, fit.params, removed, county, floor, y, groups=county
    )
    mean, precision = guide.mean_precision(params)
    expected_mean, expected_covariance, _ = closed_form_posterior(
        county, floor, y, ~np.isin(county, removed)
    )
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.linalg.inv(precision), expected_covariance, rtol=1e-8)


def test_exact_group_refits_equal_closed_form(radon, radon_fixed_fit, x64):
    county, floor, y = radon
    guide, fit = radon_fixed_fit
    refits = mpe.exact_loo(
        radon_fixed_scales, guide, fit.params, county, floor, y, groups=county, num_samples=64
    )
    in_county = county == 7
    mean, covariance, X = closed_form_posterior(county, floor, y, ~in_county)
    design = X[in_county]
    predictive = design @ covariance @ design.T + SIGMA_Y**2 * np.eye(in_county.sum())
    expected = gaussian_log_density(y[in_county], design @ mean, predictive)
    np.testing.assert_allclose(refits.elpd_i.sel(group=7).values, expected, rtol=1e-8)


@pytest.mark.slow
def test_leave_one_county_out_with_latent_scales_against_refits(radon, x64):
    """Against the 85 county refits of ``benchmarks/group_references.py``
    (``exact_loo(..., groups=county)``, 16000 draws each; 4 counties' tilted samplers
    have Pareto k above 0.7: their values moved by up to 0.049 between 2000 and 16000
    draws)."""
    county, floor, y = radon
    guide, fit = laplace_fit(radon_latent_scales, county, floor, y, num_steps=50)
    refits = county_refit_reference()
    results = {}
    for method in ("cavity", "is"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[method] = mpe.loo(
                radon_latent_scales, guide, fit.params, *radon, groups=county, method=method
            )
        # Poor reliability for some counties; with "is" the correction's Pareto k exceeds
        # 0.67 for some too.
        expected = {mpe.ReliabilityWarning} | ({mpe.ParetoKWarning} if method == "is" else set())
        assert {w.category for w in caught} == expected
    # Measured 2026-12-02 against the 16000-draw reference: total error 1.74 (cavity) and
    # 0.26 (is); max per county 0.038 and 0.045; per-example densities 7.1e-4; Newton
    # decrements <= 3.3e-4 (no county is corrected).
    for method, total, pointwise in (("cavity", 3.0, 0.12), ("is", 0.6, 0.1)):
        error = results[method].elpd_i.values - refits["elpd"]
        print(f"{method}: total {abs(error.sum()):.3g}, max {np.abs(error).max():.3g}")
        assert abs(error.sum()) < total
        assert np.abs(error).max() < pointwise
    examples = county_refit_reference("examples")
    np.testing.assert_array_equal(results["cavity"].group_of_example.values, examples["county"])
    example_error = results["cavity"].example_elpd.values - examples["example_elpd"]
    print("example densities: max", np.abs(example_error).max())
    assert np.abs(example_error).max() < 2e-3
    assert float(results["cavity"].group_newton_decrement.max()) < 1e-3
    assert np.all(results["cavity"].group_newton_steps.values == 0)


def county_refit_reference(kind: str = "refits") -> np.ndarray:
    """``tests/references/loo_radon_counties_{refits,examples}.csv`` as a structured array
    (columns ``county, elpd``, or ``index, county, example_elpd``)."""
    path = Path(__file__).resolve().parents[1] / "references" / f"loo_radon_counties_{kind}.csv"
    table = np.genfromtxt(path, delimiter=",", names=True)
    expected = NUM_COUNTIES if kind == "refits" else 919
    assert table.size == expected and np.isfinite(table.view((float, len(table.dtype)))).all()
    if kind == "refits":
        np.testing.assert_array_equal(table["county"], np.arange(NUM_COUNTIES))
    return table


def group_core(model, guide, params, args, groups, method="cavity", **options):
    """:func:`group_loo_core` on the inputs ``mpe.loo(..., groups=groups)`` gives it (the
    same compilation), for the fields the ELPD result does not carry."""
    plate_model = trace_model(model, *args)
    arrays, static = split_arguments(args, {})
    labels, codes = group_codes(groups, plate_model.num_examples)
    mean, precision = guide.mean_precision(params)
    names = None if plate_model.predictor is None else plate_model.predictor.names
    return group_loo_core(
        mean,
        precision,
        jnp.asarray(codes),
        arrays,
        0,
        model=model,
        static=static,
        plate=None,
        names=names,
        method=method,
        num_groups=len(labels),
        num_samples=1000,
        **options,
    )


@pytest.fixture(scope="module")
def mom_work_classes():
    """Leave-one-class-out on a 4-class softmax regression of mom_work: ``(X, y, guide,
    fit, refits)``, the refits by ``exact_loo`` with 4000 importance draws per class."""
    with jax.enable_x64(True):
        X, y = mom_work_design()
        guide, fit = laplace_fit(mom_work_softmax, X, y, num_steps=30)
        refits = mpe.exact_loo(
            mom_work_softmax, guide, fit.params, X, y, groups=y, num_samples=4000
        )
        yield X, y, guide, fit, refits


@pytest.mark.slow
def test_leave_one_class_out_is_corrected_to_refits(mom_work_classes, x64):
    """Removing a whole class moves the softmax posterior by 2-3 sd, beyond one MPE step
    (Newton decrements 15-27); Newton steps to the leave-class-out mode and Laplace's
    method at the tilted mode bring each class to within 0.04 nats of the refits."""
    X, y, guide, fit, refits = mom_work_classes
    with pytest.warns(mpe.ReliabilityWarning, match="Newton decrement above 0.1"):
        result = mpe.loo(mom_work_softmax, guide, fit.params, X, y, groups=y)
    # Measured 2026-12-02 (refits -72.958, -74.368, -64.922, -78.262): one MPE step gave
    # -163.7, -191.7, -137.2, -254.0 (class log loss 2.70, 2.58, 2.97, 2.17 vs refits
    # 4.31, 4.70, 4.74, 4.41); corrected -72.990, -74.408, -64.957, -78.289 (errors
    # 0.027-0.040); class log loss within 2.1e-5 and per-example densities within 3.5e-5
    # of the refits'.
    error = result.elpd_i.values - refits.elpd_i.values
    print("corrected - refits", error)
    assert np.abs(error).max() < 0.1
    np.testing.assert_allclose(
        result.group_log_loss.values, refits.group_log_loss.values, atol=1e-3
    )
    np.testing.assert_allclose(result.example_elpd.values, refits.example_elpd.values, atol=1e-3)
    # The one-step decrement keeps its meaning; the steps and final decrements are new.
    core = group_core(mom_work_softmax, guide, fit.params, (X, y), y)
    np.testing.assert_allclose(core.elpd, result.elpd_i.values, rtol=1e-12)
    assert np.all(np.asarray(core.newton_decrement) > 10)
    np.testing.assert_allclose(core.newton_decrement, result.group_newton_decrement.values)
    np.testing.assert_array_equal(result.group_newton_steps.values, core.newton_steps)
    np.testing.assert_allclose(result.group_corrected_decrement.values, core.corrected_decrement)
    # Each value is the corrected one, and its diagnostic the final decrement; converged
    # groups no longer count as poor whatever the one-step cavity's reliability.
    assert list(result.estimator.values) == ["group-newton"] * 4
    np.testing.assert_allclose(result.estimator_diagnostic.values, core.corrected_decrement)
    assert not result.warning
    # Measured: 5, 6, 5, 6 steps; final decrements 2.2e-9, 1.1e-15, 2.6e-9, 2.7e-15.
    assert np.all((core.newton_steps >= 3) & (core.newton_steps <= MAX_NEWTON_STEPS))
    assert np.all(np.asarray(core.corrected_decrement) < CORRECTION_TOL)
    message = group_decrement_message(
        core.newton_decrement, core.newton_steps, core.corrected_decrement
    )
    assert "4 of 4 groups have a Newton decrement above 0.1" in message
    assert "4 were corrected by" in message and "refit" not in message


@pytest.mark.slow
def test_leave_one_class_out_importance_sampled_from_the_corrected_gaussian(mom_work_classes, x64):
    """``method="is"`` samples from the tilted Gaussian of the corrected posterior: the
    refits' estimator up to the expansion point, so within Monte Carlo error of them."""
    X, y, guide, fit, refits = mom_work_classes
    with pytest.warns(mpe.ReliabilityWarning, match="Newton decrement above 0.1"):
        result = mpe.loo(mom_work_softmax, guide, fit.params, X, y, groups=y, method="is")
    # Measured 2026-12-02: errors 0.0010, 0.0054, 0.0006, 0.0045 (1000 draws against
    # 4000); Pareto k 0.56, 0.25, 0.19, 0.23.
    error = result.elpd_i.values - refits.elpd_i.values
    print("is - refits", error, result.importance_pareto_k.values)
    assert np.abs(error).max() < 0.02
    assert np.all(result.importance_pareto_k.values < 0.7)
    assert list(result.estimator.values) == ["group-is"] * 4


def test_groups_with_a_small_decrement_are_not_corrected(kidiq_fit):
    """Gaussian-linear terms: one MPE step is exact for any group, even half the data, so
    no group takes a Newton step and the values stay those of the exact division."""
    X, y, guide, result = kidiq_fit
    halves = np.arange(len(y)) % 2
    core = group_core(linear_model, guide, result.params, (X, y), halves)
    assert np.all(np.asarray(core.newton_steps) == 0)
    assert float(np.max(core.newton_decrement)) < 1e-8
    np.testing.assert_array_equal(core.corrected_decrement, core.newton_decrement)
    sigma, prior_scale = 18.0, 10.0  # linear_model's defaults
    expected = []
    for half in (0, 1):
        kept, left = X[halves != half], X[halves == half]
        covariance = np.linalg.inv(np.eye(3) / prior_scale**2 + kept.T @ kept / sigma**2)
        mean = covariance @ kept.T @ y[halves != half] / sigma**2
        predictive = left @ covariance @ left.T + sigma**2 * np.eye(len(left))
        expected.append(gaussian_log_density(y[halves == half], left @ mean, predictive))
    np.testing.assert_allclose(core.elpd, expected, rtol=1e-10)
    message = group_decrement_message(
        core.newton_decrement, core.newton_steps, core.corrected_decrement
    )
    assert message is None


def test_group_decrement_message_names_what_was_not_corrected():
    decrement = np.array([0.01, 20.0, 30.0, np.nan])
    message = group_decrement_message(decrement, [0, 6, 10, 0], [0.01, 1e-12, 0.3, np.nan])
    assert message.startswith("3 of 4 groups have a Newton decrement above 0.1 (max 30)")
    assert "2 were corrected by 6-10 Newton steps" in message
    assert "; for 2 the decrement is still above 1e-08 (max 0.3; float32" in message
    assert message.endswith("(use float64, or refit them: exact_loo(..., groups=...))")
    uncorrected = group_decrement_message([np.nan, 5.0], [0, 0], [np.nan, 5.0])
    assert uncorrected == (
        "2 of 2 groups have a Newton decrement above 0.1 (max 5): removing them moves the "
        "posterior beyond what one MPE step captures; their leave-group-out values are "
        "unreliable (refit them: exact_loo(..., groups=...))"
    )
    assert "(max nan)" in group_decrement_message([np.nan], [0], [np.nan])


def test_group_errors_name_the_problem(kidiq_fit):
    X, y, guide, result = kidiq_fit

    with pytest.raises(ValueError, match=r"one label per example, shape \(434,\); got shape"):
        mpe.loo(linear_model, guide, result.params, X, y, groups=np.zeros(3))
    with pytest.raises(ValueError, match="groups holds nan at example 2"):
        mpe.loo(linear_model, guide, result.params, X, y, groups=np.r_[0, 1, np.nan, np.ones(431)])
    with pytest.raises(ValueError, match="group 'c' is not among the labels"):
        mpe.perturb(
            linear_model, guide, result.params, "c", X, y, groups=np.repeat(["a", "b"], 217)
        )
    with pytest.raises(ValueError, match="method='laplace' and without indices"):
        mpe.exact_loo(
            linear_model, guide, result.params, X, y, groups=np.zeros(434), method="nuts"
        )


def test_kidiq_groups_of_one_equal_leave_one_out(kidiq_fit):
    """Singleton groups are leave-one-out: the same numbers as ``loo``."""
    X, y, guide, result = kidiq_fit

    single = mpe.loo(linear_model, guide, result.params, X, y, groups=np.arange(len(y)))
    plain = mpe.loo(linear_model, guide, result.params, X, y)
    np.testing.assert_allclose(single.elpd_i.values, plain.elpd_i.values, rtol=1e-10)
    np.testing.assert_allclose(single.example_elpd.values, plain.elpd_i.values, rtol=1e-10)


def test_group_labels_of_mixed_types_or_nan_are_named_everywhere(kidiq_fit):
    """Mixed numbers and strings failed inside np.unique ("'<' not supported") in loo and
    exact_loo and passed perturb unchecked; NaN in an object array was a group of its
    own in loo; NaN floats passed perturb."""
    X, y, guide, result = kidiq_fit
    mixed = np.array([1, "a"] * 217, dtype=object)
    nan_object = np.array([1, np.nan] * 217, dtype=object)
    nan_float = np.array([1.0, np.nan] * 217)
    entries = {
        "loo": lambda g: mpe.loo(linear_model, guide, result.params, X, y, groups=g),
        "exact_loo": lambda g: mpe.exact_loo(linear_model, guide, result.params, X, y, groups=g),
        "perturb": lambda g: mpe.perturb(linear_model, guide, result.params, [1], X, y, groups=g),
    }
    for entry in entries.values():
        with pytest.raises(TypeError, match=r"groups mixes label types: example 0 has the number"):
            entry(mixed)
        for labels in (nan_object, nan_float):
            with pytest.raises(ValueError, match="groups holds nan at example 1"):
                entry(labels)


def test_string_group_labels_work(kidiq_fit):
    X, y, guide, result = kidiq_fit
    labels = np.where(np.arange(len(y)) % 2 == 0, "even", "odd")
    by_name = mpe.loo(linear_model, guide, result.params, X, y, groups=labels)
    by_code = mpe.loo(linear_model, guide, result.params, X, y, groups=np.arange(len(y)) % 2)
    assert list(by_name.elpd_i.group.values) == ["even", "odd"]
    np.testing.assert_allclose(by_name.elpd_i.values, by_code.elpd_i.values, rtol=1e-12)


def test_loo_checks_group_labels_before_any_work():
    # model and guide are None: tracing or dispatch would fail with another error.
    mixed = np.array(["a", 2] * 5, dtype=object)
    with pytest.raises(TypeError, match="example 1 has the number label 2"):
        mpe.loo(None, None, {}, groups=mixed)
    with pytest.raises(ValueError, match="groups holds None at example 0"):
        mpe.prepare_loo(None, None, groups=np.array([None, "a"], dtype=object))
