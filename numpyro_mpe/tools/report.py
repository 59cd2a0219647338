"""A self-contained HTML report of a fitted model: LOO, reliability and sensitivity.

:func:`report` writes one HTML file (plots embedded as base64 PNG, no external assets)
with these sections, each a ``<section>`` with a stable ``id``:

``summary``
    MPE-LOO (:func:`numpyro_mpe.loo`) beside PSIS-LOO from 2000 draws of the Laplace
    posterior (:func:`numpyro_mpe.approximate_posterior_loo`), with the reliability and
    Pareto-k counts and every warning either raised.
``influential``
    The ``top`` examples whose removal moves the posterior mean most
    (:func:`numpyro_mpe.sensitivity`, ranked by the Mahalanobis norm of the shift), with
    their data row, ``elpd_i``, reliability and shift summary.
``pointwise``
    ``elpd_i``, reliability and Pareto k against the example index; MPE against PSIS
    ``elpd_i``.
``posterior-shift``
    Each latent coordinate's posterior mean +- sd, full data and without each of the top
    examples (:func:`numpyro_mpe.perturb`).
``comparison``
    Only with ``models``: pointwise ``elpd_i`` differences of other models to this one.

Needs matplotlib (the ``plot`` extra), imported only when a report is written.
"""

from __future__ import annotations

import base64
import contextlib
import html
import inspect
import io
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.conjugate.guide import AutoConjugate
from numpyro_mpe.core.gaussian import draws_from_standard_normal
from numpyro_mpe.core.model import ModelError, PlateModel, trace_model
from numpyro_mpe.crossval.mpe_loo import loo
from numpyro_mpe.crossval.psis import approximate_posterior_loo
from numpyro_mpe.crossval.results import estimator_summary
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.perturbation.perturb import perturb
from numpyro_mpe.perturbation.sensitivity import Sensitivity, sensitivity
from numpyro_mpe.tools.output import check_output_path, write_atomically

__all__ = ["HTML_SUFFIXES", "data_columns", "gaussian_draws", "number_text", "report"]

HTML_SUFFIXES = (".html", ".htm")

NUM_DRAWS = 2000
"""Draws of the Laplace posterior behind the PSIS-LOO column."""
_DRAWS_PER_BATCH = 100
_MAX_DATA_COLUMNS = 12
_MAX_SHIFT_PANELS = 24

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
ul.warnings li { color: #8a4b00; }
"""


class _Captured(NamedTuple):
    """A warning raised while the report was computed (shown, not propagated)."""

    source: str
    category: str
    message: str


class _Shifts(NamedTuple):
    """Posterior means and sds ``(T, P)`` without each top example; messages of failures."""

    means: np.ndarray
    sds: np.ndarray
    failures: dict


@contextlib.contextmanager
def _capture(notes: list, source: str) -> Iterator[None]:
    """Record every warning raised inside the block into ``notes`` instead of raising."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        notes.append(_Captured(source, item.category.__name__, str(item.message)))


def _text(value: Any) -> str:
    return html.escape(str(value))


def number_text(value: Any, digits: int = 4) -> str:
    """A number for a table cell: an integer value without decimals, else ``digits``
    significant digits; ``"nan"``, ``"inf"`` and ``"-inf"`` as such."""
    value = float(value)
    if not np.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.{digits}g}"


def _cell(value: Any) -> str:
    """A data column's value: a number as :func:`_number`, anything else (a name, a date)
    as its text."""
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return number_text(value)
    return str(value)


