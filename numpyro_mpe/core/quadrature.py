"""Integration of a likelihood against Gaussians in prediction space, for ``loo``.

``log int p(y_i | f) N(f; mean_i, cov_i) df`` for all examples at once, ``f`` the ``K``
predictor components: closed form for a Normal observation with known variance;
tensor Gauss-Hermite for ``K <= 3`` (20, 12^2, 8^3 nodes) and Laplace-centred
quasi-Monte Carlo beyond (:mod:`numpyro_mpe.core.laplace_qmc`). For ``K = 1``, a 9-node
rule first, with an error estimate from the rule embedded in its nodes; the examples it
refuses get 20 nodes (``docs/math.md``, "Adaptive rule"). Sums over nodes are streamed:
memory ``O(N)``, not ``O(N x nodes)``.
"""

from __future__ import annotations

import itertools
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_mpe.core.gaussian import covariance_root
from numpyro_mpe.core.laplace_qmc import laplace_quasi_monte_carlo
from numpyro_mpe.core.model import Predictor

__all__ = [
    "GAUSS_HERMITE_POINTS",
    "REPAIRED_ROWS",
    "embedded_gauss_hermite",
    "gauss_hermite",
    "log_predictive",
    "log_predictive_pair",
]

GAUSS_HERMITE_POINTS = {1: 20, 2: 12, 3: 8}
_ADAPTIVE_POINTS = 9  # K = 1: tried first, see log_predictive
_ADAPTIVE_TOLERANCE = 1e-7  # on the embedded rule's error estimate, in log density
_MAX_UNROLL = 32
REPAIRED_ROWS = 1024  # examples integrated again on their own rows, at most


def _standard_normal_rule(dim: int, dtype) -> tuple[jax.Array, jax.Array]:
    """Tensor Gauss-Hermite nodes ``(Q, dim)`` and log weights ``(Q,)`` integrating
    against ``N(0, I)``, ``dim`` in ``GAUSS_HERMITE_POINTS``."""
    x, w = np.polynomial.hermite.hermgauss(GAUSS_HERMITE_POINTS[dim])
    nodes = np.array(list(itertools.product(np.sqrt(2.0) * x, repeat=dim)))
    log_w = [np.sum(c) for c in itertools.product(np.log(w / np.sqrt(np.pi)), repeat=dim)]
    return jnp.asarray(nodes, dtype), jnp.asarray(np.array(log_w), dtype)


