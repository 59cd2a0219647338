"""A NumPyro model seen as a flat unconstrained latent vector and per-example terms.

The memory-perturbation equation needs the total loss split into a prior term and one
term per example,

.. math::

    L(\\theta) = l_0(\\theta) + \\sum_{i=1}^N w_i\\, l_i(\\theta),\\qquad
    l_i(\\theta) = -\\log p(y_i \\mid \\theta),

where :math:`\\theta \\in \\mathbb{R}^P` is the vector of all continuous latent sites in
the unconstrained space (in model-site order, the order numpyro's ``AutoContinuous``
guides use), :math:`l_0` is the negative log prior *including* the log-Jacobian of the
constraining transforms, and :math:`w_i` are per-example weights (``w_i = 0`` removes
example ``i``). :func:`trace_model` builds these functions from any NumPyro model whose
observed sites sit inside a plate.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions import Normal
from numpyro.distributions.constraints import Constraint
from numpyro.distributions.distribution import (
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
    Unit,
)
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import _ravel_dict, _unravel_dict
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import _unconstrain_reparam
from numpyro.primitives import Messenger

__all__ = [
    "ModelError",
    "PlateModel",
    "Predictor",
    "as_numpy_arguments",
    "check_argument_range",
    "check_finite_arguments",
    "check_plate_name",
    "find_plate",
    "join_arguments",
    "prototype_trace",
    "split_arguments",
    "trace_model",
    "unwrap_distribution",
]


class ModelError(ValueError):
    """A model that ``numpyro_mpe`` cannot use, with the site or argument at fault."""


class Predictor(NamedTuple):
    """The quantity that drives the observation distribution of each example.

    For an observed site ``y_i ~ D(phi_i)`` whose parameters ``phi_i`` depend on the
    latents, the predictor is ``f_i(theta) = u(phi_i)`` with ``u`` the bijection of each
    parameter's support to the real line (logits for probabilities, log for rates and
    scales, identity for locations). Only the parameters that depend on ``theta`` are
    included, so ``f_i`` has ``K`` components.

    Attributes
    ----------
    fn : callable
        ``theta (P,) -> f (N, K)``.
    log_lik : callable
        ``f (N, K) -> log p(y_i | f_i) (N,)``, elementwise over examples.
    names : tuple of str
        Distribution parameters making up ``f``, in order.
    observed : jax.Array
        The observed values ``y``.
    noise_variance : jax.Array or None
        ``(N,)`` variance of a Normal observation whose only latent-dependent parameter is
        ``loc`` (the conjugate case, where the predictive is Gaussian in closed form).
    mask : array or None
        ``(N,)`` bool (numpy when the mask is concrete): False for the examples masked
        out of the likelihood (``numpyro.handlers.mask``), where ``log_lik`` is 0 and
        ``observed`` holds a placeholder in the support; None when nothing is masked.
    """

    fn: Callable[[jax.Array], jax.Array]
    log_lik: Callable[[jax.Array], jax.Array]
    names: tuple[str, ...]
    observed: jax.Array
    noise_variance: jax.Array | None
    mask: jax.Array | None = None


class PlateModel(NamedTuple):
    """Flat, per-example view of a NumPyro model (see module docstring).

    Attributes
    ----------
    num_examples : int
        ``N``, the size of the plate of examples.
    plate : str
        Name of that plate.
    observed_sites : tuple of str
        Observed sites inside the plate (their log densities make up ``l_i``).
    latent_shapes : dict
        Unconstrained shape of each latent site, in model-site order.
    init_theta : jax.Array
        ``(P,)`` initial unconstrained latent vector (``init_to_median`` of the prior).
    unravel : callable
        ``theta (P,) -> {site: unconstrained value}``.
    log_prior : callable
        ``theta -> -l_0(theta)``: log prior of the latents in the unconstrained space,
        Jacobian included, plus any observed site outside the plate.
    log_lik : callable
        ``theta -> (N,)`` per-example log likelihood ``-l_i(theta)``.
    predictor : Predictor or None
        The observation's predictor, when there is exactly one observed site in the
        plate and its distribution can be rebuilt from its parameters.
    observed_mask : numpy.ndarray or None
        ``(N,)`` bool: False for the examples whose every observed value is masked out
        of the likelihood (``numpyro.handlers.mask`` or ``Distribution.mask``). Their
        ``l_i`` is 0: they are not examples, and leave-one-out results leave them out.
        None when no example is masked out (a traced array under ``jit``).
    discrete_observations : bool
        True when every term of ``l_i`` is the log probability of a discrete observation,
        so that ``log p(y_i | ...) <= 0`` bounds any estimate of it.
    """

    num_examples: int
    plate: str
    observed_sites: tuple[str, ...]
    latent_shapes: dict
    init_theta: jax.Array
    unravel: Callable[[jax.Array], dict]
    log_prior: Callable[[jax.Array], jax.Array]
    log_lik: Callable[[jax.Array], jax.Array]
    predictor: Predictor | None
    observed_mask: np.ndarray | None = None
    discrete_observations: bool = False

    @property
    def num_latents(self) -> int:
        """``P``, the length of the flat unconstrained latent vector."""
        return int(self.init_theta.shape[0])

    def log_joint(self, theta: ArrayLike, weights: ArrayLike | None = None) -> jax.Array:
        """``-L(theta) = log p(theta) + sum_i w_i log p(y_i | theta)``; ``w = 1`` if None.

        ``theta`` is ``(P,)``, ``weights`` ``(N,)``; another shape raises ``ValueError``
        naming both (a shape check only, so it holds under ``jit``)."""
        theta = _checked_vector("theta", theta, self.num_latents, "P", "flat latents")
        log_lik = self.log_lik(theta)
        if weights is None:
            return self.log_prior(theta) + jnp.sum(log_lik)
        weights = _checked_vector("weights", weights, self.num_examples, "N", "examples")
        return self.log_prior(theta) + jnp.dot(weights, log_lik)


def _checked_vector(name: str, value: ArrayLike, size: int, symbol: str, what: str) -> jax.Array:
    """``value`` as a jax array of shape ``(size,)``, or ``ValueError`` naming both shapes;
    looks at the shape only (tracers pass when theirs is right)."""
    shape = np.shape(value)
    if shape != (size,):
        raise ValueError(
            f"{name} must have shape ({symbol},) = ({size},) ({size} {what} in the model), "
            f"got {shape}"
        )
    return value if isinstance(value, jax.Array) else jnp.asarray(value)


class _SiteRecorder(Messenger):
    """Remembers the name of the last site the model reached."""

    def __init__(self, fn=None):
        self.last_site = None
        super().__init__(fn)

    def postprocess_message(self, msg):
        if msg.get("name") is not None and msg["type"] in ("sample", "param"):
            self.last_site = msg["name"]


_MISSING_DATA_ADVICE = (
    "NaN and inf are not allowed in model data (for missing observations, put any value "
    "of the support there and leave them out with numpyro.handlers.mask)"
)


def _is_missing(value: Any) -> bool:
    """An entry of an object array (pandas' nullable columns) that is NaN, inf, None or NA."""
    if value is None:
        return True
    try:
        if isinstance(value, numbers.Real):
            return not math.isfinite(value)
        return bool(value != value)
    except TypeError:  # pandas.NA: its comparisons are NA, whose truth is ambiguous
        return True


def _non_finite(array: np.ndarray) -> np.ndarray | None:
    """Bool array of the non-finite entries of ``array``; None for non-numeric dtypes."""
    if array.dtype == object:
        return np.vectorize(_is_missing, otypes=[bool])(array) if array.size else None
    # jnp.issubdtype: numpy's does not count ml_dtypes' bfloat16 and float8 as inexact.
    if not jnp.issubdtype(array.dtype, jnp.inexact):
        return None
    return ~np.isfinite(array)


def _argument_arrays(label: str, leaf: Any):
    """``(label, array)`` pairs to check for one pytree leaf: arrays, Python floats, and
    anything with ``__array__`` (pandas and xarray objects), a DataFrame column by column."""
    if isinstance(leaf, jax.core.Tracer) or isinstance(leaf, (bool, int, str, bytes)):
        return
    columns = getattr(leaf, "columns", None)
    if columns is not None and callable(getattr(leaf, "items", None)):  # a DataFrame
        for name, column in leaf.items():
            yield f"{label} column {name!r}", np.asarray(column)
    elif _off_host(leaf):
        yield label, leaf  # checked where it lives (check_finite_arguments)
    elif isinstance(leaf, (np.ndarray, jax.Array, float, complex)) or hasattr(leaf, "__array__"):
        yield label, np.asarray(leaf)


def _off_host(leaf: Any) -> bool:
    """A jax array that ``np.asarray`` would copy to the host (on an accelerator, or
    sharded over several devices) or cannot (rows on other processes)."""
    if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
        return False
    devices = leaf.sharding.device_set
    return (
        not leaf.is_fully_addressable
        or len(devices) > 1
        or any(device.platform != "cpu" for device in devices)
    )


def _first_non_finite(array: jax.Array) -> tuple[int, ...] | None:
    """Index of the first NaN or inf of a jax array, found on its devices (one reduction;
    the index and value cross to the host only when there is one); None when all are
    finite or the dtype is not inexact."""
    if not jnp.issubdtype(array.dtype, jnp.inexact) or array.size == 0:
        return None
    finite = jnp.isfinite(array)
    if bool(jnp.all(finite)):
        return None
    flat = int(jnp.argmin(finite.reshape(-1)))
    return tuple(int(i) for i in np.unravel_index(flat, array.shape))


def check_finite_arguments(args: tuple, kwargs: dict) -> None:
    """Raise :class:`ModelError` naming the argument and index of the first NaN or inf.

    Checks every array leaf of the arguments, pandas DataFrames (per column) and Series
    and any other object with ``__array__`` included, in every floating dtype (bfloat16
    too); tracers are skipped.
    """
    named = [(f"positional argument {k}", a) for k, a in enumerate(args)]
    named += [(f"argument '{k}'", a) for k, a in kwargs.items()]
    for label, value in named:
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            for where, array in _argument_arrays(label + jax.tree_util.keystr(path), leaf):
                if _off_host(array):
                    index = _first_non_finite(array)
                    if index is not None:
                        value = np.asarray(jax.device_get(array[index]))
                        raise ModelError(
                            f"{where} contains {value} at index {index}; {_MISSING_DATA_ADVICE}."
                        )
                    continue
                bad = _non_finite(array)
                if bad is not None and bad.any():
                    index = tuple(int(i) for i in np.argwhere(bad)[0])
                    raise ModelError(
                        f"{where} contains {array[index]} at index {index}; "
                        f"{_MISSING_DATA_ADVICE}."
                    )


def check_argument_range(args: tuple, kwargs: dict) -> None:
    """Raise :class:`ModelError` naming the argument and index of the first finite value
    that jax's float dtype cannot hold: above its largest value (``1e300`` becomes inf in
    float32, jax's default) or nonzero and below its smallest (``1e-300`` becomes 0).

    Checks the same leaves as :func:`check_finite_arguments` (Python floats too: jax
    makes them float32 unless x64 is enabled); a no-op for float64 under x64.
    """
    target = np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    named = [(f"positional argument {k}", a) for k, a in enumerate(args)]
    named += [(f"argument '{k}'", a) for k, a in kwargs.items()]
    for label, value in named:
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            for where, array in _argument_arrays(label + jax.tree_util.keystr(path), leaf):
                if array.dtype.kind != "f" or array.dtype.itemsize <= target.itemsize:
                    continue
                with np.errstate(over="ignore", under="ignore"):
                    cast = array.astype(target)
                overflow = np.isfinite(array) & ~np.isfinite(cast)
                underflow = (array != 0) & (cast == 0)
                for bad, what, becomes in (
                    (
                        overflow,
                        f"beyond the range of {target} (largest {np.finfo(target).max:.3g})",
                        "inf",
                    ),
                    (
                        underflow,
                        f"below the smallest {target} ({np.finfo(target).smallest_subnormal:.3g})",
                        "0",
                    ),
                ):
                    if bad.any():
                        index = tuple(int(i) for i in np.argwhere(bad)[0])
                        raise ModelError(
                            f"{where} holds {array[index]:g} at index {index}, {what}, which jax "
                            f"turns into {becomes}; rescale the data, or enable float64 with "
                            "jax.config.update('jax_enable_x64', True)"
                        )


def _pandas_like(leaf: Any) -> bool:
    """A pandas or xarray object (anything array-like that is not a numpy or jax array)."""
    return (
        hasattr(leaf, "__array__")
        and not isinstance(leaf, np.ndarray | jax.Array | np.generic | jax.core.Tracer)
        and not isinstance(leaf, bool | int | float | complex | str | bytes)
    )


def as_numpy_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with every numeric pandas or xarray leaf (a Series, a DataFrame,
    a DataArray) as a numpy array, as the jitted functions see them: numpyro's
    densities and jax's tracers do not mix with pandas' and xarray's operators (a
    Series ``obs`` fails in ``jnp.where``, ``DataFrame @ tracer`` cannot be traced).
    Other leaves are kept."""

    def convert(leaf):
        if not _pandas_like(leaf):
            return leaf
        array = np.asarray(leaf)
        return array if array.dtype.kind in "biuf" else leaf

    return jax.tree_util.tree_map(convert, (args, kwargs))


def _trace(
    model: Callable,
    args: tuple,
    kwargs: dict,
    unconstrained: dict | None,
    recorder: _SiteRecorder | None = None,
):
    if unconstrained is None:
        # As numpyro's initialize_model: latents at their prior median, falling back to
        # a uniform draw for priors that cannot be sampled (ImproperUniform).
        traced = handlers.substitute(
            handlers.seed(model, rng_seed=0), substitute_fn=init_to_median
        )
    else:
        traced = handlers.substitute(
            handlers.seed(model, rng_seed=0),
            substitute_fn=partial(_unconstrain_reparam, unconstrained),
        )
    # block: the model's sites must not reach handlers of an enclosing numpyro context
    # (for example when a log joint built here is used inside another model).
    with handlers.block():
        if recorder is None:
            return handlers.trace(traced).get_trace(*args, **kwargs)
        with recorder:
            return handlers.trace(traced).get_trace(*args, **kwargs)


def prototype_trace(model: Callable, args: tuple, kwargs: dict) -> dict:
    recorder = _SiteRecorder()
    try:
        return _trace(model, args, kwargs, None, recorder)
    except ModelError:
        raise
    except Exception as error:
        where = (
            f"after site '{recorder.last_site}'" if recorder.last_site else "before its first site"
        )
        raise ModelError(
            f"the model failed to trace {where}: {type(error).__name__}: {error}"
        ) from error


def _is_jacobian_factor(name: str, latent_names: set[str]) -> bool:
    return name.startswith("_") and name.endswith("_log_det") and name[1:-8] in latent_names


def _per_example(log_prob: jax.Array, fn, dim: int, size: int) -> jax.Array:
    log_prob = jnp.broadcast_to(log_prob, fn.batch_shape)
    return jnp.moveaxis(log_prob, dim, 0).reshape(size, -1).sum(axis=1)


def _site_log_prob(site: dict) -> jax.Array:
    log_prob = site["fn"].log_prob(site["value"])
    if site["scale"] is not None:
        log_prob = site["scale"] * log_prob
    return log_prob


def _is_factor(site: dict) -> bool:
    """Whether a sample site is a ``numpyro.factor`` (a ``Unit`` distribution)."""
    return isinstance(_unwrap_masks(site["fn"])[0], Unit)


def find_plate(trace: dict, plate: str | None) -> tuple[str, int, int, tuple[str, ...]]:
    observed = [
        s
        for s in trace.values()
        if s["type"] == "sample" and s["is_observed"] and not s["name"].startswith("_")
    ]
    if not observed:
        unobserved = [
            f"'{s['name']}' (in plate '{s['cond_indep_stack'][0].name}')"
            for s in trace.values()
            if s["type"] == "sample" and not s["is_observed"] and s["cond_indep_stack"]
        ]
        hint = (
            f": site {unobserved[0]} got obs=None; were its data passed (e.g. model(X, y))?"
            if unobserved
            else ""
        )
        raise ModelError(f"the model has no observed site; pass data through obs=...{hint}")
    in_plates = {s["name"]: {f.name: f for f in s["cond_indep_stack"]} for s in observed}
    if plate is None and any(frames for frames in in_plates.values()):
        # A numpyro.factor outside every plate is a term of the prior (a penalty), not
        # an observation of examples: it joins the prior term, as with plate=NAME.
        in_plates = {
            name: frames
            for name, frames in in_plates.items()
            if frames or not _is_factor(trace[name])
        }
    if plate is not None:
        chosen = [(name, frames[plate]) for name, frames in in_plates.items() if plate in frames]
        if not chosen:
            found = sorted({f for frames in in_plates.values() for f in frames})
            raise ModelError(
                f"no observed site is inside plate '{plate}'; plates holding observed "
                f"sites: {found}"
            )
    else:
        if not any(in_plates.values()):
            raise ModelError(
                "no observed site is inside a plate: wrap the likelihood in "
                "`with numpyro.plate('data', N):` so that examples can be told apart "
                f"(observed sites: {list(in_plates)})"
            )
        common = set.intersection(*(set(frames) for frames in in_plates.values()))
        if not common:
            listing = ", ".join(
                f"'{name}' in plates {sorted(frames) or 'none'} "
                f"(sizes {[f.size for f in frames.values()]})"
                for name, frames in in_plates.items()
            )
            sizes = {f.size for frames in in_plates.values() for f in frames.values()}
            kind = "plates of different sizes" if len(sizes) > 1 else "different plates"
            raise ModelError(
                f"observed sites are in {kind}: {listing}; pass plate=NAME to choose the "
                "plate of examples (observed sites outside it join the prior term)"
            )
        # Nested plates shared by every observed site: the outermost one holds examples.
        frames = next(iter(in_plates.values()))
        plate = min(common, key=lambda name: frames[name].dim)
        chosen = [(name, frames[plate]) for name, frames in in_plates.items()]
    frame = chosen[0][1]
    if frame.size != trace[frame.name]["args"][0]:
        raise ModelError(f"plate '{frame.name}' is subsampled; numpyro_mpe needs the full plate")
    return frame.name, frame.size, frame.dim, tuple(name for name, _ in chosen)


def _check_imputed_sites(trace: dict) -> None:
    """Refuse ``obs_mask=``: numpyro turns its masked entries into a latent site."""
    for name, site in trace.items():
        if not (site["type"] == "sample" and name.endswith("_unobserved")):
            continue
        observed = trace.get(name.removesuffix("_unobserved") + "_observed")
        if isinstance(site["fn"], MaskedDistribution) and observed and observed["is_observed"]:
            original = name.removesuffix("_unobserved")
            raise ModelError(
                f"site '{original}' uses obs_mask=, so numpyro imputes its masked values as "
                f"a latent site '{name}' (one unknown per masked value), which numpyro_mpe "
                "cannot fit; leave the masked values out of the likelihood instead: `with "
                "numpyro.handlers.mask(mask=m): numpyro.sample("
                f"'{original}', ..., obs=y)` (LOO then leaves those examples out)"
            )


def _check_latents(trace: dict) -> list[str]:
    latents = []
    for site in trace.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["fn"].support.is_discrete:
            if site["cond_indep_stack"]:
                plates = [f.name for f in site["cond_indep_stack"]]
                raise ModelError(
                    f"site '{site['name']}' is discrete, inside plate {plates[0]!r}, and got "
                    f"obs=None: if it is the observed site, its data were not passed (pass "
                    f"them, e.g. model(X, y), so that '{site['name']}' gets obs=y); "
                    "numpyro_mpe cannot fit discrete latents"
                )
            raise ModelError(
                f"latent site '{site['name']}' is discrete ({type(site['fn']).__name__}); "
                "numpyro_mpe needs continuous latents: marginalise it or observe it"
            )
        latents.append(site["name"])
    if not latents:
        raise ModelError("the model has no latent site")
    return latents


def _masks_traced(fn) -> bool:
    """Whether a ``MaskedDistribution`` wrapped in ``fn`` holds a traced mask."""
    while isinstance(fn, MaskedDistribution | Independent | ExpandedDistribution):
        if isinstance(fn, MaskedDistribution) and isinstance(fn._mask, jax.core.Tracer):
            return True
        fn = fn.base_dist
    return False


def _counted(fn) -> np.ndarray | jax.Array | None:
    """Bool over ``fn.batch_shape``: the entries ``fn.log_prob`` counts (False where a
    ``MaskedDistribution`` masks them out; an event counts when any of its entries does);
    None when ``fn`` holds no mask. A numpy array when the masks are concrete (computed
    on the host: nothing is compiled per data size), a jax array under ``jit``."""
    xp = jnp if _masks_traced(fn) else np
    if isinstance(fn, MaskedDistribution):
        mask = xp.broadcast_to(xp.asarray(fn._mask, bool), fn.batch_shape)
        inner = _counted(fn.base_dist)
        return mask if inner is None else mask & inner
    if isinstance(fn, Independent):
        inner = _counted(fn.base_dist)
        if inner is None:
            return None
        return xp.any(inner, axis=tuple(range(-fn.reinterpreted_batch_ndims, 0)))
    if isinstance(fn, ExpandedDistribution):
        inner = _counted(fn.base_dist)
        return None if inner is None else xp.broadcast_to(inner, fn.batch_shape)
    return None


def _on_host(constraint: Constraint) -> Constraint | None:
    """``constraint`` with its array parameters (bounds) as numpy arrays, so that checking
    numpy values against it runs on the host (numpyro's constraints compute with numpy on
    numpy values) and compiles nothing; None when a parameter is traced."""
    try:
        leaves, treedef = jax.tree_util.tree_flatten(constraint)
    except (NotImplementedError, TypeError):  # a constraint that is not a pytree
        return constraint
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    leaves = [np.asarray(leaf) if isinstance(leaf, jax.Array) else leaf for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _outside_support(fn, value: np.ndarray) -> np.ndarray | None:
    """Bool over the batch entries of the concrete ``value``: outside ``fn``'s support and
    counted; computed with numpy. None when a mask or a bound is traced (under ``jit``)."""
    if isinstance(fn, MaskedDistribution):
        inner = _outside_support(fn.base_dist, value)
        if inner is None or isinstance(fn._mask, jax.core.Tracer):
            return None
        return inner & np.asarray(fn._mask, bool)
    if isinstance(fn, Independent):
        inner = _outside_support(fn.base_dist, value)
        if inner is None:
            return None
        return np.any(inner, axis=tuple(range(-fn.reinterpreted_batch_ndims, 0)))
    if isinstance(fn, ExpandedDistribution):
        return _outside_support(fn.base_dist, value)
    support = _on_host(fn.support)
    return None if support is None else ~np.asarray(support(value), bool)


def _constraint_parameters(constraint) -> list[np.ndarray]:
    """The array parameters of a numpyro constraint (bounds), nested ones included."""
    values = []
    for value in vars(constraint).values():
        if isinstance(value, Constraint):
            values += _constraint_parameters(value)
        elif isinstance(value, (jax.Array, np.ndarray, float)):
            values.append(np.asarray(value))
    return values


def _support_moves(site: dict, other: dict) -> bool:
    """Whether the support of an observed site differs between two traces at different
    latent values (``Uniform(0, theta)``): then values outside it at one point are not
    an error in the data."""
    here = _constraint_parameters(site["fn"].support)
    there = _constraint_parameters(other["fn"].support)
    if len(here) != len(there):
        return True
    return not all(
        np.shape(a) == np.shape(b) and np.array_equal(a, b)
        for a, b in zip(here, there, strict=True)
    )


def _argument_names(args: tuple, kwargs: dict) -> dict[int, str]:
    """How errors name each argument of the model, by the ``id`` of its value."""
    names = {id(value): f"positional argument {k}" for k, value in enumerate(args)}
    names.update({id(value): f"argument '{k}'" for k, value in kwargs.items()})
    return names


def _check_observed_values(
    trace: dict, trace_elsewhere: Callable[[], dict], argument_names: dict[int, str]
) -> None:
    """A list for an array, a wrong shape or dtype, NaN, inf or a value outside the
    support among the observed sites' counted entries (entries masked out of the
    likelihood may hold anything); checked with numpy on the host, so that a new data
    size compiles nothing. ``trace_elsewhere``: the model traced at other latent values,
    to tell a support that depends on the latents (not checked) from one that does not.
    ``argument_names``: from :func:`_argument_names`, to name the argument at fault."""
    for name, site in trace.items():
        if site["type"] != "sample" or not site["is_observed"] or name.startswith("_"):
            continue
        if isinstance(site["value"], jax.core.Tracer):
            continue
        if isinstance(site["value"], list | tuple):
            # numpyro's densities do arithmetic with the value, which fails on a list
            # (a TypeError deep inside, only once a loss is evaluated).
            given = argument_names.get(id(site["value"]))
            raise ModelError(
                f"observed site '{name}' got a {type(site['value']).__name__} of "
                f"{len(site['value'])} values"
                + (f" ({given})" if given else "")
                + "; numpyro distributions need an array: pass np.asarray(...) of it"
            )
        fn = site["fn"]
        expected = fn.batch_shape + fn.event_shape
        given = np.shape(site["value"])
        try:
            shape = np.broadcast_shapes(given, expected)
        except ValueError:
            shape = None
        if shape != expected:
            # A y with 39 rows for 40 examples, or (40, 1) for (40,): numpy would
            # broadcast the log density to (40, 40), or fail deep inside.
            raise ModelError(
                f"observed site '{name}' has shape {given} but its distribution has shape "
                f"{expected} (batch {fn.batch_shape}, event {fn.event_shape}); do the data "
                "arguments have the same number of rows?"
            )
        if np.asarray(site["value"]).dtype.kind not in "biuf":
            raise ModelError(
                f"observed site '{name}' holds values of dtype "
                f"{np.asarray(site['value']).dtype}; observations must be numbers"
            )
        value = np.broadcast_to(np.asarray(site["value"]), shape)
        if _masks_traced(fn):
            continue  # under jit: checked by the trace outside it
        counted = _counted(fn)
        outside = _outside_support(fn, value)
        if outside is None:
            continue  # a traced bound: under jit, checked by the trace outside it
        counted = np.ones((), bool) if counted is None else counted
        entries = counted.reshape(counted.shape + (1,) * len(fn.event_shape))
        bad = _non_finite(value)
        if bad is not None and (bad := bad & entries).any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ModelError(
                f"observed site '{name}' contains {value[index]} at index {index}; "
                f"{_MISSING_DATA_ADVICE}"
            )
        if outside.any() and not _support_moves(site, trace_elsewhere()[name]):
            index = tuple(int(i) for i in np.argwhere(outside)[0])
            raise ModelError(
                f"observed site '{name}' has value {value[index]} at index {index}, outside "
                f"the support of {type(_unwrap_masks(fn)[0]).__name__} ({fn.support})"
            )


def _check_one_value_per_example(
    trace: dict,
    observed_sites: tuple[str, ...],
    plate: str,
    dim: int,
    size: int,
    argument_names: dict[int, str],
) -> None:
    """Refuse an observed value that numpyro broadcasts along the plate of examples (a
    scalar ``y`` for ``N`` examples): every example would observe the same value."""
    if size == 1:
        return
    for name in observed_sites:
        site = trace[name]
        if _is_factor(site):
            continue  # its value is a placeholder of shape (..., 0)
        fn = site["fn"]
        expected = fn.batch_shape + fn.event_shape
        given = np.shape(site["value"])
        padded = (1,) * (len(expected) - len(given)) + tuple(given)
        position = len(fn.batch_shape) + dim
        if 0 <= position < len(padded) and padded[position] != size:
            argument = argument_names.get(id(site["value"]))
            raise ModelError(
                f"observed site '{name}' got a value of shape {given}"
                + (f" ({argument})" if argument else "")
                + f" for the {size} examples of plate '{plate}': numpyro would broadcast it, "
                f"so that every example observes the same value; pass one value per example "
                f"(shape {expected})"
            )


def _observed_mask(trace: dict, plate: str, dim: int, size: int) -> np.ndarray | None:
    """``(N,)`` bool: the examples with at least one counted observed value in the plate;
    None when every example has one. Raises when none has."""
    masks = []
    for site in trace.values():
        if not (site["type"] == "sample" and site["is_observed"]):
            continue
        if not any(f.name == plate for f in site["cond_indep_stack"]):
            continue
        counted = _counted(site["fn"])
        if counted is None:
            return None  # this site counts every example
        xp = np if isinstance(counted, np.ndarray) else jnp  # the host unless traced
        counted = xp.broadcast_to(counted, site["fn"].batch_shape)
        masks.append(xp.moveaxis(counted, dim, 0).reshape(size, -1).any(axis=1))
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = mask | other
    if isinstance(mask, jax.core.Tracer):
        return mask
    if not mask.any():
        raise ModelError(
            f"every example of plate '{plate}' is masked out of the likelihood; "
            "there is nothing to fit"
        )
    return None if mask.all() else mask


def unwrap_distribution(fn) -> tuple[Any, int]:
    """Strip ``Independent`` / ``ExpandedDistribution``; return base and event dims added."""
    reinterpreted = 0
    while True:
        if isinstance(fn, Independent):
            reinterpreted += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        elif isinstance(fn, ExpandedDistribution):
            fn = fn.base_dist
        else:
            return fn, reinterpreted


def _unwrap_masks(fn) -> tuple[Any, int, bool]:
    """:func:`unwrap_distribution` that strips ``MaskedDistribution`` too; the third value
    says whether a mask lies under an ``Independent`` (it then masks part of an event)."""
    reinterpreted = 0
    masked_events = False
    while True:
        if isinstance(fn, Independent):
            reinterpreted += fn.reinterpreted_batch_ndims
        elif isinstance(fn, MaskedDistribution):
            masked_events = masked_events or reinterpreted > 0
        elif not isinstance(fn, ExpandedDistribution):
            return fn, reinterpreted, masked_events
        fn = fn.base_dist


def _constructor_parameters(base) -> list[tuple[str, Any]]:
    """``(name, constraint)`` of the parameters ``type(base)(**...)`` takes and ``base``
    holds, with which it can be rebuilt; empty when it cannot.

    Some distributions take exactly one of several parametrisations but hold them all
    (``MultivariateNormal``: ``covariance_matrix``, ``precision_matrix``, ``scale_tril``):
    then one of those is kept, ``scale_tril`` first.
    """
    signature = inspect.signature(type(base).__init__).parameters
    held = [
        (name, constraint)
        for name, constraint in type(base).arg_constraints.items()
        if name in signature and getattr(base, name, None) is not None
    ]
    optional = [name for name, _ in held if signature[name].default is None]
    for keep in [None, *sorted(optional, key=lambda name: name != "scale_tril")]:
        chosen = [(n, c) for n, c in held if keep is None or n not in optional or n == keep]
        try:
            type(base)(**{name: getattr(base, name) for name, _ in chosen})
        except (ValueError, TypeError):
            continue
        return chosen
    return []


def _build_predictor(
    model, args, kwargs, plate_dim, size, site_name, unravel, theta0, names=None
) -> Predictor | None:
    def site_at(theta):
        return _trace(model, args, kwargs, unravel(theta))[site_name]

    site = site_at(theta0)
    base, reinterpreted, masked_events = _unwrap_masks(site["fn"])
    batch_shape = site["fn"].batch_shape
    if batch_shape != (size,) or plate_dim != -1 or masked_events:
        return None
    constructor_parameters = _constructor_parameters(base)
    parameters = [(n, c) for n, c in constructor_parameters if not c.is_discrete]
    if not parameters:
        return None
    event_shapes = {
        name: jnp.shape(getattr(base, name))[jnp.ndim(getattr(base, name)) - c.event_dim :]
        for name, c in parameters
    }

    def parameter_values(theta):
        fn = _unwrap_masks(site_at(theta)["fn"])[0]
        return {
            name: jnp.broadcast_to(getattr(fn, name), batch_shape + tuple(event_shapes[name]))
            for name, _ in parameters
        }

    if names is not None and not set(names) <= {name for name, _ in parameters}:
        raise ModelError(
            f"with_predictor names {list(names)} are not all parameters of the observed "
            f"site '{site_name}' ({type(base).__name__}), whose continuous parameters are "
            f"{[name for name, _ in parameters]}"
        )
    if names is None:
        # A parameter is part of the predictor when it moves with theta; checked at the
        # initial point and at a random one so an accidental zero derivative does not
        # hide it.
        # One Jacobian-vector product in a random direction per point: nonzero (almost
        # surely) exactly when the parameter depends on theta.
        key_point, key_direction = jax.random.split(jax.random.PRNGKey(0))
        probe = theta0 + jax.random.normal(key_point, theta0.shape)
        direction = jax.random.normal(key_direction, theta0.shape)
        dependent = set()
        for point in (theta0, probe):
            _, tangents = jax.jvp(parameter_values, (point,), (direction,))
            dependent |= {
                name
                for name, t in tangents.items()
                if t.dtype != jax.dtypes.float0 and np.any(np.asarray(t) != 0)
            }
        names = tuple(name for name, _ in parameters if name in dependent)
        if not names:
            return None
    try:
        transforms = {name: biject_to(c) for name, c in parameters if name in names}
    except NotImplementedError:  # a latent-dependent parameter without a bijection
        return None  # (Uniform's bounds): the parameter-space form applies
    values0 = parameter_values(theta0)
    fixed = {
        name: values0[name] if name in values0 else getattr(base, name)
        for name, _ in constructor_parameters
        if name not in names
    }
    unconstrained_shapes = {  # abstractly: nothing is computed (nor compiled) per size
        name: jax.eval_shape(transforms[name].inv, values0[name]).shape[1:] for name in names
    }
    widths = {name: int(np.prod(shape)) for name, shape in unconstrained_shapes.items()}
    observed = site["value"]
    scale = site["scale"]
    mask = _counted(site["fn"])
    if mask is not None:
        # As MaskedDistribution.log_prob: masked entries hold a value of the support, so
        # that neither the density nor its derivatives see what was there.
        try:
            feasible = base.support.feasible_like(observed)
        except NotImplementedError:
            feasible = observed
        event = (1,) * len(site["fn"].event_shape)
        observed = jnp.where(mask.reshape(mask.shape + event), observed, feasible)
    if reinterpreted:
        names_with_closed_form = ()
    else:
        names_with_closed_form = ("loc",)

    def fn(theta):
        values = parameter_values(theta)
        columns = [
            transforms[name].inv(values[name]).reshape(size, widths[name]) for name in names
        ]
        return jnp.concatenate(columns, axis=1)

    def log_lik(f):
        arguments = dict(fixed)
        start = 0
        for name in names:
            block = f[:, start : start + widths[name]]
            start += widths[name]
            arguments[name] = transforms[name](block.reshape((size,) + unconstrained_shapes[name]))
        distribution = type(base)(**arguments)
        if reinterpreted:
            distribution = distribution.to_event(reinterpreted)
        log_prob = distribution.log_prob(observed)
        if mask is not None:
            log_prob = jnp.where(mask, log_prob, 0.0)
        return log_prob if scale is None else scale * log_prob

    noise_variance = None
    if type(base) is Normal and names == names_with_closed_form and scale is None:
        noise_variance = fixed["scale"] ** 2
    return Predictor(
        fn=fn,
        log_lik=log_lik,
        names=names,
        # device_put, not jnp.asarray: that compiles a conversion per data size.
        observed=(
            observed if isinstance(observed, jax.Array) else jax.device_put(np.asarray(observed))
        ),
        noise_variance=noise_variance,
        mask=mask,
    )


def trace_model(
    model: Callable,
    *args: Any,
    plate: str | None = None,
    with_predictor: bool | tuple[str, ...] = True,
    **kwargs: Any,
) -> PlateModel:
    """Build the flat, per-example view of ``model`` called with ``*args, **kwargs``.

    Parameters
    ----------
    model : callable
        A NumPyro model. Its observed sites (``obs=...``) must sit inside a plate of
        ``N`` examples; its latent sites must be continuous and global (outside that
        plate, as for numpyro's ``AutoContinuous`` guides).
    *args, **kwargs
        The model's arguments. Arrays must be finite.
    plate : str, optional
        Name of the plate of examples. Found automatically when the observed sites are
        all in one plate.
    with_predictor : bool or tuple of str
        True: look for the observation's predictor (needs concrete arguments, not
        tracers); False: none; a tuple of parameter names (``Predictor.names`` of an
        earlier call): build that predictor without the search, which works under
        ``jit``.

    Returns
    -------
    PlateModel
        Prior term, per-example log likelihood ``(N,)``, flat latent layout and, when
        the observation is driven by a predictor, that predictor.

    Raises
    ------
    TypeError
        For a ``model`` that is not callable, a ``plate`` that is not a str or None, or
        a ``with_predictor`` that is not a bool or a tuple of names.
    ModelError
        Before any fitting, naming the site or argument at fault: NaN or inf in an
        argument (arrays of any floating dtype, pandas objects) or in an observed value
        that counts; an observed value that is a list or tuple (numpyro needs an array),
        of the wrong shape or dtype, or outside its distribution's support; no observed
        site in a plate; observed sites in plates of different sizes; a discrete latent
        (or a discrete site in a plate given ``obs=None``); ``obs_mask=`` (use
        ``numpyro.handlers.mask``); every example masked out; latents all of size 0; a
        model that fails to trace; ``with_predictor`` names that are not parameters of
        the observation.

    The returned functions of ``theta`` (``log_prior``, ``log_lik``, ``unravel``,
    ``log_joint``) raise ``ValueError`` naming the shapes when ``theta`` is not ``(P,)``
    (and ``log_joint`` when ``weights`` is not ``(N,)``).

    Notes
    -----
    Examples masked out of the likelihood (``numpyro.handlers.mask`` around the
    observed site, or ``Distribution.mask``) keep their place in the plate with
    ``l_i = 0``; ``observed_mask`` says which they are, and leave-one-out results leave
    them out.
    """
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a function), got {type(model).__name__}")
    check_plate_name(plate)
    with_predictor = _checked_predictor_choice(with_predictor)
    check_finite_arguments(args, kwargs)
    check_argument_range(args, kwargs)
    args, kwargs = as_numpy_arguments(args, kwargs)
    prototype = prototype_trace(model, args, kwargs)
    _check_imputed_sites(prototype)
    latent_names = _check_latents(prototype)
    plate_name, size, plate_dim, observed_sites = find_plate(prototype, plate)
    for name in latent_names:
        if any(f.name == plate_name for f in prototype[name]["cond_indep_stack"]):
            raise ModelError(
                f"latent site '{name}' is local to plate '{plate_name}'; numpyro_mpe "
                "needs global latents (integrate local ones out, or make them global)"
            )
    observed_mask = _observed_mask(prototype, plate_name, plate_dim, size)

    init_values = {
        name: biject_to(prototype[name]["fn"].support).inv(prototype[name]["value"])
        for name in latent_names
    }
    init_theta, shape_dict = _ravel_dict(init_values)
    if init_theta.size == 0:
        shapes = ", ".join(f"'{n}' {jnp.shape(init_values[n])}" for n in latent_names)
        raise ModelError(
            f"every latent site is empty ({shapes}): the model has no parameter to fit"
        )
    unravel = partial(_checked_unravel, shape_dict=shape_dict, size=int(init_theta.shape[0]))
    _check_observed_values(
        prototype,
        lambda: _trace(model, args, kwargs, unravel(init_theta + 0.5)),
        _argument_names(args, kwargs),
    )
    _check_one_value_per_example(
        prototype, observed_sites, plate_name, plate_dim, size, _argument_names(args, kwargs)
    )
    latent_set = set(latent_names)
    likelihood_sites = [
        site
        for name, site in prototype.items()
        if site["type"] == "sample"
        and (
            name in observed_sites
            or (
                site["is_observed"]
                and not _is_jacobian_factor(name, latent_set)
                and any(f.name == plate_name for f in site["cond_indep_stack"])
            )
        )
    ]

    def log_terms(theta):
        trace = _trace(model, args, kwargs, unravel(theta))
        prior = jnp.zeros(())
        per_example = jnp.zeros(size)
        for name, site in trace.items():
            if site["type"] != "sample":
                continue
            log_prob = _site_log_prob(site)
            if name in observed_sites:
                per_example = per_example + _per_example(log_prob, site["fn"], plate_dim, size)
            elif (
                site["is_observed"]
                and not _is_jacobian_factor(name, latent_set)
                and any(f.name == plate_name for f in site["cond_indep_stack"])
            ):
                per_example = per_example + _per_example(log_prob, site["fn"], plate_dim, size)
            else:
                prior = prior + jnp.sum(log_prob)
        return prior, per_example

    def log_prior(theta):
        return log_terms(theta)[0]

    def log_lik(theta):
        return log_terms(theta)[1]

    predictor = None
    if with_predictor and len(observed_sites) == 1:
        predictor = _build_predictor(
            model,
            args,
            kwargs,
            plate_dim,
            size,
            observed_sites[0],
            unravel,
            init_theta,
            names=None if with_predictor is True else tuple(with_predictor),
        )
    return PlateModel(
        num_examples=size,
        plate=plate_name,
        observed_sites=observed_sites,
        latent_shapes=dict(shape_dict),
        init_theta=init_theta,
        unravel=unravel,
        log_prior=log_prior,
        log_lik=log_lik,
        predictor=predictor,
        observed_mask=observed_mask,
        discrete_observations=all(site["fn"].support.is_discrete for site in likelihood_sites),
    )


def check_plate_name(plate: object) -> None:
    """Raise ``TypeError`` unless ``plate`` is a plate's name (a ``str``) or None."""
    if plate is not None and not isinstance(plate, str):
        raise TypeError(f"plate must be a plate's name (a str) or None, got {plate!r}")


