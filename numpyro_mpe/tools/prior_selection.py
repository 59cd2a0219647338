"""Choosing a prior scale (or any regularisation hyperparameter) by MPE-LOO, no refits.

For each value ``tau_v`` of a model argument, one fit of the posterior (warm-started from
the previous value's fit) and one MPE-LOO pass give

.. math::

    \\mathrm{elpd}(\\tau_v) = \\sum_i \\log p(y_i \\mid y_{-i}, \\tau_v),

so a grid of ``V`` values costs ``V`` fits instead of the ``V N`` refits of brute-force
LOO. The best value maximises the estimated elpd.
"""

from __future__ import annotations

import inspect
import reprlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import numpyro

from numpyro_mpe.core.model import ModelError, check_argument_range, prototype_trace
from numpyro_mpe.core.options import LOO_METHODS, Covariance, LooMethod, check_choice
from numpyro_mpe.crossval.importance import check_seed
from numpyro_mpe.crossval.mpe_loo import loo
from numpyro_mpe.crossval.results import ELPDDataMPE, ReliabilityWarning
from numpyro_mpe.infer.blr import BLR
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.optim import NaturalGradientOptimizer, newton

__all__ = ["PriorSelection", "plot_prior_selection", "select_prior"]


class PriorSelection(NamedTuple):
    """Result of :func:`select_prior` over ``V`` values.

    Attributes
    ----------
    name : str
        The model argument swept.
    values : numpy.ndarray, shape (V,)
    elpd, se : numpy.ndarray, shape (V,)
        MPE-LOO ``elpd`` and its standard error at each value.
    best_value : float
        The value with the largest ``elpd``.
    best_index : int
    results : tuple of ELPDDataMPE
        The full MPE-LOO result at each value.
    params : tuple of dict
        The fitted guide params at each value.
    guide : AutoGaussian
        The guide those params belong to.
    """

    name: str
    values: np.ndarray
    elpd: np.ndarray
    se: np.ndarray
    best_value: float
    best_index: int
    results: tuple[ELPDDataMPE, ...]
    params: tuple[dict, ...]
    guide: AutoGaussian


def _check_arguments(
    model: Callable, name: str, values: Sequence[float], args: tuple, kwargs: dict
) -> np.ndarray:
    """The grid as a float array, after refusing what would fail or mislead after fits."""
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a function), got {type(model).__name__}")
    try:
        array = np.asarray(values)
    except ValueError:  # a ragged nesting
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":  # strings, None, bools, a set, a ragged list
        raise TypeError(
            f"values must be a 1-d sequence of numbers, got {type(values).__name__} "
            f"{reprlib.repr(values)}"
        )
    grid = array.astype(float)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"values must be a non-empty 1-d sequence, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        index = int(np.argmax(~np.isfinite(grid)))
        raise ValueError(f"values holds {grid[index]} at index {index}")
    # 1e300 or 1e-300 become inf or 0 in float32: refused here, not after the first fits.
    check_argument_range((), {name: grid})
    if name in kwargs:
        raise ValueError(f"'{name}' is swept by select_prior; do not pass it as well")
    parameters = inspect.signature(model).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if name not in parameters and not accepts_any:
        raise ValueError(
            f"the model {getattr(model, '__name__', model)!r} has no argument '{name}' "
            f"(its arguments: {', '.join(parameters)})"
        )
    # Every value is a valid argument of the model (a scale > 0, ...): a bad one must not
    # surface after the fits of the values before it.
    with numpyro.validation_enabled(True):
        for index, value in enumerate(grid):
            try:
                prototype_trace(model, args, {**kwargs, name: np.asarray(value)})
            except ModelError as error:
                raise ModelError(
                    f"select_prior: the model fails at {name} = {value:g} (values[{index}]); "
                    f"each value must be valid for the model, a scale positive: {error}"
                ) from error
    return grid


