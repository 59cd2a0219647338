"""Which examples ``perturb`` removes: indices and masks (``remove``) against new
per-example weights (``weights=``), which a float array can no longer be mistaken for."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import laplace_fit, logistic_model

import numpyro_mpe as mpe
from numpyro_mpe.perturbation import perturb as perturb_module
from numpyro_mpe.perturbation.removal import check_group_labels, group_mask, removal_weights


def object_labels(values: list) -> np.ndarray:
    labels = np.empty(len(values), dtype=object)
    labels[:] = values
    return labels


def test_mask_and_weights_remove_the_same_examples():
    # The trial's confusion: np.array([1., 0., ...]) as weights keeps example 0, the same
    # pattern as a boolean mask removes it. Now each reading has its own argument.
    pattern = np.array([1, 0, 0, 1, 0])
    as_mask = removal_weights(pattern.astype(bool), 5)
    as_weights = removal_weights(None, 5, weights=1.0 - pattern)
    np.testing.assert_array_equal(as_mask, [1.0, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(as_weights, as_mask)
    np.testing.assert_array_equal(removal_weights([0, 3, 3], 5), as_mask)
    np.testing.assert_array_equal(
        removal_weights(None, 5, weights=[1, 1, 0, 1, 1]), [0, 0, 1, 0, 0]
    )
    np.testing.assert_allclose(removal_weights(None, 3, weights=[0.5, 1.0, 0.25]), [0.5, 0, 0.75])


@pytest.mark.parametrize(
    "remove",
    [np.array([1.0, 0.0, 0.0, 1.0, 0.0]), [0.0, 1.0], np.float32(2.0), np.array([3.0])],
)
def test_float_remove_is_refused_with_the_alternatives(remove):
    with pytest.raises(TypeError, match=r"remove must be integer indices or a boolean mask.*"):
        removal_weights(remove, 5)
    with pytest.raises(TypeError, match=r"pass weights= instead"):
        removal_weights(remove, 5)


def test_empty_remove_removes_nothing():
    for empty in ([], np.array([], int), np.array([], float), np.zeros(0, bool)):
        np.testing.assert_array_equal(removal_weights(empty, 4), np.zeros(4))


@pytest.mark.parametrize(
    ("remove", "kwargs", "error", "match"),
    [
        ([1], {"weights": np.ones(5)}, TypeError, "not both"),
        (None, {}, TypeError, r"pass remove \(integer indices or a boolean mask"),
        (None, {"weights": np.ones(5, bool)}, TypeError, "for a boolean mask use remove="),
        (None, {"weights": np.array(["a"] * 5)}, TypeError, "weights must be real numbers"),
        (None, {"weights": np.ones(4)}, ValueError, r"weights must have shape \(5,\)"),
        (None, {"weights": np.r_[1, 1, np.nan, 1, 1]}, ValueError, "weight nan at index 2"),
        (None, {"weights": np.r_[1, 1, 1, -0.5, 1]}, ValueError, "weight -0.5 at index 3"),
        (np.ones(4, bool), {}, ValueError, r"a boolean mask must have shape \(5,\)"),
        ([5], {}, ValueError, "index 5 is out of range for 5 examples"),
        ([[0, 1]], {}, ValueError, r"indices must be 1-d"),
        (np.array(["a"]), {}, TypeError, "remove must be integer indices or a boolean mask"),
    ],
)
def test_removal_argument_errors(remove, kwargs, error, match):
    with pytest.raises(error, match=match):
        removal_weights(remove, 5, **kwargs)


def test_perturb_weights_equal_the_mask_it_replaces(small_logistic_fit, x64):
    X, y, guide, result = small_logistic_fit
    drop = np.zeros(40, bool)
    drop[[2, 9, 30]] = True
    by_mask = mpe.perturb(logistic_model, guide, result.params, drop, X, y)
    by_index = mpe.perturb(logistic_model, guide, result.params, [2, 9, 30], X, y)
    by_weights = mpe.perturb(logistic_model, guide, result.params, None, X, y, weights=~drop * 1.0)
    for params in (by_index, by_weights):
        np.testing.assert_allclose(params["auto_loc"], by_mask["auto_loc"], rtol=1e-12)
        np.testing.assert_allclose(params["auto_precision"], by_mask["auto_precision"], rtol=1e-12)
    assert not np.allclose(by_mask["auto_loc"], result.params["auto_loc"])
    unchanged = mpe.perturb(logistic_model, guide, result.params, [], X, y)
    np.testing.assert_array_equal(unchanged["auto_loc"], result.params["auto_loc"])


@pytest.mark.parametrize("covariance", ["dense", "diag"])
def test_perturb_on_the_removed_rows_equals_the_full_data_pass(
    wells, x64, covariance, monkeypatch
):
    # Three of 3020 examples: perturb runs the model on those rows alone; the pass over
    # all rows with zero weights elsewhere gives the same Hessian and gradient.
    X, y = wells
    guide, result = laplace_fit(logistic_model, X, y, covariance=covariance)
    remove = [5, 17, 2999]
    perturb_module.perturb_rows_core.clear_cache()
    by_rows = mpe.perturb(logistic_model, guide, result.params, remove, X, y)
    mpe.perturb(logistic_model, guide, result.params, [1, 2], X, y)
    assert perturb_module.perturb_rows_core._cache_size() == 1  # one padded size
    monkeypatch.setattr(perturb_module, "ROWS_FRACTION", 10**9)
    by_all = mpe.perturb(logistic_model, guide, result.params, remove, X, y)
    for key in ("auto_loc", "auto_precision"):
        np.testing.assert_allclose(by_rows[key], by_all[key], rtol=1e-12)


def test_perturb_refuses_confusable_arguments_before_any_work():
    # model and guide are None: any tracing or dispatch would fail differently.
    weights = np.ones(40)
    with pytest.raises(TypeError, match="pass weights= instead"):
        mpe.perturb(None, None, {}, weights)
    with pytest.raises(TypeError, match="not both"):
        mpe.perturb(None, None, {}, [1], weights=weights)
    with pytest.raises(TypeError, match="cannot be combined with groups"):
        mpe.perturb(None, None, {}, None, weights=weights, groups=np.arange(40))
    with pytest.raises(TypeError, match=r"pass remove .* or weights="):
        mpe.perturb(None, None, {}, None)


def test_group_labels_may_be_floats_and_must_be_one_kind(small_logistic_fit, x64):
    X, y, guide, result = small_logistic_fit
    labels = np.repeat([0.5, 1.5, 2.5, 3.5], 10)
    by_group = mpe.perturb(logistic_model, guide, result.params, [1.5], X, y, groups=labels)
    by_mask = mpe.perturb(logistic_model, guide, result.params, labels == 1.5, X, y)
    np.testing.assert_allclose(by_group["auto_loc"], by_mask["auto_loc"], rtol=1e-12)
    np.testing.assert_array_equal(group_mask([], labels, 40), np.zeros(40, bool))


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.array([1, "a"] * 3, dtype=object), TypeError, r"mixes label types: example 0 has"),
        (np.array(["a", 1] * 3, dtype=object), TypeError, r"example 1 has the number label 1"),
        (np.array([1.0, np.nan] * 3), ValueError, "groups holds nan at example 1"),
        (np.array([1, np.nan] * 3, dtype=object), ValueError, "groups holds nan at example 1"),
        (np.array(["a", None] * 3, dtype=object), ValueError, "groups holds None at example 1"),
        (object_labels([(1,), (2,)] * 3), TypeError, "of type tuple"),
        (np.zeros((6, 1)), ValueError, r"one label per example, shape \(6,\)"),
    ],
)
def test_bad_group_labels_are_named(labels, error, match):
    with pytest.raises(error, match=match):
        check_group_labels(labels, 6)


def test_group_labels_are_checked_before_any_work():
    # model and guide are None: tracing or dispatch would fail with another error.
    mixed = object_labels([1, "a"] * 20)
    with pytest.raises(TypeError, match="groups mixes label types"):
        mpe.perturb(None, None, {}, [1], groups=mixed)
    with pytest.raises(ValueError, match="groups holds nan at example 3"):
        mpe.perturb(None, None, {}, [1], groups=np.r_[0.0, 1.0, 2.0, np.nan])