def _table(header: list[str], rows: list[list[Any]], text_columns: int = 0) -> str:
    """An HTML table; the first ``text_columns`` columns are left-aligned text."""

    def cell(tag: str, position: int, value: Any) -> str:
        css = ' class="text"' if position < text_columns else ""
        return f"<{tag}{css}>{_text(value)}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell("th", k, h) for k, h in enumerate(header)) + "</tr>"]
    for row in rows:
        lines.append("<tr>" + "".join(cell("td", k, v) for k, v in enumerate(row)) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _png(figure: Any, alt: str) -> str:
    """``<img>`` with the figure as an embedded base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_text(alt)}" src="data:image/png;base64,{encoded}">'


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# --------------------------------------------------------------------------- data


def _columns_of(name: str, values: Any, n: int, strict: bool) -> dict[str, np.ndarray]:
    array = np.asarray(values)
    if array.ndim >= 1 and array.shape[0] == n and array.ndim <= 2:
        if array.ndim == 1:
            return {name: array}
        return {f"{name}[{j}]": array[:, j] for j in range(array.shape[1])}
    if strict:
        raise ValueError(
            f"data column {name!r} has shape {array.shape}; the report needs one value per "
            f"example, shape ({n},) (or ({n}, D) for a matrix)"
        )
    return {}


def data_columns(
    data: Any, model: Callable, args: tuple, kwargs: dict, num_examples: int
) -> dict[str, np.ndarray]:
    """Columns ``{name: (N,)}`` describing each example, for the report's tables.

    ``data``: a mapping of column name to array, a numpy structured array, a pandas
    DataFrame, or None (the model's array arguments whose leading length is ``N``; a
    matrix ``X`` gives ``X[0], X[1], ...``). Columns may hold numbers or text.
    """
    if data is None:
        try:
            bound = inspect.signature(model).bind_partial(*args, **kwargs).arguments
        except (TypeError, ValueError):
            bound = {f"arg{k}": a for k, a in enumerate(args)} | dict(kwargs)
        columns = {}
        for name, value in bound.items():
            if isinstance(value, (np.ndarray, jax.Array)):
                columns |= _columns_of(name, value, num_examples, strict=False)
        return columns
    if isinstance(data, np.ndarray) and data.dtype.names:
        data = {name: data[name] for name in data.dtype.names}
    elif getattr(data, "columns", None) is not None and callable(getattr(data, "items", None)):
        data = {name: np.asarray(column) for name, column in data.items()}  # a DataFrame
    if not isinstance(data, Mapping):
        raise TypeError(
            "data must be a mapping of column name to array, a numpy structured array or a "
            f"pandas DataFrame, got {type(data).__name__}"
        )
    columns = {}
    for name, value in data.items():
        columns |= _columns_of(str(name), value, num_examples, strict=True)
    return columns


# --------------------------------------------------------------------------- other models


def _models_to_compare(models: Any) -> dict[str, tuple[Callable, Any, dict]]:
    """``models`` as ``{name: (model, guide, params)}`` after checking its structure (no
    tracing): a mapping of tuples of a callable, a guide ``loo`` supports and params."""
    if models is None:
        return {}
    if not isinstance(models, Mapping):
        raise TypeError(
            "models must be a mapping of name to (model, guide, params), got "
            f"{type(models).__name__}"
        )
    checked = {}
    for name, entry in models.items():
        where = f"model {name!r} in models"
        if not isinstance(entry, tuple | list) or len(entry) != 3:
            described = (
                f"a {type(entry).__name__} of length {len(entry)}"
                if isinstance(entry, tuple | list)
                else type(entry).__name__
            )
            raise TypeError(f"{where} must be a tuple (model, guide, params), got {described}")
        other_model, other_guide, other_params = entry
        if not callable(other_model):
            raise TypeError(
                f"{where}: its model must be a NumPyro model (a function), got "
                f"{type(other_model).__name__}"
            )
        if not isinstance(other_guide, AutoGaussian | AutoConjugate):
            raise TypeError(
                f"{where}: its guide must be a numpyro_mpe.AutoGaussian or "
                f"numpyro_mpe.AutoConjugate, got {type(other_guide).__name__}"
            )
        if str(name) in checked:
            raise ValueError(f"models has two models named {str(name)!r}")
        checked[str(name)] = (other_model, other_guide, other_params)
    return checked


def _check_model_to_compare(
    name: str, entry: tuple, args: tuple, kwargs: dict, plate: str | None, num_examples: int
) -> None:
    """Trace one of ``models`` on the report's arguments and check its params, before any
    work: the same examples, params of its guide's family and size."""
    where = f"model {name!r} in models"
    other_model, other_guide, other_params = entry
    try:
        other = trace_model(other_model, *args, plate=plate, **kwargs)
    except ModelError as error:
        raise ModelError(f"{where}: {error}") from error
    if other.num_examples != num_examples:
        raise ValueError(
            f"{where} has {other.num_examples} examples, this model {num_examples}; compare "
            "models on the same data"
        )
    if isinstance(other_guide, AutoGaussian):
        other_guide.checked_mean_precision(other_params, other.num_latents, where=where)
    elif not isinstance(other_params, Mapping):
        raise ValueError(
            f"{where}: params must be a dict of guide params, got {type(other_params)}"
        )
    else:
        try:
            other_guide.family(other_params)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error


# --------------------------------------------------------------------------- computations


def gaussian_draws(
    rng_key: jax.Array, mean: Any, precision: Any, num_draws: int = NUM_DRAWS
) -> tuple[jax.Array, jax.Array]:
    """Draws ``(S, P)`` of ``N(mean, precision^-1)`` and their log densities ``(S,)``.

    Dense ``precision`` ``(P, P)`` (symmetrised, then ``S = L L^T`` and
    ``theta = m + L^-T z``) or its diagonal ``(P,)``.
    """
    mean = jnp.asarray(mean)
    z = jax.random.normal(rng_key, (num_draws, mean.shape[0]), mean.dtype)
    return draws_from_standard_normal(z, mean, precision)


def _laplace_draws_loo(plate_model: PlateModel, guide: AutoGaussian, params: dict, notes: list):
    """PSIS-LOO from ``NUM_DRAWS`` draws of the Gaussian; None (and a note) if impossible."""
    draws, log_q = gaussian_draws(jax.random.PRNGKey(0), *guide.mean_precision(params))

    def evaluate(theta):
        log_lik = plate_model.log_lik(theta)
        return plate_model.log_prior(theta) + jnp.sum(log_lik), log_lik

    log_p, log_lik = jax.lax.map(evaluate, draws, batch_size=_DRAWS_PER_BATCH)
    try:
        with _capture(notes, "PSIS-LOO"):
            return approximate_posterior_loo(log_lik, log_p, log_q, return_log_weights=False)
    except ValueError as error:
        notes.append(_Captured("PSIS-LOO", "not computed", str(error)))
        return None


def _posterior_shifts(model, guide, params, indices, args, kwargs, plate, notes) -> _Shifts:
    size = np.asarray(guide.mean_precision(params)[0]).shape[0]
    means = np.full((len(indices), size), np.nan)
    sds = np.full((len(indices), size), np.nan)
    failures = {}
    for row, index in enumerate(indices):
        try:
            with _capture(notes, f"perturb (without example {index})"):
                perturbed = perturb(
                    model, guide, params, [int(index)], *args, plate=plate, **kwargs
                )
        except ValueError as error:  # NotPositiveDefiniteError is a ValueError
            failures[int(index)] = str(error)
            continue
        mean, precision = (np.asarray(a, dtype=float) for a in guide.mean_precision(perturbed))
        variance = np.diag(np.linalg.inv(precision)) if precision.ndim == 2 else 1 / precision
        means[row], sds[row] = mean, np.sqrt(variance)
    return _Shifts(means, sds, failures)


# --------------------------------------------------------------------------- sections


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}">\n<h2>{_text(title)}</h2>\n{body}\n</section>'


