"""Exact leave-one-out references for roaches and the breast-cancer logistic regression.

Written with plain JAX and NumPyro (the models of ``tests/models.py``, traced with
``numpyro.handlers``) and ArviZ's Pareto fit, nothing of ``numpyro_mpe``, so that it can
check ``numpyro_mpe``'s LOO estimators. For each example ``i`` the reference is

.. math::

    \\text{elpd}_i = \\log p(y_i \\mid y_{-i}) = \\log Z - \\log Z_{-i}, \\qquad
    Z_{-i} = \\int p(\\theta) \\prod_{j \\ne i} p(y_j \\mid \\theta)\\, d\\theta,

both evidences estimated by importance sampling with the **same** ``S`` draws from an
equal mixture of two multivariate Student-t proposals (``nu = 7`` degrees of freedom):

- ``q_{-i}``, fitted to ``p(theta | y_{-i})``: a damped Newton refit from the full-data
  mode gives the mode and the Laplace covariance, then ``adapt_steps = 2`` rounds of
  moment matching (the importance-weighted mean and covariance of 10,000 pilot draws);
- ``q_full``, fitted in the same way to ``p(theta | y)`` once per data set.

With ``q = (q_full + q_{-i}) / 2`` (half the draws from each), ``w_s = p(theta_s)
prod_{j != i} p(y_j | theta_s) / q(theta_s)`` and ``f_s = p(y_i | theta_s)``,

.. math::

    \\widehat{\\text{elpd}}_i = \\log \\sum_s w_s f_s - \\log \\sum_s w_s .

Why this shape: sharing the draws makes the two evidences' errors cancel where the
posteriors agree (a full-data ``log Z`` estimated once would put its error ``N`` times
into the total); the mixture bounds each evidence's weights by twice those of its own
component, so they stay light-tailed where the posteriors differ. A proposal fitted to
``p(theta | y_{-i})`` alone gave Pareto k up to 2.6 on roaches' outliers (its numerator
weights ``w_s f_s`` live in ``q_{-i}``'s tail); the Laplace covariance without moment
matching gave k of 0.5 to 0.6 on breast cancer (a skewed 31-dimensional posterior). No
Pareto smoothing is applied (every k is below 0.5, where plain importance sampling has
finite variance). An example is first estimated with ``S = 20,000`` draws and redone
with 100,000 (another key) when its MCSE exceeds 0.002 or its k reaches 0.5. Columns of
the CSVs:

- ``elpd_loo``: the estimate above;
- ``mcse``: its delta-method Monte Carlo standard error,
  ``sqrt(sum_s wn_s^2 (f_s / R - 1)^2)`` with ``wn = w / sum(w)`` and ``R`` the estimated
  ``p(y_i | y_{-i})`` (the i.i.d. formula, conservative for the stratified mixture draws);
  each example has its own key, so the MCSE of a total is the root sum of squares;
- ``pareto_k``: the larger of the Pareto k of the two evidences' weights ``w_s`` and
  ``w_s f_s`` (ArviZ's tail fit);
- ``method``: ``mixture_t7_is``.

Settings (float64): covariance inflation ``c = 1.2``, batches of 10,000 draws (even
batches from ``q_full``, odd ones from ``q_{-i}``), keys ``fold_in(PRNGKey(seed), i)``
(``fold_in(., N)`` for ``q_full``), seed 0 (roaches) and 1 (breast cancer). Both log
posteriors are concave; every Newton refit ends with a decrement below 1e-8 (checked).
The refit mode only centres the proposal: importance sampling is exact whatever the
centre.

Cross-checks (``--cross-check``, not needed to write the CSVs):

1. the roaches total against the issue's -5479.15;
2. breast cancer, NUTS (numpyro, 4 chains x 2000 draws after 1000 warmup): PSIS-LOO
   (ArviZ's ``psislw``) against the reference on the examples whose PSIS k < 0.5, as
   z-scores ``(psis - reference) / sqrt(mcse_psis^2 + mcse^2)``;
3. breast cancer, NUTS refits (4 chains x 2000 draws on the data without ``i``, then
   ``log mean_s p(y_i | theta_s)``) for the 6 most influential examples: the largest
   ``p_loo_i = lppd_i - elpd_i``, ``lppd_i`` from the full-data NUTS draws (the largest
   PSIS k are at examples with ``p(y_i | theta) = 1`` to rounding, where ArviZ's tail fit
   is meaningless);
4. roaches, every ``log Z - log Z_{-i}`` by tensor Gauss-Hermite quadrature
   (``gauss_hermite_loo``; the posterior has 4 dimensions), 10^4 and 12^4 nodes.

Results (2026-12-02, float64; also in ``tests/references/README.md``):

- roaches: total -5478.936 (MCSE 0.037), largest MCSE 0.0069, largest k -0.17.
  Quadrature: -5478.9705 (10^4 and 12^4 nodes agree to 1e-12); reference minus
  quadrature +0.034 in total (0.9 MCSE), at most 0.0069 per example, rms z 0.96. The
  issue's -5479.15 is 0.18 below the quadrature value;
- breast cancer: total -42.543 (MCSE 0.022), largest MCSE 0.0075, largest k 0.43;
- breast cancer, PSIS-LOO from NUTS (8000 draws) on the 448 examples with PSIS k < 0.5
  or NaN: largest |difference| 0.026, rms z 0.93, sum of differences -0.21 (PSIS total
  -42.62);
- breast cancer, NUTS refits of the 6 most influential examples (297, 213, 190, 73, 40,
  38): differences -0.045 (z -1.8, at elpd -6.83, where a refit's log of a mean is
  biased low) to +0.014, the others within 1.5 joint MCSE.

Usage::

    python benchmarks/loo_references.py                 # both CSVs (45 min, 2 busy CPUs)
    python benchmarks/loo_references.py --cross-check   # and the cross-checks (+3 min)
    python benchmarks/loo_references.py --cases --cross-check      # cross-checks alone
    python benchmarks/loo_references.py --num-draws 20000 --max-draws 20000 --out /tmp/loo
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from arviz_stats.base import array_stats
from jax.flatten_util import ravel_pytree
from jax.scipy.special import gammaln, logsumexp
from numpyro import handlers
from numpyro.distributions import constraints

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from models import breast_cancer, breast_cancer_model, roaches, roaches_model  # noqa: E402

__all__ = [
    "LogDensity",
    "LooExample",
    "Proposal",
    "Settings",
    "adapt",
    "breast_cancer_density",
    "exact_loo",
    "gauss_hermite_loo",
    "log_density",
    "main",
    "newton_mode",
    "pareto_k",
    "roaches_density",
    "t_draws",
    "t_log_density",
    "t_proposal",
]

REFERENCES = ROOT / "tests" / "references"
METHOD = "mixture_t7_is"
#: Cases: output file, seed.
CASES = {
    "roaches": ("loo_roaches_exact.csv", 0),
    "breast_cancer": ("loo_breast_cancer_exact.csv", 1),
}


class Settings(NamedTuple):
    """Importance-sampling settings: draws per example (``num_draws``; examples whose MCSE
    exceeds ``target_mcse`` or whose Pareto k reaches 0.5 are redone with ``max_draws``),
    batch size (also the size of each adaptation pilot), adaptation rounds, Student-t
    degrees of freedom and covariance inflation."""

    num_draws: int = 20_000
    max_draws: int = 100_000
    target_mcse: float = 0.002
    batch: int = 10_000
    adapt_steps: int = 2
    df: int = 7
    inflation: float = 1.2


class LogDensity(NamedTuple):
    """A model's log density on its flat latent vector ``theta`` ``(P,)``.

    ``terms(theta)`` returns ``(log p(theta), log p(y_j | theta) for j = 1..N)``,
    shapes ``()`` and ``(N,)``.
    """

    terms: Callable
    dim: int
    num_examples: int


class LooExample(NamedTuple):
    """One example's reference: ``elpd`` (log p(y_i | y_-i)), its ``mcse``, the Pareto
    ``k`` of the two evidences' weights (the larger), the refit ``mode`` ``(P,)``, its
    Newton ``decrement`` and the number of draws used."""

    elpd: float
    mcse: float
    pareto_k: float
    mode: np.ndarray
    decrement: float
    num_draws: int


def log_density(model, *args, site: str = "y") -> LogDensity:
    """The prior and the per-example log-likelihood of ``model(*args)`` on a flat vector.

    Every latent site must have real support (no constraining transform, so no Jacobian);
    ``site`` is the observed site, one log-likelihood term per plate element.
    """
    trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args)
    latents = {}
    for name, entry in trace.items():
        if entry["type"] != "sample" or entry["is_observed"]:
            continue
        if entry["fn"].support not in (constraints.real, constraints.real_vector):
            raise ValueError(f"log_density: latent site {name!r} is not real-valued")
        latents[name] = entry["value"]
    flat, unravel = ravel_pytree(latents)

    def terms(theta):
        substituted = handlers.substitute(model, data=unravel(theta))
        tr = handlers.trace(substituted).get_trace(*args)
        log_prior = sum(jnp.sum(tr[name]["fn"].log_prob(tr[name]["value"])) for name in latents)
        return log_prior, tr[site]["fn"].log_prob(tr[site]["value"])

    num_examples = trace[site]["value"].shape[0]
    return LogDensity(terms, flat.shape[0], num_examples)


def roaches_density() -> LogDensity:
    """``roaches_model`` on the rstanarm roaches data (N = 262, P = 4)."""
    X, offset, y = roaches()
    return log_density(roaches_model, jnp.asarray(X), jnp.asarray(offset), jnp.asarray(y))


def breast_cancer_density() -> LogDensity:
    """``breast_cancer_model`` on sklearn's breast-cancer data (N = 569, P = 31)."""
    X, y = breast_cancer()
    return log_density(breast_cancer_model, jnp.asarray(X), jnp.asarray(y))