@cache
def _embedded_rule() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes ``(Q,)`` and weights ``(Q,)`` for ``N(0, 1)``, ``Q =``
    ``_ADAPTIVE_POINTS``, and the weights ``(Q,)`` of the rule embedded in them.

    The embedded rule uses the same nodes less the outer two (zero weight there), with
    the weights that integrate ``1, x, ..., x^{Q-3}`` exactly against ``N(0, 1)`` (and,
    the nodes being symmetric, ``x^{Q-2}``): degree ``Q - 2`` against the Gauss rule's
    ``2Q - 1``. Its weights are positive.
    """
    x, w = np.polynomial.hermite.hermgauss(_ADAPTIVE_POINTS)
    nodes, weights = np.sqrt(2.0) * x, w / np.sqrt(np.pi)
    inner = np.argsort(np.abs(nodes))[: _ADAPTIVE_POINTS - 2]
    # E[x^j] under N(0, 1): 0 for odd j, (j - 1)!! for even j.
    moments = [0.0 if j % 2 else np.prod(np.arange(j - 1.0, 0, -2)) for j in range(inner.size)]
    embedded = np.zeros_like(weights)
    embedded[inner] = np.linalg.solve(np.vander(nodes[inner], increasing=True).T, moments)
    return nodes, weights, embedded


def log_predictive(
    predictor: Predictor, mean: jax.Array, cov: jax.Array, *, unroll: bool = True
) -> jax.Array:
    """``log int p(y_i | f) N(f; mean_i, cov_i) df`` for all i: ``(N, K), (N, K, K) -> (N,)``.

    Closed form for a Normal observation with known variance (0 for the examples masked
    out of the likelihood, ``predictor.mask``). For one predictor
    component (``K = 1``), the adaptive rule of :func:`embedded_gauss_hermite` first,
    and the ``GAUSS_HERMITE_POINTS`` rule for every example when its error estimate
    exceeds the tolerance for some example; :func:`gauss_hermite` for ``K = 2, 3``;
    :func:`~numpyro_mpe.core.laplace_qmc.laplace_quasi_monte_carlo` beyond.

    ``unroll=False`` keeps every node loop rolled: a smaller program, compiled faster,
    for paths that seldom run. The 20-node fallback of ``K = 1`` is always rolled.
    """
    if predictor.noise_variance is not None:
        variance = predictor.noise_variance + cov[:, 0, 0]
        residual = predictor.observed - mean[:, 0]
        density = -0.5 * (jnp.log(2 * jnp.pi * variance) + residual**2 / variance)
        # An example masked out of the likelihood has p(y_i | f) = 1: its integral is 1.
        return density if predictor.mask is None else jnp.where(predictor.mask, density, 0.0)
    if mean.shape[1] not in GAUSS_HERMITE_POINTS:
        return laplace_quasi_monte_carlo(predictor, mean, cov)
    if mean.shape[1] != 1:
        return gauss_hermite(predictor, mean, covariance_root(cov), unroll=unroll)
    (density,), accurate = embedded_gauss_hermite(
        predictor, mean[:, 0], cov[:, 0, 0], (), unroll=unroll
    )
    return jax.lax.cond(
        jnp.all(accurate),
        lambda: density,
        lambda: gauss_hermite(predictor, mean, covariance_root(cov), unroll=False),
    )


def log_predictive_pair(predictor, cavity_mean, cavity_cov, mean, cov, rows=None):
    """``(elpd_i, lppd_i)``: :func:`log_predictive` against the cavity and against the
    full-data predictive, both ``(N,)``.

    For ``K = 1`` both come from one set of likelihood evaluations, at the cavity's
    nodes (the full-data density by importance reweighting, its error estimated as the
    cavity's). The examples whose estimates exceed the tolerance are integrated again,
    each density on its own (:func:`log_predictive`): only those examples when there
    are at most ``REPAIRED_ROWS`` of them and ``rows`` (``indices (M,) -> Predictor`` of
    those examples alone) is given, else all ``N``. Only the first rule's node loop is
    unrolled: the integrations again seldom run, and unrolled they would be most of the
    compiled program (a 2-coefficient logistic ``loo`` compiled in 3.5 s; see
    ``benchmarks/README.md``).
    """
    if predictor.noise_variance is not None or mean.shape[1] != 1:
        return (
            log_predictive(predictor, cavity_mean, cavity_cov),
            log_predictive(predictor, mean, cov),
        )
    (elpd, lppd), accurate = embedded_gauss_hermite(
        predictor, cavity_mean[:, 0], cavity_cov[:, 0, 0], ((mean[:, 0], cov[:, 0, 0]),)
    )

    def every_example():
        return (
            log_predictive(predictor, cavity_mean, cavity_cov, unroll=False),
            log_predictive(predictor, mean, cov, unroll=False),
        )

    size = min(REPAIRED_ROWS, mean.shape[0])
    if rows is None or not 0 < size < mean.shape[0]:
        repair = every_example
    else:

        def refused_examples():
            # Padded with the first refused example: repeated writes of the same value.
            indices = jnp.nonzero(~accurate, size=size, fill_value=jnp.argmin(accurate))[0]
            subset = rows(indices)
            return (
                elpd.at[indices].set(
                    log_predictive(subset, cavity_mean[indices], cavity_cov[indices], unroll=False)
                ),
                lppd.at[indices].set(
                    log_predictive(subset, mean[indices], cov[indices], unroll=False)
                ),
            )

        def repair():
            return jax.lax.cond(jnp.sum(~accurate) <= size, refused_examples, every_example)

    return jax.lax.cond(jnp.all(accurate), lambda: (elpd, lppd), repair)


def embedded_gauss_hermite(predictor: Predictor, mean, variance, targets, *, unroll=True):
    """``_ADAPTIVE_POINTS``-node Gauss-Hermite rule with an error estimate, ``K = 1``.

    Integrates ``p(y_i | f)`` against ``N(mean_i, variance_i)`` (both ``(N,)``) and, for
    each ``(target_mean, target_variance)`` in ``targets``, against that Gaussian, with
    the likelihood evaluated only at the nodes of the first: the integrand becomes
    ``p(y_i | f) N(f; target) / N(f; mean_i, variance_i)``.

    The error of each integral is estimated, with no further evaluation of the
    likelihood, by the relative difference to the rule embedded in the same nodes
    (:func:`_embedded_rule`), a conservative estimate: that rule is of much lower degree.

    Returns
    -------
    densities : tuple of jax.Array
        ``(N,)`` log densities, the first against ``N(mean, variance)``, then one per target.
    accurate : jax.Array
        ``(N,)`` bool: every estimate of that example is finite and at most
        ``_ADAPTIVE_TOLERANCE`` (or ``100 eps`` of the dtype, if larger).
    """
    nodes, weights, embedded = (jnp.asarray(a, mean.dtype) for a in _embedded_rule())
    variance = jnp.clip(variance, 0.0)
    sd = jnp.sqrt(variance)
    shift = predictor.log_lik(mean[:, None])
    reweightings = []
    for target_mean, target_variance in targets:
        # log N(f; target) - log N(f; mean, variance) at f = mean + sd x is
        # log_scale - (f - target_mean)^2 / (2 target_variance) + x^2 / 2; zero where
        # both variances are zero (an example the latents do not move).
        positive = target_variance > 0
        inverse = jnp.where(positive, 1.0 / jnp.where(positive, target_variance, 1.0), 0.0)
        log_scale = 0.5 * jnp.log(jnp.where(positive, variance * inverse, 1.0))
        reweightings.append((target_mean, inverse, log_scale, positive))

    def add(totals, node_and_weights):
        node, weight, embedded_weight = node_and_weights
        f = mean + sd * node
        scaled = jnp.exp(predictor.log_lik(f[:, None]) - shift)
        integrands = [scaled]
        for target_mean, inverse, log_scale, positive in reweightings:
            exponent = log_scale - 0.5 * (f - target_mean) ** 2 * inverse + 0.5 * node**2
            integrands.append(scaled * jnp.exp(jnp.where(positive, exponent, 0.0)))
        return tuple(
            (total + weight * g, check + embedded_weight * g)
            for (total, check), g in zip(totals, integrands, strict=True)
        ), None

    zeros = jnp.zeros_like(shift)
    initial = tuple((zeros, zeros) for _ in range(len(targets) + 1))
    totals, _ = jax.lax.scan(add, initial, (nodes, weights, embedded), unroll=unroll or 1)
    tolerance = max(_ADAPTIVE_TOLERANCE, 100 * float(jnp.finfo(mean.dtype).eps))
    # A zero, infinite or NaN total gives a NaN or infinite error, which fails the test.
    accurate = jnp.all(
        jnp.stack([jnp.abs(total - check) / total <= tolerance for total, check in totals]), 0
    )
    return tuple(shift + jnp.log(total) for total, _ in totals), accurate


def gauss_hermite(
    predictor: Predictor, mean: jax.Array, root: jax.Array, *, unroll: bool = True
) -> jax.Array:
    """The ``GAUSS_HERMITE_POINTS`` rule, ``root`` from
    :func:`~numpyro_mpe.core.gaussian.covariance_root`: ``(N, K), (N, K, K) -> (N,)``,
    ``K <= 3``; ``unroll=False`` keeps the node loop rolled (see :func:`log_predictive`)."""
    nodes, log_weights = _standard_normal_rule(mean.shape[1], mean.dtype)
    # Unrolled, the node loop runs about 2.5 times faster on CPU (the likelihood fuses
    # with the sum); beyond _MAX_UNROLL nodes, compilation time would grow instead.
    unroll = True if unroll and nodes.shape[0] <= _MAX_UNROLL else 1

    def term(node, log_weight):
        return predictor.log_lik(mean + jnp.einsum("nkl,l->nk", root, node)) + log_weight

    # Memory O(N), not O(N x nodes): sum exp(term - shift) node by node, shifted by the
    # log density at the mean; if some term overflows that shift, a running log-sum-exp
    # (slower, exact) takes over.
    shift = predictor.log_lik(mean)

    def add(total, node_and_weight):
        return total + jnp.exp(term(*node_and_weight) - shift), None

    total, _ = jax.lax.scan(add, jnp.zeros_like(shift), (nodes, log_weights), unroll=unroll)
    shifted = shift + jnp.log(total)

    def running_logsumexp():
        def accumulate(running, node_and_weight):
            return jnp.logaddexp(running, term(*node_and_weight)), None

        initial = jnp.full_like(shift, -jnp.inf)
        return jax.lax.scan(accumulate, initial, (nodes, log_weights))[0]  # seldom runs

    return jax.lax.cond(jnp.all(jnp.isfinite(shifted)), lambda: shifted, running_logsumexp)
