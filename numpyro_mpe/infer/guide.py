"""``AutoGaussian``: a NumPyro guide whose parameters are a Gaussian's mean and precision."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import AffineTransform, LowerCholeskyAffine
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_median

from numpyro_mpe.core.gaussian import (
    NotPositiveDefiniteError,
    check_positive_definite,
    check_symmetric,
    is_dense,
    mean_precision_from_natural,
    natural_from_mean_precision,
    real_array,
)
from numpyro_mpe.core.model import (
    ModelError,
    as_numpy_arguments,
    check_argument_range,
    check_finite_arguments,
    join_arguments,
    split_arguments,
)
from numpyro_mpe.core.options import COVARIANCES, Covariance, check_choice
from numpyro_mpe.optim.base import check_count, check_number, check_rng_key

__all__ = ["AutoGaussian", "array_arguments", "check_model", "check_sample_shape"]


def array_arguments(args: tuple, kwargs: dict, where: str) -> tuple[tuple, dict]:
    """The model's arguments with every array (pandas and xarray objects included) as the
    jax array a step sees, so that the eager traces and the jitted steps run the model on
    the same values. :class:`~numpyro_mpe.ModelError` naming ``where``, the argument and
    the index for NaN or inf, or for finite data that jax's float dtype cannot hold
    (1e300 in float32; :func:`~numpyro_mpe.core.model.check_argument_range`). Checked on
    the host: nothing is compiled per data size."""
    args, kwargs = as_numpy_arguments(args, kwargs)
    try:
        check_finite_arguments(args, kwargs)
        check_argument_range(args, kwargs)
    except ModelError as error:
        raise ModelError(f"{where}: {error}") from None
    return join_arguments(*split_arguments(args, kwargs))


def check_model(model: object, where: str) -> None:
    """Raise ``TypeError`` naming ``where`` unless ``model`` is callable (a NumPyro model)."""
    if not callable(model):
        raise TypeError(
            f"{where}: model must be a NumPyro model (a callable), got {type(model).__name__}"
        )


def _refuse_unobserved_discrete(
    model: Callable, init_loc_fn: Callable, args: tuple, kwargs: dict, where: str
) -> None:
    """Raise :class:`~numpyro_mpe.ModelError` for a discrete sample site without ``obs``:
    a Gaussian guide cannot hold it, and it is most often an observed site whose data
    were not passed (numpyro would go on to enumerate it, or fail inside funsor). A model
    that fails here is left to numpyro's own setup to report."""
    traced = handlers.substitute(handlers.seed(model, rng_seed=0), substitute_fn=init_loc_fn)
    try:
        with handlers.block():
            trace = handlers.trace(traced).get_trace(*args, **kwargs)
    except Exception:
        return
    for name, site in trace.items():
        if site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete:
            raise ModelError(
                f"{where}: site {name!r} is discrete and got no observed value: if it is the "
                "observed site, its data were not passed. The guide sets itself up from the "
                "model's arguments on its first call: fit it first (BLR.run, SVI), or call "
                "it once with the data, guide(X, y); an AutoGaussian cannot hold discrete "
                "latents"
            )


def check_sample_shape(sample_shape: object, where: str) -> tuple[int, ...]:
    """``sample_shape`` as a tuple of ints, or an error naming ``where``: ``TypeError``
    unless it is a tuple or list of integers, ``ValueError`` for a negative one."""
    if not isinstance(sample_shape, tuple | list):
        raise TypeError(
            f"{where}: sample_shape must be a tuple of integers, e.g. (1000,); got "
            f"{sample_shape!r}"
        )
    for index, size in enumerate(sample_shape):
        check_count(f"{where}: sample_shape[{index}]", size, 0)
    return tuple(int(size) for size in sample_shape)


