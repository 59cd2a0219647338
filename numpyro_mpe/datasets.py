"""Datasets embedded in the package (see ``numpyro_mpe/data/README.md`` for sources)."""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["Wells", "load_wells"]


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
        """Design matrix ``(N, 1 + len(columns))``: an intercept, then ``dist100`` (dist /
        100) or any attribute by name."""
        values = [np.ones_like(self.dist)]
        for column in columns:
            values.append(self.dist / 100 if column == "dist100" else getattr(self, column))
        return np.stack(values, axis=1)


def load_wells() -> Wells:
    """Load the embedded wells data."""
    with resources.files("numpyro_mpe").joinpath("data/wells.csv").open() as handle:
        table = np.genfromtxt(handle, delimiter=",", names=True)
    return Wells(*(np.asarray(table[name], dtype=float) for name in Wells._fields))
