"""compare_loo / plot_loo_comparison on real results for the wells logistic regression.

One Laplace fit (float64) gives the MPE-LOO, brute-force refits of every 100th example,
PSIS-LOO on 100 draws from the Laplace Gaussian (few draws, so that some Pareto k are
poor) and ``arviz.loo`` on the same draws; the table is checked against numpy
computations on their pointwise values.
"""

from __future__ import annotations

import dataclasses
import io

import arviz as az
import jax
import numpy as np
import pandas as pd
import pytest
from conftest import logistic_model

import numpyro_mpe as mpe
from numpyro_mpe.crossval.compare import compare_loo, plot_loo_comparison
from numpyro_mpe.crossval.results import make_refit_elpd_data

REFITS = np.arange(0, 3020, 100)  # a subset that is not a prefix: 31 examples
N_REFITS = REFITS.size
N_STRICT = 10  # examples above the lowered reliability threshold of "mpe_strict"


@pytest.fixture(scope="module")
def results(wells):
    X, y = wells
    with jax.enable_x64(True):
        guide = mpe.AutoGaussian(logistic_model)
        fit = mpe.BLR(logistic_model, guide, mpe.optim.newton()).run(
            jax.random.PRNGKey(0), 30, X, y, progress_bar=False
        )
        mpe_loo = mpe.loo(logistic_model, guide, fit.params, X, y)
        reliability = np.sort(mpe_loo.reliability.values)
        threshold = float(reliability[-N_STRICT - 1])
        with pytest.warns(mpe.ReliabilityWarning, match=f"{N_STRICT} of 3020"):
            mpe_strict = mpe.loo(
                logistic_model, guide, fit.params, X, y, reliability_threshold=threshold
            )
        exact = mpe.exact_loo(logistic_model, guide, fit.params, X, y, indices=REFITS)
        mean, precision = guide.mean_precision(fit.params)
        draws = np.random.default_rng(0).multivariate_normal(
            np.asarray(mean), np.linalg.inv(np.asarray(precision)), size=100
        )
        logits = draws @ X.T
        log_lik = y * logits - np.logaddexp(0.0, logits)  # (draw, obs)
        with pytest.warns(mpe.ParetoKWarning):  # 100 draws: some k above good_k = 0.5
            psis = mpe.psis_loo(log_lik, r_eff=1.0)
        tree = az.from_dict(
            {"posterior": {"beta": draws[None]}, "log_likelihood": {"y": log_lik[None]}}
        )
        with pytest.warns(UserWarning, match="Pareto"):
            az_loo = az.loo(tree)
    return {
        "exact": exact,
        "mpe": mpe_loo,
        "mpe_strict": mpe_strict,
        "psis": psis,
        "az": az_loo,
    }


def at_refits(result):
    """A result's elpd_i ``(N_REFITS,)`` at the refitted examples."""
    values = result.elpd_i.values
    return values if values.size == N_REFITS else values[REFITS]


@pytest.fixture
def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def test_dims_differ_but_examples_match(results):
    # The alignment is by coordinate value, whatever the dimension is called.
    assert results["mpe"].elpd_i.dims == ("data",)
    assert results["psis"].elpd_i.dims == ("obs_dim",)
    assert results["az"].elpd_i.dims == ("y_dim_0",)
    np.testing.assert_array_equal(results["exact"].elpd_i["data"].values, REFITS)


def test_table_against_numpy(results):
    table = compare_loo(results, reference="exact")
    assert list(table.index) == list(results)
    assert table.attrs == {"reference": "exact", "n_common": N_REFITS}
    assert list(table.columns) == [
        "elpd",
        "se",
        "p",
        "elpd_subset",
        "max_abs_diff",
        "rms_diff",
        "n_compared",
        "n_poor",
        "diagnostic",
        "estimators",
        "seconds",
    ]
    exact_i = results["exact"].elpd_i.values
    for name, result in results.items():
        row = table.loc[name]
        subset_i = at_refits(result)
        difference = subset_i - exact_i
        # Same float64 numbers summed in the same order: equal up to rounding.
        np.testing.assert_allclose(
            [row["elpd"], row["se"], row["p"]], [result.elpd, result.se, result.p], rtol=1e-12
        )
        np.testing.assert_allclose(row["elpd_subset"], subset_i.sum(), rtol=1e-12)
        np.testing.assert_allclose(row["max_abs_diff"], np.abs(difference).max(), rtol=1e-12)
        np.testing.assert_allclose(
            row["rms_diff"], np.sqrt(np.mean(difference**2)), rtol=1e-12, atol=1e-300
        )
        assert row["n_compared"] == N_REFITS
    assert table.loc["exact", "max_abs_diff"] == 0.0
    assert table.loc["exact", "rms_diff"] == 0.0
    # MPE against the same-family refits: about 2e-5 measured (see test_mpe_loo_wells.py).
    assert table.loc["mpe", "max_abs_diff"] < 1e-3


