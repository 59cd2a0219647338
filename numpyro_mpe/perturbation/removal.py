"""Which examples to remove and by how much: indices, masks, weights and group labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["group_mask", "removal_weights"]


def removal_weights(remove: ArrayLike, num_examples: int) -> jax.Array:
    """How much of each example to remove, ``eps`` of shape ``(N,)`` in ``[0, 1]``.

    Parameters
    ----------
    remove : array_like
        Integer indices of the examples to remove; a boolean mask ``(N,)`` (True
        removes); or float weights ``(N,)`` in ``[0, 1]`` giving each example's new
        weight (1 keeps it, 0 removes it, 0.5 halves it).
    num_examples : int
        ``N``.
    """
    array = np.asarray(remove)
    if array.size == 0:
        return jnp.zeros(num_examples)
    if array.dtype == bool:
        if array.shape != (num_examples,):
            raise ValueError(
                f"a boolean mask must have shape ({num_examples},), got {array.shape}"
            )
        return jnp.asarray(array, dtype=float)
    if np.issubdtype(array.dtype, np.integer):
        array = np.atleast_1d(array)
        if array.ndim != 1:
            raise ValueError(f"indices must be 1-d, got shape {array.shape}")
        bad = (array < 0) | (array >= num_examples)
        if bad.any():
            raise ValueError(f"index {array[bad][0]} is out of range for {num_examples} examples")
        return jnp.zeros(num_examples).at[array].set(1.0)
    if np.issubdtype(array.dtype, np.floating):
        if array.shape != (num_examples,):
            raise ValueError(f"weights must have shape ({num_examples},), got {array.shape}")
        bad = ~((array >= 0) & (array <= 1))
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(f"weight {array[index]} at index {index} is outside [0, 1]")
        return 1.0 - jnp.asarray(array)
    raise TypeError(f"remove must hold integers, booleans or floats, got {array.dtype}")


def group_mask(remove: ArrayLike, groups: ArrayLike, num_examples: int) -> np.ndarray:
    """Boolean mask ``(N,)`` of the examples whose group label is in ``remove``."""
    labels = np.asarray(groups)
    if labels.shape != (num_examples,):
        raise ValueError(
            f"groups must hold one label per example, shape ({num_examples},); got shape "
            f"{labels.shape}"
        )
    wanted = np.atleast_1d(np.asarray(remove))
    missing = wanted[~np.isin(wanted, labels)]
    if missing.size:
        raise ValueError(f"group {missing[0].item()!r} is not among the labels in groups")
    return np.isin(labels, wanted)
