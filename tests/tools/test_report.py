"""The HTML report and the per-example sensitivity behind it."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import laplace_fit, linear_model, logistic_model

from numpyro_mpe.datasets import load_wells
from numpyro_mpe.tools.report import data_columns, gaussian_draws, number_text, report

SECTIONS = {"summary", "influential", "pointwise", "posterior-shift"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"


class _Document(HTMLParser):
    """Section ids, image sources and the header cells of each table."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.headers: list[str] = []
        self.text: list[str] = []
        self._in_header = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "th":
            self._in_header = True

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_header = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_header:
            self.headers.append(data)


def parse(path) -> _Document:
    document = _Document()
    document.feed(path.read_text(encoding="utf-8"))
    document.close()
    return document


def assert_png_images(document: _Document) -> None:
    assert document.images
    for source in document.images:
        assert source.startswith(DATA_URI)
        payload = base64.b64decode(source[len(DATA_URI) :], validate=True)
        assert payload.startswith(PNG_SIGNATURE)


def dist_only_model(X, y=None):
    """Logistic regression on the first two columns of X only (intercept, dist100)."""
    logistic_model(X[:, :2], y)


@pytest.fixture(scope="module")
def wells_subset():
    """Logistic regression on the first 500 wells households: ``(X, y, guide, params)``."""
    wells = load_wells()
    X = wells.design("dist100", "arsenic")[:500]
    y = wells.switch[:500]
    guide, result = laplace_fit(logistic_model, X, y)
    return X, y, guide, result.params


@pytest.mark.parametrize("dense", [True, False])
def test_gaussian_draws(x64, dense):
    mean = np.array([1.0, -2.0])
    precision = np.array([[2.0, 0.5], [0.5, 1.0]]) if dense else np.array([2.0, 0.25])
    draws, log_q = gaussian_draws(jax.random.PRNGKey(1), mean, precision, 4000)
    if dense:
        expected = dist.MultivariateNormal(mean, precision_matrix=precision)
        covariance = np.linalg.inv(precision)
    else:
        expected = dist.Normal(mean, 1 / np.sqrt(precision)).to_event(1)
        covariance = np.diag(1 / precision)
    np.testing.assert_allclose(log_q, expected.log_prob(draws), rtol=1e-12)
    # 4000 draws: Monte Carlo sd of each moment below 0.05; 0.15 is three of them.
    np.testing.assert_allclose(np.mean(draws, axis=0), mean, atol=0.15)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), covariance, atol=0.15)


def test_report_sections_and_images(wells_subset, tmp_path):
    X, y, guide, params = wells_subset
    wells = load_wells()
    data = {
        "switch": y,
        "dist": wells.dist[:500],
        "arsenic": wells.arsenic[:500],
        # A text column is shown as text (it once failed after all the work, in float()).
        "household": np.array([f"household-{i}" for i in range(500)]),
    }
    path = report(logistic_model, guide, params, X, y, path=tmp_path / "wells.html", data=data)
    assert path == tmp_path / "wells.html"
    document = parse(path)
    assert set(document.sections) == SECTIONS
    assert "comparison" not in document.ids
    assert_png_images(document)
    for column in ("switch", "dist", "arsenic", "elpd_i (MPE)", "reliability", "Pareto k"):
        assert column in document.headers
    assert sum(t.startswith("household-") for t in document.text) == 10  # top=10 rows
    text = "".join(document.text)
    assert "PSIS-LOO (2000 Laplace draws)" in text
    assert "beta[2]" in text


def test_numbers_that_are_not_finite_are_written_as_such():
    # A Pareto k of inf (an example whose weights cannot be estimated) once broke the
    # summary table of a network's report.
    assert [number_text(v, 3) for v in (np.inf, -np.inf, np.nan, 2.0, 0.12345)] == [
        "inf",
        "-inf",
        "nan",
        "2",
        "0.123",
    ]


