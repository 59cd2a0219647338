"""The forecast origins of leave-future-out cross-validation, checked before any work.

With ``T`` time points (the examples of the model's plate, in time order), a minimum
training length ``L`` and a horizon ``M``, the origins are ``t = L, ..., T - M``: at
origin ``t`` the model is trained on ``y_{0..t-1}`` and scores the block
``y_{t..t+M-1}`` (0-based), ArviZ's ``lfo_cv`` convention.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyro_mpe.core.model import PlateModel
from numpyro_mpe.optim.base import check_count

__all__ = ["LFOWindow", "check_lfo_window"]


class LFOWindow(NamedTuple):
    """Forecast origins of an LFO run.

    Attributes
    ----------
    num_times : int
        ``T``, the examples of the time plate.
    min_train : int
        ``L``: the first origin trains on ``L`` time points.
    horizon : int
        ``M``: each origin scores the next ``M`` time points jointly.
    origins : numpy.ndarray of int, shape (T - M - L + 1,)
        ``L, ..., T - M``.
    """

    num_times: int
    min_train: int
    horizon: int
    origins: np.ndarray


def check_lfo_window(min_train: object, horizon: object, plate_model: PlateModel) -> LFOWindow:
    """Check ``min_train`` and ``horizon`` against the model's time plate.

    Raises
    ------
    TypeError
        ``min_train`` or ``horizon`` not an integer (a float, bool or string).
    ValueError
        ``horizon < 1``; ``min_train`` outside ``1..T-1``; ``min_train + horizon > T`` (no
        origin left); examples masked out of the likelihood (a gap in the series: LFO
        scores every time point of a block).
    """
    num_times = plate_model.num_examples
    check_count("horizon", horizon, 1)
    check_count("min_train", min_train, 1)
    if min_train > num_times - 1:
        raise ValueError(
            f"min_train must be in 1..T-1 = 1..{num_times - 1} for the {num_times} time "
            f"points of plate {plate_model.plate!r}, got {min_train}"
        )
    if min_train + horizon > num_times:
        raise ValueError(
            f"min_train + horizon = {min_train} + {horizon} exceeds the {num_times} time "
            f"points of plate {plate_model.plate!r}: no forecast origin is left"
        )
    mask = plate_model.observed_mask
    if mask is not None and not np.all(mask):
        raise ValueError(
            f"the series has missing values: time {int(np.argmin(mask))} of plate "
            f"{plate_model.plate!r} is masked out of the likelihood; leave-future-out "
            "scores every time point of each block"
        )
    origins = np.arange(min_train, num_times - horizon + 1)
    return LFOWindow(num_times, int(min_train), int(horizon), origins)