def newton_mode(log_joint, start, max_steps: int = 100):
    """Maximise a concave ``log_joint`` by Newton's method with a backtracking line search
    (the longest of the steps ``2^-k``, ``k = 0..29``, that increases the value).

    Returns the mode ``(P,)``, the precision ``-hess log_joint`` there ``(P, P)`` and the
    Newton decrement ``g^T (-H)^{-1} g`` there (twice the predicted gain of a full step).
    """
    sizes = 0.5 ** jnp.arange(30.0)

    def safe(theta):
        value = log_joint(theta)
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    def newton_direction(theta):
        gradient = jax.grad(log_joint)(theta)
        precision = -jax.hessian(log_joint)(theta)
        direction = jnp.linalg.solve(precision, gradient)
        return direction, gradient @ direction, precision

    def keep_going(carry):
        _, _, decrement, count = carry
        return (decrement > 1e-18) & (count < max_steps)

    def step(carry):
        theta, value, _, count = carry
        direction, decrement, _ = newton_direction(theta)
        trials = jax.vmap(lambda size: safe(theta + size * direction))(sizes)
        better = trials > value
        first = jnp.argmax(better)
        # No step increases the value: converged to rounding, stop.
        moved = better[first]
        theta = jnp.where(moved, theta + sizes[first] * direction, theta)
        value = jnp.where(moved, trials[first], value)
        return theta, value, jnp.where(moved, decrement, 0.0), count + 1

    start = jnp.asarray(start)
    initial = (start, safe(start), jnp.asarray(jnp.inf, start.dtype), 0)
    theta, _, _, _ = jax.lax.while_loop(keep_going, step, initial)
    _, decrement, precision = newton_direction(theta)
    return theta, precision, decrement