def _checked_predictor_choice(with_predictor: object) -> bool | tuple[str, ...]:
    """``with_predictor`` of :func:`trace_model`: a bool, or a tuple (or list) of
    parameter names as a tuple; ``TypeError`` otherwise."""
    if isinstance(with_predictor, bool | np.bool_):
        return bool(with_predictor)
    if isinstance(with_predictor, tuple | list) and all(
        isinstance(name, str) for name in with_predictor
    ):
        return tuple(with_predictor)
    raise TypeError(
        "with_predictor must be True, False or a tuple of the observation's parameter names "
        f"(Predictor.names of an earlier call, e.g. ('logits',)), got {with_predictor!r}"
    )


def _checked_unravel(theta: ArrayLike, *, shape_dict: dict, size: int) -> dict:
    """``theta (P,) -> {site: unconstrained value}``; ``ValueError`` naming both shapes
    for another shape (the shape only: it holds under ``jit``)."""
    return _unravel_dict(_checked_vector("theta", theta, size, "P", "flat latents"), shape_dict)


class _ArrayPlaceholder:
    """Marks where an array argument goes back (hashes by identity)."""

    def __repr__(self) -> str:
        return "<array>"


_DYNAMIC = _ArrayPlaceholder()


def split_arguments(args: tuple, kwargs: dict) -> tuple[list, tuple]:
    """Split model arguments into arrays (traced under ``jit``) and the rest (static).

    Returns ``(arrays, static)`` where ``static`` is hashable, so that a function jitted
    with ``static`` as a static argument compiles once per structure and per value of
    the non-array arguments (Python ints for sizes, strings, ...).
    """
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    arrays, static_leaves = [], []
    for leaf in leaves:
        if isinstance(leaf, jax.Array):
            arrays.append(leaf)  # jnp.asarray would cost a dispatch per call for nothing
            static_leaves.append(_DYNAMIC)
        elif isinstance(leaf, np.ndarray) or (
            hasattr(leaf, "__array__") and not isinstance(leaf, (int, float, bool, complex))
        ):
            array = np.asarray(leaf)
            if array.dtype == object or array.dtype.kind in "SU":
                arrays.append(jnp.asarray(leaf))  # raises jax's TypeError for non-numbers
            else:
                # device_put, not jnp.asarray: that compiles a conversion per shape. Both
                # give jax's default dtypes (float32 unless x64 is enabled).
                arrays.append(jax.device_put(array))
            static_leaves.append(_DYNAMIC)
        else:
            try:
                hash(leaf)
            except TypeError as error:
                raise TypeError(
                    f"model argument of type {type(leaf).__name__} is neither an array nor "
                    "hashable; pass arrays, numbers or strings"
                ) from error
            static_leaves.append(leaf)
    return arrays, (treedef, tuple(static_leaves))


def join_arguments(arrays: list, static: tuple) -> tuple[tuple, dict]:
    """Inverse of :func:`split_arguments`: ``(args, kwargs)``."""
    treedef, static_leaves = static
    remaining = iter(arrays)
    leaves = [next(remaining) if leaf is _DYNAMIC else leaf for leaf in static_leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)
