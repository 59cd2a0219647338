"""Which model arguments hold one row per example, and slicing them to a subset.

Minibatch steps (:class:`numpyro_mpe.BLR`) and per-example passes (:func:`numpyro_mpe.loo`)
run the model on a few examples instead of all ``N`` when its array arguments can be
indexed by example: :func:`plan_row_slicing` checks that once, by tracing the model on a
probe slice, and records the answer in a :class:`MinibatchPlan`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.model import PlateModel, join_arguments, split_arguments, trace_model

__all__ = [
    "MinibatchPlan",
    "cached_row_slicing",
    "clear_row_plans",
    "gather_rows",
    "leading_axis_mask",
    "plan_row_slicing",
]

# Plans by (model, plate, argument structure, array shapes and dtypes), like jax's own
# compilation caches: repeated calls (MPE-LOO at every checkpoint) probe the model once.
_PLANS: dict = {}
_MAX_PLANS = 128


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
    key = (model, plate, static, tuple((jnp.shape(a), jnp.result_type(a)) for a in arrays))
    if key not in _PLANS:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan_row_slicing(model, plate, args, kwargs, full)
    return _PLANS[key]


def clear_row_plans() -> None:
    """Forget the cached plans of :func:`cached_row_slicing` (each model is probed again
    at its next call), as ``jax.clear_caches`` does for compilations."""
    _PLANS.clear()
