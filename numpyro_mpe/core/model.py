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
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions import Normal
from numpyro.distributions.distribution import (
    ExpandedDistribution,
    Independent,
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
    "check_finite_arguments",
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
    """

    fn: Callable[[jax.Array], jax.Array]
    log_lik: Callable[[jax.Array], jax.Array]
    names: tuple[str, ...]
    observed: jax.Array
    noise_variance: jax.Array | None


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

    @property
    def num_latents(self) -> int:
        """``P``, the length of the flat unconstrained latent vector."""
        return int(self.init_theta.shape[0])

    def log_joint(self, theta: ArrayLike, weights: ArrayLike | None = None) -> jax.Array:
        """``-L(theta) = log p(theta) + sum_i w_i log p(y_i | theta)``; ``w = 1`` if None."""
        log_lik = self.log_lik(theta)
        if weights is None:
            return self.log_prior(theta) + jnp.sum(log_lik)
        return self.log_prior(theta) + jnp.dot(weights, log_lik)


class _SiteRecorder(Messenger):
    """Remembers the name of the last site the model reached."""

    def __init__(self, fn=None):
        self.last_site = None
        super().__init__(fn)

    def postprocess_message(self, msg):
        if msg.get("name") is not None and msg["type"] in ("sample", "param"):
            self.last_site = msg["name"]


def check_finite_arguments(args: tuple, kwargs: dict) -> None:
    named = [(f"positional argument {k}", a) for k, a in enumerate(args)]
    named += [(f"argument '{k}'", a) for k, a in kwargs.items()]
    for label, value in named:
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            if isinstance(leaf, jax.core.Tracer) or not isinstance(
                leaf, (np.ndarray, jax.Array, float)
            ):
                continue
            array = np.asarray(leaf)
            if not np.issubdtype(array.dtype, np.inexact):
                continue
            bad = ~np.isfinite(array)
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
                where = label + jax.tree_util.keystr(path)
                raise ModelError(
                    f"{where} contains {array[bad].flat[0]} at index {index}; "
                    "NaN and inf are not allowed in model data."
                )


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


def find_plate(trace: dict, plate: str | None) -> tuple[str, int, int, tuple[str, ...]]:
    observed = [
        s
        for s in trace.values()
        if s["type"] == "sample" and s["is_observed"] and not s["name"].startswith("_")
    ]
    if not observed:
        raise ModelError("the model has no observed site; pass data through obs=...")
    in_plates = {s["name"]: {f.name: f for f in s["cond_indep_stack"]} for s in observed}
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


def _check_latents(trace: dict) -> list[str]:
    latents = []
    for site in trace.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["fn"].support.is_discrete:
            raise ModelError(
                f"latent site '{site['name']}' is discrete ({type(site['fn']).__name__}); "
                "numpyro_mpe needs continuous latents: marginalise it or observe it"
            )
        latents.append(site["name"])
    if not latents:
        raise ModelError("the model has no latent site")
    return latents


def _check_observed_values(trace: dict, names: tuple[str, ...]) -> None:
    for name in names:
        if isinstance(trace[name]["value"], jax.core.Tracer):
            continue
        value = np.asarray(trace[name]["value"])
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise ModelError(
                f"observed site '{name}' contains {value[index]} at index {index}; "
                "NaN and inf are not allowed in observed data"
            )


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


def _constructor_parameters(base) -> list[tuple[str, Any]]:
    """``(name, constraint)`` of the parameters ``type(base)(**...)`` takes and ``base`` holds."""
    signature = inspect.signature(type(base).__init__).parameters
    return [
        (name, constraint)
        for name, constraint in type(base).arg_constraints.items()
        if name in signature and getattr(base, name, None) is not None
    ]


def _build_predictor(
    model, args, kwargs, plate_dim, size, site_name, unravel, theta0, names=None
) -> Predictor | None:
    def site_at(theta):
        return _trace(model, args, kwargs, unravel(theta))[site_name]

    site = site_at(theta0)
    base, reinterpreted = unwrap_distribution(site["fn"])
    batch_shape = site["fn"].batch_shape
    if batch_shape != (size,) or plate_dim != -1:
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
        fn, _ = unwrap_distribution(site_at(theta)["fn"])
        return {
            name: jnp.broadcast_to(getattr(fn, name), batch_shape + tuple(event_shapes[name]))
            for name, _ in parameters
        }

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
                if t.dtype != jax.dtypes.float0 and bool(jnp.any(t != 0))
            }
        names = tuple(name for name, _ in parameters if name in dependent)
        if not names:
            return None
    transforms = {name: biject_to(c) for name, c in parameters}
    values0 = parameter_values(theta0)
    fixed = {
        name: values0[name] if name in values0 else getattr(base, name)
        for name, _ in constructor_parameters
        if name not in names
    }
    unconstrained_shapes = {
        name: jnp.shape(transforms[name].inv(values0[name]))[1:] for name in names
    }
    widths = {name: int(np.prod(shape)) for name, shape in unconstrained_shapes.items()}
    observed = site["value"]
    scale = site["scale"]
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
        return log_prob if scale is None else scale * log_prob

    noise_variance = None
    if type(base) is Normal and names == names_with_closed_form and scale is None:
        noise_variance = fixed["scale"] ** 2
    return Predictor(
        fn=fn,
        log_lik=log_lik,
        names=names,
        observed=jnp.asarray(observed),
        noise_variance=noise_variance,
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
    ModelError
        Before any fitting, naming the site or argument at fault: NaN or inf in an
        array argument or observed value; no observed site in a plate; observed sites in
        plates of different sizes; a discrete latent; a model that fails to trace.
    """
    check_finite_arguments(args, kwargs)
    prototype = prototype_trace(model, args, kwargs)
    latent_names = _check_latents(prototype)
    plate_name, size, plate_dim, observed_sites = find_plate(prototype, plate)
    _check_observed_values(prototype, observed_sites)
    for name in latent_names:
        if any(f.name == plate_name for f in prototype[name]["cond_indep_stack"]):
            raise ModelError(
                f"latent site '{name}' is local to plate '{plate_name}'; numpyro_mpe "
                "needs global latents (integrate local ones out, or make them global)"
            )

    init_values = {
        name: biject_to(prototype[name]["fn"].support).inv(prototype[name]["value"])
        for name in latent_names
    }
    init_theta, shape_dict = _ravel_dict(init_values)
    unravel = partial(_unravel_dict, shape_dict=shape_dict)
    latent_set = set(latent_names)

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
    )


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
            arrays.append(jnp.asarray(leaf))
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