class Proposal(NamedTuple):
    """A multivariate Student-t: ``location`` ``(P,)``, lower Cholesky factor ``chol``
    ``(P, P)`` of its scale matrix, and ``log_norm``, the log of its normalising constant."""

    location: jax.Array
    chol: jax.Array
    log_norm: jax.Array


def t_proposal(location, covariance, settings: Settings) -> Proposal:
    """The Student-t with ``settings.df`` degrees of freedom and scale matrix
    ``settings.inflation * covariance``."""
    chol = jnp.linalg.cholesky(settings.inflation * covariance)
    dim, df = location.shape[0], settings.df
    log_norm = (
        gammaln((df + dim) / 2)
        - gammaln(df / 2)
        - dim / 2 * jnp.log(df * jnp.pi)
        - jnp.sum(jnp.log(jnp.diag(chol)))
    )
    return Proposal(location, chol, log_norm)


def t_log_density(proposal: Proposal, theta, df: int):
    """``log q(theta)`` for ``theta`` ``(B, P)``: ``(B,)``."""
    deviation = jax.scipy.linalg.solve_triangular(
        proposal.chol, (theta - proposal.location).T, lower=True
    ).T
    dim = theta.shape[1]
    return proposal.log_norm - (df + dim) / 2 * jnp.log1p(jnp.sum(deviation**2, 1) / df)


