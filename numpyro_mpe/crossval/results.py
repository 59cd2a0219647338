"""ArviZ containers for MPE results (built only at the boundary, from plain arrays)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import xarray as xr
from arviz_stats.utils import ELPDDataLFO, ELPDDataLOO

from numpyro_mpe.crossval.importance import PROPOSALS
from numpyro_mpe.crossval.newton_correction import CORRECTION_TOL, group_decrement_message
from numpyro_mpe.crossval.psis import ParetoKWarning

__all__ = [
    "ELPDDataMPE",
    "ELPDDataMPELFO",
    "ELPDDataRefit",
    "ELPDDataRefitLFO",
    "ReliabilityWarning",
    "estimator_summary",
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
    estimator : DataArray of str
        Which estimate each entry's ``elpd_i`` is: ``"cavity"``, ``"paper"`` (also the
        cavity's fallback where the reliability reaches 1), ``"laplace"`` (the
        parameter-space form), ``"laplace-plug-in"`` (its fallback), ``"is-shared"`` /
        ``"is-own"`` (MPE-IS with the shared or the example's own mixture proposal),
        ``"conjugate"`` (exact), and for groups ``"group-cavity"``, ``"group-newton"``
        (Newton-corrected to the leave-group-out Laplace posterior), ``"group-is"``.
    estimator_diagnostic : DataArray
        That estimator's diagnostic: the reliability value for the closed forms (good
        below ``reliability_threshold``), the Pareto k for importance estimates (good at
        most ``importance_good_k``), the final Newton decrement for ``"group-newton"``
        (good below ``1e-8``).
    importance_pareto_k : DataArray
        ``method="is"``: Pareto k of each importance-sampled example (coordinate: the
        example indices), kept or not; None otherwise.
    importance_good_k : DataArray
        ``method="is"``: the Pareto k threshold of each example's draws,
        ``min(1 - 1 / log10(S), 0.7)``.
    importance_proposal : DataArray of str
        ``method="is"``: ``"shared"`` (the mixture shared by all examples), ``"own"``
        (the example's own mixture) or ``"group"`` (a group's correction).
    importance_accepted : DataArray of bool
        ``method="is"``: whether the importance estimate replaced the closed form (its k
        good, the value finite and possible).
    importance_mcse : float
        Monte Carlo standard error of the sum of the kept importance estimates (delta
        method over common draws, plus independent ones in quadrature).
    importance_pilot_k : float
        ``method="is"``: the pilot's Pareto k (the fitted Gaussian as a proposal for the
        posterior; above 0.7 every example is sampled by default).
    group_of_example : DataArray
        Leave-group-out (``loo(..., groups=...)``): each example's group label, over the
        plate; None otherwise.
    example_elpd : DataArray
        Leave-group-out with a predictor: ``log p(y_i | y_{-G(i)})`` over the plate, each
        example's density given the data without its whole group.
    group_log_loss : DataArray
        Leave-group-out with a predictor: ``-mean_{i in G} log p(y_i | y_-G)`` per group
        (the leave-one-class-out loss when the groups are a classifier's classes).
    group_newton_decrement : DataArray
        Leave-group-out: the Newton decrement of the log joint without the group at the
        MPE cavity mean (0 when the cavity is the leave-group-out Laplace posterior);
        above 0.1 the group is corrected by Newton steps (``"cavity"`` and ``"is"``) and
        warned about.
    group_newton_steps : DataArray of int
        Leave-group-out: the Newton steps taken from the cavity mean to the group's
        leave-group-out mode (0 where the one-step decrement is at most 0.1, and for
        ``method="paper"``).
    group_corrected_decrement : DataArray
        Leave-group-out: the decrement where the group's value was computed (after
        ``group_newton_steps`` steps); below ``1e-8`` the value is that of the
        leave-group-out Laplace posterior.
    """

    _display_kind: ClassVar[str] = "loo_mpe"

    reliability: xr.DataArray = None
    reliability_threshold: float = 0.7
    lppd_i: xr.DataArray = None
    method: str = "cavity"
    covariance: str = "dense"
    estimator: xr.DataArray = None
    estimator_diagnostic: xr.DataArray = None
    importance_pareto_k: xr.DataArray = None
    importance_good_k: xr.DataArray = None
    importance_proposal: xr.DataArray = None
    importance_accepted: xr.DataArray = None
    importance_mcse: float | None = None
    importance_pilot_k: float | None = None
    group_of_example: xr.DataArray = None
    example_elpd: xr.DataArray = None
    group_log_loss: xr.DataArray = None
    group_newton_decrement: xr.DataArray = None
    group_newton_steps: xr.DataArray = None
    group_corrected_decrement: xr.DataArray = None

    def _header(self):
        what = "observations" if self.group_of_example is None else "groups (left out whole)"
        if self.method == "conjugate":
            return (
                "Computed by exact division of a conjugate posterior's natural parameters "
                f"over {self.n_data_points} {what}."
            )
        return (
            f"Computed by the memory-perturbation equation (method={self.method!r}) from a "
            f"{self.covariance} Gaussian posterior over {self.n_data_points} {what}."
        )

    def _footer(self):
        if self.method == "conjugate":
            return "\nExact: no reliability values apply."
        values = np.asarray(self.reliability)
        poor = int(np.sum(values > self.reliability_threshold))
        line = (
            f"\nReliability value Lambda_i V_i: max {values.max():.3g}; "
            f"{poor} of {values.size} above {self.reliability_threshold}."
        )
        if self.importance_pareto_k is not None:
            k = np.asarray(self.importance_pareto_k)
            kept = int(np.sum(self.importance_accepted))
            what = "examples" if self.group_of_example is None else "groups"
            pilot = self.importance_pilot_k
            pilot = "" if pilot is None or np.isnan(pilot) else f" (pilot k {pilot:.2f})"
            line += (
                f"\nMPE-IS on {k.size} {what}{pilot}: "
                f"max Pareto k {k.max():.2f}; {kept} kept, "
                f"{int(np.sum(~(k <= np.asarray(self.importance_good_k))))} above their "
                f"threshold; Monte Carlo SE of the kept sum {self.importance_mcse:.3f}."
            )
        if self.estimator is not None:
            line += f"\nEstimators: {estimator_summary(self.estimator)}."
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
    group_of_example, example_elpd, group_log_loss : DataArray
        Leave-group-out (``exact_loo(..., groups=...)``), as in :class:`ELPDDataMPE`.
    """

    _display_kind: ClassVar[str] = "loo_refit"

    lppd_i: xr.DataArray = None
    method: str = "laplace"
    seconds: float | None = None
    group_of_example: xr.DataArray = None
    example_elpd: xr.DataArray = None
    group_log_loss: xr.DataArray = None

    def _header(self):
        what = "observations" if self.group_of_example is None else "groups (left out whole)"
        return (
            f"Computed by refitting ({self.method}) without each of {self.n_data_points} {what}."
        )


@dataclass(kw_only=True, repr=False)
class ELPDDataMPELFO(ELPDDataLFO):
    """MPE leave-future-out result (:func:`numpyro_mpe.lfo`): an ArviZ ``ELPDDataLFO``
    (``kind="lfo_cv"``) that ``az.compare`` accepts beside other LFO results with the
    same ``min_observations`` and ``forecast_horizon``.

    Extra attributes
    ----------------
    newton_decrement : DataArray
        Per origin: the larger Newton decrement of the two MPE posteriors it uses (given
        ``t`` and ``t + M`` time points); 0 when they are the Laplace posteriors.
    decrement_threshold : float
        Above it an origin is unreliable (``method="cavity"``).
    base : DataArray
        Per origin: the training length of the fit its value comes from (``T``: the
        full fit; less: a refit made by ``refit="unreliable"``).
    method : str
        ``"cavity"`` or ``"is"``.
    covariance : str
        ``"dense"`` or ``"diag"``.
    seconds : float
        Wall time, refits included.
    """

    _display_kind: ClassVar[str] = "lfo_mpe"

    newton_decrement: xr.DataArray = None
    decrement_threshold: float = 0.1
    base: xr.DataArray = None
    method: str = "cavity"
    covariance: str = "dense"
    seconds: float | None = None

    def _header(self):
        refit = "no refit" if not self.n_refits else f"{self.n_refits} refits"
        return (
            f"Computed by the memory-perturbation equation (method={self.method!r}) from a "
            f"{self.covariance} Gaussian posterior over {self.n_data_points} forecast "
            f"origins with {self.forecast_horizon}-step-ahead predictions ({refit}).\n"
            f"Minimum training observations: {self.min_observations}."
        )

    def _footer(self):
        values = np.asarray(self.newton_decrement)
        line = (
            f"\nNewton decrement: max {values.max():.3g}; "
            f"{int(np.sum(values > self.decrement_threshold))} of {values.size} origins "
            f"above {self.decrement_threshold}."
        )
        if self.pareto_k is not None:
            k = np.asarray(self.pareto_k)
            line += (
                f"\nImportance sampling: max Pareto k {k.max():.2f}; "
                f"{int(np.sum(~(k <= self.good_k)))} above {self.good_k:.2f}."
            )
        return line

    @classmethod
    def from_origins(
        cls,
        window,
        elpd_i: np.ndarray,
        lppd_i: np.ndarray,
        *,
        dim: str,
        newton_decrement: np.ndarray,
        pareto_k: np.ndarray | None,
        base: np.ndarray,
        **fields,
    ) -> ELPDDataMPELFO:
        """Build from per-origin arrays ``(O,)`` over ``window.origins``
        (:class:`~numpyro_mpe.crossval.lfo_window.LFOWindow`)."""
        origins = window.origins
        return cls(
            **_lfo_fields(window, elpd_i, lppd_i, dim),
            pareto_k=None if pareto_k is None else _pointwise(pareto_k, dim, "pareto_k", origins),
            newton_decrement=_pointwise(newton_decrement, dim, "newton_decrement", origins),
            base=_pointwise(np.asarray(base), dim, "base", origins),
            n_refits=len(fields["refits"]),
            **fields,
        )


def estimator_summary(estimator) -> str:
    """How many entries each estimator produced, ``"cavity 96, is-shared 166"``, from an
    :class:`ELPDDataMPE`'s ``estimator`` ``(N,)`` (names sorted).

    >>> estimator_summary(np.array(["is-shared", "cavity", "is-shared"]))
    'cavity 1, is-shared 2'

    Raises ``TypeError`` for anything but a 1-d array of str (or a DataArray of them).
    """
    values = np.asarray(estimator)
    if (
        values.ndim != 1
        or values.dtype.kind not in "UO"
        or not all(isinstance(v, str) for v in values.tolist())
    ):
        raise TypeError(
            "estimator must be a 1-d array of estimator names (ELPDDataMPE.estimator), got "
            f"{type(estimator).__name__} of shape {values.shape} and dtype {values.dtype}"
        )
    names, counts = np.unique(np.asarray(estimator, dtype=str), return_counts=True)
    return ", ".join(f"{name} {count}" for name, count in zip(names, counts, strict=True))


def _lfo_fields(window, elpd_i: np.ndarray, lppd_i: np.ndarray, dim: str) -> dict:
    """The ``ELPDDataLFO`` fields every LFO result shares, from per-origin arrays
    ``(O,)`` over ``window.origins``: totals, ``elpd_i``, ``p_lfo_i``, the window."""
    elpd_i = np.asarray(elpd_i, dtype=float)
    lppd_i = np.asarray(lppd_i, dtype=float)
    _check_finite(elpd_i=elpd_i, lppd_i=lppd_i)
    summary = _summary(elpd_i, lppd_i)
    return summary | {
        "elpd_i": _pointwise(elpd_i, dim, "elpd_i", window.origins),
        "p_lfo_i": _pointwise(lppd_i - elpd_i, dim, "p_lfo_i", window.origins),
        "forecast_horizon": window.horizon,
        "min_observations": window.min_train,
    }


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


def _leave_out_masked(observed, coords, importance, groups, *values):
    """Leave out the examples masked out of the likelihood (``observed`` False), and the
    groups left without an example: ``(coords, importance, groups, examples, *values)``
    with ``examples`` the indices of the kept examples (the plate's coordinate)."""
    if groups is None:
        observed = np.asarray(observed, bool)[: np.size(values[0])]
        examples = entries = np.flatnonzero(observed)
    else:
        plate, codes, example_elpd, *per_group = groups
        codes = np.asarray(codes)
        observed = np.asarray(observed, bool)[: codes.size]
        examples = np.flatnonzero(observed)
        entries = np.unique(codes[observed])
    position = np.full(np.size(values[0]), -1)
    position[entries] = np.arange(entries.size)
    if groups is not None:
        groups = (
            plate,
            position[codes[observed]],
            None if example_elpd is None else np.asarray(example_elpd)[observed],
            *(np.asarray(v)[entries] for v in per_group),
        )
    if importance is not None:
        indices, result, accepted = importance
        indices = np.asarray(indices)
        chosen = np.isin(indices, entries)
        result = result._replace(
            **{
                field: np.asarray(getattr(result, field))[chosen]
                for field in ("elpd", "pareto_k", "mcse", "good_k", "proposal")
            }
        )
        importance = (position[indices[chosen]], result, np.asarray(accepted)[chosen])
    coords = entries if coords is None else np.asarray(coords)[entries]
    return coords, importance, groups, examples, *(np.asarray(v)[entries] for v in values)


def make_refit_elpd_data(
    elpd_i: np.ndarray,
    lppd_i: np.ndarray,
    *,
    dim: str,
    method: str,
    n_samples: int = 0,
    coords: np.ndarray | None = None,
    seconds: float | None = None,
    groups: tuple | None = None,
    observed: np.ndarray | None = None,
) -> ELPDDataRefit:
    """Build an :class:`ELPDDataRefit` from pointwise arrays ``(N,)`` (over ``coords``);
    ``groups`` and ``observed`` as in :func:`make_elpd_data`."""
    examples = None
    if observed is not None:
        coords, _, groups, examples, elpd_i, lppd_i = _leave_out_masked(
            observed, coords, None, groups, elpd_i, lppd_i
        )
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
        **({} if groups is None else _group_fields(dim, coords, *groups, examples=examples)),
    )


