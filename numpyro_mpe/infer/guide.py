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
from numpyro.distributions import constraints
from numpyro.distributions.transforms import AffineTransform, LowerCholeskyAffine
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_median

from numpyro_mpe.core.gaussian import (
    NotPositiveDefiniteError,
    check_positive_definite,
    is_dense,
    mean_precision_from_natural,
    natural_from_mean_precision,
)
from numpyro_mpe.core.options import COVARIANCES, Covariance, check_choice

__all__ = ["AutoGaussian"]


class AutoGaussian(AutoContinuous):
    """Gaussian ``q(theta) = N(m, S^-1)`` over the flat unconstrained latent vector.

    The guide's parameters are ``{prefix}_loc`` (the mean ``m``, shape ``(P,)``) and
    ``{prefix}_precision`` (``S``: ``(P, P)`` for ``covariance="dense"``, its diagonal
    ``(P,)`` for ``covariance="diag"``), so the natural parameters
    ``(eta1, eta2) = (S m, -S / 2)`` follow exactly (:meth:`natural_params`). Latents
    are flattened in model-site order, as for every numpyro ``AutoContinuous`` guide.

    It is fitted by :class:`numpyro_mpe.BLR` and then used like any numpyro guide:
    ``Predictive(model, guide=guide, params=params)``, :meth:`sample_posterior`,
    :meth:`median`, :meth:`quantiles`.

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
        check_choice("covariance", covariance, COVARIANCES)
        if not init_precision > 0:
            raise ValueError(f"init_precision must be positive, got {init_precision}")
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

    def _get_posterior(self):
        loc = numpyro.param(self.loc_name, self._init_latent)
        if self.covariance == "dense":
            precision = numpyro.param(
                self.precision_name,
                self._init_precision * jnp.eye(self.latent_dim),
                constraint=constraints.positive_definite,
            )
            return dist.MultivariateNormal(loc, precision_matrix=precision)
        precision = numpyro.param(
            self.precision_name,
            jnp.full(self.latent_dim, self._init_precision),
            constraint=constraints.positive,
        )
        return dist.Normal(loc, jax.lax.rsqrt(precision)).to_event(1)

    def get_base_dist(self):
        return dist.Normal(jnp.zeros(self.latent_dim), 1).to_event(1)

    def get_transform(self, params: dict):
        loc, precision = self.mean_precision(params)
        if is_dense(precision):
            # Cholesky factor of the covariance from that of the precision.
            cholesky = jnp.linalg.cholesky(precision)
            eye = jnp.eye(self.latent_dim, dtype=cholesky.dtype)
            inverse_upper = jax.scipy.linalg.solve_triangular(cholesky.T, eye, lower=False)
            scale_tril = jnp.linalg.cholesky(inverse_upper @ inverse_upper.T)
            return LowerCholeskyAffine(loc, scale_tril)
        return AffineTransform(loc, jax.lax.rsqrt(precision), domain=constraints.real_vector)

    def get_posterior(self, params: dict):
        """The Gaussian over the flat unconstrained latents, as a numpyro distribution."""
        loc, precision = self.mean_precision(params)
        if is_dense(precision):
            return dist.MultivariateNormal(loc, precision_matrix=precision)
        return dist.Normal(loc, jax.lax.rsqrt(precision)).to_event(1)

    def median(self, params: dict) -> dict:
        """Constrained values of the latents at the mean ``m``."""
        return self._unpack_and_constrain(params[self.loc_name], params)

    def quantiles(self, params: dict, quantiles: ArrayLike) -> dict:
        """Marginal quantiles of each latent, shape ``(len(quantiles),) + site shape``."""
        loc, precision = self.mean_precision(params)
        variance = jnp.diag(jnp.linalg.inv(precision)) if is_dense(precision) else 1 / precision
        levels = jnp.asarray(quantiles)[..., None]
        latent = dist.Normal(loc, jnp.sqrt(variance)).icdf(levels)
        return self._unpack_and_constrain(latent, params)

    def mean_precision(self, params: dict) -> tuple[jax.Array, jax.Array]:
        """``(m, S)``: mean ``(P,)`` and precision ``(P, P)`` or ``(P,)``."""
        return params[self.loc_name], params[self.precision_name]

    def checked_mean_precision(
        self, params: Any, num_latents: int | None = None, *, where: str = "params"
    ) -> tuple[jax.Array, jax.Array]:
        """``(m, S)`` after checking that ``params`` hold a proper Gaussian of this family.

        What :func:`~numpyro_mpe.loo`, :func:`~numpyro_mpe.perturb`,
        :func:`~numpyro_mpe.sensitivity` and :func:`~numpyro_mpe.exact_loo` call before
        any work, so that a wrong ``params`` is an error, never a silently wrong number.

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
            Missing keys; a mean that is not ``(P,)`` or not finite; a precision whose
            shape is not this family's (``(P, P)`` dense, ``(P,)`` diagonal: a diagonal
            precision in a dense guide, or the reverse, is named as such) or that is not
            finite; a size that differs from the model's ``P``.
        NotPositiveDefiniteError
            A precision that is not positive definite (a diagonal entry ``<= 0``).
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}: params must be a dict of guide params, got {type(params)}")
        missing = [name for name in (self.loc_name, self.precision_name) if name not in params]
        if missing:
            raise ValueError(
                f"{where}: params lack {missing} (an AutoGaussian with prefix "
                f"{self.prefix!r} holds {self.loc_name!r} and {self.precision_name!r}); got "
                f"keys {sorted(params)}"
            )
        mean = jnp.asarray(params[self.loc_name])
        precision = jnp.asarray(params[self.precision_name])
        if mean.ndim != 1:
            raise ValueError(f"{where}: {self.loc_name!r} must have shape (P,), got {mean.shape}")
        size = mean.shape[0]
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
        for name, value in ((self.loc_name, mean), (self.precision_name, precision)):
            finite = np.isfinite(np.asarray(value))
            if not finite.all():
                index = np.unravel_index(int(np.argmin(finite)), finite.shape)
                raise ValueError(
                    f"{where}: {name!r} is not finite at index {tuple(int(i) for i in index)} "
                    f"({np.asarray(value)[index]})"
                )
        if self.covariance == "diag":
            nonpositive = np.asarray(precision) <= 0
            if nonpositive.any():
                index = int(np.argmax(nonpositive))
                raise NotPositiveDefiniteError(
                    f"{where}: the diagonal precision must be positive; "
                    f"{self.precision_name}[{index}] = {float(precision[index])}"
                )
        else:
            check_positive_definite(precision, where)
        return mean, precision

    def natural_params(self, params: dict) -> tuple[jax.Array, jax.Array]:
        """Natural parameters ``(eta1, eta2) = (S m, -S / 2)``."""
        return natural_from_mean_precision(*self.mean_precision(params))

    def params_from_mean_precision(self, mean: ArrayLike, precision: ArrayLike) -> dict:
        """Guide params holding ``N(mean, precision^-1)``."""
        precision = jnp.asarray(precision)
        expected = 2 if self.covariance == "dense" else 1
        if precision.ndim != expected:
            raise ValueError(
                f"a {self.covariance} AutoGaussian needs a precision with {expected} "
                f"dimension(s), got shape {precision.shape}"
            )
        return {self.loc_name: jnp.asarray(mean), self.precision_name: precision}

    def params_from_natural(self, eta1: ArrayLike, eta2: ArrayLike) -> dict:
        """Guide params from natural parameters ``(S m, -S / 2)``."""
        return self.params_from_mean_precision(*mean_precision_from_natural(eta1, eta2))
