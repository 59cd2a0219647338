"""Exact MPE for conjugate exponential families: posterior division in natural parameters.

When the prior of a model's latent is conjugate to its observation distribution, the
posterior stays in the prior's exponential family and its natural parameters are a sum,

.. math::

    \\eta_{\\text{post}} = \\eta_0 + \\sum_{i=1}^N w_i\\, t_i,

with :math:`\\eta_0` the prior's natural parameters and :math:`t_i` the natural-parameter
contribution of example :math:`i` (its sufficient statistics). Removing the set
:math:`M` is then exact division, :math:`\\eta^{\\setminus M} = \\eta_{\\text{post}} -
\\sum_{j \\in M} \\epsilon_j t_j` (the MPE with :math:`\\rho = 1`, exact here), and
the Bayesian leave-one-out predictive :math:`p(y_i \\mid y_{-i})` is a closed form of the
cavity :math:`\\eta_{\\text{post}} - t_i`. Supported pairs (see ``docs/conjugate.md``):

=====================================  ======================================  =============
prior (latent)                         observation in the plate                predictive
=====================================  ======================================  =============
Beta(a, b) on ``p``                    Bernoulli / Binomial(n_i, probs=p)      Beta-binomial
Gamma(a, b) on ``lam``                 Poisson(rate=e_i * lam), e_i known      neg. binomial
Dirichlet(alpha) on ``p``              Categorical(probs=p)                    Dirichlet-cat.
Normal / MVN on ``beta``               Normal(x_i beta + c_i, known s_i)       Normal
InverseGamma on ``s2``, then           Normal(x_i beta + c_i, k_i sqrt(s2))    Student-t
Normal / MVN(m0, s2 Sigma0) on beta
=====================================  ======================================  =============

The pair is detected by tracing the model at *probe values* of the latents (two or three
distinct points): an observation parameter must equal the latent (``probs``), be the
latent times a per-example constant (``rate``), or be affine in it (``loc``, its
coefficients read by ``jax.jacfwd``). A function that agrees with those forms at the
probes but not elsewhere would fool the check; any other model raises
:class:`~numpyro_mpe.core.model.ModelError` naming the pair, pointing to ``AutoGaussian``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions.discrete import (
    BernoulliLogits,
    BernoulliProbs,
    BinomialLogits,
    BinomialProbs,
    CategoricalLogits,
    CategoricalProbs,
)
from numpyro.infer.autoguide import AutoGuide

from numpyro_mpe.conjugate.families import FAMILIES, check_params
from numpyro_mpe.core.gaussian import check_positive_definite, check_symmetric
from numpyro_mpe.core.model import (
    ModelError,
    check_plate_name,
    find_plate,
    prototype_trace,
    unwrap_distribution,
)
from numpyro_mpe.core.options import check_choice
from numpyro_mpe.crossval.mpe_loo import LooOptions, prepare_guide_loo
from numpyro_mpe.crossval.results import ELPDDataMPE, make_elpd_data
from numpyro_mpe.infer.guide import array_arguments, check_model, check_sample_shape
from numpyro_mpe.optim.base import check_rng_key
from numpyro_mpe.perturbation.perturb import perturb_guide
from numpyro_mpe.perturbation.removal import (
    check_removal_arguments,
    group_mask,
    removal_weights,
)

__all__ = [
    "AutoConjugate",
    "ConjugateModel",
    "conjugate_loo",
    "conjugate_perturb",
    "trace_conjugate",
]

_SUPPORTED = (
    "Beta + Bernoulli/Binomial(probs=p); Gamma or Exponential + Poisson(rate=e_i * lam); "
    "Dirichlet + Categorical(probs=p); Normal/MultivariateNormal + Normal(loc affine in the "
    "latent, known scale); InverseGamma variance s2 + Normal/MultivariateNormal coefficients "
    "with covariance proportional to s2 + Normal(loc affine, scale k_i * sqrt(s2))"
)
_GAUSSIAN_PRIORS = (dist.Normal, dist.MultivariateNormal)
_PROBE_RTOL = 1e-5
_PRIOR_KINDS = {
    "beta": dist.Beta,
    "gamma": (dist.Gamma, dist.Exponential),
    "dirichlet": dist.Dirichlet,
    "normal": _GAUSSIAN_PRIORS,
}


class ConjugateModel(NamedTuple):
    """A conjugate model seen as prior natural parameters and per-example statistics.

    Attributes
    ----------
    family : str
        ``"beta"``, ``"gamma"``, ``"dirichlet"``, ``"normal"`` (known variance) or
        ``"nig"`` (Normal-inverse-gamma regression).
    plate : str
        Name of the plate of examples.
    num_examples : int
        ``N``.
    latent_sites : tuple of str
        The latent site (``("s2", "beta")`` for ``"nig"``: variance first).
    latent_shapes : tuple of tuple
        Their shapes in the model.
    observed_site : str
        The observed site inside the plate.
    prior_natural : tuple of jax.Array
        ``eta_0``, the prior's natural parameters (see :meth:`AutoConjugate.natural_params`).
    data : dict
        What the statistics ``t_i`` are made of: ``y`` and ``n`` (counts, ``(N,)``) for
        ``"beta"``; ``y`` and ``exposure`` for ``"gamma"``; ``y`` (indices) for
        ``"dirichlet"``; for the Gaussian families the whitened design ``x = X / k``
        ``(N, D)``, response ``y = (y - c) / k`` ``(N,)`` and ``log_scale = log k``.
    """

    family: str
    plate: str
    num_examples: int
    latent_sites: tuple[str, ...]
    latent_shapes: tuple[tuple[int, ...], ...]
    observed_site: str
    prior_natural: tuple[jax.Array, ...]
    data: dict


def _family_of(priors: tuple) -> str | None:
    """The family that the unwrapped priors of the global latents (in order) point to."""
    if len(priors) == 1:
        for family, kinds in _PRIOR_KINDS.items():
            if isinstance(priors[0], kinds):
                return family
    if (
        len(priors) == 2
        and isinstance(priors[0], dist.InverseGamma)
        and isinstance(priors[1], _GAUSSIAN_PRIORS)
    ):
        return "nig"
    return None


def _latent_layout(model, args, kwargs) -> tuple[str, tuple, tuple]:
    """``(family, latent sites, shapes)`` from the priors alone: no observation needed."""
    try:
        trace = _trace_at(model, args, kwargs, {})
    except Exception as error:
        raise ModelError(f"the model failed to trace: {type(error).__name__}: {error}") from error
    latents = [
        s
        for s in trace.values()
        if s["type"] == "sample" and not s["is_observed"] and not s["cond_indep_stack"]
    ]
    priors = tuple(unwrap_distribution(s["fn"])[0] for s in latents)
    family = _family_of(priors)
    if family is None:
        found = {s["name"]: type(p).__name__ for s, p in zip(latents, priors, strict=True)}
        raise ModelError(
            f"AutoConjugate has no conjugate family for the latent sites {found}. Supported "
            f"pairs: {_SUPPORTED}. Use numpyro_mpe.AutoGaussian for other models."
        )
    return family, tuple(s["name"] for s in latents), tuple(jnp.shape(s["value"]) for s in latents)


def _trace_at(model, args, kwargs, values: dict) -> dict:
    with handlers.block():
        traced = handlers.substitute(handlers.seed(model, rng_seed=0), data=values)
        return handlers.trace(traced).get_trace(*args, **kwargs)


def _close(actual, expected) -> bool:
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return actual.shape == expected.shape and np.allclose(
        actual, expected, rtol=_PROBE_RTOL, atol=_PROBE_RTOL * scale
    )


def _check_support(obs_fn, value, name: str) -> None:
    inside = np.asarray(obs_fn.support(value))
    if not inside.all():
        index = int(np.argmax(~inside))
        raise ModelError(
            f"observed site '{name}' holds {np.asarray(value)[index]} at example {index}, "
            f"outside the support of {type(obs_fn).__name__}"
        )


def _gaussian_prior(prior, shape: tuple) -> tuple[jax.Array, jax.Array]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of a Normal / MVN prior of a site."""
    if isinstance(prior, dist.MultivariateNormal):
        return prior.loc, prior.covariance_matrix
    size = int(np.prod(shape))
    loc = jnp.broadcast_to(prior.loc, shape).reshape(size)
    return loc, jnp.diag(jnp.broadcast_to(prior.scale, shape).reshape(size) ** 2)


