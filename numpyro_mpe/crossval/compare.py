"""Compare leave-one-out results pointwise: MPE against PSIS against brute-force refits.

:func:`compare_loo` puts any number of ArviZ ``ELPDData`` results (from :func:`loo`,
:func:`psis_loo`, :func:`exact_loo`, ``arviz.loo``) in one table, with the pointwise
agreement of each with a reference result and the count of examples its own diagnostic
flags; :func:`plot_loo_comparison` shows the pointwise differences, coloured by that
diagnostic.

Examples are matched by the coordinate values of each result's single pointwise
dimension (positions ``0..N-1`` where it has none), whatever the dimension is called
(``"data"`` for the MPE results, ``"obs_dim"`` for :func:`psis_loo` on plain arrays,
``"y_dim_0"`` for ``arviz.loo``). A refit of a subset of the examples (``exact_loo`` with
``indices``) is therefore compared on that subset only.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from numpyro_mpe.crossval.results import ELPDDataRefit, estimator_summary
from numpyro_mpe.optim.base import check_number

__all__ = ["check_figure_path", "compare_loo", "plot_loo_comparison"]

COLUMNS = (
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
)


class _Pointwise(NamedTuple):
    """One result's pointwise elpd ``(N,)`` with the example labels ``(N,)``; ``grouped``
    for a leave-one-group-out result (over a ``"group"`` dimension)."""

    labels: np.ndarray
    elpd_i: np.ndarray
    grouped: bool = False


class _Diagnostic(NamedTuple):
    """A result's own per-example diagnostic ``(N,)``, in the order of its ``elpd_i``."""

    name: str  # "reliability" or "pareto_k"
    values: np.ndarray
    threshold: float


def _resolve_reference(results: Mapping[str, Any], reference: str | None) -> str:
    if not isinstance(results, Mapping):
        raise TypeError(
            "results must be a dict {name: ELPDData result, ...} (the names label the "
            f"rows), e.g. {{'mpe': loo(...), 'psis': psis_loo(...)}}; got "
            f"{type(results).__name__}."
        )
    if not results:
        raise ValueError("results is empty: pass a dict {name: ELPDData result, ...}.")
    if reference is None:
        refits = [name for name, result in results.items() if isinstance(result, ELPDDataRefit)]
        return refits[0] if refits else next(iter(results))
    if not isinstance(reference, Hashable) or reference not in results:
        raise ValueError(
            f"reference {reference!r} is not one of the results; choose from {list(results)}."
        )
    return reference


def _pointwise(name: str, result: Any) -> _Pointwise:
    """The labels and values of ``result.elpd_i``, validated."""
    elpd_i = getattr(result, "elpd_i", None)
    if elpd_i is None and getattr(getattr(result, "loo", None), "elpd_i", None) is not None:
        raise TypeError(
            f"result {name!r} is a {type(result).__name__}, not an ELPDData result: pass "
            f"its .loo, e.g. {{{name!r}: mcmc_loo(...).loo}}."
        )
    if elpd_i is None:
        raise ValueError(
            f"result {name!r} has no pointwise elpd_i (compute it with pointwise values, "
            "e.g. arviz.loo(..., pointwise=True))."
        )
    values = np.asarray(getattr(elpd_i, "values", elpd_i), dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"result {name!r}: elpd_i must be 1-D over the examples; got shape {values.shape}."
        )
    finite = np.isfinite(values)
    if not finite.all():
        first = int(np.argmax(~finite))
        raise ValueError(
            f"result {name!r}: elpd_i has {int((~finite).sum())} non-finite value(s); the "
            f"first is {values[first]} at position {first}. Its differences to the "
            "reference would be NaN or inf."
        )
    dims = getattr(elpd_i, "dims", ())
    if dims and dims[0] in getattr(elpd_i, "coords", {}):
        labels = np.asarray(elpd_i.coords[dims[0]].values)
    else:
        labels = np.arange(values.size)
    if np.unique(labels).size != labels.size:
        raise ValueError(f"result {name!r}: the coordinate of elpd_i has repeated values.")
    return _Pointwise(labels, values, grouped=bool(dims) and dims[0] == "group")


