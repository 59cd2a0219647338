"""Datasets embedded in the package (see ``numpyro_mpe/data/README.md`` for sources)."""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["LakeHuron", "Voice", "Wells", "load_lake_huron", "load_voice", "load_wells"]


class Wells(NamedTuple):
    """The arsenic wells data (Gelman & Hill 2007; rstanarm::wells), 3020 households.

    Attributes
    ----------
    switch : numpy.ndarray, shape (3020,)
        1 if the household switched to a safe well.
    arsenic, dist, assoc, educ : numpy.ndarray, shape (3020,)
        Arsenic level, distance to the nearest safe well (m), community association,
        years of education.
    """

    switch: np.ndarray
    arsenic: np.ndarray
    dist: np.ndarray
    assoc: np.ndarray
    educ: np.ndarray

    def design(self, *columns: str) -> np.ndarray:
        """Design matrix ``(N, 1 + len(columns))``: an intercept, then each column by name,
        one of the predictors ``arsenic``, ``dist``, ``assoc``, ``educ`` or ``"dist100"``
        (dist / 100).

        Raises
        ------
        TypeError
            A column given by something other than its name (an index, a list).
        ValueError
            An unknown column name (the valid ones are listed), a column given twice,
            ``dist`` with ``dist100`` (the same column scaled), or the outcome ``switch``.
        """
        valid = (*self._fields, "dist100")
        for position, column in enumerate(columns):
            if not isinstance(column, str):
                raise TypeError(
                    f"design takes column names, one of {valid[1:]}; got {column!r} "
                    f"({type(column).__name__}) at position {position}"
                )
            if column == "switch":
                raise ValueError(
                    "design: 'switch' is the outcome y; a design matrix holding it predicts y "
                    f"from itself (the predictors are {valid[1:]})"
                )
            if column not in valid:
                raise ValueError(f"design: unknown column {column!r}; the columns are {valid[1:]}")
            if column in columns[:position]:
                raise ValueError(f"design: column {column!r} given twice")
            if column in ("dist", "dist100") and {"dist", "dist100"} <= {
                *columns[:position],
                column,
            }:
                raise ValueError(
                    "design: columns 'dist' and 'dist100' are the same column (dist100 is "
                    "dist / 100), so the design matrix would be collinear; give one of them"
                )
        values = [np.ones_like(self.dist)]
        for column in columns:
            values.append(self.dist / 100 if column == "dist100" else getattr(self, column))
        return np.stack(values, axis=1)


def load_wells() -> Wells:
    """Load the embedded wells data."""
    with resources.files("numpyro_mpe").joinpath("data/wells.csv").open() as handle:
        table = np.genfromtxt(handle, delimiter=",", names=True)
    return Wells(*(np.asarray(table[name], dtype=float) for name in Wells._fields))


class Voice(NamedTuple):
    """The voice rehabilitation data (Tsanas et al. 2014; R ``loo::voice``): 126
    recordings, 312 acoustic features, a binary label.

    Attributes
    ----------
    y : numpy.ndarray, shape (126,)
        The binary label (0 or 1) of each recording: the experts' rating of the
        phonation as acceptable or not during rehabilitative speech treatment.
    X : numpy.ndarray, shape (126, 312)
        The 312 acoustic features of each recording, unscaled, in the file's column
        order. One column is constant; standardise (and drop it) before use.
    names : tuple of str, length 312
        The column names of ``X`` (``"X0"`` to ``"X311"``).

    Notes
    -----
    Source: the R package loo (``loo::voice``; GPL >= 3), from A. Tsanas, M. A. Little,
    C. Fox and L. O. Ramig (2014), "Objective automatic assessment of rehabilitative
    speech treatment in Parkinson's disease", IEEE Transactions on Neural Systems and
    Rehabilitation Engineering 22, 181-190. See ``numpyro_mpe/data/README.md``.
    """

    y: np.ndarray
    X: np.ndarray
    names: tuple[str, ...]


def load_voice() -> Voice:
    """Load the embedded voice data (a p >> n binary classification: 312 features, 126
    recordings)."""
    with resources.files("numpyro_mpe").joinpath("data/voice.csv").open() as handle:
        table = np.genfromtxt(handle, delimiter=",", names=True)
    names = tuple(name for name in table.dtype.names if name != "y")
    X = np.stack([np.asarray(table[name], dtype=float) for name in names], axis=1)
    return Voice(np.asarray(table["y"], dtype=float), X, names)


class LakeHuron(NamedTuple):
    """Annual level of Lake Huron in feet, 1875-1972 (R ``datasets::LakeHuron``; the
    series of Bürkner, Gabry & Vehtari's leave-future-out paper).

    Attributes
    ----------
    year : numpy.ndarray, shape (98,)
        1875 to 1972.
    level : numpy.ndarray, shape (98,)
        The lake's level, 575.96 to 581.86 feet (mean 579.0, sd 1.31).
    """

    year: np.ndarray
    level: np.ndarray


def load_lake_huron() -> LakeHuron:
    """Load the embedded Lake Huron series (98 years)."""
    with resources.files("numpyro_mpe").joinpath("data/lakehuron.csv").open() as handle:
        table = np.genfromtxt(handle, delimiter=",", names=True)
    return LakeHuron(
        np.asarray(table["time"], dtype=float), np.asarray(table["value"], dtype=float)
    )