def _unsupported(prior_text: str, obs_name: str, obs_fn, why: str = "") -> ModelError:
    reason = f" ({why})" if why else ""
    return ModelError(
        f"AutoConjugate does not support {prior_text} with observation "
        f"{type(obs_fn).__name__} at site '{obs_name}'{reason}. Supported pairs: "
        f"{_SUPPORTED}. Use numpyro_mpe.AutoGaussian for other models."
    )


def _detect_beta(observe, site, obs_fn, value, size, prior) -> tuple | None:
    """Beta prior on ``p``; Bernoulli / Binomial with ``probs`` equal to ``p``."""
    for p in (0.2718, 0.6931):
        probs = observe({site: jnp.asarray(p)}).probs
        if not _close(jnp.broadcast_to(probs, (size,)), jnp.full(size, p)):
            return None
    dtype = jnp.result_type(float)
    count = jnp.asarray(getattr(obs_fn, "total_count", 1), dtype)
    data = {"y": value.astype(dtype), "n": jnp.broadcast_to(count, (size,))}
    return (prior.concentration1, prior.concentration0), data


def _detect_gamma(observe, site, obs_fn, value, size, prior) -> tuple | None:
    """Gamma / Exponential prior on ``lam``; Poisson with rate ``e_i * lam``, ``e_i > 0``."""
    rates = [jnp.broadcast_to(observe({site: jnp.asarray(r)}).rate, (size,)) for r in (1.3, 2.9)]
    exposure = rates[0] / 1.3
    if not (_close(rates[1], exposure * 2.9) and bool(jnp.all(exposure > 0))):
        return None
    concentration = getattr(prior, "concentration", jnp.ones_like(prior.rate))
    return (concentration, prior.rate), {"y": value.astype(exposure.dtype), "exposure": exposure}