def t_draws(proposal: Proposal, rng_key, num: int, df: int):
    """``num`` draws ``(num, P)`` of the Student-t (an integer ``df``: the chi-square
    variable is a sum of ``df`` squared normals, which compiles far faster than
    ``jax.random.chisquare``'s rejection sampler)."""
    key_normal, key_chi2 = jax.random.split(rng_key)
    z = jax.random.normal(key_normal, (num, proposal.location.shape[0]))
    chi2 = jnp.sum(jax.random.normal(key_chi2, (num, df)) ** 2, 1)
    return proposal.location + (z * jnp.sqrt(df / chi2)[:, None]) @ proposal.chol.T


def adapt(proposal: Proposal, log_target, rng_key, settings: Settings) -> Proposal:
    """``settings.adapt_steps`` rounds of moment matching: the mean and covariance of
    ``settings.batch`` draws weighted by ``exp(log_target) / q`` become the next
    proposal's location and (before inflation) scale."""
    keys = jax.random.split(rng_key, settings.adapt_steps)

    def step(number, proposal):
        theta = t_draws(proposal, keys[number], settings.batch, settings.df)
        log_q = t_log_density(proposal, theta, settings.df)
        weights = jax.nn.softmax(jax.vmap(log_target)(theta) - log_q)
        mean = weights @ theta
        centred = theta - mean
        return t_proposal(mean, (centred * weights[:, None]).T @ centred, settings)

    return jax.lax.fori_loop(0, settings.adapt_steps, step, proposal)


def _fitting_cores(density: LogDensity, settings: Settings):
    """Two jitted functions, compiled once per data set: ``fit``, the fitted proposal of
    ``p(theta | y_keep)`` (Newton, Laplace, moment matching), and ``draws``, the log
    weights of the mixture draws for one left-out example (compiled once per draw count)."""
    df = settings.df

    def weighted_log_joint(keep):
        def log_joint(theta):
            log_prior, log_lik = density.terms(theta)
            return log_prior + log_lik @ keep

        return log_joint

    @jax.jit
    def fit(keep, start, rng_key):
        log_joint = weighted_log_joint(keep)
        mode, precision, decrement = newton_mode(log_joint, start)
        laplace = t_proposal(mode, jnp.linalg.inv(precision), settings)
        return mode, decrement, adapt(laplace, log_joint, rng_key, settings)

    @partial(jax.jit, static_argnames="num_draws")
    def draws(keep, index, full: Proposal, loo: Proposal, rng_key, num_draws: int):
        def batch(inputs):
            key, number = inputs
            # Even batches from the full-data component, odd ones from the LOO one.
            component = jax.tree.map(lambda a, b: jnp.where(number % 2, a, b), loo, full)
            theta = t_draws(component, key, settings.batch, df)
            log_q = jnp.logaddexp(
                t_log_density(full, theta, df), t_log_density(loo, theta, df)
            ) - jnp.log(2.0)
            log_prior, log_lik = jax.vmap(density.terms)(theta)
            return log_prior + log_lik @ keep - log_q, log_lik[:, index]

        num_batches = num_draws // settings.batch
        keys = jax.random.split(rng_key, num_batches)
        log_w, log_f = jax.lax.map(batch, (keys, jnp.arange(num_batches)))
        return log_w.reshape(-1), log_f.reshape(-1)

    return fit, draws


def pareto_k(log_weights: np.ndarray) -> float:
    """Pareto k of the weights ``exp(log_weights)`` ``(S,)`` (ArviZ's tail fit;
    ``psislw`` takes log-likelihoods, i.e. minus log weights)."""
    return float(array_stats.psislw(-np.asarray(log_weights))[1])


