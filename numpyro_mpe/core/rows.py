"""Which model arguments hold one row per example, slicing them to a subset, and padding
them to a few sizes.

Minibatch steps (:class:`numpyro_mpe.BLR`) and per-example passes (:func:`numpyro_mpe.loo`)
run the model on a few examples instead of all ``N`` when its array arguments can be
indexed by example: :func:`plan_row_slicing` checks that once, by tracing the model on a
probe slice, and records the answer in a :class:`MinibatchPlan`.

The same property lets :func:`numpyro_mpe.loo` run on ``N`` examples padded to
``bucket_size(N)`` (:func:`pad_examples`): the jitted computation is compiled once per
bucket, not once per data size. :func:`limit_compilations` bounds what a jitted function
keeps compiled.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.model import PlateModel, join_arguments, split_arguments, trace_model

__all__ = [
    "MAX_COMPILATIONS",
    "MinibatchPlan",
    "PaddedExamples",
    "bucket_size",
    "cached_row_slicing",
    "clear_row_plans",
    "gather_rows",
    "leading_axis_mask",
    "limit_compilations",
    "pad_examples",
    "pad_rows",
    "plan_row_slicing",
    "row_tiles",
    "sliced_predictor",
]

# Plans by (model, plate, argument structure, array shapes and dtypes), like jax's own
# compilation caches: repeated calls (MPE-LOO at every checkpoint) probe the model once.
# Least recently used first; the oldest goes beyond _MAX_PLANS.
_PLANS: OrderedDict = OrderedDict()
_MAX_PLANS = 128
# pad_examples: N by the same key (from an abstract trace), None for "do not pad".
_PADDING: OrderedDict = OrderedDict()

_SMALLEST_BUCKET = 16
_POWER_OF_TWO_BUCKETS_UP_TO = 2**16  # above: 4 buckets per octave

MAX_COMPILATIONS = 16
"""Compilations (argument shapes and static arguments) a jitted function of the package
holds before :func:`limit_compilations` drops them; one ``loo`` compilation of a small
model takes about 20 MB."""
# Per jitted function: the signatures it holds compiled, least recently used first.
_COMPILED: dict = {}


@jax.tree_util.register_static
@dataclass(frozen=True)
class MinibatchPlan:
    """How :meth:`BLR.update` evaluates a minibatch, decided once per fit.

    A static pytree node (no array leaves): it rides in :class:`BLRState` through ``jit``
    as part of the state's structure, so the choice costs nothing per step.

    Attributes
    ----------
    path : {"gather", "weights"}
        ``"gather"``: the model runs on the ``B`` examples of the batch only (array
        arguments whose leading axis has length ``N`` are indexed by the batch), O(B) per
        step. ``"weights"``: the fallback, the model runs on all ``N`` examples and the
        per-example terms are weighted (``N / B`` on the batch, 0 elsewhere), O(N) per
        step; the same batches and the same loss up to float rounding.
    num_examples : int
        ``N``, the plate size of the full data.
    gathered : tuple of bool
        Per array argument (in :func:`~numpyro_mpe.core.model.split_arguments` order), whether
        it is indexed by the batch.
    reason : str
        Why the fallback is used (empty for ``"gather"``).
    """

    path: str
    num_examples: int
    gathered: tuple[bool, ...]
    reason: str = ""


def leading_axis_mask(arrays: list, num_examples: int) -> tuple[bool, ...]:
    """Per array, whether its leading axis has length ``N``."""
    return tuple(jnp.ndim(a) >= 1 and jnp.shape(a)[0] == num_examples for a in arrays)


def gather_rows(arrays: list, plan: MinibatchPlan, indices: jax.Array) -> list:
    """The array arguments restricted to the examples ``indices`` (``(B,)``)."""
    return [
        jnp.take(a, indices, axis=0) if gathered else a
        for a, gathered in zip(arrays, plan.gathered, strict=True)
    ]


def sliced_predictor(model, arrays: list, static: tuple, plate, names, gathered) -> Callable:
    """``indices (B,) -> Predictor`` of the model run on those examples' rows alone.

    ``gathered`` (from :func:`plan_row_slicing`) says which array arguments hold one row per
    example; ``names`` are the predictor's (:attr:`Predictor.names`), so the search for it
    is not repeated.
    """

    def rows(indices):
        sliced = [
            jnp.take(a, indices, axis=0) if g else a for a, g in zip(arrays, gathered, strict=True)
        ]
        row_args, row_kwargs = join_arguments(sliced, static)
        row_model = trace_model(model, *row_args, plate=plate, with_predictor=names, **row_kwargs)
        return row_model.predictor

    return rows


def plan_row_slicing(model, plate, args, kwargs, full: PlateModel) -> MinibatchPlan:
    """Decide once whether subsets of examples can be gathered (O(B)) or must be weighted
    (O(N)).

    Gathering indexes every array argument whose leading axis has length ``N``. That is
    right when the plate's size follows those arrays and each of their rows belongs to
    one example. Checked by tracing the model on a probe batch (examples ``N - 1`` and
    ``0``, reversed): its plate must have 2 elements, its latents the same shapes, and
    at the initial point and at a random one its log likelihood must equal the full
    model's for those two examples and its prior term the full prior term. Any failure
    (the plate's size is a Python number, an ``N``-long array is not per example, the
    model raises on the slice) selects the weighted path, with the reason recorded.
    """
    arrays, _ = split_arguments(args, kwargs)
    num_examples = full.num_examples
    gathered = leading_axis_mask(arrays, num_examples)

    def fallback(reason):
        return MinibatchPlan("weights", num_examples, gathered, reason)

    if num_examples < 2:
        return fallback("a single example")
    if not any(gathered):
        return fallback(f"no array argument has a leading axis of length N = {num_examples}")
    probe = jnp.array([num_examples - 1, 0])
    sliced = [
        jnp.take(a, probe, axis=0) if g else a for a, g in zip(arrays, gathered, strict=True)
    ]
    _, static = split_arguments(args, kwargs)
    probe_args, probe_kwargs = join_arguments(sliced, static)
    theta0 = full.init_theta
    points = (theta0, theta0 + 0.5 * jax.random.normal(jax.random.PRNGKey(0), theta0.shape))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            part = trace_model(
                model, *probe_args, plate=plate, with_predictor=False, **probe_kwargs
            )
            if part.num_examples != 2 or part.plate != full.plate:
                return fallback(
                    f"the plate has {part.num_examples} elements when the array arguments "
                    "have 2 rows: its size does not follow their leading axis"
                )
            if part.latent_shapes != full.latent_shapes:
                return fallback("latent shapes change with the number of rows")
            for theta in points:
                expected = np.asarray(full.log_lik(theta))[np.asarray(probe)]
                values = (np.asarray(part.log_lik(theta)), np.asarray(part.log_prior(theta)))
                targets = (expected, np.asarray(full.log_prior(theta)))
                for value, target in zip(values, targets, strict=True):
                    tolerance = 1e-5 * (1 + np.max(np.abs(target), initial=0.0))
                    if not np.allclose(value, target, rtol=1e-5, atol=tolerance, equal_nan=True):
                        return fallback(
                            "the model's log density on a slice of the rows differs from "
                            "the full model's for those examples (an array with N rows is "
                            "not per example)"
                        )
    except Exception as error:  # any failure on the slice means: do not gather
        message = f"{type(error).__name__}: {error}"
        return fallback(f"the model fails on a slice of its rows: {message[:200]}")
    return MinibatchPlan("gather", num_examples, gathered)


def cached_row_slicing(model, plate, args: tuple, kwargs: dict, full: PlateModel) -> MinibatchPlan:
    """:func:`plan_row_slicing`, probed once per model, plate, argument structure and
    array shapes (the probe traces the model and evaluates it twice on all ``N``)."""
    arrays, static = split_arguments(args, kwargs)
    key = _structure_key(model, plate, arrays, static)
    if key in _PLANS:
        _PLANS.move_to_end(key)
        return _PLANS[key]
    plan = plan_row_slicing(model, plate, args, kwargs, full)
    _remember(_PLANS, key, plan)
    return plan


def clear_row_plans() -> None:
    """Forget the cached plans of :func:`cached_row_slicing` and what :func:`pad_examples`
    learnt of each model (each model is probed again at its next call), as
    ``jax.clear_caches`` does for compilations."""
    _PLANS.clear()
    _PADDING.clear()


def _structure_key(model, plate, arrays: list, static: tuple) -> tuple:
    return (model, plate, static, tuple((jnp.shape(a), jnp.result_type(a)) for a in arrays))


def _remember(cache: OrderedDict, key, value) -> None:
    """Insert into a least-recently-used cache of at most ``_MAX_PLANS`` entries."""
    cache[key] = value
    if len(cache) > _MAX_PLANS:
        cache.popitem(last=False)


def bucket_size(num_examples: int) -> int:
    """The padded size for ``N`` examples: the next power of two (at least 16) up to
    ``2^16``; beyond, the next of ``4, 5, 6, 7`` times a power of two (at most 25% of
    padding). About ``log2 N`` sizes up to ``2^16``, then 4 per doubling of ``N``.

    Examples
    --------
    >>> [bucket_size(n) for n in (1, 100, 3020, 65536, 100_000)]
    [16, 128, 4096, 65536, 114688]
    """
    if num_examples <= _SMALLEST_BUCKET:
        return _SMALLEST_BUCKET
    power = 1 << (num_examples - 1).bit_length()  # the next power of two
    if power <= _POWER_OF_TWO_BUCKETS_UP_TO:
        return power
    step = power // 8  # sizes 4, 5, 6, 7, 8 times power / 8
    return -(-num_examples // step) * step


def row_tiles(array) -> int:
    """Into how many blocks ``array``'s sharding splits its leading axis (1 for NumPy and
    single-device arrays); a padded size must be a multiple of it to keep the sharding."""
    if not isinstance(array, jax.Array) or jnp.ndim(array) == 0:
        return 1
    rows = array.sharding.shard_shape(array.shape)[0]
    return array.shape[0] // rows if rows else 1


def pad_rows(arrays: list, padded: tuple[bool, ...], size: int) -> list:
    """The arrays marked ``padded`` extended to ``size`` rows by repeats of their last row.

    Arrays in host memory (NumPy, or JAX on the CPU) are padded by NumPy, which compiles
    nothing; arrays on an accelerator by ``jnp.concatenate`` (a small compilation per
    shape), to avoid a round trip through the host. An array sharded over several devices
    keeps its sharding (``size`` must then be a multiple of :func:`row_tiles`).
    """
    result = []
    for array, pad in zip(arrays, padded, strict=True):
        if not pad or jnp.shape(array)[0] == size:
            result.append(array)
            continue
        repeats = size - jnp.shape(array)[0]
        sharding = array.sharding if isinstance(array, jax.Array) else None
        on_host = sharding is None or all(device.platform == "cpu" for device in array.devices())
        if on_host:
            values = np.asarray(array)
            tail = np.broadcast_to(values[-1:], (repeats, *values.shape[1:]))
            values = np.concatenate([values, tail])
        else:
            tail = jnp.broadcast_to(array[-1:], (repeats, *array.shape[1:]))
            values = jnp.concatenate([array, tail])
        if sharding is not None and len(sharding.device_set) > 1:
            result.append(jax.device_put(values, sharding))
        else:
            result.append(values if isinstance(values, jax.Array) else jax.device_put(values))
    return result


class PaddedExamples(NamedTuple):
    """A model's arguments padded to :func:`bucket_size` examples (see :func:`pad_examples`).

    Attributes
    ----------
    arrays : list of jax.Array
        The array arguments (:func:`~numpyro_mpe.core.model.split_arguments` order), those
        holding one row per example padded to ``size`` rows.
    static : tuple
        The other arguments, as :func:`~numpyro_mpe.core.model.split_arguments` gives them.
    plate_model : PlateModel
        The model traced on the padded arguments: ``size`` examples.
    plan : MinibatchPlan
        The row plan of the padded arguments (``path == "gather"``).
    num_examples : int
        ``N``: the first ``N`` examples are the data, the rest repeat example ``N - 1``.
    """

    arrays: list
    static: tuple
    plate_model: PlateModel
    plan: MinibatchPlan
    num_examples: int


def pad_examples(
    model: Callable,
    plate: str | None,
    args: tuple,
    kwargs: dict,
    *,
    with_predictor: bool | tuple[str, ...] = True,
) -> PaddedExamples | None:
    """The model's examples padded to ``bucket_size(N)`` when that leaves them unchanged;
    None otherwise.

    Padding repeats the last row of every array argument whose leading axis has length
    ``N``. It is valid when the model's terms are per example: the log likelihood of
    each of the first ``N`` examples, its predictor and the prior term are those of the
    unpadded model, and per-example results (LOO, reliability) are computed row by row,
    so they are unchanged; the padded examples are dropped. That is checked as for
    minibatches: ``N`` comes from an abstract trace of the model (nothing compiled,
    cached by argument shapes), the model is traced on the padded arguments, its plate
    must have ``bucket_size(N)`` elements and :func:`cached_row_slicing` must find that
    exactly the padded arrays gather (a probe of two rows gives the same log density as
    the padded model for those examples). Any failure gives None, and the caller runs
    the model on the arguments as given (compiling for that size); padding is not tried
    again for those argument shapes. The checks at a padded
    size run once per bucket, so a new ``N`` in a known bucket compiles nothing.

    Arrays sharded over devices along their rows (``jax.sharding.NamedSharding``) keep
    their sharding: the padded size is ``bucket_size(N)`` rounded up to a multiple of the
    number of row blocks (:func:`row_tiles`), so the per-example work stays split over the
    devices.
    """
    arrays, static = split_arguments(args, kwargs)
    key = _structure_key(model, plate, arrays, static)
    if key not in _PADDING:
        _remember(_PADDING, key, _example_count(model, plate, arrays, static))
    _PADDING.move_to_end(key)
    num_examples = _PADDING[key]
    if num_examples is None:
        return None
    padded = leading_axis_mask(arrays, num_examples)
    sharded = (row_tiles(array) for array, pad in zip(arrays, padded, strict=True) if pad)
    tiles = math.lcm(1, *sharded)
    size = -(-bucket_size(num_examples) // tiles) * tiles
    padded_arrays = pad_rows(arrays, padded, size)
    padded_args, padded_kwargs = join_arguments(padded_arrays, static)
    plan = None
    try:
        full = trace_model(
            model, *padded_args, plate=plate, with_predictor=with_predictor, **padded_kwargs
        )
        if full.num_examples == size:
            plan = cached_row_slicing(model, plate, padded_args, padded_kwargs, full)
    except Exception:  # the model on its own arguments raises any error, with their sizes
        pass
    # The gathered arrays must be the padded ones (not an array that had `size` rows).
    if plan is None or plan.path != "gather" or plan.gathered != padded:
        _PADDING[key] = None  # not tried again for these argument shapes
        return None
    return PaddedExamples(padded_arrays, static, full, plan, num_examples)


def _example_count(model, plate, arrays: list, static: tuple) -> int | None:
    """``N`` from tracing the model on abstract arrays (nothing is compiled); None when
    the model cannot be traced so or no array argument has ``N`` rows."""
    counts = []

    def count(values):
        traced_args, traced_kwargs = join_arguments(values, static)
        plate_model = trace_model(
            model, *traced_args, plate=plate, with_predictor=False, **traced_kwargs
        )
        counts.append(plate_model.num_examples)
        return plate_model.init_theta

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jax.eval_shape(count, arrays)
    except Exception:  # a model that needs concrete data: not padded
        return None
    if not any(leading_axis_mask(arrays, counts[0])):
        return None
    return counts[0]


def limit_compilations(jitted: Callable, arrays, static: dict) -> None:
    """Before ``jitted(*arrays, **static)``: bound what ``jitted`` keeps compiled.

    ``jax.jit`` keeps every compilation of a function (one per argument shapes and
    static arguments) for the life of the process. This records the signatures
    ``jitted`` was called with, least recently used first, and when a new one would make
    more than :data:`MAX_COMPILATIONS`, clears ``jitted``'s compilations
    (``jitted.clear_cache()``; the memory is released) before it compiles the new one.
    """
    signature = (
        jax.tree_util.tree_structure(arrays),
        tuple((jnp.shape(a), jnp.result_type(a)) for a in jax.tree_util.tree_leaves(arrays)),
        tuple(sorted(static.items())),
    )
    held = _COMPILED.setdefault(jitted, OrderedDict())
    if signature in held:
        held.move_to_end(signature)
        return
    if len(held) >= MAX_COMPILATIONS:
        jitted.clear_cache()
        held.clear()
    held[signature] = None