def _detect_dirichlet(observe, site, obs_fn, value, size, prior) -> tuple | None:
    """Dirichlet prior on ``p`` (``K >= 2``); Categorical with ``probs`` equal to ``p``."""
    num = prior.concentration.shape[-1]
    weights = jnp.arange(1.0, num + 1)
    for probe in (weights, weights[::-1] ** 2):
        probe = probe / jnp.sum(probe)
        probs = jnp.broadcast_to(observe({site: probe}).probs, (size, num))
        if num < 2 or not _close(probs, jnp.broadcast_to(probe, (size, num))):
            return None
    return (prior.concentration,), {"y": value.astype(jnp.int32), "num_categories": num}


def _linear_observation(observe, site, shape, fixed, size) -> tuple | None:
    """``(X (N, D), c (N,), scale (N,))`` when ``loc = X beta + c`` and scale is fixed."""
    dim = int(np.prod(shape))

    def loc_scale(flat):
        obs = observe({**fixed, site: flat.reshape(shape)})
        return jnp.broadcast_to(obs.loc, (size,)), jnp.broadcast_to(obs.scale, (size,))

    zero, probe = jnp.zeros(dim), 0.5 + 0.25 * jnp.arange(dim)
    design = jax.jacfwd(lambda flat: loc_scale(flat)[0])(zero).reshape(size, dim)
    offset, scale = loc_scale(zero)
    loc_probe, scale_probe = loc_scale(probe)
    if not (_close(loc_probe, design @ probe + offset) and _close(scale_probe, scale)):
        return None
    return design, offset, scale


def _whitened(linear: tuple, value: jax.Array) -> dict:
    design, offset, scale = linear
    return {
        "x": design / scale[:, None],
        "y": (value - offset) / scale,
        "log_scale": jnp.log(scale),
    }


def _detect_normal(observe, site, shape, value, size, prior) -> tuple | None:
    """Normal / MVN prior on ``beta``; Normal with ``loc`` affine in it, scale known."""
    linear = _linear_observation(observe, site, shape, {}, size)
    if linear is None:
        return None
    loc, covariance = _gaussian_prior(prior, shape)
    return (loc, jnp.linalg.inv(covariance)), _whitened(linear, value)


def _detect_nig(trace_at, observe, sites, shape, value, size, variance_prior) -> tuple | None:
    """InverseGamma ``s2``; ``beta ~ N(m0, s2 Sigma0)``; ``y ~ N(X beta + c, k^2 s2)``."""
    variance_site, site = sites
    probes = (1.7, 0.6)
    fixed = [{variance_site: jnp.asarray(s2)} for s2 in probes]
    priors = [
        _gaussian_prior(unwrap_distribution(trace_at(f)[site]["fn"])[0], shape) for f in fixed
    ]
    (loc, cov_a), (loc_b, cov_b) = priors
    if not (_close(loc_b, loc) and _close(cov_b / probes[1], cov_a / probes[0])):
        return None
    linear = [_linear_observation(observe, site, shape, f, size) for f in fixed]
    if linear[0] is None or linear[1] is None:
        return None
    (design, offset, scale_a), (design_b, offset_b, scale_b) = linear
    if not (
        _close(design_b, design)
        and _close(offset_b, offset)
        and _close(scale_b**2 / probes[1], scale_a**2 / probes[0])
    ):
        return None
    linear = (design, offset, scale_a / jnp.sqrt(probes[0]))
    prior = (loc, jnp.linalg.inv(cov_a / probes[0]))
    prior += (variance_prior.concentration, variance_prior.rate)
    return prior, _whitened(linear, value)