def _summary_section(mpe, psis, plate_model, guide, notes) -> str:
    reliability = np.asarray(mpe.reliability)
    threshold = mpe.reliability_threshold
    rows = [
        [
            f"MPE-LOO ({mpe.method}, {mpe.covariance})",
            number_text(mpe.elpd, 6),
            number_text(mpe.se),
            number_text(mpe.p),
            f"reliability <= {threshold}: {int(np.sum(reliability <= threshold))}; "
            f"> {threshold}: {int(np.sum((reliability > threshold) & (reliability < 1)))}; "
            f">= 1 (improper cavity): {int(np.sum(reliability >= 1))}; "
            f"max {number_text(reliability.max(), 3)}; estimators: "
            f"{estimator_summary(mpe.estimator)}",
        ]
    ]
    if psis is not None:
        k = np.asarray(psis.pareto_k)
        good = psis.good_k
        rows.append(
            [
                f"PSIS-LOO ({NUM_DRAWS} Laplace draws)",
                number_text(psis.elpd, 6),
                number_text(psis.se),
                number_text(psis.p),
                f"Pareto k <= {good:.2f}: {int(np.sum(k <= good))}; "
                f"({good:.2f}, 1]: {int(np.sum((k > good) & (k <= 1)))}; "
                f"> 1: {int(np.sum(k > 1))} (not estimable: {int(np.sum(np.isinf(k)))}); "
                f"max {number_text(k.max(), 3)}",
            ]
        )
    table = _table(["method", "elpd", "se", "p", "diagnostic counts"], rows, text_columns=1)
    intro = (
        f"<p>{plate_model.num_examples} examples in plate {_text(repr(plate_model.plate))}, "
        f"{plate_model.num_latents} unconstrained latent coordinates, "
        f"{_text(guide.covariance)} Gaussian posterior.</p>"
    )
    if psis is not None:
        largest = np.max(np.abs(np.asarray(mpe.elpd_i) - np.asarray(psis.elpd_i)))
        intro += (
            f"<p>MPE minus PSIS elpd: {number_text(mpe.elpd - psis.elpd)} "
            f"(largest pointwise difference {number_text(largest)}).</p>"
        )
    if notes:
        items = "".join(
            f"<li><b>{_text(n.source)}</b> ({_text(n.category)}): {_text(n.message)}</li>"
            for n in notes
        )
        listing = f'<h3>Warnings</h3>\n<ul class="warnings" id="warnings">{items}</ul>'
    else:
        listing = '<p class="note" id="warnings">No warnings.</p>'
    return _section("summary", "Summary", intro + table + listing)