def _overlap(
    name: str, reference_name: str, pointwise: _Pointwise, reference: _Pointwise
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(K,)`` in ``reference`` and in ``pointwise`` of their shared examples."""
    if pointwise.grouped != reference.grouped:
        kinds = {True: "groups (leave-one-group-out)", False: "examples (leave-one-out)"}
        raise ValueError(
            f"result {name!r} is pointwise over {kinds[pointwise.grouped]} but the reference "
            f"{reference_name!r} over {kinds[reference.grouped]}: group labels are not "
            "example indices, so they cannot be matched; compare results of one kind."
        )
    try:
        _, in_reference, in_result = np.intersect1d(
            reference.labels, pointwise.labels, assume_unique=True, return_indices=True
        )
    except TypeError:  # labels of incomparable types (e.g. strings against integers)
        in_reference = in_result = np.array([], dtype=int)
    if in_result.size == 0:
        raise ValueError(
            f"result {name!r} shares no examples with the reference {reference_name!r}: its "
            f"elpd_i has {pointwise.labels.size} values labelled "
            f"{_describe(pointwise.labels)}, the reference {reference.labels.size} labelled "
            f"{_describe(reference.labels)}."
        )
    return in_reference, in_result


def _common_labels(pointwise: Any) -> np.ndarray:
    """The example labels that every result covers (empty if none)."""
    common = None
    for result in pointwise:
        try:
            common = result.labels if common is None else np.intersect1d(common, result.labels)
        except TypeError:  # incomparable label types: nothing in common
            return np.array([], dtype=int)
    return common


def _sum_over(pointwise: _Pointwise, labels: np.ndarray) -> float | None:
    """Sum of ``elpd_i`` over ``labels`` (all present in ``pointwise``); None if empty."""
    if labels.size == 0:
        return None
    _, _, positions = np.intersect1d(
        labels, pointwise.labels, assume_unique=True, return_indices=True
    )
    return float(pointwise.elpd_i[positions].sum())


def _describe(labels: np.ndarray) -> str:
    shown = ", ".join(str(label) for label in labels[:3])
    return f"[{shown}{', ...' if labels.size > 3 else ''}]"


def _diagnostic(result: Any) -> _Diagnostic | None:
    """Reliability values (MPE) or Pareto k (PSIS, ``arviz.loo``), or ``None``."""
    reliability = getattr(result, "reliability", None)
    if reliability is not None:
        threshold = getattr(result, "reliability_threshold", None)
        threshold = getattr(result, "good_k", 0.7) if threshold is None else threshold
        return _Diagnostic("reliability", np.asarray(reliability, dtype=float), float(threshold))
    pareto_k = getattr(result, "pareto_k", None)
    if pareto_k is not None:
        good_k = getattr(result, "good_k", None)
        return _Diagnostic(
            "pareto_k", np.asarray(pareto_k, dtype=float), 0.7 if good_k is None else good_k
        )
    return None


def _sampled(result: Any, size: int) -> np.ndarray:
    """``(size,)`` bool: True for each entry of an MPE result whose value is an
    importance estimate (all False for other results)."""
    estimator = getattr(result, "estimator", None)
    if estimator is None:
        return np.zeros(size, bool)
    return np.char.find(np.asarray(estimator, dtype=str), "is-") >= 0


def _estimators(result: Any) -> str:
    """``"cavity 96, is-shared 166"``: how many entries each estimator produced (MPE),
    else ``"psis"``, ``"refit"`` or ``"-"``."""
    estimator = getattr(result, "estimator", None)
    if estimator is not None:
        return estimator_summary(estimator)
    if isinstance(result, ELPDDataRefit):
        return "refit"
    return "psis" if getattr(result, "pareto_k", None) is not None else "-"


def _checked_seconds(
    seconds: Mapping[str, float | None] | None, results: Mapping[str, Any]
) -> dict[str, float | None]:
    """``seconds`` as a dict, after refusing a non-mapping, names not in ``results`` and
    values that are not None or a finite number >= 0 (NaN is not "unknown": None is)."""
    if seconds is None:
        return {}
    if not isinstance(seconds, Mapping):
        raise TypeError(
            "seconds must be a dict {name: wall time in seconds, ...} keyed like results, "
            f"e.g. {{'mpe': 0.5}}; got {seconds!r}."
        )
    unknown = [name for name in seconds if name not in results]
    if unknown:
        raise ValueError(f"seconds names {unknown}, which are not in results {list(results)}.")
    for name, value in seconds.items():
        if value is not None:
            check_number(f"seconds[{name!r}]", value, 0.0, closed=True)
    return dict(seconds)


def _seconds(name: str, result: Any, seconds: Mapping[str, float | None]) -> float | None:
    value = seconds[name] if name in seconds else getattr(result, "seconds", None)
    if value is None or np.isnan(value):
        return None
    if value < 0:
        raise ValueError(f"seconds[{name!r}] must be non-negative; got {value}.")
    return float(value)


def compare_loo(
    results: Mapping[str, Any],
    reference: str | None = None,
    *,
    seconds: Mapping[str, float | None] | None = None,
) -> pd.DataFrame:
    """One table of several leave-one-out results and their pointwise agreement.

    For each result ``m`` and the reference ``r``, over the ``K`` examples both cover
    (``n_compared``), with :math:`d_i = \\mathrm{elpd}_{m,i} - \\mathrm{elpd}_{r,i}`:

    .. math::

        \\mathrm{max\\_abs\\_diff} = \\max_i |d_i|,\\qquad
        \\mathrm{rms\\_diff} = \\sqrt{\\tfrac{1}{K} \\textstyle\\sum_i d_i^2} ,

    and ``elpd_subset`` sums :math:`\\mathrm{elpd}_{m,i}` over the examples that *all*
    results cover, so that it compares the rows even when some cover a subset only.

    Parameters
    ----------
    results : mapping of str to ELPDData
        Named results with pointwise ``elpd_i`` over one dimension: :func:`loo`
        (``ELPDDataMPE``), :func:`psis_loo` (``ELPDDataPSIS``), :func:`exact_loo`
        (``ELPDDataRefit``, possibly over a subset of the examples), ``arviz.loo``. Rows
        follow the mapping's order.
    reference : str, optional
        Key of the result the others are compared with. Default: the first refit result
        (``ELPDDataRefit``, the ground truth when there is one), else the first entry.
    seconds : mapping of str to float, optional
        Wall times by name, each None (unknown) or a finite number >= 0. A name not
        given takes the result's ``seconds`` attribute (set by :func:`exact_loo`) where
        it has one; otherwise the time is missing.

    Returns
    -------
    pandas.DataFrame
        One row per result, indexed by name (``attrs["reference"]`` names the
        reference, ``attrs["n_common"]`` counts the examples all results cover), with
        the columns

        - ``elpd``, ``se``, ``p``: the result's own totals, over all its examples;
        - ``elpd_subset`` (nullable ``Float64``): the sum of its ``elpd_i`` over the
          examples common to all results (``attrs["n_common"]`` of them; missing if there
          are none). When some result covers a subset only (``exact_loo`` with
          ``indices``), compare these, not ``elpd``;
        - ``max_abs_diff``, ``rms_diff``: the pointwise differences above (0 for the
          reference itself);
        - ``n_compared`` (int): the number of shared examples;
        - ``n_poor`` (nullable ``Int64``): the examples the result's own diagnostic flags,
          out of all its examples: reliability value above ``reliability_threshold``
          (MPE; not counted where an importance estimate with a good Pareto k replaced
          the closed form) or Pareto k above ``good_k`` (PSIS, ``arviz.loo``; k not
          estimated, i.e. ``inf``, counts as poor); 0 for a refit; missing (``<NA>``) for
          any other result;
        - ``diagnostic`` (str): ``"reliability"``, ``"pareto_k"`` or ``"-"``;
        - ``estimators`` (str): for MPE, how many examples each estimator produced
          (``result.estimator``: ``"cavity 96, is-shared 166"``); ``"psis"``,
          ``"refit"`` or ``"-"`` for the others;
        - ``seconds`` (nullable ``Float64``): the wall time, missing (``<NA>``, not NaN)
          where unknown.

    Raises
    ------
    TypeError
        If ``results`` or ``seconds`` is not a mapping (a list of results, say), a
        result is a container of one (``mcmc_loo``'s result instead of its ``.loo``), or
        a value of ``seconds`` is not a number or None.
    ValueError
        If ``results`` is empty, ``reference`` or a key of ``seconds`` is not one of its
        keys, a value of ``seconds`` is negative, NaN or inf, a result has no pointwise
        ``elpd_i`` (or not a 1-D one, a non-finite one, or repeated coordinate values),
        a result shares no example with the reference, or one is leave-one-group-out
        (over a ``"group"`` dimension) and the other leave-one-out.

    See Also
    --------
    plot_loo_comparison : The pointwise differences, coloured by the diagnostic.
    arviz_stats.compare : Ranks models fitted to the same data; this compares estimates
        of the same model's leave-one-out densities.

    Examples
    --------
    >>> import numpy as np
    >>> from numpyro_mpe.crossval.results import make_refit_elpd_data
    >>> elpd_i = np.array([-0.5, -1.2, -0.7, -2.0])
    >>> full = make_refit_elpd_data(elpd_i, elpd_i + 0.1, dim="data", method="laplace")
    >>> subset = make_refit_elpd_data(
    ...     elpd_i[:2] + 0.01, elpd_i[:2] + 0.1, dim="data", method="laplace",
    ...     coords=np.arange(2), seconds=1.5,
    ... )
    >>> table = compare_loo({"all": full, "first two": subset}, reference="all")
    >>> columns = ["elpd", "elpd_subset", "max_abs_diff", "n_compared", "seconds"]
    >>> print(table[columns].round(3))  # doctest: +NORMALIZE_WHITESPACE
               elpd  elpd_subset  max_abs_diff  n_compared  seconds
    result
    all       -4.40         -1.7          0.00           4     <NA>
    first two -1.68        -1.68          0.01           2      1.5
    """
    reference = _resolve_reference(results, reference)
    seconds = _checked_seconds(seconds, results)
    pointwise = {name: _pointwise(name, result) for name, result in results.items()}
    reference_pointwise = pointwise[reference]
    common = _common_labels(pointwise.values())

    rows = []
    for name, result in results.items():
        in_reference, in_result = _overlap(name, reference, pointwise[name], reference_pointwise)
        values = pointwise[name].elpd_i[in_result]
        difference = values - reference_pointwise.elpd_i[in_reference]
        diagnostic = _diagnostic(result)
        if diagnostic is not None:
            # An importance estimate was kept only with a good Pareto k.
            poor = diagnostic.values > diagnostic.threshold
            n_poor = int(np.sum(poor & ~_sampled(result, poor.size)))
        else:
            n_poor = 0 if isinstance(result, ELPDDataRefit) else None
        rows.append(
            {
                "elpd": float(result.elpd),
                "se": float(result.se),
                "p": float(result.p),
                "elpd_subset": _sum_over(pointwise[name], common),
                "max_abs_diff": float(np.abs(difference).max()),
                "rms_diff": float(np.sqrt(np.mean(difference**2))),
                "n_compared": int(values.size),
                "n_poor": n_poor,
                "diagnostic": "-" if diagnostic is None else diagnostic.name,
                "estimators": _estimators(result),
                "seconds": _seconds(name, result, seconds),
            }
        )
    table = pd.DataFrame(rows, index=pd.Index(list(results), name="result"), columns=COLUMNS)
    table = table.astype(
        {"elpd_subset": "Float64", "n_compared": "int64", "n_poor": "Int64", "seconds": "Float64"}
    )
    table.attrs["reference"] = reference
    table.attrs["n_common"] = int(common.size)
    return table


def _given_axes(ax: Any) -> list | None:
    """The Axes in ``ax`` (one, or any nesting of sequences of them), or None for none;
    ``TypeError`` naming the first entry that is not a matplotlib Axes."""
    from matplotlib.axes import Axes

    if ax is None:
        return None
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    for position, axis in enumerate(axes):
        if not isinstance(axis, Axes):
            where = "" if axis is ax else f" (entry {position})"
            raise TypeError(
                "ax must be a matplotlib Axes or a sequence of Axes, one per result besides "
                f"the reference, e.g. plt.subplots(1, 2)[1]; got {type(axis).__name__} "
                f"{axis!r}{where}."
            )
    return axes


def check_figure_path(path: Any) -> Any:
    """``path`` after refusing, before anything is drawn, what ``savefig`` would only
    refuse at the end (or misread): a non-path, an existing folder (saved beside it as
    ``folder.png``), a folder that does not exist or cannot be written, a format
    matplotlib cannot write. A file-like object (``io.BytesIO``) is passed through."""
    from matplotlib.backend_bases import FigureCanvasBase

    if path is None or hasattr(path, "write"):
        return path
    if not isinstance(path, str | PathLike):
        raise TypeError(f"path must be a str or path-like (a file name), got {path!r}")
    file = Path(path)
    if file.is_dir():
        raise ValueError(
            f"path {str(file)!r} is a folder; give a file name, e.g. "
            f"{str(file / 'loo_comparison.png')!r}"
        )
    folder = file.parent if str(file.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"path {str(file)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"path {str(file)!r}: folder {str(folder)!r} is not writable")
    supported = FigureCanvasBase.get_supported_filetypes()
    suffix = file.suffix.lower().removeprefix(".")
    if suffix and suffix not in supported:
        raise ValueError(
            f"path {str(file)!r}: matplotlib cannot save a {file.suffix!r} file; use one of "
            f"{', '.join(sorted(supported))}"
        )
    return path


def _panel_axes(ax: list | None, n_panels: int):
    """The figure and ``n_panels`` axes: new ones, or those passed as ``ax``."""
    import matplotlib.pyplot as plt

    if ax is None:
        n_columns = min(n_panels, 3)
        n_rows = -(-n_panels // n_columns)
        figure = plt.figure(figsize=(5.0 * n_columns, 4.0 * n_rows), layout="constrained")
        axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
        for extra in axes[n_panels:]:
            figure.delaxes(extra)
        return figure, list(axes[:n_panels])
    return ax[0].figure, ax


def plot_loo_comparison(
    results: Mapping[str, Any],
    reference: str | None = None,
    *,
    ax: Any = None,
    path: str | PathLike | None = None,
):
    """Scatter each result's pointwise elpd against the reference's, coloured by diagnostic.

    One panel per result other than the reference: ``x`` is the reference's
    :math:`\\mathrm{elpd}_{r,i}`, ``y`` the difference
    :math:`\\mathrm{elpd}_{m,i} - \\mathrm{elpd}_{r,i}`, over the examples both cover
    (matched as in :func:`compare_loo`). Points are coloured by the result's reliability
    value (MPE) or Pareto k (PSIS, ``arviz.loo``), with a colorbar on which the threshold
    is drawn (when inside the colour range; the label always states it); the points
    above it are circled in red and counted in the legend. Refits have no diagnostic and
    are drawn in one colour.

    Parameters
    ----------
    results : mapping of str to ELPDData
        As for :func:`compare_loo`; needs at least one result besides the reference.
    reference : str, optional
        As for :func:`compare_loo` (default: the first refit, else the first entry).
    ax : matplotlib Axes or sequence of Axes, optional
        One Axes per panel (in the order of ``results``); default: a new figure with up
        to three panels per row.
    path : str or path-like, optional
        Where to save the figure (format from the suffix, e.g. ``.png``; checked before
        anything is drawn). An existing file there is replaced.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the panels (and their colorbars).

    Raises
    ------
    ValueError
        As :func:`compare_loo`; also if there is no result besides the reference,
        ``ax`` does not hold one Axes per panel, ``path`` is a folder or has a suffix
        matplotlib cannot write.
    TypeError
        As :func:`compare_loo`; also if ``ax`` holds something other than matplotlib
        Axes or ``path`` is not a str or path-like (or a file-like object).
    FileNotFoundError, PermissionError
        The folder of ``path`` does not exist or cannot be written.

    All are raised before anything is drawn.

    Notes
    -----
    Needs matplotlib (the ``plot`` extra), imported only here.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from numpyro_mpe.crossval.results import make_refit_elpd_data
    >>> elpd_i = np.array([-0.5, -1.2, -0.7, -2.0])
    >>> a = make_refit_elpd_data(elpd_i, elpd_i + 0.1, dim="data", method="laplace")
    >>> b = make_refit_elpd_data(elpd_i + 0.01, elpd_i + 0.1, dim="data", method="nuts")
    >>> len(plot_loo_comparison({"laplace": a, "nuts": b}, "laplace").axes)
    1
    """
    from matplotlib.colors import Normalize

    reference = _resolve_reference(results, reference)
    others = [name for name in results if name != reference]
    if not others:
        raise ValueError(
            f"nothing to compare: results holds only the reference {reference!r}; pass at "
            "least one other result."
        )
    given_axes = _given_axes(ax)
    if given_axes is not None and len(given_axes) != len(others):
        raise ValueError(
            f"ax must hold one Axes per result besides the reference ({len(others)}); "
            f"got {len(given_axes)}."
        )
    path = check_figure_path(path)
    reference_pointwise = _pointwise(reference, results[reference])
    aligned = {}
    for name in others:
        pointwise = _pointwise(name, results[name])
        in_reference, in_result = _overlap(name, reference, pointwise, reference_pointwise)
        aligned[name] = (reference_pointwise.elpd_i[in_reference], pointwise, in_result)

    figure, axes = _panel_axes(given_axes, len(others))
    for axis, name in zip(axes, others, strict=True):
        x, pointwise, in_result = aligned[name]
        difference = pointwise.elpd_i[in_result] - x
        axis.axhline(0.0, color="0.6", linewidth=0.8, zorder=0)
        diagnostic = _diagnostic(results[name])
        if diagnostic is None:
            axis.scatter(x, difference, s=8, color="C0", alpha=0.8, linewidths=0)
        else:
            values = diagnostic.values[in_result]
            poor = values > diagnostic.threshold
            finite = values[np.isfinite(values)]
            low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            if high <= low:
                low, high = low - 0.5, high + 0.5
            colours = np.where(np.isposinf(values), high, values)  # k not estimated: the top
            points = axis.scatter(
                x,
                difference,
                c=colours,
                cmap="viridis",
                norm=Normalize(low, high),
                s=8,
                linewidths=0,
            )
            label = f"{diagnostic.name} > {diagnostic.threshold:.3g}: {int(poor.sum())}"
            axis.scatter(
                x[poor],
                difference[poor],
                s=40,
                facecolors="none",
                edgecolors="red",
                linewidths=1.0,
                label=label,
            )
            colorbar = figure.colorbar(points, ax=axis)
            colorbar.set_label(f"{diagnostic.name} (threshold {diagnostic.threshold:.3g})")
            if low <= diagnostic.threshold <= high:
                colorbar.ax.axhline(diagnostic.threshold, color="red", linewidth=1.5)
            axis.legend(loc="best", fontsize="small")
        rms = np.sqrt(np.mean(difference**2))
        axis.set_title(
            f"{name} vs {reference}\n{x.size} examples, max |diff| {np.abs(difference).max():.2g}"
            f", RMS {rms:.2g}",
            fontsize="medium",
        )
        axis.set_xlabel(f"elpd_i ({reference})")
        axis.set_ylabel("elpd_i difference to the reference")
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