_FORMS = {
    "beta": (
        (BernoulliProbs, BernoulliLogits, BinomialProbs, BinomialLogits),
        "probs equal to '{site}'",
    ),
    "gamma": ((dist.Poisson,), "rate a positive known constant times '{site}'"),
    "dirichlet": ((CategoricalProbs, CategoricalLogits), "probs equal to '{site}'"),
    "normal": ((dist.Normal,), "loc affine in '{site}' and a scale not depending on it"),
    "nig": (
        (dist.Normal,),
        "a prior on '{site}' with covariance proportional to '{variance}', loc affine in "
        "'{site}' and scale^2 a constant times '{variance}'",
    ),
}


def trace_conjugate(model: Callable, *args, plate: str | None = None, **kwargs) -> ConjugateModel:
    """Detect the conjugate pair of ``model`` and read off ``eta_0`` and the statistics.

    Parameters
    ----------
    model : callable
        NumPyro model with one global latent site (or the Normal-inverse-gamma pair:
        the variance first) and one observed site in a plate of examples at dim -1.
    *args, **kwargs
        The model's arguments (concrete arrays).
    plate : str, optional
        Name of the plate of examples (found automatically when there is one).

    Returns
    -------
    ConjugateModel

    Raises
    ------
    ModelError
        For any model outside the supported pairs, naming the sites at fault.
    """
    # pandas and xarray arguments as arrays (numpyro's constraints refuse a Series).
    args, kwargs = array_arguments(args, kwargs, "AutoConjugate")
    trace = prototype_trace(model, args, kwargs)
    plate_name, size, plate_dim, observed = find_plate(trace, plate)
    sample_sites = [s for s in trace.values() if s["type"] == "sample"]
    all_observed = [s["name"] for s in sample_sites if s["is_observed"] and s["name"][0] != "_"]
    if len(observed) != 1 or len(all_observed) != 1:
        raise ModelError(
            f"AutoConjugate needs exactly one observed site, inside plate '{plate_name}'; "
            f"found {all_observed}"
        )
    obs_name = observed[0]
    obs_site = trace[obs_name]
    obs_fn, reinterpreted = unwrap_distribution(obs_site["fn"])
    if plate_dim != -1 or reinterpreted or obs_site["fn"].batch_shape != (size,):
        raise ModelError(
            f"observed site '{obs_name}' must have batch shape ({size},) from plate "
            f"'{plate_name}' at dim -1 and no event dims; got batch shape "
            f"{obs_site['fn'].batch_shape}"
        )
    if jnp.shape(obs_site["value"]) != (size,):
        # A y of shape (N, 1) for (N,): its statistics would broadcast to (N, N).
        raise ModelError(
            f"observed site '{obs_name}' has shape {jnp.shape(obs_site['value'])} but its "
            f"distribution has shape ({size},); do the data arguments have the same number "
            "of rows?"
        )
    if obs_site["scale"] is not None or isinstance(obs_site["fn"], dist.MaskedDistribution):
        raise ModelError(
            f"observed site '{obs_name}' is scaled or masked; AutoConjugate needs neither"
        )
    latents = [s for s in sample_sites if not s["is_observed"]]
    for site in latents:
        if site["cond_indep_stack"] or site["scale"] is not None:
            raise ModelError(
                f"latent site '{site['name']}' is inside a plate or scaled; AutoConjugate "
                "needs global latents (use AutoGaussian)"
            )
    if not latents:
        raise ModelError("the model has no latent site")
    names = tuple(s["name"] for s in latents)
    shapes = tuple(tuple(jnp.shape(s["value"])) for s in latents)
    priors = tuple(unwrap_distribution(s["fn"])[0] for s in latents)
    value = jnp.asarray(obs_site["value"])
    family = _family_of(priors)
    prior_text = " and ".join(
        f"prior {type(p).__name__} on '{n}'" for p, n in zip(priors, names, strict=True)
    )
    kinds, form = _FORMS.get(family, ((), ""))
    if not isinstance(obs_fn, kinds):
        raise _unsupported(prior_text, obs_name, obs_fn)
    if family in ("beta", "gamma") and shapes[0] != ():
        raise _unsupported(prior_text, obs_name, obs_fn, f"'{names[0]}' must be a scalar")
    if any(len(shape) > 1 for shape in shapes) or priors[-1].batch_shape not in ((), shapes[-1]):
        raise _unsupported(prior_text, obs_name, obs_fn, f"'{names[-1]}' must be a vector")

    def trace_at(values):
        return _trace_at(model, args, kwargs, values)

    def observe(values):
        return unwrap_distribution(trace_at(values)[obs_name]["fn"])[0]

    if family == "nig":
        found = _detect_nig(trace_at, observe, names, shapes[1], value, size, priors[0])
    elif family == "normal":
        found = _detect_normal(observe, names[0], shapes[0], value, size, priors[0])
    else:
        detect = {"beta": _detect_beta, "gamma": _detect_gamma, "dirichlet": _detect_dirichlet}
        found = detect[family](observe, names[0], obs_fn, value, size, priors[0])
    if found is None:
        why = "it needs " + form.format(site=names[-1], variance=names[0])
        raise _unsupported(prior_text, obs_name, obs_fn, why)
    _check_support(obs_fn, value, obs_name)
    prior_params, data = found
    eta0 = FAMILIES[family].to_natural(tuple(jnp.asarray(p) for p in prior_params))
    return ConjugateModel(family, plate_name, size, names, shapes, obs_name, eta0, data)