def _influential_section(order, sens: Sensitivity, mpe, psis, columns) -> str:
    shown = list(columns)[:_MAX_DATA_COLUMNS]
    header = ["rank", "index", *shown, "elpd_i (MPE)", "estimator"]
    if psis is not None:
        header += ["elpd_i (PSIS)", "Pareto k"]
    header += ["reliability", "Mahalanobis shift", "max |shift| / sd", "coordinate"]
    if sens.prediction_shift is not None:
        header.append("prediction shift")
    elpd_i = np.asarray(mpe.elpd_i)
    reliability = np.asarray(mpe.reliability)
    largest = np.asarray(sens.largest_coordinate)
    signed = np.asarray(sens.largest_standardized_shift)
    rows = []
    for rank, i in enumerate(order, start=1):
        row = [
            rank,
            int(i),
            *(_cell(columns[c][i]) for c in shown),
            number_text(elpd_i[i]),
            str(np.asarray(mpe.estimator)[i]),
        ]
        if psis is not None:
            row += [
                number_text(np.asarray(psis.elpd_i)[i]),
                number_text(np.asarray(psis.pareto_k)[i], 3),
            ]
        row += [
            number_text(reliability[i], 3),
            number_text(np.asarray(sens.mahalanobis)[i], 3),
            number_text(np.asarray(sens.max_abs_standardized_shift)[i], 3),
            f"{sens.names[largest[i]]} ({signed[i]:+.3g} sd)",
        ]
        if sens.prediction_shift is not None:
            row.append(", ".join(f"{v:+.3g}" for v in np.asarray(sens.prediction_shift)[i]))
        rows.append(row)
    note = (
        "<p>Examples ranked by how far removing them moves the posterior mean, in posterior "
        "standard deviations along the shift (Mahalanobis norm sqrt(delta' S delta) of "
        "delta = (S - H_i)^-1 g_i). 'max |shift| / sd' is the largest move of a single "
        "coordinate, named in the next column with its signed value. The prediction shift "
        "is the first-order move of the example's own predictor (for example its logit) "
        "when it is removed.</p>"
    )
    first_order = int(np.sum(np.asarray(sens.first_order)))
    if first_order:
        note += (
            f'<p class="note">{first_order} examples have S - H_i not positive definite: '
            "their shift is the first-order S^-1 g_i.</p>"
        )
    if len(columns) > len(shown):
        note += f'<p class="note">Only the first {len(shown)} data columns are shown.</p>'
    return _section(
        "influential", "Most influential examples", note + _table(header, rows, text_columns=0)
    )