def _group_fields(dim, labels, plate, codes, example_elpd, *, examples=None) -> dict:
    """``group_of_example``, ``example_elpd`` and ``group_log_loss`` of a leave-group-out
    (over the plate's coordinate ``examples``, default ``0..N-1``)."""
    codes = np.asarray(codes)
    fields = {"group_of_example": _pointwise(np.asarray(labels)[codes], plate, "group", examples)}
    if example_elpd is not None:
        example_elpd = np.asarray(example_elpd, dtype=float)
        _check_finite(example_elpd=example_elpd)
        loss = -np.bincount(codes, example_elpd, len(labels)) / np.bincount(
            codes, None, len(labels)
        )
        fields["example_elpd"] = _pointwise(example_elpd, plate, "example_elpd", examples)
        fields["group_log_loss"] = _pointwise(loss, dim, "group_log_loss", labels)
    return fields


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
    coords: np.ndarray | None = None,
    groups: tuple | None = None,
    observed: np.ndarray | None = None,
    estimator: np.ndarray | None = None,
) -> ELPDDataMPE:
    """Build an :class:`ELPDDataMPE` from pointwise arrays ``(N,)``, warning on poor ones.

    ``estimator`` ``(N,)`` names the estimator of each closed-form value (default:
    ``method`` for all). ``importance`` is ``(indices, ImportanceLOO, accepted)`` for
    ``method="is"``: the importance estimates of the examples ``indices`` ``(M,)``, of
    which those ``accepted`` ``(M,)`` replace the closed-form values (their estimator
    becomes ``"is-shared"`` or ``"is-own"`` and their reliability no longer counts as
    poor); the others keep theirs. ``coords`` label the entries (default ``0..N-1``).
    ``groups`` is ``(plate, codes, example_elpd, newton_decrement, newton_steps,
    corrected_decrement)`` for leave-group-out (the last three as in
    :class:`~numpyro_mpe.crossval.groups.GroupLOO`): the entries are groups labelled by
    ``coords``, ``codes`` ``(N,)`` maps each example to one; ``example_elpd`` ``(N,)`` may
    be None. Groups with Newton steps become ``"group-newton"`` estimates. ``observed``
    (``PlateModel.observed_mask``: bool over the ``N`` examples, its first ``N`` entries
    when longer) leaves out the examples masked out of the likelihood, and the groups left
    without one: they are not data, so they count neither in ``n_data_points`` nor in the
    standard error; the entries keep their labels (the examples' indices by default).
    """
    if estimator is None:
        estimator = np.full(np.size(elpd_i), method)
    examples = None
    if observed is not None:
        masked = _leave_out_masked(
            observed, coords, importance, groups, elpd_i, lppd_i, reliability, estimator
        )
        coords, importance, groups, examples, elpd_i, lppd_i, reliability, estimator = masked
    elpd_i = np.array(elpd_i, dtype=float)  # a copy: importance estimates are written in
    lppd_i = np.asarray(lppd_i, dtype=float)
    reliability = np.asarray(reliability, dtype=float)
    estimator = np.asarray(estimator).astype(object)
    diagnostic = reliability.copy()
    n = elpd_i.size
    corrected = np.zeros(n, bool)
    extra = {}
    if groups is not None:
        plate, codes, example_elpd, decrement, steps, final = groups
        extra.update(_group_fields(dim, coords, plate, codes, example_elpd, examples=examples))
        decrement = np.asarray(decrement, dtype=float)
        steps = np.asarray(steps, dtype=np.int32)
        final = np.asarray(final, dtype=float)
        extra["group_newton_decrement"] = _pointwise(decrement, dim, "newton_decrement", coords)
        extra["group_newton_steps"] = _pointwise(steps, dim, "newton_steps", coords)
        extra["group_corrected_decrement"] = _pointwise(final, dim, "corrected_decrement", coords)
        newton = steps > 0
        estimator[newton] = "group-newton"
        diagnostic[newton] = final[newton]
        # Converged to the leave-group-out Laplace posterior: the one-step cavity's
        # reliability no longer describes the value.
        corrected |= newton & (final < CORRECTION_TOL)
        message = group_decrement_message(decrement, steps, final)
        if message is not None:
            warnings.warn(message, ReliabilityWarning, stacklevel=3)
    if importance is not None:
        indices, result, accepted = importance
        extra.update(
            _importance_fields(indices, result, accepted, dim, coords, groups is not None)
        )
        kept = np.asarray(indices)[accepted]
        elpd_i[kept] = np.asarray(result.elpd, dtype=float)[accepted]
        diagnostic[kept] = np.asarray(result.pareto_k, dtype=float)[accepted]
        estimator[kept] = (
            "group-is"
            if groups is not None
            else [f"is-{PROPOSALS[p]}" for p in np.asarray(result.proposal)[accepted]]
        )
        # Per-example MPE-IS targets the exact leave-one-out posterior, so reliability no
        # longer matters there; the group correction integrates under the cavity (or the
        # Newton-corrected Gaussian, already counted above).
        corrected[kept] |= groups is None
    _check_finite(elpd_i=elpd_i, lppd_i=lppd_i, reliability=reliability)
    what = "examples" if groups is None else "groups"
    poor = int(np.sum((reliability > threshold) & ~corrected))
    if poor:
        warnings.warn(
            f"{poor} of {n} {what} have a reliability value above {threshold}: the "
            f"first-order leave-{'one' if groups is None else 'group'}-out update is "
            "unreliable for them (see result.reliability; refit them or use importance "
            "sampling)",
            ReliabilityWarning,
            stacklevel=3,
        )
    return ELPDDataMPE(
        **_summary(elpd_i, lppd_i),
        n_samples=0,
        warning=bool(poor),
        good_k=threshold,
        elpd_i=_pointwise(elpd_i, dim, "elpd_i", coords),
        lppd_i=_pointwise(lppd_i, dim, "lppd_i", coords),
        reliability=_pointwise(reliability, dim, "reliability", coords),
        estimator=_pointwise(estimator.astype(str), dim, "estimator", coords),
        estimator_diagnostic=_pointwise(diagnostic, dim, "estimator_diagnostic", coords),
        **extra,
        reliability_threshold=threshold,
        method=method,
        covariance=covariance,
    )