def _posterior_natural(structure: ConjugateModel) -> tuple:
    family = FAMILIES[structure.family]
    ones = jnp.ones(structure.num_examples)
    stats = family.weighted_stats(structure.data, ones)
    return tuple(e + t for e, t in zip(structure.prior_natural, stats, strict=True))


def _check_proper(family: str, params: tuple, what: str) -> None:
    for name, ok in FAMILIES[family].proper(params).items():
        if not bool(ok):
            raise ValueError(
                f"{what} leaves an improper {family} posterior: {name} is not positive (definite)"
            )


# --------------------------------------------------------------------------------------
# The guide.
# --------------------------------------------------------------------------------------


def _sample_gaussian(site: str, shape: tuple, loc, precision):
    if shape == ():
        return numpyro.sample(site, dist.Normal(loc[0], jax.lax.rsqrt(precision[0, 0])))
    return numpyro.sample(site, dist.MultivariateNormal(loc, precision_matrix=precision))


class AutoConjugate(AutoGuide):
    """The exact posterior of a conjugate model, kept in the prior's family.

    Its parameters (``{prefix}_{name}``) are those of the posterior distribution:
    ``concentration1, concentration0`` (Beta), ``concentration, rate`` (Gamma),
    ``concentration`` (Dirichlet), ``loc, precision`` (Normal: mean ``(D,)`` and precision
    ``(D, D)``; a scalar latent has ``D = 1``) and ``loc, precision, concentration, rate``
    (Normal-inverse-gamma: ``s2 ~ InverseGamma(concentration, rate)``, ``beta | s2 ~
    N(loc, s2 precision^-1)``). They are a pure function of the data,
    :meth:`posterior_params`, and need no fitting; registered with ``numpyro.param``
    (initialised to that posterior), so ``Predictive(model, guide=guide, params=params)``
    and ``SVI`` work. Natural parameters (:meth:`natural_params`) and statistics ``t_i``
    are tabulated in :mod:`numpyro_mpe.conjugate.families`.

    Parameters
    ----------
    model : callable
        A conjugate NumPyro model (see the module docstring for the pairs).
    plate : str, optional
        Name of the plate of examples.
    prefix : str
        Prefix of the parameter names.

    Examples
    --------
    >>> def model(n, y=None):
    ...     p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    ...     with numpyro.plate("data", n.shape[0]):
    ...         numpyro.sample("y", dist.Binomial(n, probs=p), obs=y)
    >>> guide = AutoConjugate(model)  # doctest: +SKIP
    >>> params = guide.posterior_params(n, y)  # doctest: +SKIP
    >>> elpd = conjugate_loo(model, guide, params, n, y)  # doctest: +SKIP
    """

    def __init__(self, model: Callable, *, plate: str | None = None, prefix: str = "auto"):
        check_model(model, "AutoConjugate")
        check_plate_name(plate)
        self.plate = plate
        super().__init__(model, prefix=prefix)

    def structure(self, *args, **kwargs) -> ConjugateModel:
        """:func:`trace_conjugate` of the guide's model with these arguments."""
        return trace_conjugate(self.model, *args, plate=self.plate, **kwargs)

    def posterior_params(self, *args, **kwargs) -> dict:
        """The exact posterior given the data: ``eta_0 + sum_i t_i`` as guide params."""
        structure = self.structure(*args, **kwargs)
        return self.params_from_natural(structure.family, _posterior_natural(structure))

    def _names(self, family: str) -> tuple[str, ...]:
        return tuple(f"{self.prefix}_{name}" for name in FAMILIES[family].param_names)

    def _family(self, params: Any, where: str) -> str:
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}: params must be a dict of guide params, got {type(params)}")
        for name in ("nig", "beta", "normal", "gamma", "dirichlet"):
            if all(key in params for key in self._names(name)):
                return name
        expected = "; ".join(f"{name} {list(self._names(name))}" for name in FAMILIES)
        raise ValueError(
            f"{where}: params {sorted(map(str, params))} are not AutoConjugate params (prefix "
            f"{self.prefix!r}); each family holds these keys: {expected}"
        )

    def _checked(self, params: Any, where: str) -> tuple[str, tuple[jax.Array, ...]]:
        """``(family, values)`` of ``params`` after :func:`check_params` (``ValueError``
        naming ``where``, the key and the shape or value at fault)."""
        family = self._family(params, where)
        names = self._names(family)
        return family, check_params(family, tuple(params[n] for n in names), names, where)

    def family(self, params: dict) -> str:
        """Which family ``params`` hold (read off their names)."""
        return self._family(params, "AutoConjugate.family")

    def natural_params(self, params: dict) -> tuple[jax.Array, ...]:
        """Natural parameters of the posterior held in ``params`` (table above).

        ``params`` are checked first: their keys, the family's shapes, finite and proper
        values (``ValueError`` naming the key at fault).
        """
        family, values = self._checked(params, "AutoConjugate.natural_params")
        return FAMILIES[family].to_natural(values)

    def params_from_natural(self, family: str, eta: tuple) -> dict:
        """Guide params of the ``family`` posterior with natural parameters ``eta``.

        ``family`` is one of ``"beta"``, ``"gamma"``, ``"dirichlet"``, ``"normal"``,
        ``"nig"``; ``eta`` a tuple of that family's natural parameters (table above),
        each with the params' shape (scalars, a ``(K,)`` or ``(D,)`` vector, a ``(D, D)``
        matrix), finite, and giving a proper posterior. ``ValueError`` naming the family,
        the entry of ``eta`` or the param at fault (only shapes are checked under ``jit``).
        """
        where = "AutoConjugate.params_from_natural"
        check_choice("family", family, tuple(FAMILIES))
        size = len(FAMILIES[family].param_names)
        if not isinstance(eta, tuple | list) or len(eta) != size:
            if isinstance(eta, tuple | list):
                described = f"{len(eta)} entries"
            else:
                described = f"{type(eta).__name__} {repr(eta)[:60]}"
            raise ValueError(
                f"{where}: eta must be a tuple of the {size} natural parameters of the "
                f"{family} family, got {described}"
            )
        labels = tuple(f"eta[{index}]" for index in range(size))
        eta = check_params(family, tuple(eta), labels, where, proper=False)
        if family in ("normal", "nig") and not isinstance(eta[1], jax.core.Tracer):
            # -2 eta[1] is the precision that from_natural solves with.
            check_symmetric(eta[1], "eta[1]", where)
            check_positive_definite(
                -2.0 * np.asarray(eta[1]),
                where,
                advice="eta[1] = -P / 2 must be negative definite",
            )
        values = FAMILIES[family].from_natural(eta)
        names = self._names(family)
        return dict(zip(names, check_params(family, values, names, where), strict=True))

    def __call__(self, *args, **kwargs) -> dict:
        # The layout comes from the priors alone, so that Predictive works without data;
        # the data are read only to initialise the params (when they are not given).
        kind, sites, shapes = _latent_layout(self.model, args, kwargs)
        family = FAMILIES[kind]

        def init(name):
            return lambda _rng_key: self.posterior_params(*args, **kwargs)[f"{self.prefix}_{name}"]

        params = [
            numpyro.param(f"{self.prefix}_{name}", init(name), constraint=constraint)
            for name, constraint in zip(family.param_names, family.param_constraints, strict=True)
        ]
        if kind == "beta":
            return {sites[0]: numpyro.sample(sites[0], dist.Beta(*params))}
        if kind == "gamma":
            return {sites[0]: numpyro.sample(sites[0], dist.Gamma(*params))}
        if kind == "dirichlet":
            return {sites[0]: numpyro.sample(sites[0], dist.Dirichlet(*params))}
        if kind == "normal":
            return {sites[0]: _sample_gaussian(sites[0], shapes[0], *params)}
        loc, precision, concentration, rate = params
        variance = numpyro.sample(sites[0], dist.InverseGamma(concentration, rate))
        beta = _sample_gaussian(sites[1], shapes[1], loc, precision / variance)
        return {sites[0]: variance, sites[1]: beta}

    def sample_posterior(self, rng_key, params, *args, sample_shape=(), **kwargs) -> dict:
        """Draws of the latents from the posterior held in ``params``, each of shape
        ``sample_shape + site shape``; ``*args, **kwargs`` are the model's (its priors
        give the sites).

        Raises
        ------
        TypeError
            ``rng_key`` not a jax PRNG key; ``sample_shape`` not a tuple of integers.
        ValueError
            A negative ``sample_shape`` entry; ``params`` that :meth:`natural_params`
            refuses, of another family or of other sizes than the model's latents.
        """
        where = "AutoConjugate.sample_posterior"
        check_rng_key(rng_key, where)
        sample_shape = check_sample_shape(sample_shape, where)
        family, values = self._checked(params, where)
        kind, _, shapes = _latent_layout(self.model, args, kwargs)
        _check_layout(
            family, values, kind, _param_shapes(kind, shapes), self._names(family), where
        )
        checked = dict(zip(self._names(family), values, strict=True))

        def draw(key):
            seeded = handlers.substitute(handlers.seed(self, key), data=checked)
            return seeded(*args, **kwargs)

        count = int(np.prod(sample_shape))
        draws = jax.vmap(draw)(jax.random.split(rng_key, count))
        return {k: v.reshape(sample_shape + v.shape[1:]) for k, v in draws.items()}