def _is_concrete(*arrays: jax.Array) -> bool:
    """Whether the values are known (no jax tracer): value checks run only then."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _check_finite(name: str, value: jax.Array, where: str) -> None:
    finite = np.isfinite(np.asarray(value))
    if not finite.all():
        index = np.unravel_index(int(np.argmin(finite)), finite.shape)
        raise ValueError(
            f"{where}: {name!r} is not finite at index {tuple(int(i) for i in index)} "
            f"({np.asarray(value)[index]})"
        )


class AutoGaussian(AutoContinuous):
    """Gaussian ``q(theta) = N(m, S^-1)`` over the flat unconstrained latent vector.

    The guide's parameters are ``{prefix}_loc`` (the mean ``m``, shape ``(P,)``) and
    ``{prefix}_precision`` (``S``: ``(P, P)`` for ``covariance="dense"``, its diagonal
    ``(P,)`` for ``covariance="diag"``), so the natural parameters
    ``(eta1, eta2) = (S m, -S / 2)`` follow exactly (:meth:`natural_params`). Latents
    are flattened in model-site order, as for every numpyro ``AutoContinuous`` guide.

    It is fitted by :class:`numpyro_mpe.BLR` and then used like any numpyro guide:
    ``Predictive(model, guide=guide, params=params)``, :meth:`sample_posterior`,
    :meth:`median`, :meth:`quantiles`. Every method that reads params checks them first
    (:meth:`checked_mean_precision`; the values only outside ``jit``).

    Parameters
    ----------
    model : callable
        The NumPyro model.
    covariance : {"dense", "diag"}
        Dense ``(P, P)`` or diagonal ``(P,)`` precision.
    prefix : str
        Prefix of the parameter names.
    init_loc_fn : callable
        Per-site initialisation (numpyro init strategy) of the mean.
    init_precision : float
        Initial precision (times the identity).

    Raises
    ------
    ValueError
        ``covariance`` not ``"dense"`` or ``"diag"``; ``init_precision`` not in
        ``(0, inf)``.
    TypeError
        ``model``, ``init_loc_fn`` not callable; ``init_precision`` not a number.

    Examples
    --------
    >>> guide = AutoGaussian(model, covariance="dense")  # doctest: +SKIP
    >>> result = BLR(model, guide, optim.newton()).run(key, 20, X, y)  # doctest: +SKIP
    >>> eta1, eta2 = guide.natural_params(result.params)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Callable,
        *,
        covariance: Covariance = "dense",
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_median,
        init_precision: float = 1.0,
    ):
        check_model(model, "AutoGaussian")
        check_choice("covariance", covariance, COVARIANCES)
        check_number("init_precision", init_precision, 0.0)
        if not callable(init_loc_fn):
            raise TypeError(
                "init_loc_fn must be a numpyro init strategy (a callable such as "
                f"init_to_median), got {type(init_loc_fn).__name__}"
            )
        self.covariance = covariance
        self._init_precision = init_precision
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    @property
    def loc_name(self) -> str:
        """Name of the mean parameter."""
        return f"{self.prefix}_loc"

    @property
    def precision_name(self) -> str:
        """Name of the precision parameter."""
        return f"{self.prefix}_precision"

    def _require_prototype(self, where: str) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(
                f"{where}: the guide has not seen the model yet (no site layout to unpack "
                "the latents into); fit it with BLR.run or BLR.init, or call guide(*args) "
                "once with the model's arguments"
            )

    def _num_latents(self) -> int | None:
        """``P`` of the model once the guide has seen it, else None."""
        return None if self.prototype_trace is None else int(self.latent_dim)

    def _setup_prototype(self, *args, **kwargs):
        # pandas and xarray arguments as arrays: numpyro traces the model under jax
        # transforms, where ``DataFrame @ tracer`` fails deep inside pandas.
        args, kwargs = join_arguments(*split_arguments(args, kwargs))
        _refuse_unobserved_discrete(self.model, self.init_loc_fn, args, kwargs, "AutoGaussian")
        super()._setup_prototype(*args, **kwargs)

    def _refuse_missing_params(self) -> None:
        """Raise when the guide runs under ``substitute(data=params)`` (numpyro's
        ``Predictive(..., params=params)``) whose ``params`` lack this guide's: its
        ``numpyro.param`` would silently return the initial Gaussian instead of the fit."""
        for handler in numpyro.primitives._PYRO_STACK:
            if not isinstance(handler, handlers.substitute) or handler.data is None:
                continue
            data = handler.data
            held = isinstance(data, Mapping) and all(
                name in data for name in (self.loc_name, self.precision_name)
            )
            if not held:
                keys = sorted(map(str, data)) if isinstance(data, Mapping) else None
                got = f"keys {keys}" if keys is not None else type(data).__name__
                raise ValueError(
                    f"AutoGaussian: the params given (e.g. Predictive(model, guide=guide, "
                    f"params=params)) lack {self.loc_name!r} and {self.precision_name!r}, "
                    f"so the guide would draw from its initial Gaussian, not the fit; got "
                    f"{got}. Pass the fit's params (result.params of BLR.run)"
                )

    def _get_posterior(self):
        self._refuse_missing_params()
        loc = numpyro.param(self.loc_name, self._init_latent)
        if self.covariance == "dense":
            precision = numpyro.param(
                self.precision_name,
                self._init_precision * jnp.eye(self.latent_dim),
                constraint=constraints.positive_definite,
            )
        else:
            precision = numpyro.param(
                self.precision_name,
                jnp.full(self.latent_dim, self._init_precision),
                constraint=constraints.positive,
            )
        # Substituted params (Predictive) are checked like every method's (values only
        # outside jit): another family's or model's params would fail deep inside jax.
        loc, precision = self.checked_mean_precision(
            {self.loc_name: loc, self.precision_name: precision},
            self._num_latents(),
            where="AutoGaussian",
        )
        if self.covariance == "dense":
            return dist.MultivariateNormal(loc, precision_matrix=precision)
        return dist.Normal(loc, jax.lax.rsqrt(precision)).to_event(1)

    def get_base_dist(self):
        self._require_prototype("AutoGaussian.get_base_dist")
        return dist.Normal(jnp.zeros(self.latent_dim), 1).to_event(1)

    def get_transform(self, params: dict):
        loc, precision = self.checked_mean_precision(
            params, self._num_latents(), where="AutoGaussian.get_transform"
        )
        if is_dense(precision):
            # Cholesky factor of the covariance from that of the precision.
            cholesky = jnp.linalg.cholesky(precision)
            eye = jnp.eye(loc.shape[0], dtype=cholesky.dtype)
            inverse_upper = jax.scipy.linalg.solve_triangular(cholesky.T, eye, lower=False)
            scale_tril = jnp.linalg.cholesky(inverse_upper @ inverse_upper.T)
            return LowerCholeskyAffine(loc, scale_tril)
        return AffineTransform(loc, jax.lax.rsqrt(precision), domain=constraints.real_vector)

    def get_posterior(self, params: dict):
        """The Gaussian over the flat unconstrained latents, as a numpyro distribution."""
        loc, precision = self.checked_mean_precision(
            params, self._num_latents(), where="AutoGaussian.get_posterior"
        )
        if is_dense(precision):
            return dist.MultivariateNormal(loc, precision_matrix=precision)
        return dist.Normal(loc, jax.lax.rsqrt(precision)).to_event(1)

    def median(self, params: dict) -> dict:
        """Constrained values of the latents at the mean ``m``."""
        where = "AutoGaussian.median"
        loc, _ = self.checked_mean_precision(params, self._num_latents(), where=where)
        self._require_prototype(where)
        return self._unpack_and_constrain(loc, params)

    def quantiles(self, params: dict, quantiles: ArrayLike) -> dict:
        """Marginal quantiles of each latent, shape ``(len(quantiles),) + site shape``.

        ``quantiles`` are levels in ``(0, 1)``; a level outside (whose quantile would be
        infinite or NaN) is a ``ValueError`` naming it.
        """
        where = "AutoGaussian.quantiles"
        loc, precision = self.checked_mean_precision(params, self._num_latents(), where=where)
        levels = real_array(quantiles, "quantiles", where)
        if _is_concrete(levels):
            inside = np.asarray((levels > 0) & (levels < 1)).reshape(-1)
            if not inside.all():
                index = int(np.argmin(inside))
                raise ValueError(
                    f"{where}: quantiles must be in (0, 1), got "
                    f"{np.asarray(levels).reshape(-1)[index]} at index {index}"
                )
        self._require_prototype(where)
        variance = jnp.diag(jnp.linalg.inv(precision)) if is_dense(precision) else 1 / precision
        latent = dist.Normal(loc, jnp.sqrt(variance)).icdf(levels[..., None])
        return self._unpack_and_constrain(latent, params)

    def sample_posterior(self, rng_key, params, *args, sample_shape=(), **kwargs) -> dict:
        """Draws of the constrained latents from ``N(m, S^-1)`` held in ``params``, each
        of shape ``sample_shape + site shape``.

        ``params`` are checked first (:meth:`checked_mean_precision`); a guide that has
        not seen the model yet is set up from the model's arguments ``*args, **kwargs``.

        Raises
        ------
        ValueError
            Params that :meth:`checked_mean_precision` refuses (of another ``P`` than the
            model's included); a negative ``sample_shape`` entry.
        TypeError
            ``sample_shape`` not a tuple of integers; ``rng_key`` not a jax PRNG key.
        NotPositiveDefiniteError
            A precision that is not positive definite.
        RuntimeError
            The guide has not seen the model and the model fails with the arguments.
        """
        where = "AutoGaussian.sample_posterior"
        self.checked_mean_precision(params, self._num_latents(), where=where)
        sample_shape = check_sample_shape(sample_shape, where)
        check_rng_key(rng_key, where)
        if self.prototype_trace is None:
            try:
                with handlers.block(), handlers.seed(rng_seed=0):
                    self._setup_prototype(*args, **kwargs)
            except Exception as error:
                raise RuntimeError(
                    f"{where}: the guide has not seen the model yet, and the model failed "
                    f"to trace with the arguments given ({type(error).__name__}: {error}); "
                    "pass the model's arguments: sample_posterior(rng_key, params, *args, "
                    "**kwargs)"
                ) from error
            self.checked_mean_precision(params, self._num_latents(), where=where)
        return super().sample_posterior(rng_key, params, sample_shape=sample_shape)

    def _read_mean_precision(
        self, params: Any, num_latents: int | None, where: str
    ) -> tuple[jax.Array, jax.Array]:
        """``(m, S)`` after the checks that need no values (so they hold under ``jit``):
        a mapping with both keys, real dtypes, shapes of this family and of ``P``."""
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}: params must be a dict of guide params, got {type(params)}")
        missing = [name for name in (self.loc_name, self.precision_name) if name not in params]
        if missing:
            raise ValueError(
                f"{where}: params lack {missing} (an AutoGaussian with prefix "
                f"{self.prefix!r} holds {self.loc_name!r} and {self.precision_name!r}); got "
                f"keys {sorted(map(str, params))}"
            )
        if num_latents is not None:
            check_count("num_latents", num_latents, 1)
        mean = real_array(params[self.loc_name], self.loc_name, where)
        precision = real_array(params[self.precision_name], self.precision_name, where)
        if mean.ndim != 1:
            raise ValueError(f"{where}: {self.loc_name!r} must have shape (P,), got {mean.shape}")
        size = mean.shape[0]
        if size == 0:
            raise ValueError(f"{where}: {self.loc_name!r} is empty (shape (0,)); P must be >= 1")
        if num_latents is not None and size != num_latents:
            raise ValueError(
                f"{where}: params hold {size} latents but the model has P = {num_latents} "
                "(params of another model?)"
            )
        expected = (size, size) if self.covariance == "dense" else (size,)
        if precision.shape != expected:
            other = "diag" if precision.shape == (size,) else "dense"
            if precision.shape in ((size,), (size, size)):
                raise ValueError(
                    f"{where}: params hold a {other} precision {precision.shape} but the "
                    f"guide is AutoGaussian(covariance={self.covariance!r}); use the guide "
                    "they were fitted with"
                )
            raise ValueError(
                f"{where}: {self.precision_name!r} must have shape {expected}, got "
                f"{precision.shape}"
            )
        return mean, precision

    def mean_precision(self, params: dict) -> tuple[jax.Array, jax.Array]:
        """``(m, S)``: mean ``(P,)`` and precision ``(P, P)`` or ``(P,)``.

        Checks what needs no values (so it holds under ``jit``): the keys, real dtypes,
        the shapes of this family; ``ValueError`` naming the key and shape at fault.
        :meth:`checked_mean_precision` checks the values too.
        """
        return self._read_mean_precision(params, None, "AutoGaussian.mean_precision")

    def checked_mean_precision(
        self, params: Any, num_latents: int | None = None, *, where: str = "params"
    ) -> tuple[jax.Array, jax.Array]:
        """``(m, S)`` after checking that ``params`` hold a proper Gaussian of this family.

        What :func:`~numpyro_mpe.loo`, :func:`~numpyro_mpe.perturb`,
        :func:`~numpyro_mpe.sensitivity` and :func:`~numpyro_mpe.exact_loo` call before
        any work, so that a wrong ``params`` is an error, never a silently wrong number;
        the guide's own methods (:meth:`median`, :meth:`quantiles`,
        :meth:`sample_posterior`, :meth:`get_posterior`, :meth:`natural_params`) call it
        too. Under ``jit`` (traced params) only the keys, dtypes and shapes are checked.

        Parameters
        ----------
        params : mapping
            Guide params, e.g. ``BLR.run(...).params``.
        num_latents : int, optional
            ``P`` of the model the params are used with (checked when given).
        where : str
            The caller, named in error messages.

        Raises
        ------
        ValueError
            Missing keys; a mean or precision that does not hold real numbers (None, a
            string, a bool or complex dtype); a mean that is not ``(P,)`` (``P >= 1``)
            or not finite; a precision whose shape is not this family's (``(P, P)``
            dense, ``(P,)`` diagonal: a diagonal precision in a dense guide, or the
            reverse, is named as such), that is not finite or (dense) not symmetric
            (``max |S - S^T| > 1e-6 max |S|``, the largest asymmetry named); a size that
            differs from the model's ``P``.
        TypeError
            ``num_latents`` not an integer.
        NotPositiveDefiniteError
            A precision that is not positive definite (a diagonal entry ``<= 0``).
        """
        mean, precision = self._read_mean_precision(params, num_latents, where)
        if not _is_concrete(mean, precision):
            return mean, precision
        _check_finite(self.loc_name, mean, where)
        _check_finite(self.precision_name, precision, where)
        if self.covariance == "diag":
            nonpositive = np.asarray(precision) <= 0
            if nonpositive.any():
                index = int(np.argmax(nonpositive))
                raise NotPositiveDefiniteError(
                    f"{where}: the diagonal precision must be positive; "
                    f"{self.precision_name}[{index}] = {float(precision[index])}"
                )
        else:
            check_symmetric(precision, self.precision_name, where)
            check_positive_definite(precision, where)
        return mean, precision

    def natural_params(self, params: dict) -> tuple[jax.Array, jax.Array]:
        """Natural parameters ``(eta1, eta2) = (S m, -S / 2)``."""
        return natural_from_mean_precision(
            *self.checked_mean_precision(params, where="AutoGaussian.natural_params")
        )

    def params_from_mean_precision(self, mean: ArrayLike, precision: ArrayLike) -> dict:
        """Guide params holding ``N(mean, precision^-1)``.

        Checks the dtypes (real numbers) and shapes: ``mean`` ``(P,)``, ``precision``
        ``(P, P)`` (dense) or ``(P,)`` (diag); ``ValueError`` naming the shapes. The
        values are not checked (a fit's checkpoint may hold any);
        :meth:`checked_mean_precision` does.
        """
        where = "params_from_mean_precision"
        mean = real_array(mean, "mean", where)
        precision = real_array(precision, "precision", where)
        expected = 2 if self.covariance == "dense" else 1
        if precision.ndim != expected:
            raise ValueError(
                f"a {self.covariance} AutoGaussian needs a precision with {expected} "
                f"dimension(s), got shape {precision.shape}"
            )
        if mean.ndim != 1 or precision.shape != (mean.shape[0],) * expected:
            wanted = "(P,) and (P, P)" if expected == 2 else "(P,) and (P,)"
            raise ValueError(
                f"{where}: mean and precision must have shapes {wanted}, got {mean.shape} "
                f"and {precision.shape}"
            )
        return {self.loc_name: mean, self.precision_name: precision}

    def params_from_natural(self, eta1: ArrayLike, eta2: ArrayLike) -> dict:
        """Guide params from natural parameters ``(eta1, eta2) = (S m, -S / 2)``.

        ``eta1`` ``(P,)`` and ``eta2`` ``(P, P)`` (dense) or ``(P,)`` (diag) must be
        finite, ``eta2`` symmetric and negative definite (``S = -2 eta2`` a precision):
        ``ValueError`` naming the shapes or entry at fault, ``NotPositiveDefiniteError``
        naming the smallest eigenvalue of ``S``. Under ``jit`` only shapes are checked.
        """
        where = "params_from_natural"
        eta1 = real_array(eta1, "eta1", where)
        eta2 = real_array(eta2, "eta2", where)
        expected = 2 if self.covariance == "dense" else 1
        if eta1.ndim != 1 or eta2.shape != (eta1.shape[0],) * expected:
            wanted = "(P,) and (P, P)" if expected == 2 else "(P,) and (P,)"
            raise ValueError(
                f"{where}: a {self.covariance} AutoGaussian needs eta1 and eta2 of shapes "
                f"{wanted}, got {eta1.shape} and {eta2.shape}"
            )
        if _is_concrete(eta1, eta2):
            _check_finite("eta1", eta1, where)
            _check_finite("eta2", eta2, where)
            check_symmetric(eta2, "eta2", where)
            check_positive_definite(
                -2.0 * np.asarray(eta2),
                where,
                advice="eta2 = -S / 2 must be negative definite",
            )
        return self.params_from_mean_precision(*mean_precision_from_natural(eta1, eta2))