def select_prior(
    model: Callable,
    name: str,
    values: Sequence[float],
    *args: Any,
    covariance: Covariance = "dense",
    optimizer: NaturalGradientOptimizer | None = None,
    num_steps: int = 100,
    method: LooMethod = "cavity",
    plate: str | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> PriorSelection:
    """MPE-LOO over a grid of a model argument (a prior scale, a precision, ...).

    Parameters
    ----------
    model : callable
        A NumPyro model taking the hyperparameter as the keyword argument ``name``.
    name : str
        That argument's name.
    values : sequence of float, length V
        The grid, fitted in the order given (each fit warm-starts the next: give it
        sorted). Finite numbers, each a valid value of the argument: the model is traced
        at every value, with numpyro's distribution checks on, before the first fit (a
        scale of 0 or below is refused there, not after the fits of the values before
        it).
    *args, **kwargs
        The model's other arguments.
    covariance : {"dense", "diag"}
        The :class:`AutoGaussian` family.
    optimizer : NaturalGradientOptimizer, optional
        ``numpyro_mpe.optim.newton()`` by default.
    num_steps : int
        Most optimizer steps per value (the fit stops early when it converges).
    method : {"cavity", "paper", "is"}
        Passed to :func:`numpyro_mpe.loo` (checked before the first fit).
    plate : str, optional
        The plate of examples.
    seed : int
        Seed of the fits, a non-negative integer.

    Returns
    -------
    PriorSelection

    Raises
    ------
    TypeError
        ``model`` not callable, ``values`` not numbers (strings, bools, None), ``seed``
        not an integer; as :class:`BLR` for ``optimizer``.
    ValueError
        Before any fit: ``values`` empty, not 1-d or not finite; ``name`` not an argument
        of the model, or also given in ``kwargs``; an unknown ``method``; ``seed`` below
        0; an unknown ``covariance``.
    ModelError
        The model fails to trace at one of ``values`` (naming it, e.g. a negative
        scale); a value that jax's float dtype cannot hold (``1e300`` or ``1e-300``
        without x64: inf or 0 in float32); or as :func:`~numpyro_mpe.trace_model`.

    Warns
    -----
    ReliabilityWarning
        Once, listing the values at which some examples' reliability is poor (instead of
        one warning per value).
    """
    check_choice("method", method, LOO_METHODS)
    check_seed(seed)
    grid = _check_arguments(model, name, values, args, kwargs)
    guide = AutoGaussian(model, covariance=covariance)
    blr = BLR(model, guide, newton() if optimizer is None else optimizer, plate=plate)
    rng_key = jax.random.PRNGKey(seed)
    results, fitted, flagged = [], [], []
    previous = None
    for value in grid:
        # An array, not a Python float: the fit and the LOO pass compile once for the grid.
        arguments = {**kwargs, name: np.asarray(value)}
        # Warm start at the previous value's posterior mean, every quantity of the
        # optimizer's state evaluated under the new value.
        state = blr.init(rng_key, *args, init_params=previous, **arguments)
        fit = blr.run(rng_key, num_steps, *args, progress_bar=False, init_state=state, **arguments)
        previous = fit.params
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = loo(model, guide, fit.params, *args, method=method, plate=plate, **arguments)
        flagged.extend(float(value) for w in caught if issubclass(w.category, ReliabilityWarning))
        for other in caught:
            if not issubclass(other.category, ReliabilityWarning):
                warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        results.append(result)
        fitted.append(fit.params)
    if flagged:
        warnings.warn(
            f"select_prior: some examples have poor reliability at {name} = "
            f"{sorted(set(flagged))}; see results[v].reliability",
            ReliabilityWarning,
            stacklevel=2,
        )
    elpd = np.array([r.elpd for r in results])
    best = int(np.argmax(elpd))
    return PriorSelection(
        name=name,
        values=grid,
        elpd=elpd,
        se=np.array([r.se for r in results]),
        best_value=float(grid[best]),
        best_index=best,
        results=tuple(results),
        params=tuple(fitted),
        guide=guide,
    )


def plot_prior_selection(
    selection: PriorSelection,
    references: dict[str, Sequence[float]] | None = None,
    *,
    ax=None,
    log_scale: bool = True,
):
    """Plot MPE-LOO's mean elpd per example against the swept value, with other curves.

    Parameters
    ----------
    selection : PriorSelection
    references : dict of str to sequence of float, optional
        Other curves over the same values, as a mean log predictive density per example
        (e.g. brute-force LOO ``elpd / N``, a held-out test set's mean log predictive
        density), each drawn with its label.
    ax : matplotlib Axes, optional
    log_scale : bool
        Log scale for the swept value.

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    TypeError
        ``selection`` not a :class:`PriorSelection`, ``references`` not a mapping or a
        curve not numbers, ``ax`` not a matplotlib Axes.
    ValueError
        A reference curve of another shape than ``selection.values`` or holding NaN or
        inf; ``log_scale`` with
        a value of 0 or below (matplotlib would drop it from the plot silently).
    """
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    if not isinstance(selection, PriorSelection):
        raise TypeError(
            "selection must be the PriorSelection that select_prior returns, got "
            f"{type(selection).__name__}"
        )
    if references is not None and not isinstance(references, Mapping):
        raise TypeError(
            "references must be a dict of label to curve (one value per swept value), got "
            f"{type(references).__name__}"
        )
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    values = selection.values
    if log_scale and np.any(values <= 0):
        index = int(np.argmax(values <= 0))
        raise ValueError(
            f"log_scale needs positive values; {selection.name} holds {values[index]:g} at "
            f"index {index}: pass log_scale=False"
        )
    curves = {}
    for label, curve in (references or {}).items():
        try:
            curves[label] = np.asarray(curve, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(
                f"reference {label!r} must be numbers, one per value, got {reprlib.repr(curve)}"
            ) from None
        if curves[label].shape != values.shape:
            raise ValueError(
                f"reference {label!r} has shape {curves[label].shape}; expected {values.shape}"
            )
        if not np.all(np.isfinite(curves[label])):
            index = int(np.argmax(~np.isfinite(curves[label])))
            raise ValueError(
                f"reference {label!r} holds {curves[label][index]} at index {index} "
                f"({selection.name} = {values[index]:g}); matplotlib would leave a gap silently"
            )
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    num_examples = selection.results[0].n_data_points
    elpd, se = selection.elpd / num_examples, selection.se / num_examples
    ax.fill_between(
        values,
        elpd - se,
        elpd + se,
        alpha=0.15,
        color="C0",
        label="MPE-LOO ± se",
    )
    ax.plot(values, elpd, "o-", color="C0", label="MPE-LOO")
    for position, (label, curve) in enumerate(curves.items(), start=1):
        ax.plot(values, curve, "s--", color=f"C{position}", label=label)
    ax.axvline(selection.best_value, color="0.5", linestyle=":", label="best (MPE-LOO)")
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(selection.name)
    ax.set_ylabel("mean log predictive density per example")
    ax.legend()
    return ax