def _param_shapes(kind: str, site_shapes: tuple) -> tuple[tuple[int, ...], ...]:
    """The shapes of the ``kind`` posterior's params for latent sites of these shapes."""
    if kind in ("beta", "gamma"):
        return ((), ())
    if kind == "dirichlet":
        return (tuple(site_shapes[0]),)
    size = int(np.prod(site_shapes[-1]))
    return ((size,), (size, size)) + (((), ()) if kind == "nig" else ())


def _check_layout(family, values, kind, shapes, names, where) -> None:
    """``ValueError`` unless ``params`` of ``family`` fit a ``kind`` model's latents."""
    if family != kind:
        raise ValueError(
            f"{where}: params hold a {family} posterior but the model is a {kind} model"
        )
    for value, shape, name in zip(values, shapes, names, strict=True):
        if tuple(jnp.shape(value)) != tuple(shape):
            raise ValueError(
                f"{where}: {name!r} has shape {tuple(jnp.shape(value))} but the model's "
                f"latents need {tuple(shape)} (params of another model?)"
            )


def _structure_and_eta(model, guide, params, args, kwargs, plate, where):
    if not isinstance(guide, AutoConjugate):
        raise TypeError(f"guide must be an AutoConjugate, got {type(guide).__name__}")
    family, values = guide._checked(params, where)
    structure = trace_conjugate(model, *args, plate=plate or guide.plate, **kwargs)
    shapes = tuple(jnp.shape(eta) for eta in structure.prior_natural)
    _check_layout(family, values, structure.family, shapes, guide._names(family), where)
    return structure, FAMILIES[family].to_natural(values)