def _importance_fields(indices, result, accepted, dim, coords, grouped: bool) -> dict:
    """The ``importance_*`` fields of an :class:`ELPDDataMPE`, warning where the
    importance estimates are rejected or their Monte Carlo error is large."""
    indices = np.asarray(indices)
    accepted = np.asarray(accepted, bool)
    pareto_k = np.asarray(result.pareto_k, dtype=float)
    good_k = np.asarray(result.good_k, dtype=float)
    total_mcse = float(result.total_mcse)
    labels = indices if coords is None else np.asarray(coords)[indices]
    proposal = np.asarray([PROPOSALS[p] for p in np.asarray(result.proposal)], dtype=str)
    fields = {
        "importance_pareto_k": _pointwise(pareto_k, dim, "pareto_k", labels),
        "importance_good_k": _pointwise(good_k, dim, "good_k", labels),
        "importance_proposal": _pointwise(proposal, dim, "proposal", labels),
        "importance_accepted": _pointwise(accepted, dim, "accepted", labels),
        "importance_mcse": total_mcse,
        "importance_pilot_k": float(result.pilot_pareto_k),
    }
    what = "groups" if grouped else "examples"
    if total_mcse > _MAX_IMPORTANCE_MCSE:
        warnings.warn(
            f"MPE-IS: the Monte Carlo standard error of the {int(accepted.sum())} "
            f"importance-sampled elpd_i kept, summed, is {total_mcse:.2f} nats; raise "
            "num_samples",
            ReliabilityWarning,
            stacklevel=4,
        )
    high = ~(pareto_k <= good_k)
    if high.any():
        target = (
            "the group's likelihood times its MPE cavity"
            if grouped
            else "their leave-one-out posterior"
        )
        outcome = (
            ""
            if grouped
            else f" ({int(np.sum(high & ~accepted))} keep their closed-form value, "
            f"{int(np.sum(high & accepted))} replace one whose reliability is also poor)"
        )
        warnings.warn(
            f"MPE-IS: {int(high.sum())} of {indices.size} importance-sampled {what} have "
            f"Pareto k above their threshold (max {np.nanmax(pareto_k):.2f}, or not "
            f"estimable){outcome}: even the mixture proposal is not close enough to "
            f"{target}; refit them (exact_loo)",
            ParetoKWarning,
            stacklevel=4,
        )
    return fields


