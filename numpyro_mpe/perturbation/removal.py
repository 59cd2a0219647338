"""Which examples to remove and by how much: indices, masks, weights and group labels."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from numpyro_mpe.optim.base import check_count

__all__ = [
    "MAX_COUNT",
    "check_at_most",
    "check_group_labels",
    "check_removal_arguments",
    "group_mask",
    "removal_weights",
]

#: The largest count of examples, draws, steps or chains: jax indexes with int32 (without
#: x64), so a larger count (``10**30`` by a slip) would fail deep inside jax or numpyro.
MAX_COUNT = 2**31 - 1


def removal_weights(
    remove: ArrayLike | None, num_examples: int, *, weights: ArrayLike | None = None
) -> jax.Array:
    """How much of each example to remove, ``eps`` of shape ``(N,)`` in ``[0, 1]``.

    Exactly one of ``remove`` and ``weights`` is given. ``remove`` says *which* examples
    go (``eps`` is 1 there, 0 elsewhere); ``weights`` gives every example its *new*
    weight (``eps = 1 - weights``). A float array is never read as ``remove``: the same
    0/1 pattern would mean opposite things as a mask (1 removes) and as weights (1
    keeps).

    Parameters
    ----------
    remove : array_like of int or bool, or None
        Integer indices of the examples to remove (a repeated index still removes the
        example once), or a boolean mask ``(N,)`` (True removes). An empty ``remove``
        (``[]``, an empty array of any dtype) removes nothing: ``eps = 0``.
    num_examples : int
        ``N``, an integer >= 0.
    weights : array_like ``(N,)``, optional, keyword-only
        New per-example weights in ``[0, 1]``: 1 keeps an example, 0 removes it, 0.5
        halves it. Integers 0 / 1 are accepted; booleans are not (use ``remove``).

    Returns
    -------
    jax.Array ``(N,)``
        ``eps``.

    Raises
    ------
    TypeError
        For a float (or other non-integer, non-boolean) ``remove``, boolean ``weights``,
        both or neither of ``remove`` and ``weights``, or a ``num_examples`` that is not
        an integer (a float, a string, None, a bool).
    ValueError
        For a mask or weights of the wrong shape, indices that are not 1-d or out of
        ``[0, N)``, weights outside ``[0, 1]`` (NaN included), or a ``num_examples``
        that is negative or above :data:`MAX_COUNT`.

    Examples
    --------
    >>> import numpy as np
    >>> from numpyro_mpe import removal_weights
    >>> removal_weights([0, 2], 4).tolist()
    [1.0, 0.0, 1.0, 0.0]
    >>> removal_weights(np.array([True, False, False, False]), 4).tolist()
    [1.0, 0.0, 0.0, 0.0]
    >>> removal_weights(None, 4, weights=[1.0, 0.5, 1.0, 0.0]).tolist()
    [0.0, 0.5, 0.0, 1.0]
    """
    check_count("num_examples", num_examples, 0)
    check_at_most("num_examples", num_examples)
    check_removal_arguments(remove, weights)
    if weights is not None:
        return _from_weights(np.asarray(weights), num_examples)
    array = np.asarray(remove)
    if array.size == 0:
        return jnp.zeros(num_examples)
    if array.dtype == bool:
        if array.shape != (num_examples,):
            raise ValueError(
                f"a boolean mask must have shape ({num_examples},), got {array.shape}"
            )
        return jnp.asarray(array, dtype=float)
    array = np.atleast_1d(array)
    if array.ndim != 1:
        raise ValueError(f"indices must be 1-d, got shape {array.shape}")
    bad = (array < 0) | (array >= num_examples)
    if bad.any():
        raise ValueError(f"index {array[bad][0]} is out of range for {num_examples} examples")
    return jnp.zeros(num_examples).at[array].set(1.0)


def check_at_most(name: str, value: int, high: int = MAX_COUNT) -> None:
    """Raise ``ValueError`` naming ``name`` when the integer ``value`` exceeds ``high``
    (:data:`MAX_COUNT` by default), before jax meets it."""
    if value > high:
        shown = value if value < 10**20 else f"{value:.3g}"
        raise ValueError(f"{name} must be an integer <= {high}, got {shown}")


def check_removal_arguments(
    remove: ArrayLike | None, weights: ArrayLike | None, *, groups: ArrayLike | None = None
) -> None:
    """The type checks of ``remove`` / ``weights`` / ``groups``, before any work.

    Exactly one of ``remove`` and ``weights``; ``remove`` holds integers or booleans
    (with ``groups``: labels of their type, booleans only for boolean labels),
    ``weights`` real numbers, not booleans; ``groups`` only with ``remove``. Shapes and
    ranges need ``N`` and are checked by :func:`removal_weights` and :func:`group_mask`.

    Raises
    ------
    TypeError
        Naming the argument at fault and what to pass instead.
    """
    if weights is not None:
        if remove is not None:
            raise TypeError(
                "pass either remove (indices or a boolean mask of the examples to remove) "
                "or weights= (new per-example weights), not both"
            )
        if groups is not None:
            raise TypeError(
                "weights= gives each example a new weight and cannot be combined with "
                "groups; to remove whole groups pass their labels as remove"
            )
        dtype = np.asarray(weights).dtype
        numeric = np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
        if not numeric:  # booleans are not numeric here
            raise TypeError(
                f"weights must be real numbers in [0, 1] (1 keeps, 0 removes); got dtype "
                f"{dtype}" + (" (for a boolean mask use remove=)" if dtype.kind == "b" else "")
            )
        return
    if remove is None:
        raise TypeError(
            "pass remove (integer indices or a boolean mask (N,), True removes) or "
            "weights= (new per-example weights (N,) in [0, 1], 1 keeps)"
        )
    if groups is not None:
        labels = check_group_labels(groups, None)  # types and NaN now; the shape once N is known
        if np.asarray(remove).dtype == bool and labels.dtype != bool:
            # np.isin would read True / False as the labels 1 / 0: the wrong groups, silently.
            raise TypeError(
                f"with groups, remove holds group labels (e.g. [3] or 'county_3'), not a "
                f"boolean mask; got booleans of shape {np.shape(remove)}. Pass the labels "
                "of the groups to remove"
            )
        return  # remove holds group labels, of any type the labels have
    array = np.asarray(remove)
    if array.size == 0 or array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return
    if np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"remove must be integer indices or a boolean mask (True removes); got a float "
            f"array of shape {array.shape}. For the examples to remove pass "
            "indices or a boolean mask; for new per-example weights (1 keeps, 0 removes, "
            "0.5 halves) pass weights= instead"
        )
    raise TypeError(
        f"remove must be integer indices or a boolean mask (True removes); got dtype {array.dtype}"
    )


def _from_weights(array: np.ndarray, num_examples: int) -> jax.Array:
    """``eps = 1 - weights`` for new weights of a checked dtype."""
    if array.shape != (num_examples,):
        raise ValueError(f"weights must have shape ({num_examples},), got {array.shape}")
    bad = ~((array >= 0) & (array <= 1))
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"weight {array[index]} at index {index} is outside [0, 1]")
    return 1.0 - jnp.asarray(array, dtype=float)


def check_group_labels(groups: ArrayLike, num_examples: int | None) -> np.ndarray:
    """``groups`` as a 1-d array of ``N`` labels that sort: all numbers or all strings.

    With ``num_examples=None`` (before ``N`` is known: the entry points call it so
    before tracing the model) only the labels of a 1-d ``groups`` are checked; the shape
    is checked once ``N`` is known.

    Raises
    ------
    ValueError
        When ``groups`` is not one label per example, or holds NaN (or None), naming
        the first such example.
    TypeError
        When the labels mix types that do not sort together (numbers and strings, say),
        naming the first label whose type differs from the first label's.
    """
    labels = np.asarray(groups)
    if num_examples is None and labels.ndim != 1:
        return labels
    if num_examples is not None and (labels.ndim != 1 or labels.shape[0] != num_examples):
        raise ValueError(
            f"groups must hold one label per example, shape ({num_examples},); got shape "
            f"{labels.shape}"
        )
    if np.issubdtype(labels.dtype, np.inexact):
        finite = np.isfinite(labels)
        if not finite.all():
            index = int(np.argmax(~finite))
            raise ValueError(
                f"groups holds {labels[index]} at example {index}; every example needs a "
                "finite group label"
            )
    elif labels.dtype == object:
        _check_object_labels(labels)
    return labels


def _label_kind(label) -> str | None:
    """ "number", "string", "missing" (None or NaN) or None for a label of another type."""
    if label is None:
        return "missing"
    if isinstance(label, bool | np.bool_):
        return "number"
    if isinstance(label, numbers.Real):
        return "number" if np.isfinite(float(label)) else "missing"
    if isinstance(label, str | bytes):
        return "string"
    return None


def _check_object_labels(labels: np.ndarray) -> None:
    kinds = [_label_kind(label) for label in labels]
    for index, kind in enumerate(kinds):
        if kind == "missing":
            raise ValueError(
                f"groups holds {labels[index]!r} at example {index}; every example needs a "
                "finite group label"
            )
        if kind is None:
            raise TypeError(
                f"groups must hold numbers or strings; example {index} has the label "
                f"{labels[index]!r} of type {type(labels[index]).__name__}"
            )
    first = kinds[0] if kinds else None
    for index, kind in enumerate(kinds):
        if kind != first:
            raise TypeError(
                f"groups mixes label types: example 0 has the {first} label {labels[0]!r} "
                f"but example {index} has the {kind} label {labels[index]!r}; use labels "
                "of one type (all numbers or all strings), e.g. groups.astype(str)"
            )


def group_mask(remove: ArrayLike, groups: ArrayLike, num_examples: int) -> np.ndarray:
    """Boolean mask ``(N,)`` of the examples whose group label is in ``remove``.

    ``remove`` is one label or a list of labels (an empty list removes nothing);
    ``groups`` is checked by :func:`check_group_labels`.
    """
    labels = check_group_labels(groups, num_examples)
    wanted = np.atleast_1d(np.asarray(remove))
    missing = wanted[~np.isin(wanted, labels)]
    if missing.size:
        raise ValueError(f"group {missing[0].item()!r} is not among the labels in groups")
    return np.isin(labels, wanted)