def _pointwise_section(mpe, psis, order) -> str:
    elpd_i = np.asarray(mpe.elpd_i)
    reliability = np.asarray(mpe.reliability)
    index = np.arange(elpd_i.size)
    figure = _figure(11, 7.5)
    axes = figure.subplots(2, 2).ravel()
    axes[0].scatter(index, elpd_i, s=6, color="C0", linewidths=0, label="MPE")
    if psis is not None:
        axes[0].scatter(
            index, np.asarray(psis.elpd_i), s=6, color="C1", alpha=0.5, linewidths=0, label="PSIS"
        )
    axes[0].scatter(
        order, elpd_i[order], s=40, facecolors="none", edgecolors="red", label="most influential"
    )
    axes[0].set(xlabel="example index", ylabel="elpd_i", title="Pointwise elpd")
    axes[0].legend(fontsize="small")

    threshold = mpe.reliability_threshold
    poor = reliability > threshold
    axes[1].scatter(index[~poor], reliability[~poor], s=6, color="C0", linewidths=0)
    axes[1].scatter(index[poor], reliability[poor], s=12, color="red", linewidths=0)
    axes[1].axhline(threshold, color="red", linewidth=1, label=f"threshold {threshold}")
    axes[1].set(
        xlabel="example index", ylabel="reliability", title=f"Reliability ({int(poor.sum())} poor)"
    )
    axes[1].legend(fontsize="small")

    if psis is None:
        for axis in axes[2:]:
            axis.set_axis_off()
            axis.text(0.5, 0.5, "PSIS-LOO not computed", ha="center", transform=axis.transAxes)
    else:
        k = np.asarray(psis.pareto_k)
        shown_k = np.where(np.isfinite(k), k, np.nanmax(np.where(np.isfinite(k), k, np.nan)))
        high = ~(k <= psis.good_k)
        axes[2].scatter(index[~high], shown_k[~high], s=6, color="C1", linewidths=0)
        axes[2].scatter(index[high], shown_k[high], s=12, color="red", linewidths=0)
        axes[2].axhline(psis.good_k, color="red", linewidth=1, label=f"good k {psis.good_k:.2f}")
        axes[2].set(xlabel="example index", ylabel="Pareto k", title="PSIS Pareto k")
        axes[2].legend(fontsize="small")

        psis_elpd = np.asarray(psis.elpd_i)
        low, top = min(elpd_i.min(), psis_elpd.min()), max(elpd_i.max(), psis_elpd.max())
        axes[3].plot([low, top], [low, top], color="0.6", linewidth=0.8)
        axes[3].scatter(psis_elpd, elpd_i, s=8, c=reliability, cmap="viridis", linewidths=0)
        axes[3].set(
            xlabel="elpd_i (PSIS, Laplace draws)",
            ylabel="elpd_i (MPE)",
            title="MPE against PSIS (colour: reliability)",
        )
    text = (
        "<p>Reliability near 0: the example carries a small share of the posterior "
        "precision along its prediction and the one-step MPE update is accurate; above "
        f"{threshold} it is doubtful; at 1 the leave-one-out posterior is improper. Pareto k "
        "plays that role for PSIS. Points far from the diagonal in the last panel are where "
        "the two estimates disagree.</p>"
    )
    return _section(
        "pointwise", "Pointwise", text + _png(figure, "pointwise elpd and diagnostics")
    )