@dataclass(kw_only=True, repr=False)
class ELPDDataRefitLFO(ELPDDataLFO):
    """Brute-force leave-future-out by a refit at every origin (:func:`exact_lfo`): an
    ArviZ ``ELPDDataLFO`` (``kind="lfo_cv"``) that ``az.compare`` accepts beside other
    LFO results with the same ``min_observations`` and ``forecast_horizon``; ``refits``
    holds every origin and ``good_k`` is None.

    Extra attributes
    ----------------
    method : str
        ``"laplace"``: Gaussian refits of the guide's family.
    seconds : float
        Wall time of all the refits (compilation included).
    pareto_k : DataArray
        Per origin: Pareto k of the importance sampling of the block densities (``-inf``
        where the integral is exact).
    """

    _display_kind: ClassVar[str] = "lfo_refit"

    method: str = "laplace"
    seconds: float | None = None

    def _header(self):
        origin_word = "origin" if self.n_data_points == 1 else "origins"
        return (
            f"Computed by refitting ({self.method}) at each of {self.n_data_points} "
            f"forecast {origin_word} with {self.forecast_horizon}-step-ahead predictions.\n"
            f"Minimum training observations: {self.min_observations}."
        )

    @classmethod
    def from_origins(
        cls,
        window,
        elpd_i: np.ndarray,
        lppd_i: np.ndarray,
        *,
        dim: str,
        pareto_k: np.ndarray,
        **fields,
    ) -> ELPDDataRefitLFO:
        """Build from per-origin arrays ``(O,)`` over ``window.origins``
        (:class:`~numpyro_mpe.crossval.lfo_window.LFOWindow`); ``fields``: ``warning``,
        ``method``, ``seconds``."""
        origins = window.origins
        return cls(
            **_lfo_fields(window, elpd_i, lppd_i, dim),
            n_samples=0,
            good_k=None,
            pareto_k=_pointwise(np.asarray(pareto_k, dtype=float), dim, "pareto_k", origins),
            refits=np.asarray(origins),
            n_refits=origins.size,
            **fields,
        )