def _summarise(log_w, log_f) -> tuple[float, float, float]:
    log_w, log_f = np.asarray(log_w), np.asarray(log_f)
    elpd = float(logsumexp(log_w + log_f) - logsumexp(log_w))
    normalised = np.exp(log_w - logsumexp(log_w))
    mcse = float(np.sqrt(np.sum(normalised**2 * np.expm1(log_f - elpd) ** 2)))
    return elpd, mcse, max(pareto_k(log_w), pareto_k(log_w + log_f))


def exact_loo(
    density: LogDensity,
    indices,
    *,
    seed: int,
    settings: Settings | None = None,
) -> list[LooExample]:
    """``log p(y_i | y_-i)`` for each of ``indices`` (see the module docstring).

    Call inside ``jax.enable_x64(True)``. Keys: ``fold_in(PRNGKey(seed), i)`` for
    example ``i``, ``fold_in(PRNGKey(seed), N)`` for the full-data proposal.
    """
    settings = Settings() if settings is None else settings
    for count in {settings.num_draws, settings.max_draws}:
        if count % (2 * settings.batch):
            raise ValueError(f"{count} draws are not a multiple of 2 * batch {settings.batch}")
    base = jax.random.PRNGKey(seed)
    ones = jnp.ones(density.num_examples)
    fit, draws = _fitting_cores(density, settings)
    start, decrement, full = fit(
        ones, jnp.zeros(density.dim), jax.random.fold_in(base, density.num_examples)
    )
    if not decrement < 1e-8:
        raise RuntimeError(f"full-data Newton fit did not converge: decrement {decrement}")

    def run(index: int, num_draws: int, rng_key) -> LooExample:
        keep = ones.at[index].set(0.0)
        key_fit, key_draws = jax.random.split(rng_key)
        mode, decrement, loo = fit(keep, start, key_fit)
        if not decrement < 1e-8:
            raise RuntimeError(f"refit without {index} did not converge: {decrement}")
        log_w, log_f = draws(keep, index, full, loo, key_draws, num_draws)
        elpd, mcse, k = _summarise(log_w, log_f)
        return LooExample(elpd, mcse, k, np.asarray(mode), float(decrement), num_draws)

    results = []
    for index in map(int, indices):
        key = jax.random.fold_in(base, index)
        result = run(index, settings.num_draws, key)
        if settings.max_draws > settings.num_draws and (
            result.mcse > settings.target_mcse or result.pareto_k >= 0.5
        ):
            result = run(index, settings.max_draws, jax.random.fold_in(key, 1))
        results.append(result)
    return results


def _write(path: Path, results: list[LooExample]) -> None:
    with path.open("w") as handle:
        handle.write("index,elpd_loo,mcse,pareto_k,method\n")
        for index, result in enumerate(results):
            handle.write(
                f"{index},{result.elpd:.12g},{result.mcse:.3e},{result.pareto_k:.4f},{METHOD}\n"
            )


def _report(name: str, results: list[LooExample], seconds: float) -> None:
    elpd = np.array([r.elpd for r in results])
    mcse = np.array([r.mcse for r in results])
    k = np.array([r.pareto_k for r in results])
    redone = sum(r.num_draws > min(r.num_draws for r in results) for r in results)
    total_mcse = np.sqrt(np.sum(mcse**2))
    print(
        f"{name}: N = {len(results)}, total {elpd.sum():.3f} (MCSE {total_mcse:.3f}),"
        f" max mcse {mcse.max():.4f} (example {mcse.argmax()}), max k {k.max():.3f}"
        f" (example {k.argmax()}), {redone} examples redone with more draws, {seconds:.0f} s"
    )


def _nuts_draws(model, args, rng_key, num_warmup, num_samples):
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(model, target_accept_prob=0.9),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=4,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(rng_key, *args)
    return mcmc.get_samples(group_by_chain=True)["w"]