def conjugate_perturb(
    model: Callable,
    guide: AutoConjugate,
    params: dict,
    remove: ArrayLike | None,
    *args,
    plate: str | None = None,
    weights: ArrayLike | None = None,
    **kwargs,
) -> dict:
    """Guide params of the posterior with examples removed or reweighted, exactly.

    .. math:: \\eta^{\\setminus M} = \\eta - \\sum_j \\epsilon_j t_j

    Parameters
    ----------
    model, guide, params
        The conjugate model, its :class:`AutoConjugate` and the posterior's params.
    remove : array_like of int or bool, or None
        As :func:`numpyro_mpe.removal_weights`: indices or a boolean mask ``(N,)`` (True
        removes); ``[]`` removes nothing; a float array is refused (``TypeError``).
    *args, **kwargs
        The model's arguments.
    plate : str, optional
        The plate of examples.
    weights : array_like ``(N,)``, optional, keyword-only
        New per-example weights in ``[0, 1]`` (1 keeps, 0 removes) instead of
        ``remove`` (which is then None).

    Returns
    -------
    dict
        Guide params (removing every example gives the prior).

    Raises
    ------
    TypeError, ValueError
        As :func:`numpyro_mpe.removal_weights` (the types before any work).
    ValueError
        For params that :meth:`AutoConjugate.natural_params` refuses or that do not fit
        the model; when the result is improper (``params`` was not a posterior that holds
        them).
    """
    check_removal_arguments(remove, weights)
    return _divide_out(
        model,
        guide,
        params,
        args,
        kwargs,
        plate,
        lambda num_examples: removal_weights(remove, num_examples, weights=weights),
        "conjugate_perturb",
    )


