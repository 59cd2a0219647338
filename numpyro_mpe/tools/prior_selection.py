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
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from numpyro_mpe.core.options import Covariance, LooMethod
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


def _check_arguments(model: Callable, name: str, values: Sequence[float], kwargs: dict):
    grid = np.asarray(values, dtype=float)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"values must be a non-empty 1-d sequence, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        index = int(np.argmax(~np.isfinite(grid)))
        raise ValueError(f"values holds {grid[index]} at index {index}")
    if name in kwargs:
        raise ValueError(f"'{name}' is swept by select_prior; do not pass it as well")
    parameters = inspect.signature(model).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if name not in parameters and not accepts_any:
        raise ValueError(
            f"the model {getattr(model, '__name__', model)!r} has no argument '{name}' "
            f"(its arguments: {', '.join(parameters)})"
        )
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
        sorted).
    *args, **kwargs
        The model's other arguments.
    covariance : {"dense", "diag"}
        The :class:`AutoGaussian` family.
    optimizer : NaturalGradientOptimizer, optional
        ``numpyro_mpe.optim.newton()`` by default.
    num_steps : int
        Most optimizer steps per value (the fit stops early when it converges).
    method : str
        Passed to :func:`numpyro_mpe.loo`.
    plate : str, optional
        The plate of examples.
    seed : int
        Seed of the fits.

    Returns
    -------
    PriorSelection

    Warns
    -----
    ReliabilityWarning
        Once, listing the values at which some examples' reliability is poor (instead of
        one warning per value).
    """
    grid = _check_arguments(model, name, values, kwargs)
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
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    values = selection.values
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
    for position, (label, curve) in enumerate((references or {}).items(), start=1):
        curve = np.asarray(curve, dtype=float)
        if curve.shape != values.shape:
            raise ValueError(
                f"reference {label!r} has shape {curve.shape}; expected {values.shape}"
            )
        ax.plot(values, curve, "s--", color=f"C{position}", label=label)
    ax.axvline(selection.best_value, color="0.5", linestyle=":", label="best (MPE-LOO)")
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(selection.name)
    ax.set_ylabel("mean log predictive density per example")
    ax.legend()
    return ax