def gauss_hermite_loo(density: LogDensity, num_nodes: int) -> np.ndarray:
    """``log Z - log Z_{-i}`` for every example by tensor Gauss-Hermite quadrature
    (``num_nodes ** P`` nodes, only for small ``P``) in the whitened Laplace coordinates of
    each posterior: ``log Z = log|L| + log sum_k W_k exp(|u_k|^2 / 2) p(m + L u_k, y)``,
    ``L L^T`` the Laplace covariance at the mode ``m``. ``(N,)``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    grid = np.stack(np.meshgrid(*[nodes] * density.dim, indexing="ij"), -1)
    grid = grid.reshape(-1, density.dim)
    log_weights = np.log(weights)[np.searchsorted(nodes, grid)].sum(1) + 0.5 * (grid**2).sum(1)

    @jax.jit
    def log_evidence(keep, start):
        def log_joint(theta):
            log_prior, log_lik = density.terms(theta)
            return log_prior + log_lik @ keep

        mode, precision, _ = newton_mode(log_joint, start)
        chol = jnp.linalg.cholesky(jnp.linalg.inv(precision))
        values = jax.lax.map(log_joint, mode + grid @ chol.T, batch_size=4096)
        return jnp.sum(jnp.log(jnp.diag(chol))) + logsumexp(log_weights + values), mode

    ones = jnp.ones(density.num_examples)
    log_z, mode = log_evidence(ones, jnp.zeros(density.dim))
    return np.array([log_z - log_evidence(ones.at[i].set(0.0), mode)[0] for i in range(len(ones))])


def _cross_check(references: dict[str, np.ndarray], args) -> None:
    from numpyro.diagnostics import effective_sample_size

    reference = references["roaches"]
    total = reference["elpd_loo"].sum()
    print(f"roaches total {total:.3f} vs the issue's -5479.15: difference {total + 5479.15:.3f}")
    start = time.perf_counter()
    quadrature = {n: gauss_hermite_loo(roaches_density(), n) for n in (10, 12)}
    z = (reference["elpd_loo"] - quadrature[12]) / reference["mcse"]
    print(
        f"roaches, Gauss-Hermite 10^4 and 12^4 nodes: totals {quadrature[10].sum():.4f},"
        f" {quadrature[12].sum():.4f} (max |difference| of an example"
        f" {np.max(np.abs(quadrature[10] - quadrature[12])):.1e}); reference - quadrature:"
        f" total {total - quadrature[12].sum():+.4f}, max |difference|"
        f" {np.max(np.abs(reference['elpd_loo'] - quadrature[12])):.4f}, rms z"
        f" {np.sqrt(np.mean(z**2)):.2f}, max |z| {np.max(np.abs(z)):.2f}"
        f" [{time.perf_counter() - start:.0f} s]"
    )

    reference = references["breast_cancer"]
    X, y = breast_cancer()
    X, y = jnp.asarray(X), jnp.asarray(y)

    def log_lik(w, X, y):  # (chains, draws, P) -> (chains, draws, N)
        logits = w @ X.T
        return y * logits - jnp.logaddexp(0.0, logits)

    start = time.perf_counter()
    draws = _nuts_draws(
        breast_cancer_model, (X, y), jax.random.PRNGKey(10), args.num_warmup, args.num_samples
    )
    ll = np.asarray(log_lik(draws, X, y))  # (4, S, N)
    print(f"NUTS full posterior: {time.perf_counter() - start:.0f} s")
    flat = ll.reshape(-1, ll.shape[-1]).T  # (N, 4S)
    smoothed, k = array_stats.psislw(flat)  # psislw takes log-likelihoods
    ess_f = effective_sample_size(np.exp(ll))  # (N,)
    # ESS is undefined where p(y_i | theta) is 1 at every draw: take r_eff = 1 there.
    r_eff = np.where(np.isfinite(ess_f), ess_f / flat.shape[1], 1.0)
    elpd, mcse = np.empty(len(k)), np.empty(len(k))
    for i in range(len(k)):
        log_weights = smoothed[i] - logsumexp(smoothed[i])
        elpd[i] = logsumexp(log_weights + flat[i])
        normalised = np.exp(log_weights)
        mcse[i] = np.sqrt(np.sum(normalised**2 * np.expm1(flat[i] - elpd[i]) ** 2) / r_eff[i])
    # ArviZ's k is NaN where log p(y_i | theta) is 0 to rounding at every draw.
    good = (k < 0.5) | np.isnan(k)
    # Both MCSEs are 0 where p(y_i | theta) is 1 to rounding: a floor keeps z finite.
    z = (elpd - reference["elpd_loo"]) / np.maximum(np.hypot(mcse, reference["mcse"]), 1e-6)
    print(
        f"PSIS-LOO (NUTS {flat.shape[1]} draws): {good.sum()} of {len(k)} examples with k < 0.5"
        f" ({np.isnan(k).sum()} NaN), k > 0.7: {(k > 0.7).sum()}; on these: sum of differences"
        f" {np.sum(elpd[good] - reference['elpd_loo'][good]):.3f},"
        f" max |difference| {np.max(np.abs(elpd - reference['elpd_loo'])[good]):.4f},"
        f" |z| max {np.max(np.abs(z[good])):.2f}, rms z {np.sqrt(np.mean(z[good] ** 2)):.2f},"
        f" |z| > 3: {(np.abs(z[good]) > 3).sum()}; PSIS total {elpd.sum():.3f} vs reference"
        f" {reference['elpd_loo'].sum():.3f}"
    )

    for low, high in ((-np.inf, 0.3), (0.3, 0.5)):
        band = (k >= low) & (k < high)
        difference = elpd[band] - reference["elpd_loo"][band]
        print(
            f"  PSIS k in [{low}, {high}): {band.sum()} examples, sum of differences"
            f" {difference.sum():+.4f}, rms z {np.sqrt(np.mean(z[band] ** 2)):.2f}"
        )

    # The most influential examples: largest p_loo_i = log mean_s p(y_i | theta_s) over the
    # full posterior minus the reference elpd_i.
    lppd = logsumexp(flat, axis=1) - np.log(flat.shape[1])
    worst = np.argsort(reference["elpd_loo"] - lppd)[: args.num_refits]
    print("NUTS refits: index, p_loo_i, PSIS k, reference (mcse), refit (mcse), difference, z")
    for index in worst:
        keep = np.arange(len(y)) != index
        start = time.perf_counter()
        draws = _nuts_draws(
            breast_cancer_model,
            (X[keep], y[keep]),
            jax.random.fold_in(jax.random.PRNGKey(11), int(index)),
            args.num_warmup,
            args.num_samples,
        )
        ll_i = np.asarray(log_lik(draws, X[index : index + 1], y[index : index + 1]))[..., 0]
        refit = logsumexp(ll_i) - np.log(ll_i.size)
        f = np.exp(ll_i - refit)
        refit_mcse = np.std(f) / np.sqrt(effective_sample_size(f[..., None])[0])
        difference = refit - reference["elpd_loo"][index]
        mcse_reference = reference["mcse"][index]
        print(
            f"  {index}, {lppd[index] - reference['elpd_loo'][index]:.2f}, {k[index]:.2f},"
            f" {reference['elpd_loo'][index]:.4f}"
            f" ({reference['mcse'][index]:.4f}), {refit:.4f} ({refit_mcse:.4f}),"
            f" {difference:+.4f}, {difference / np.hypot(refit_mcse, mcse_reference):+.2f}"
            f" [{time.perf_counter() - start:.0f} s]"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-draws", type=int, default=Settings().num_draws)
    parser.add_argument("--max-draws", type=int, default=Settings().max_draws)
    parser.add_argument("--out", type=Path, default=REFERENCES)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--cross-check", action="store_true")
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--num-refits", type=int, default=6)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    settings = Settings(num_draws=args.num_draws, max_draws=args.max_draws)
    densities = {"roaches": roaches_density, "breast_cancer": breast_cancer_density}
    args.out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    for name in args.cases:
        filename, seed = CASES[name]
        density = densities[name]()
        start = time.perf_counter()
        results = exact_loo(density, range(density.num_examples), seed=seed, settings=settings)
        _write(args.out / filename, results)
        _report(name, results, time.perf_counter() - start)
    print(f"references: {time.perf_counter() - begin:.0f} s")
    if args.cross_check:
        references = {
            name: np.genfromtxt(
                args.out / CASES[name][0], delimiter=",", names=True, dtype=None, encoding="utf-8"
            )
            for name in CASES
        }
        _cross_check(references, args)
    print(f"total run time {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
