"""A diagonal Gaussian posterior from a MAP fitted by NumPyro's SVI with an optax optimizer.

A point estimate trained with ``SVI(model, AutoDelta(model), optax_to_numpyro(opt), ...)``
already carries a crude curvature estimate when ``opt`` is Adam or RMSprop: the
exponential moving average ``nu`` of squared gradients. Following the memory-perturbation
paper's table of sensitivities by optimizer (DESIGN.md section 2),

.. math::

    q(\\theta) = \\mathcal{N}(m, \\operatorname{diag}(s)^{-1}),\\qquad
    m = \\theta_{\\mathrm{MAP}},\\qquad
    s = N \\sqrt{\\hat\\nu_{\\mathrm{mean}}} + \\delta,

with ``nu_mean`` the moving average of squared minibatch gradients of the *mean* loss
``(1/N) sum_i l_i`` and ``delta`` the prior precision. NumPyro's SVI loss for
``AutoDelta`` is the *sum* ``L = l_0 + (N/B) sum_{i in batch} l_i`` (the subsampled
plate is rescaled by ``N/B``), so the optax state holds ``nu = EMA(g_L^2)`` with
``g_L = N g_mean`` and

.. math::

    N \\sqrt{\\hat\\nu_{\\mathrm{mean}}} = N \\sqrt{\\hat\\nu / N^2} = \\sqrt{\\hat\\nu},
    \\qquad \\hat\\nu = \\frac{\\nu_t}{1 - \\beta_2^{\\,t}}

(bias correction of a moving average started at zero, ``t`` the step count). That is
what :func:`posterior_from_svi` builds. With SGD (no second-moment state) the precision
is identity-scaled, ``s = c + delta`` with ``c = N`` by default: one unit of curvature
per example, which makes the sensitivity ``s^-1 grad l_i`` proportional to
``grad l_i`` (the table's SGD row) and keeps ``s - H_i > 0`` for bounded ``H_i``.

The result is an ordinary diagonal :class:`~numpyro_mpe.AutoGaussian` and its params,
so :func:`~numpyro_mpe.perturb`, :func:`~numpyro_mpe.loo` and the rest take it
unchanged.

Caveats (measured on wells, see ``tests/infer/test_optax_posterior.py``):

* ``nu`` measures the *noise* of minibatch gradients. Train with a subsampled plate
  (``numpyro.plate(..., subsample_size=B)``); a full-batch run drives the gradient and
  so ``nu`` to zero at convergence, and the precision collapses to the prior's.
* ``sqrt(nu)`` scales like the square root of the per-example curvature divided by the
  batch size, not like the curvature itself: the variances are off by a factor that
  depends on ``B`` and on the coordinate (on standardised wells with ``B = 100``:
  0.20-0.28 of the Hessian diagonal for Adam and RMSprop, 4.3-5.8 for SGD with
  ``c = N``). Sensitivity *rankings* survive this: Spearman correlation of ``|shift|``
  with Newton refits 0.84-0.87 for every variant, 0.87 for the exact diagonal Laplace.
  LOO totals are biased: Adam/RMSprop -10.6/-10.1 nats (too wide), SGD +2.5 (too
  narrow) against refits' -1968.4; at most 0.16 per example.
* Any diagonal posterior ranks sensitivities poorly when the latents are strongly
  correlated (raw wells covariates: per-coordinate Spearman 0.54 / -0.06 / -0.05 even
  for the exact diagonal Laplace).
* ``AutoDelta`` maximises the density of the *constrained* latents (no log-Jacobian),
  while :func:`~numpyro_mpe.trace_model` and the prior precision use the unconstrained
  density. For real-valued latents the two coincide.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoDelta

from numpyro_mpe.core.model import PlateModel, trace_model
from numpyro_mpe.infer.guide import AutoGaussian, array_arguments
from numpyro_mpe.optim.base import check_number

__all__ = [
    "diag_prior_precision",
    "find_second_moment",
    "posterior_from_svi",
    "precision_from_second_moment",
]

_DEFAULT_DECAY = {"adam": 0.999, "rmsprop": 0.9}


def find_second_moment(opt_state: Any) -> tuple[str, Any, jax.Array | None]:
    """Find the squared-gradient moving average inside an optax state.

    Walks the (nested tuple / ``NamedTuple``) optax state, e.g. that of
    ``optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(lr))``, and
    returns the first state holding a ``nu`` field: ``ScaleByAdamState`` (Adam, AdamW,
    ...), ``ScaleByRmsState`` / ``ScaleByRmsWithCountState`` (RMSprop) or
    ``ScaleByRStdDevState`` (centred RMSprop).

    Parameters
    ----------
    opt_state : pytree
        The optax optimizer state.

    Returns
    -------
    kind : {"adam", "rmsprop", "sgd"}
        ``"adam"`` when the state also holds a first moment ``mu`` and a ``count``,
        ``"rmsprop"`` for a ``nu`` without them, ``"sgd"`` when no ``nu`` is found.
    nu : pytree or None
        The squared-gradient average, same structure as the params.
    count : jax.Array or None
        The state's own step count, when it keeps one.
    """
    stack = [opt_state]
    while stack:
        node = stack.pop(0)
        fields = getattr(node, "_fields", None)
        if fields is not None and "nu" in fields:
            # (a NamedTuple is a tuple: getattr(node, "count") would find tuple.count)
            count = node.count if "count" in fields else None
            is_adam = "mu" in fields and count is not None
            return ("adam" if is_adam else "rmsprop"), node.nu, count
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
    return "sgd", None, None


def precision_from_second_moment(
    nu: ArrayLike, count: ArrayLike, decay: float, prior_precision: ArrayLike
) -> jax.Array:
    """Diagonal precision ``sqrt(nu / (1 - decay^count)) + prior_precision``.

    ``nu`` is the moving average of squared gradients of a *summed* loss
    ``l_0 + (N/B) sum_{batch} l_i``, so ``sqrt(nu_hat) = N sqrt(nu_hat_mean)``: the
    table's ``N sqrt(nu) + delta`` with ``nu`` taken of the mean loss (module docstring).

    Parameters
    ----------
    nu : array_like
        ``(P,)`` squared-gradient moving average.
    count : array_like
        Number of updates that went into ``nu`` (``t``).
    decay : float
        Its decay rate (Adam's ``b2``, RMSprop's ``decay``).
    prior_precision : array_like
        Scalar or ``(P,)`` prior precision ``delta``.

    Returns
    -------
    jax.Array
        ``(P,)`` precision.
    """
    nu = jnp.asarray(nu)
    correction = 1.0 - jnp.asarray(decay, nu.dtype) ** jnp.asarray(count, nu.dtype)
    return jnp.sqrt(nu / correction) + prior_precision


def diag_prior_precision(plate_model: PlateModel, theta: ArrayLike) -> jax.Array:
    """Diagonal of the Hessian of ``l_0 = -log p(theta)`` (unconstrained, Jacobian included).

    Exact for Gaussian priors on real latents; for others the local curvature at
    ``theta``.

    Parameters
    ----------
    plate_model : PlateModel
        From :func:`~numpyro_mpe.trace_model`.
    theta : array_like
        ``(P,)`` point (the MAP).

    Returns
    -------
    jax.Array
        ``(P,)``.
    """
    theta = jnp.asarray(theta)
    return jnp.diag(jax.hessian(lambda t: -plate_model.log_prior(t))(theta))


def _checked_prior_precision(prior_precision: ArrayLike) -> np.ndarray:
    """A user's ``prior_precision`` as an array, or an error naming it unless it is a
    number or an array of numbers (``TypeError``), finite and non-negative
    (``ValueError``). Its shape is checked against ``P`` once the model is traced."""
    if isinstance(prior_precision, int | float | np.integer | np.floating):
        check_number("prior_precision", prior_precision, 0.0, closed=True)
        return np.asarray(prior_precision)
    try:
        array = np.asarray(prior_precision)
    except Exception:
        array = np.asarray(None)
    if array.dtype.kind not in "iuf" or isinstance(prior_precision, str):
        raise TypeError(
            "prior_precision must be a number or a (P,) array of numbers (the flat latent "
            f"vector), got {type(prior_precision).__name__}"
        )
    bad = ~(np.isfinite(array) & (array >= 0))
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
        raise ValueError(
            f"prior_precision must be finite and >= 0, got {array[index]} at index {index}"
        )
    return array


def _flat_latents(plate_model: PlateModel, tree: dict, prefix: str) -> jax.Array:
    parts = []
    for site in plate_model.latent_shapes:
        name = f"{site}_{prefix}_loc"
        if name not in tree:
            raise ValueError(f"the AutoDelta params have no {name!r} for latent site {site!r}")
        parts.append(jnp.reshape(tree[name], -1))
    return jnp.concatenate(parts)


def posterior_from_svi(
    svi: SVI,
    svi_state: Any,
    *args: Any,
    decay: float | None = None,
    prior_precision: ArrayLike | None = None,
    sgd_precision: float | None = None,
    plate: str | None = None,
    **kwargs: Any,
) -> tuple[AutoGaussian, dict]:
    """Diagonal Gaussian posterior from an ``AutoDelta`` MAP trained with an optax optimizer.

    Mean: the MAP (the ``AutoDelta`` locations, mapped to the flat unconstrained latent
    vector in model-site order). Precision, read off the optimizer state:

    * Adam / RMSprop: ``sqrt(nu / (1 - decay^t)) + delta`` (``= N sqrt(nu_mean) +
      delta``, see the module docstring), ``t`` the step count;
    * SGD (no ``nu``): ``sgd_precision + delta``, ``sgd_precision = N`` by default.

    ``delta`` is the diagonal of the prior's Hessian at the MAP unless given.

    Parameters
    ----------
    svi : numpyro.infer.SVI
        Built with an :class:`~numpyro.infer.autoguide.AutoDelta` guide and an optax
        optimizer (``numpyro.optim.optax_to_numpyro`` or an optax transformation).
    svi_state : SVIState
        The trained state (``svi.run(...).state`` or the last ``svi.update``).
    *args, **kwargs
        The model's arguments for the *full* data (no subsampling).
    decay : float, optional
        Decay of the squared-gradient average (optax does not store it), in ``[0, 1)``:
        Adam's ``b2`` (default 0.999) or RMSprop's ``decay`` (default 0.9); only for a
        state that has ``nu``. RMSprop must have been built with ``initial_scale=0``
        (optax's default) for the bias correction to hold.
    prior_precision : array_like, optional
        Scalar or ``(P,)`` ``delta``, finite and ``>= 0``; the diagonal prior Hessian at
        the MAP by default.
    sgd_precision : float, optional
        Per-coordinate likelihood precision ``c > 0`` used when the state has no ``nu``
        (only then); ``N`` by default. (``1 / learning_rate`` is the other natural
        choice: the curvature an SGD step treats as known.)
    plate : str, optional
        The plate of examples.

    Returns
    -------
    guide : AutoGaussian
        A diagonal ``AutoGaussian(svi.model)``, set up on ``*args, **kwargs``.
    params : dict
        Its params: ``{"auto_loc": (P,), "auto_precision": (P,)}``.

    Raises
    ------
    TypeError
        When ``svi`` is not an ``SVI``, ``svi.guide`` not an ``AutoDelta``, ``svi_state``
        not the state of an optax optimizer, or ``decay``, ``prior_precision`` or
        ``sgd_precision`` not a number (array).
    ValueError
        Before any work: ``decay`` outside ``[0, 1)``, ``sgd_precision`` not in
        ``(0, inf)``, ``prior_precision`` not finite and ``>= 0`` or of another shape
        than ``()`` or ``(P,)``, ``decay`` given for a state without ``nu`` (SGD) or
        ``sgd_precision`` for one with it, a state that has taken no step, or AutoDelta
        params that are missing, of another size or not finite. After: when the
        resulting precision is not positive and finite.

    Examples
    --------
    >>> optimizer = numpyro.optim.optax_to_numpyro(optax.adam(1e-2))  # doctest: +SKIP
    >>> svi = SVI(model, AutoDelta(model), optimizer, Trace_ELBO())  # doctest: +SKIP
    >>> state = svi.run(key, 20_000, X, y, subsample_size=100).state  # doctest: +SKIP
    >>> guide, params = posterior_from_svi(svi, state, X, y)  # doctest: +SKIP
    >>> elpd = numpyro_mpe.loo(model, guide, params, X, y)  # doctest: +SKIP
    """
    if not isinstance(svi, SVI):
        raise TypeError(
            f"posterior_from_svi takes a numpyro.infer.SVI first, got {type(svi).__name__}"
        )
    if not isinstance(svi.guide, AutoDelta):
        raise TypeError(f"svi.guide must be an AutoDelta, got {type(svi.guide).__name__}")
    if not hasattr(svi_state, "optim_state"):
        raise TypeError(
            f"svi_state must be an SVIState (svi.run(...).state), got {type(svi_state).__name__}"
        )
    # numpyro's _NumPyroOptim state is (step, inner); for optax_to_numpyro the inner state
    # is (unconstrained params, optax state). SVI optimises unconstrained params, through
    # biject_to(site support): the same space as trace_model's. numpyro's own optimizers
    # (numpyro.optim.Adam, ...) keep a packed jax.example_libraries state instead.
    step, inner = svi_state.optim_state
    if type(inner).__name__ == "OptimizerState" or not (
        isinstance(inner, tuple) and len(inner) == 2
    ):
        raise TypeError(
            f"posterior_from_svi reads the state of an optax optimizer; svi.optim is "
            f"{type(svi.optim).__name__}, whose state it cannot read. Build the SVI with "
            "numpyro.optim.optax_to_numpyro(optax.adam(1e-2)) (or optax.rmsprop, "
            "optax.sgd) instead of numpyro.optim.Adam"
        )
    raw_params, opt_state = inner
    kind, nu, count = find_second_moment(opt_state)
    if decay is not None:
        check_number("decay", decay, 0.0, 1.0, closed=True, open_high=True)
        if kind == "sgd":
            raise ValueError(
                f"decay={decay!r} is the decay of Adam's or RMSprop's squared-gradient "
                "average, but this optax state has none (SGD); leave decay None, or pass "
                "sgd_precision"
            )
    if sgd_precision is not None:
        check_number("sgd_precision", sgd_precision, 0.0)
        if kind != "sgd":
            raise ValueError(
                f"sgd_precision={sgd_precision!r} is for an SGD state, but this optax state "
                f"is {kind}'s: its precision comes from the squared-gradient average nu "
                "(leave sgd_precision None)"
            )
    if prior_precision is not None:
        prior_precision = _checked_prior_precision(prior_precision)
    count = step if count is None else count
    if int(count) < 1 or int(step) < 1:
        raise ValueError(
            f"svi_state has taken {int(min(count, step))} optimizer steps (the state of "
            "svi.init): there is no MAP or squared-gradient average yet; pass the state "
            "after training (svi.run(...).state)"
        )
    args, kwargs = array_arguments(args, kwargs, "posterior_from_svi")
    plate_model = trace_model(svi.model, *args, plate=plate, with_predictor=False, **kwargs)
    prefix = svi.guide.prefix
    mean = _flat_latents(plate_model, raw_params, prefix)
    if mean.shape != plate_model.init_theta.shape:
        raise ValueError(
            f"AutoDelta latent size {mean.shape} differs from the model's "
            f"{plate_model.init_theta.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(mean))):
        index = int(np.argmax(~np.isfinite(np.asarray(mean))))
        raise ValueError(
            f"posterior_from_svi: the AutoDelta params hold {float(mean[index])} at flat "
            f"latent index {index}: the SVI run diverged (lower the learning rate)"
        )
    if prior_precision is None:
        prior_precision = diag_prior_precision(plate_model, mean)
    elif prior_precision.shape not in ((), mean.shape):
        raise ValueError(
            f"prior_precision must be a scalar or of shape {mean.shape} (the flat latent "
            f"vector), got shape {prior_precision.shape}"
        )
    if kind == "sgd":
        scale = plate_model.num_examples if sgd_precision is None else sgd_precision
        precision = jnp.full_like(mean, scale) + prior_precision
    else:
        nu_flat = _flat_latents(plate_model, nu, prefix)
        decay = _DEFAULT_DECAY[kind] if decay is None else decay
        precision = precision_from_second_moment(nu_flat, count, decay, prior_precision)
    precision = jnp.broadcast_to(precision, mean.shape)
    if not bool(jnp.all(jnp.isfinite(precision))):
        raise ValueError(
            f"posterior_from_svi: the precision is not finite ({precision}): the optimizer "
            "state's squared-gradient average nu is not finite (the SVI run diverged)"
        )
    if not bool(jnp.all(precision > 0)):
        raise ValueError(
            "posterior_from_svi: the precision has non-positive entries "
            f"({precision}); pass prior_precision explicitly"
        )
    guide = AutoGaussian(svi.model, covariance="diag")
    with handlers.seed(rng_seed=0):
        guide._setup_prototype(*args, **kwargs)
    return guide, guide.params_from_mean_precision(mean, precision)