def test_poor_counts_and_diagnostics(results):
    table = compare_loo(results, reference="exact")
    for name in ("psis", "az"):
        result = results[name]
        expected = int(np.sum(result.pareto_k.values > result.good_k))
        assert table.loc[name, "n_poor"] == expected
        assert table.loc[name, "diagnostic"] == "pareto_k"
    assert table.loc["psis", "n_poor"] > 0
    assert table.loc["mpe", "n_poor"] == int(np.sum(results["mpe"].reliability.values > 0.7))
    assert table.loc["mpe_strict", "n_poor"] == N_STRICT
    assert table.loc["mpe", "diagnostic"] == "reliability"
    assert table.loc["exact", "n_poor"] == 0
    assert table.loc["exact", "diagnostic"] == "-"
    assert str(table["n_poor"].dtype) == "Int64"
    assert table.loc["mpe", "estimators"] == "cavity 3020"
    assert table.loc["psis", "estimators"] == "psis"
    assert table.loc["exact", "estimators"] == "refit"


def test_seconds_missing_not_nan(results):
    table = compare_loo(results, reference="exact")
    assert str(table["seconds"].dtype) == "Float64"
    assert table.loc["exact", "seconds"] == results["exact"].seconds > 0
    assert all(table.loc[name, "seconds"] is pd.NA for name in results if name != "exact")
    given = compare_loo(results, "exact", seconds={"mpe": 0.25, "exact": 3.0, "psis": None})
    assert given.loc["mpe", "seconds"] == 0.25
    assert given.loc["exact", "seconds"] == 3.0  # the argument wins over the attribute
    assert given.loc["psis", "seconds"] is pd.NA


def test_full_overlap_and_default_reference(results):
    # Without a refit the first entry is the reference; MPE and PSIS share all 3020.
    pair = {name: results[name] for name in ("psis", "mpe", "az")}
    table = compare_loo(pair)
    assert table.attrs == {"reference": "psis", "n_common": 3020}
    difference = results["mpe"].elpd_i.values - results["psis"].elpd_i.values
    np.testing.assert_allclose(table.loc["mpe", "max_abs_diff"], np.abs(difference).max())
    np.testing.assert_allclose(table.loc["mpe", "elpd_subset"], results["mpe"].elpd, rtol=1e-12)
    assert (table["n_compared"] == 3020).all()
    # With a refit present it is the default reference.
    assert compare_loo(results).attrs["reference"] == "exact"


def test_full_reference_with_subset_refit(results):
    # The reference covers all examples, one result only 50: elpd_subset still compares
    # the rows (all summed over the 50 common examples), the diffs are pairwise.
    table = compare_loo(results, reference="mpe")
    assert table.attrs["n_common"] == N_REFITS
    np.testing.assert_allclose(
        table.loc["mpe", "elpd_subset"], results["mpe"].elpd_i.values[REFITS].sum()
    )
    assert table.loc["psis", "n_compared"] == 3020
    assert table.loc["exact", "n_compared"] == N_REFITS


def test_order_of_examples_does_not_matter(results):
    reversed_exact = dataclasses.replace(
        results["exact"], elpd_i=results["exact"].elpd_i[::-1], seconds=None
    )
    table = compare_loo({"mpe": results["mpe"], "exact": reversed_exact}, reference="exact")
    expected = compare_loo({"mpe": results["mpe"], "exact": results["exact"]}, "exact")
    np.testing.assert_allclose(
        table.loc["mpe", ["elpd_subset", "max_abs_diff", "rms_diff"]].astype(float),
        expected.loc["mpe", ["elpd_subset", "max_abs_diff", "rms_diff"]].astype(float),
        rtol=1e-12,
    )


def test_errors(results):
    exact = results["exact"]
    with pytest.raises(ValueError, match="results is empty"):
        compare_loo({})
    with pytest.raises(ValueError, match=r"reference 'refit' is not one of the results"):
        compare_loo(results, reference="refit")
    with pytest.raises(ValueError, match=r"seconds names \['nuts'\]"):
        compare_loo(results, seconds={"nuts": 1.0})
    with pytest.raises(ValueError, match=r"seconds\['mpe'\] must be in \[0, inf\), got -1.0"):
        compare_loo(results, seconds={"mpe": -1.0})
    without = dataclasses.replace(results["psis"], elpd_i=None)
    with pytest.raises(ValueError, match="'psis' has no pointwise elpd_i"):
        compare_loo({"exact": exact, "psis": without})
    moved = dataclasses.replace(exact, elpd_i=exact.elpd_i.assign_coords(data=REFITS + 5000))
    with pytest.raises(ValueError, match="'moved' shares no examples with the reference 'mpe'"):
        compare_loo({"mpe": results["mpe"], "moved": moved}, reference="mpe")
    repeated = dataclasses.replace(
        exact, elpd_i=exact.elpd_i.assign_coords(data=np.zeros(N_REFITS, int))
    )
    with pytest.raises(ValueError, match="repeated values"):
        compare_loo({"mpe": results["mpe"], "repeated": repeated})
    with pytest.raises(ValueError, match="must be 1-D"):
        compare_loo({"2d": dataclasses.replace(exact, elpd_i=np.zeros((2, 3)))})


