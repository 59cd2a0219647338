"""ArviZ containers for MPE results (built only at the boundary, from plain arrays)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import xarray as xr
from arviz_stats.utils import ELPDDataLOO

from numpyro_mpe.psis import ParetoKWarning

__all__ = [
    "ELPDDataMPE",
    "ELPDDataRefit",
    "ReliabilityWarning",
    "make_elpd_data",
    "make_refit_elpd_data",
]


_MAX_IMPORTANCE_MCSE = 0.5


class ReliabilityWarning(UserWarning):
    """Some examples have a reliability value above the threshold (see :func:`loo`)."""


@dataclass(kw_only=True, repr=False)
class ELPDDataMPE(ELPDDataLOO):
    """MPE-LOO result: an :class:`arviz_stats.ELPDDataLOO` that ``az.compare`` accepts.

    Extra attributes
    ----------------
    reliability : DataArray
        Per-example reliability value (``Lambda_i V_i`` for the scalar cavity form: the
        share of the posterior precision along ``f_i`` that example ``i`` carries). Near
        0 the first-order update is accurate; at 1 the cavity is improper.
    reliability_threshold : float
        Values above it are counted and warned about.
    lppd_i : DataArray
        Pointwise log predictive density under the full-data posterior (same
        integration as ``elpd_i``), so that ``p = sum(lppd_i - elpd_i)``.
    method : str
        ``"cavity"``, ``"paper"`` or ``"laplace"`` (the parameter-space form).
    covariance : str
        ``"dense"`` or ``"diag"``: the Gaussian family used.
    importance_pareto_k : DataArray
        ``method="is"``: Pareto k of each importance-sampled example (coordinate: the
        example indices); None otherwise.
    importance_mpe_proposal : DataArray
        ``method="is"``: True where the MPE posterior was the proposal (False: the
        full-data Gaussian, the MPE precision not being positive definite).
    importance_good_k : float
        The Pareto k threshold for those draws, ``min(1 - 1 / log10(S), 0.7)``.
    importance_mcse : float
        Monte Carlo standard error of the sum of the importance-sampled ``elpd_i``
        (independent per-example errors in quadrature, plus the shared evidence's error
        once per example).
    """

    _display_kind: ClassVar[str] = "loo_mpe"

    reliability: xr.DataArray = None
    reliability_threshold: float = 0.7
    lppd_i: xr.DataArray = None
    method: str = "cavity"
    covariance: str = "dense"
    importance_pareto_k: xr.DataArray = None
    importance_mpe_proposal: xr.DataArray = None
    importance_good_k: float | None = None
    importance_mcse: float | None = None

    def _header(self):
        return (
            f"Computed by the memory-perturbation equation (method={self.method!r}) from a "
            f"{self.covariance} Gaussian posterior over {self.n_data_points} observations."
        )

    def _footer(self):
        values = np.asarray(self.reliability)
        poor = int(np.sum(values > self.reliability_threshold))
        line = (
            f"\nReliability value Lambda_i V_i: max {values.max():.3g}; "
            f"{poor} of {values.size} above {self.reliability_threshold}."
        )
        if self.importance_pareto_k is not None:
            k = np.asarray(self.importance_pareto_k)
            line += (
                f"\nMPE-IS on {k.size} examples: max Pareto k {k.max():.2f}; "
                f"{int(np.sum(~(k <= self.importance_good_k)))} above "
                f"{self.importance_good_k:.2f}; Monte Carlo SE of their sum "
                f"{self.importance_mcse:.3f}."
            )
        return line


@dataclass(kw_only=True, repr=False)
class ELPDDataRefit(ELPDDataLOO):
    """Brute-force LOO by refitting without each example (:func:`exact_loo`).

    Extra attributes
    ----------------
    lppd_i : DataArray
        Pointwise log predictive density under the full-data fit.
    method : str
        ``"laplace"`` (Gaussian refits of the guide's family) or ``"nuts"``.
    seconds : float
        Wall time of all the refits.
    """

    _display_kind: ClassVar[str] = "loo_refit"

    lppd_i: xr.DataArray = None
    method: str = "laplace"
    seconds: float | None = None

    def _header(self):
        return (
            f"Computed by refitting ({self.method}) without each of "
            f"{self.n_data_points} observations."
        )


def _check_finite(**arrays: np.ndarray) -> None:
    for name, values in arrays.items():
        if not np.all(np.isfinite(values)):
            index = int(np.argmax(~np.isfinite(values)))
            raise FloatingPointError(
                f"leave-one-out produced a non-finite {name} ({values[index]}) at example {index}"
            )


def _summary(elpd_i: np.ndarray, lppd_i: np.ndarray) -> dict:
    n = elpd_i.size
    return {
        "elpd": float(elpd_i.sum()),
        "se": float(np.sqrt(n * np.var(elpd_i))),
        "p": float(np.sum(lppd_i - elpd_i)),
        "n_data_points": n,
        "scale": "log",
    }


def _pointwise(
    values: np.ndarray, dim: str, name: str, coords: np.ndarray | None = None
) -> xr.DataArray:
    coords = np.arange(values.size) if coords is None else coords
    return xr.DataArray(values, dims=[dim], coords={dim: coords}, name=name)


def make_refit_elpd_data(
    elpd_i: np.ndarray,
    lppd_i: np.ndarray,
    *,
    dim: str,
    method: str,
    n_samples: int = 0,
    coords: np.ndarray | None = None,
    seconds: float | None = None,
) -> ELPDDataRefit:
    """Build an :class:`ELPDDataRefit` from pointwise arrays ``(N,)`` (over ``coords``)."""
    elpd_i = np.asarray(elpd_i, dtype=float)
    lppd_i = np.asarray(lppd_i, dtype=float)
    _check_finite(elpd_i=elpd_i, lppd_i=lppd_i)
    return ELPDDataRefit(
        **_summary(elpd_i, lppd_i),
        n_samples=n_samples,
        warning=False,
        good_k=0.7,
        elpd_i=_pointwise(elpd_i, dim, "elpd_i", coords),
        lppd_i=_pointwise(lppd_i, dim, "lppd_i", coords),
        method=method,
        seconds=seconds,
    )


def make_elpd_data(
    elpd_i: np.ndarray,
    lppd_i: np.ndarray,
    reliability: np.ndarray,
    *,
    dim: str,
    threshold: float,
    method: str,
    covariance: str,
    importance: tuple | None = None,
) -> ELPDDataMPE:
    """Build an :class:`ELPDDataMPE` from pointwise arrays ``(N,)``, warning on poor ones.

    ``importance`` is ``(indices, ImportanceLOO, num_samples)`` for ``method="is"``: those
    examples' reliability no longer counts as poor; their Pareto k does.
    """
    elpd_i = np.asarray(elpd_i, dtype=float)
    lppd_i = np.asarray(lppd_i, dtype=float)
    reliability = np.asarray(reliability, dtype=float)
    _check_finite(elpd_i=elpd_i, lppd_i=lppd_i, reliability=reliability)
    n = elpd_i.size
    corrected = np.zeros(n, bool)
    extra = {}
    if importance is not None:
        indices, result, num_samples = importance
        corrected[indices] = True
        pareto_k = np.asarray(result.pareto_k, dtype=float)
        good_k = min(1 - 1 / np.log10(num_samples), 0.7)
        mcse = np.asarray(result.mcse, dtype=float)
        total_mcse = float(np.sqrt(np.sum(mcse**2)) + len(indices) * float(result.shared_mcse))
        extra = {
            "importance_pareto_k": _pointwise(pareto_k, dim, "pareto_k", indices),
            "importance_mcse": total_mcse,
            "importance_mpe_proposal": _pointwise(
                np.asarray(result.mpe_proposal), dim, "mpe_proposal", indices
            ),
            "importance_good_k": good_k,
        }
        if total_mcse > _MAX_IMPORTANCE_MCSE:
            warnings.warn(
                f"MPE-IS: the Monte Carlo standard error of the {len(indices)} "
                f"importance-sampled elpd_i, summed, is {total_mcse:.2f} nats; use it on "
                "the flagged examples only, or raise num_samples",
                ReliabilityWarning,
                stacklevel=3,
            )
        high = int(np.sum(~(pareto_k <= good_k)))
        if high:
            warnings.warn(
                f"MPE-IS: {high} of {len(indices)} importance-sampled examples have Pareto k "
                f"above {good_k:.2f} (or not estimable): even the MPE proposal is not close "
                "enough to their leave-one-out posterior; refit them (exact_loo)",
                ParetoKWarning,
                stacklevel=3,
            )
    poor = int(np.sum((reliability > threshold) & ~corrected))
    if poor:
        warnings.warn(
            f"{poor} of {n} examples have a reliability value above {threshold}: the "
            "first-order leave-one-out update is unreliable for them (see "
            "result.reliability; refit those examples or use importance sampling)",
            ReliabilityWarning,
            stacklevel=3,
        )
    return ELPDDataMPE(
        **_summary(elpd_i, lppd_i),
        n_samples=0,
        warning=bool(poor),
        good_k=threshold,
        elpd_i=_pointwise(elpd_i, dim, "elpd_i"),
        lppd_i=_pointwise(lppd_i, dim, "lppd_i"),
        reliability=_pointwise(reliability, dim, "reliability"),
        **extra,
        reliability_threshold=threshold,
        method=method,
        covariance=covariance,
    )