def _shift_section(sens: Sensitivity, mean, order, shifts: _Shifts) -> str:
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sens.posterior_sd, dtype=float)
    count = min(mean.size, _MAX_SHIFT_PANELS)
    columns = min(count, 4)
    rows = -(-count // columns)
    figure = _figure(3.2 * columns, 0.6 + (0.22 * (len(order) + 1) + 0.8) * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    labels = ["all data", *(f"without {i}" for i in order)]
    position = np.arange(len(labels))[::-1]
    for p, axis in enumerate(axes):
        if p >= count:
            axis.set_axis_off()
            continue
        centre = np.concatenate([[mean[p]], shifts.means[:, p]])
        spread = np.concatenate([[sd[p]], shifts.sds[:, p]])
        axis.axvspan(mean[p] - sd[p], mean[p] + sd[p], color="0.92", zorder=0)
        axis.errorbar(centre[1:], position[1:], xerr=spread[1:], fmt="o", color="C0", ms=3)
        axis.errorbar(centre[:1], position[:1], xerr=spread[:1], fmt="s", color="black", ms=4)
        axis.set_title(sens.names[p], fontsize="medium")
        axis.set_yticks(position)
        axis.set_yticklabels(labels if p % columns == 0 else [], fontsize="x-small")
        axis.tick_params(axis="x", labelsize="x-small")
    text = (
        "<p>Posterior mean +- one sd of each unconstrained latent coordinate with all data "
        "(black, grey band) and without each of the most influential examples (blue), from "
        "the memory-perturbation equation (<code>numpyro_mpe.perturb</code>).</p>"
    )
    if mean.size > count:
        text += f'<p class="note">First {count} of {mean.size} coordinates shown.</p>'
    for index, message in shifts.failures.items():
        text += f'<p class="note">Without example {index}: {_text(message)}</p>'
    return _section("posterior-shift", "Posterior shift", text + _png(figure, "posterior shift"))


def _comparison_section(mpe, others: dict) -> str:
    base = np.asarray(mpe.elpd_i)
    n = base.size
    rows = [
        [
            "this model",
            number_text(mpe.elpd, 6),
            number_text(mpe.se),
            number_text(mpe.p),
            "0",
            "0",
            "",
            "",
        ]
    ]
    figure = _figure(9, 4)
    axis = figure.subplots()
    axis.axhline(0, color="0.6", linewidth=0.8)
    for k, (name, result) in enumerate(others.items()):
        difference = np.asarray(result.elpd_i) - base
        poor = int(np.sum(np.asarray(result.reliability) > result.reliability_threshold))
        rows.append(
            [
                name,
                number_text(result.elpd, 6),
                number_text(result.se),
                number_text(result.p),
                number_text(difference.sum()),
                number_text(np.sqrt(n * np.var(difference))),
                str(int(np.sum(difference > 0))),
                f"{poor} examples with reliability > {result.reliability_threshold}",
            ]
        )
        axis.scatter(np.arange(n), difference, s=6, color=f"C{k}", linewidths=0, label=name)
    axis.set(
        xlabel="example index",
        ylabel="elpd_i(model) - elpd_i(this model)",
        title="Pointwise elpd differences",
    )
    if others:
        axis.legend(fontsize="small")
    header = ["model", "elpd", "se", "p", "elpd diff", "se diff", "examples better", "notes"]
    text = (
        "<p>MPE-LOO of each model on the same data; differences are the other model's "
        "elpd_i minus this model's (positive: the other model predicts that example "
        "better); 'se diff' is sqrt(N var(diff)).</p>"
    )
    body = text + _table(header, rows, text_columns=1) + _png(figure, "elpd differences")
    return _section("comparison", "Model comparison", body)


# --------------------------------------------------------------------------- entry point


def report(
    model: Callable,
    guide: AutoGaussian,
    params: dict,
    *args: Any,
    path: str | Path = "report.html",
    data: Any = None,
    top: int = 10,
    plate: str | None = None,
    models: Mapping[str, tuple] | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> Path:
    """Write a self-contained HTML report of a fitted model (see module docstring).

    Parameters
    ----------
    model : callable
        The NumPyro model.
    guide : AutoGaussian
        Its fitted guide.
    params : dict
        Fitted guide params.
    *args, **kwargs
        The model's arguments.
    path : str or Path
        Where to write the HTML file: a ``.html`` or ``.htm`` name in an existing,
        writable folder (checked before any work). The file is written to a temporary
        file beside it and renamed into place, so a failure never leaves half a file.
    data : mapping or numpy structured array, optional
        Columns ``{name: (N,) array}`` describing each example, shown in the table of
        influential examples. Default: the model's array arguments of leading length ``N``.
    top : int
        How many of the most influential examples to list and perturb.
    plate : str, optional
        The plate of examples.
    models : mapping of str to (model, guide, params), optional
        Other fitted models on the same arguments: adds the ``comparison`` section. Each
        guide is an :class:`AutoGaussian` or :class:`~numpyro_mpe.AutoConjugate`; every
        entry is traced and its params checked before any work.
    overwrite : bool
        Replace ``path`` if it exists (default: refuse, ``FileExistsError``). Only True
        or False: ``overwrite="no"`` is refused, not taken as true.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        ``guide`` not an :class:`AutoGaussian`; ``params`` not a mapping (the model's
        arguments given before it); ``path`` not a ``str`` or path-like;
        ``overwrite`` not a bool; ``data`` of another type; ``models`` not a mapping of
        ``(model, guide, params)`` tuples of a callable, a supported guide and params,
        naming the model at fault.
    ValueError
        ``top`` below 1, a data column without one value per example, ``params`` (or
        those of a model in ``models``) that the guide refuses (as
        :meth:`AutoGaussian.checked_mean_precision`), a model in ``models`` with a
        different number of examples, or a ``path`` that is not a ``.html`` / ``.htm``
        file name.
    ModelError
        As :func:`~numpyro_mpe.trace_model`, for the model or one in ``models`` (named).
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    FileNotFoundError, PermissionError
        ``path``'s folder does not exist or cannot be written.

    Notes
    -----
    Warnings of :func:`~numpyro_mpe.loo`, the PSIS step and :func:`~numpyro_mpe.perturb`
    (``ReliabilityWarning``, ``ParetoKWarning``) are shown in the report, not raised.
    The PSIS-LOO column uses ``NUM_DRAWS = 2000`` draws of the Gaussian with a fixed seed.

    Examples
    --------
    >>> report(model, guide, fit.params, X, y, path="wells.html")  # doctest: +SKIP
    PosixPath('wells.html')
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    if not isinstance(guide, AutoGaussian):
        raise TypeError(
            "report needs the model's fitted numpyro_mpe.AutoGaussian (its Gaussian is drawn "
            f"from and perturbed), got guide {type(guide).__name__}"
        )
    if not isinstance(params, Mapping):
        # report(model, guide, X, params, y): the data would reach the model first.
        raise TypeError(
            f"params must be the guide's params (a dict), got {type(params).__name__}; the "
            "call is report(model, guide, params, *model_arguments)"
        )
    path = check_output_path(path, suffixes=HTML_SUFFIXES, overwrite=overwrite, what="path")
    models = _models_to_compare(models)
    notes: list[_Captured] = []
    plate_model = trace_model(model, *args, plate=plate, **kwargs)
    n = plate_model.num_examples
    columns = data_columns(data, model, args, kwargs, n)
    guide.checked_mean_precision(params, plate_model.num_latents, where="report")
    for name, entry in models.items():
        _check_model_to_compare(name, entry, args, kwargs, plate, n)
    with _capture(notes, "MPE-LOO"):
        mpe = loo(model, guide, params, *args, plate=plate, **kwargs)
    psis = _laplace_draws_loo(plate_model, guide, params, notes)
    sens = sensitivity(model, guide, params, *args, plate=plate, **kwargs)
    order = np.argsort(-np.asarray(sens.mahalanobis), kind="stable")[: min(top, n)]
    shifts = _posterior_shifts(model, guide, params, order, args, kwargs, plate, notes)

    others: dict[str, Any] = {}
    for name, (other_model, other_guide, other_params) in models.items():
        with _capture(notes, f"MPE-LOO of {name!r}"):
            others[name] = loo(
                other_model, other_guide, other_params, *args, plate=plate, **kwargs
            )

    mean, _ = guide.mean_precision(params)
    sections = [
        _summary_section(mpe, psis, plate_model, guide, notes),
        _influential_section(order, sens, mpe, psis, columns),
        _pointwise_section(mpe, psis, order),
        _shift_section(sens, mean, order, shifts),
    ]
    if models:
        sections.append(_comparison_section(mpe, others))
    title = f"numpyro_mpe report: {getattr(model, '__name__', 'model')}"
    document = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{_text(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{_text(title)}</h1>",
            *sections,
            "</body>",
            "</html>",
        ]
    )
    return write_atomically(path, document + "\n", overwrite=overwrite)
