"""Brute-force leave-one-out by refitting the same Gaussian family, for validation.

Each refit is Newton on the weighted log joint (the left-out example's weight set to 0),
warm-started from the full fit and vectorised over examples; its predictive density uses
the same integration rule as ``numpyro_mpe.loo`` so that only the LOO-approximation
error remains in a comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from numpyro_mpe.loo import _log_predictive
from numpyro_mpe.model import PlateModel


def refit_loo(
    plate_model: PlateModel, mean: jax.Array, *, covariance: str = "dense", steps: int = 10
) -> jax.Array:
    """``log p(y_i | y_-i)`` under the Laplace refit without ``i``, for every ``i``.

    ``covariance="diag"`` refits the diagonal family: same mode, precision ``diag(H)``.

    Memory is ``O(N^2)`` (one predictor evaluation per refit): small data only.
    """
    predictor = plate_model.predictor
    n = plate_model.num_examples

    def refit(i):
        weights = jnp.ones(n).at[i].set(0.0)

        def loss(theta):
            return -plate_model.log_joint(theta, weights)

        def newton_step(theta, _):
            step = jnp.linalg.solve(jax.hessian(loss)(theta), jax.grad(loss)(theta))
            return theta - step, None

        theta, _ = jax.lax.scan(newton_step, mean, None, length=steps)
        f_i = predictor.fn(theta)[i]
        jacobian = jax.jacfwd(lambda t: predictor.fn(t)[i])(theta)
        precision = jax.hessian(loss)(theta)
        if covariance == "diag":
            precision = jnp.diag(jnp.diag(precision))
        return f_i, jacobian @ jnp.linalg.solve(precision, jacobian.T)

    f, predictive_covariance = jax.lax.map(refit, jnp.arange(n), batch_size=64)
    return _log_predictive(predictor, f, predictive_covariance)