def test_data_columns_of_a_dataframe_with_text():
    import pandas

    frame = pandas.DataFrame({"county": ["a", "b", "c"], "dist": [1.0, 2.0, 3.0]})
    columns = data_columns(frame, logistic_model, (), {}, 3)
    assert list(columns) == ["county", "dist"]
    np.testing.assert_array_equal(columns["county"], ["a", "b", "c"])
    np.testing.assert_array_equal(columns["dist"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"data column 'county' has shape \(3,\)"):
        data_columns(frame, logistic_model, (), {}, 4)


def test_report_comparison_section(wells_subset, tmp_path):
    X, y, guide, params = wells_subset
    other_guide, other = laplace_fit(dist_only_model, X, y)
    path = report(
        logistic_model,
        guide,
        params,
        X,
        y,
        path=tmp_path / "compare.html",
        top=3,
        models={"dist only <b>": (dist_only_model, other_guide, other.params)},
    )
    document = parse(path)
    assert set(document.sections) == SECTIONS | {"comparison"}
    assert_png_images(document)
    html_text = path.read_text(encoding="utf-8")
    assert "dist only &lt;b&gt;" in html_text  # model names are escaped
    # Default data columns: the model's array arguments with one row per example.
    assert {"X[0]", "X[1]", "X[2]", "y"} <= set(document.headers)


def test_report_shows_warnings_instead_of_raising(wells_subset, tmp_path):
    # Example 7 alone informs beta[2] with a noise sd of 1 against a prior sd of 10: its
    # reliability is ~0.99, so loo warns; the report must show that, not raise it. (The
    # wells shapes, (500, 3), reuse the compiled PSIS kernel of the other tests.)
    X_wells, y, _, _ = wells_subset
    X = X_wells.copy()
    X[:, 2] = 0.0
    X[7, 2] = 1.0
    guide, result = laplace_fit(linear_model, X, y, sigma=1.0)
    path = report(
        linear_model, guide, result.params, X, y, path=tmp_path / "r.html", top=2, sigma=1.0
    )
    document = parse(path)
    assert set(document.sections) == SECTIONS
    text = "".join(document.text)
    assert "ReliabilityWarning" in text
    assert ">= 1 (improper cavity): 0" in text


def test_report_rejects_bad_arguments(wells_subset, tmp_path):
    X, y, guide, params = wells_subset
    with pytest.raises(ValueError, match="top must be a positive integer, got 0"):
        report(logistic_model, guide, params, X, y, path=tmp_path / "r.html", top=0)
    with pytest.raises(ValueError, match=r"data column 'dist' has shape \(3\,\)"):
        report(
            logistic_model, guide, params, X, y, path=tmp_path / "r.html", data={"dist": [1, 2, 3]}
        )
    table = np.zeros(3, dtype=[("dist", float), ("switch", float)])
    with pytest.raises(ValueError, match=r"data column 'dist' has shape \(3\,\)"):
        report(logistic_model, guide, params, X, y, path=tmp_path / "r.html", data=table)
    with pytest.raises(TypeError, match="data must be a mapping"):
        report(logistic_model, guide, params, X, y, path=tmp_path / "r.html", data=[1, 2])


def test_report_comparison_needs_same_examples(wells_subset, tmp_path):
    X, y, guide, params = wells_subset

    def fewer(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([3]).to_event(1))
        with numpyro.plate("data", 100):
            numpyro.sample("y", dist.Bernoulli(logits=X[:100] @ beta), obs=y[:100])

    with pytest.raises(
        ValueError, match="model 'fewer' in models has 100 examples, this model 500"
    ):
        report(
            logistic_model,
            guide,
            params,
            X,
            y,
            path=tmp_path / "r.html",
            top=2,
            models={"fewer": (fewer, guide, params)},
        )


def test_report_never_clobbers(wells_subset, tmp_path):
    """``report(path=existing)`` refuses unless ``overwrite=True``; a non-HTML name or a
    missing folder is refused before any work; the write is atomic."""
    X, y, guide, params = wells_subset
    existing = tmp_path / "existing.html"
    existing.write_text("keep me")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        report(logistic_model, guide, params, X, y, path=existing)
    assert existing.read_text() == "keep me"
    with pytest.raises(ValueError, match=r"path .*data\.csv' must end in \.html or \.htm"):
        report(logistic_model, guide, params, X, y, path=tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError, match=r"folder .* does not exist"):
        report(logistic_model, guide, params, X, y, path=tmp_path / "missing" / "r.html")
    (tmp_path / "folder.html").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        report(logistic_model, guide, params, X, y, path=tmp_path / "folder.html")
    (tmp_path / "folder.html").rmdir()
    path = report(logistic_model, guide, params, X, y, path=existing, overwrite=True, top=2)
    assert set(parse(path).sections) == SECTIONS
    assert [p.name for p in tmp_path.iterdir()] == ["existing.html"]