def _divide_out(model, guide, params, args, kwargs, plate, eps_for, where) -> dict:
    """``eta - sum_j eps_j t_j`` as guide params; ``eps_for: N -> eps (N,)``."""
    structure, eta = _structure_and_eta(model, guide, params, args, kwargs, plate, where)
    eps = eps_for(structure.num_examples)
    family = FAMILIES[structure.family]
    stats = family.weighted_stats(structure.data, eps.astype(eta[0].dtype))
    values = family.from_natural(tuple(e - t for e, t in zip(eta, stats, strict=True)))
    _check_proper(structure.family, values, "removing these examples")
    return dict(zip(guide._names(structure.family), values, strict=True))


def conjugate_loo(
    model: Callable,
    guide: AutoConjugate,
    params: dict,
    *args,
    plate: str | None = None,
    **kwargs,
) -> ELPDDataMPE:
    """Exact Bayesian LOO ``log p(y_i | y_-i)`` of a conjugate model, all ``i`` at once.

    Each cavity ``eta - t_i`` is formed in closed form and its posterior predictive
    evaluated: Beta-binomial, negative binomial, Dirichlet-categorical, Normal
    (``N(y_i; (f_i - v_i y_i) / (1 - v_i), s_i^2 / (1 - v_i))`` with ``f_i = x_i^T m``,
    ``v_i = x_i^T P^{-1} x_i`` in whitened units) or Student-t. ``lppd_i`` is the same
    predictive under ``params``. Reliability values are 0: division is exact.

    Returns
    -------
    ELPDDataMPE
        ``method="conjugate"``, ``covariance="conjugate"``; pointwise over the plate.

    Raises
    ------
    ValueError
        If a cavity is improper (``params`` does not contain that example), naming it;
        for params that :meth:`AutoConjugate.natural_params` refuses (keys, shapes,
        finite and proper values) or that do not fit the model's family and sizes.
    """
    return _conjugate_loo(model, guide, params, args, kwargs, plate, "conjugate_loo")


def _conjugate_loo(model, guide, params, args, kwargs, plate, where) -> ELPDDataMPE:
    structure, eta = _structure_and_eta(model, guide, params, args, kwargs, plate, where)
    family = FAMILIES[structure.family]
    values = family.from_natural(eta)
    _check_proper(structure.family, values, "params")
    elpd, lppd, proper = family.loo(values, structure.data)
    proper = np.asarray(proper)
    if not proper.all():
        index = int(np.argmax(~proper))
        raise ValueError(
            f"the cavity of example {index} of plate '{structure.plate}' is improper: params "
            f"do not contain that example (a {structure.family} parameter of eta - t_{index} "
            "is not positive)"
        )
    return make_elpd_data(
        np.asarray(elpd),
        np.asarray(lppd),
        np.zeros(structure.num_examples),
        dim=structure.plate,
        threshold=0.7,
        method="conjugate",
        covariance="conjugate",
    )


@perturb_guide.register
def _perturb_conjugate(
    guide: AutoConjugate,
    model: Callable,
    params: dict,
    remove: ArrayLike,
    args: tuple,
    kwargs: dict,
    plate: str | None,
    groups: ArrayLike | None,
    weights: ArrayLike | None,
) -> dict:
    """:func:`numpyro_mpe.perturb` for :class:`AutoConjugate`: exact division."""

    def eps_for(num_examples):
        selected = remove if groups is None else group_mask(remove, groups, num_examples)
        return removal_weights(selected, num_examples, weights=weights)

    return _divide_out(model, guide, params, args, kwargs, plate, eps_for, "perturb")


@prepare_guide_loo.register
def _prepare_conjugate_loo(
    guide: AutoConjugate, model: Callable, args: tuple, kwargs: dict, options: LooOptions
) -> Callable[[dict], ELPDDataMPE]:
    """:func:`numpyro_mpe.prepare_loo` for :class:`AutoConjugate`: exact LOO; the
    method options do not apply."""
    if options.groups is not None:
        raise ValueError("groups is not supported with AutoConjugate; use AutoGaussian")

    def loo_at(params: dict) -> ELPDDataMPE:
        return _conjugate_loo(model, guide, params, args, kwargs, options.plate, "loo")

    return loo_at