def test_plot(results, pyplot, tmp_path):
    path = tmp_path / "loo_comparison.png"
    shown = {name: results[name] for name in ("exact", "mpe", "psis", "az")}
    figure = plot_loo_comparison(shown, "exact", path=path)
    try:
        # Three panels, each with a colorbar (reliability / Pareto k).
        assert len(figure.axes) == 6
        panels = [axis for axis in figure.axes if axis.get_title()]
        assert [axis.get_title().split("\n")[0] for axis in panels] == [
            "mpe vs exact",
            "psis vs exact",
            "az vs exact",
        ]
        exact_i = results["exact"].elpd_i.values
        points = panels[0].collections[0].get_offsets()
        np.testing.assert_allclose(points[:, 0], exact_i)
        np.testing.assert_allclose(points[:, 1], results["mpe"].elpd_i.values[REFITS] - exact_i)
        poor = results["psis"].pareto_k.values[REFITS] > results["psis"].good_k
        assert len(panels[1].collections[1].get_offsets()) == poor.sum()
        labels = [axis.get_ylabel() for axis in figure.axes if not axis.get_title()]
        assert labels[0] == "reliability (threshold 0.7)"
        assert labels[1] == "pareto_k (threshold 0.5)"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
    finally:
        pyplot.close(figure)


def test_plot_refit_panel_and_given_axes(results, pyplot):
    figure, axes = pyplot.subplots(1, 2)
    try:
        shown = {name: results[name] for name in ("mpe", "exact", "psis")}
        returned = plot_loo_comparison(shown, "mpe", ax=axes)
        assert returned is figure
        # The refit panel has no diagnostic, hence no colorbar; PSIS has one.
        assert len(figure.axes) == 3
        assert axes[0].get_title().startswith(f"exact vs mpe\n{N_REFITS} examples")
        with pytest.raises(ValueError, match=r"one Axes per result besides the reference \(2\)"):
            plot_loo_comparison(shown, "mpe", ax=axes[0])
        with pytest.raises(ValueError, match="nothing to compare"):
            plot_loo_comparison({"mpe": results["mpe"]}, "mpe")
    finally:
        pyplot.close(figure)


def test_plot_checks_ax_and_path_before_drawing(pyplot, tmp_path):
    # A bad ax or path once failed only after the panels were drawn (or, for a folder,
    # saved the figure beside it as folder.png): nothing may be drawn or written now.
    elpd_i = np.array([-0.5, -1.2, -0.7, -2.0])
    shown = {
        "a": make_refit_elpd_data(elpd_i, elpd_i + 0.1, dim="data", method="laplace"),
        "b": make_refit_elpd_data(elpd_i + 0.01, elpd_i + 0.1, dim="data", method="nuts"),
    }
    figures = pyplot.get_fignums()
    bad = [
        ({"ax": "ax"}, TypeError, "ax must be a matplotlib Axes"),
        ({"path": tmp_path / "no" / "c.png"}, FileNotFoundError, "does not exist"),
        ({"path": tmp_path}, ValueError, "is a folder"),
        ({"path": tmp_path / "c.xyz"}, ValueError, "matplotlib cannot save a '.xyz' file"),
        ({"path": 3}, TypeError, "path must be a str or path-like"),
    ]
    for options, error, match in bad:
        with pytest.raises(error, match=match):
            plot_loo_comparison(shown, **options)
    assert pyplot.get_fignums() == figures
    assert list(tmp_path.iterdir()) == [] and not tmp_path.with_suffix(".png").exists()
    buffer = io.BytesIO()  # a file-like object is still accepted
    pyplot.close(plot_loo_comparison(shown, path=buffer))
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grouped_results_match_by_group_label():
    """Leave-one-group-out results compare with each other by their group labels (and
    print as groups); against a leave-one-out result they are refused (in the fuzz table)."""
    labels = np.array(["a", "b", "c"])
    codes = np.array([0, 0, 1, 2, 2, 2])
    elpd_i = np.array([-1.0, -2.0, -3.0])

    def grouped(offset):
        return make_refit_elpd_data(
            elpd_i + offset,
            elpd_i + 0.1,
            dim="group",
            method="laplace",
            coords=labels,
            groups=("data", codes, np.full(6, -0.5)),
        )

    assert "without each of 3 groups (left out whole)" in str(grouped(0.0))
    table = compare_loo({"refits": grouped(0.0), "other": grouped(0.25)})
    # Exact: the same labels, a constant offset of 0.25 (binary fraction).
    assert table.loc["other", "n_compared"] == 3
    assert table.loc["other", "max_abs_diff"] == pytest.approx(0.25, abs=1e-12)
