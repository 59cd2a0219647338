"""Benchmark: one minibatch iBLR step against one optax Adam step, and MPE-LOO at a checkpoint.

Issue 3's targets, on a synthetic logistic regression with N = 1e5 examples, D = 100
features, batch B = 256 (fixed seed, float64 like the other benchmarks):

* one iBLR step (``numpyro_mpe.optim.iblr``, ``mc_samples=1``, through ``BLR``) costs
  **<= 1.5x** one ``optax.adam`` step on the same model and minibatch (``jax.grad`` of
  the same NumPyro log density on the same 256 rows, likelihood scaled by N / B);
* MPE-LOO at a checkpoint (``numpyro_mpe.loo`` on the iBLR diagonal posterior) costs
  **<= 2x** one full pass of per-example gradients (``jax.vmap(jax.grad)`` over all N
  examples, jitted).

Every timing excludes compilation (a first call is made and not timed) and is the
median of many calls, each ended by ``jax.block_until_ready``; the two sides of each
ratio run alternately within each repeat, so both see the same machine load. The ratio
is the median of the per-repeat ratios.

The iBLR step is timed twice: the jitted step ``numpyro_mpe.infer.blr.blr_update`` called
directly (what the 1.5x target is checked on), and ``BLR.update`` as a user calls it
(the jitted step plus its Python argument handling). Both pick their batch themselves
(``minibatch_indices``: a fresh pseudorandom permutation per epoch) and gather its rows;
the Adam step is given its indices (precomputed from a NumPy permutation) and only
gathers them. MPE-LOO is timed as ``numpyro_mpe.loo`` end to end (second and later
calls), as a checkpoint does it (``numpyro_mpe.prepare_loo`` once, then the returned
function of the params: what ``BLR.run(checkpoints=...)`` calls), and as its jitted core
``numpyro_mpe.crossval.mpe_loo.loo_core`` alone.

Usage::

    python benchmarks/bench_iblr.py            # N = 1e5, D = 100, B = 256 (~1 min on 2 CPUs)
    python benchmarks/bench_iblr.py --quick    # N = 1e4, fewer repeats (a smoke test)
    python benchmarks/bench_iblr.py --float32  # float32 instead of float64
    python benchmarks/bench_iblr.py --json results.json
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import bench_loo  # noqa: E402  (same directory: fmt_time, fmt_ratio, environment)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

import numpyro_mpe as mpe  # noqa: E402
from numpyro_mpe.core.model import split_arguments  # noqa: E402
from numpyro_mpe.core.rows import MinibatchPlan, plan_row_slicing  # noqa: E402
from numpyro_mpe.infer.blr import blr_update  # noqa: E402
from numpyro_mpe.infer.minibatch import minibatch_indices  # noqa: E402

_loo_module = importlib.import_module("numpyro_mpe.crossval.mpe_loo")

fmt_time, fmt_ratio, environment = bench_loo.fmt_time, bench_loo.fmt_ratio, bench_loo.environment

STEP_TARGET = 1.5
LOO_TARGET = 2.0


# --------------------------------------------------------------------------- problem


def make_data(n: int, d: int, seed: int = 0, dtype=np.float64):
    """``X = [1, z_1..z_{d-1}]``, ``beta ~ N(0, 0.3^2)``, ``y ~ Bernoulli(sigmoid(X beta))``."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(0.0, 0.3, size=d)
    x = np.hstack([np.ones((n, 1)), rng.standard_normal((n, d - 1))])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ beta)))).astype(np.float64)
    return x.astype(dtype), y.astype(dtype)


def model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def minibatch_negative_log_joint(beta, X_batch, y_batch, scale):
    """``-(log p(beta) + scale * sum log p(y_b | beta))`` from NumPyro's ``log_density``."""
    _, trace = log_density(model, (X_batch, y_batch), {}, {"beta": beta})
    prior = trace["beta"]["fn"].log_prob(trace["beta"]["value"])
    likelihood = trace["y"]["fn"].log_prob(trace["y"]["value"])
    return -(prior + scale * jnp.sum(likelihood))


def per_example_log_lik(beta, x, y):
    return dist.Bernoulli(logits=jnp.dot(x, beta)).log_prob(y)


# --------------------------------------------------------------------------- timing


def time_alternating(fns, repeats: int):
    """Call each function once untimed (compile), then ``repeats`` rounds of all in turn.

    Returns one list of times per function.
    """
    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times)}


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


# --------------------------------------------------------------------------- benchmark


def run(n: int, d: int, batch_size: int, step_repeats: int, loo_repeats: int, dtype) -> dict:
    warnings.simplefilter("ignore", mpe.ReliabilityWarning)
    out: dict = {"n": n, "d": d, "batch_size": batch_size, "dtype": np.dtype(dtype).name}
    out["loadavg_start"] = os.getloadavg()
    x_np, y_np = make_data(n, d, dtype=dtype)
    X, y = jnp.asarray(x_np), jnp.asarray(y_np)
    scale = n / batch_size
    steps_per_epoch = -(-n // batch_size)

    # iBLR through BLR: the plan must be the O(B) gathered path.
    guide = mpe.AutoGaussian(model, covariance="diag")
    optimizer = mpe.optim.iblr(0.05, beta2=0.999, hess_init=0.1, mc_samples=1)
    blr = mpe.BLR(model, guide, optimizer)
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    state = blr.init(key, X, y, batch_size=batch_size)
    out["blr_init_s"] = time.perf_counter() - start
    out["minibatch_path"] = state.minibatch.path
    arrays, static = split_arguments((X, y), {})

    iblr_state = state
    public_state = state

    def iblr_step():  # the jitted step, called directly
        nonlocal iblr_state
        iblr_state, info = blr_update(
            model, optimizer, None, static, batch_size, iblr_state, arrays
        )
        return info.loss

    def public_step():  # BLR.update, as a user calls it
        nonlocal public_state
        public_state, info = blr.update(public_state, X, y, batch_size=batch_size)
        return info.loss

    # optax Adam on the same model and minibatches (indices given, rows gathered in jit).
    adam = optax.adam(1e-3)

    @jax.jit
    def adam_update(beta, adam_state, X, y, members):
        gradient = jax.grad(minibatch_negative_log_joint)(beta, X[members], y[members], scale)
        updates, adam_state = adam.update(gradient, adam_state, beta)
        return optax.apply_updates(beta, updates), adam_state

    rng = np.random.default_rng(1)
    order = np.concatenate([rng.permutation(n) for _ in range(4)])
    batches = [
        jnp.asarray(order[k * batch_size : (k + 1) * batch_size], jnp.int32)
        for k in range(len(order) // batch_size)
    ]
    beta, adam_state = jnp.zeros(d, X.dtype), adam.init(jnp.zeros(d, X.dtype))
    adam_calls = 0

    # The same Adam step picking its batch as BLR does (minibatch_indices in the step).
    @jax.jit
    def adam_update_own_batch(beta, adam_state, X, y, data_key, step):
        members = minibatch_indices(data_key, step, batch_size, n)
        beta, adam_state = adam_update(beta, adam_state, X, y, members)
        return beta, adam_state, step + 1

    own = (jnp.zeros(d, X.dtype), adam.init(jnp.zeros(d, X.dtype)), jnp.zeros((), jnp.int32))

    def adam_own_batch_step():
        nonlocal own
        own = adam_update_own_batch(*own[:2], X, y, state.data_key, own[2])
        return own[0]

    def adam_step():
        nonlocal beta, adam_state, adam_calls
        beta, adam_state = adam_update(beta, adam_state, X, y, batches[adam_calls % len(batches)])
        adam_calls += 1
        return beta

    iblr_times, adam_times, public_times, own_times = time_alternating(
        [iblr_step, adam_step, public_step, adam_own_batch_step], step_repeats
    )
    # The fallback path (weights N / B on the batch, all N examples evaluated), for scale.
    weighted_state = state._replace(
        minibatch=MinibatchPlan("weights", n, state.minibatch.gathered, "forced")
    )

    def weighted_step():
        nonlocal weighted_state
        weighted_state, info = blr_update(
            model, optimizer, None, static, batch_size, weighted_state, arrays
        )
        return info.loss

    (weighted_times,) = time_alternating([weighted_step], max(5, step_repeats // 20))
    out.update(
        weighted_step=summary(weighted_times),
        iblr_step=summary(iblr_times),
        adam_step=summary(adam_times),
        blr_update=summary(public_times),
        adam_own_batch_step=summary(own_times),
        step_ratio_own_batch=paired_ratio(iblr_times, own_times),
        step_ratio=paired_ratio(iblr_times, adam_times),
        step_ratio_public=paired_ratio(public_times, adam_times),
        adam_step_compiles=adam_update._cache_size(),
    )

    # A checkpoint: iBLR trained for one epoch from the start (the steps above kept
    # going; this is a fresh run so the checkpoint does not depend on the repeats).
    fit_state = state
    start = time.perf_counter()
    for _ in range(steps_per_epoch):
        fit_state, _ = blr.update(fit_state, X, y, batch_size=batch_size)
    jax.block_until_ready(fit_state)
    out["epoch_s"] = time.perf_counter() - start
    out["epoch_steps"] = steps_per_epoch
    params = blr.get_params(fit_state)
    mean, precision = guide.mean_precision(params)

    plate_model = mpe.trace_model(model, X, y)
    names = plate_model.predictor.names
    # As mpe.loo does for P > 8: the predictor's Jacobian row by row (O(N K P)).
    row_plan = plan_row_slicing(model, None, (X, y), {}, plate_model)
    out["loo_rows"] = row_plan.path

    def loo_core():
        return _loo_module.loo_core(
            mean,
            precision,
            arrays,
            model=model,
            static=static,
            plate=None,
            names=names,
            method="cavity",
            gathered=row_plan.gathered if row_plan.path == "gather" else None,
        )

    def loo_public():
        return mpe.loo(model, guide, params, X, y).elpd

    loo_at = mpe.prepare_loo(model, guide, X, y)  # what BLR.run(checkpoints=...) calls

    def loo_checkpoint():
        return loo_at(params).elpd

    per_example_gradients = jax.jit(jax.vmap(jax.grad(per_example_log_lik), in_axes=(None, 0, 0)))

    def gradient_pass():
        return per_example_gradients(mean, X, y)

    core_times, public_loo_times, checkpoint_times, gradient_times = time_alternating(
        [loo_core, loo_public, loo_checkpoint, gradient_pass], loo_repeats
    )
    elpd = mpe.loo(model, guide, params, X, y)
    out.update(
        loo_core=summary(core_times),
        loo_public=summary(public_loo_times),
        loo_checkpoint=summary(checkpoint_times),
        loo_ratio_checkpoint=paired_ratio(checkpoint_times, gradient_times),
        gradient_pass=summary(gradient_times),
        loo_ratio=paired_ratio(core_times, gradient_times),
        loo_ratio_public=paired_ratio(public_loo_times, gradient_times),
        elpd_loo=float(elpd.elpd),
        core_matches_loo=bool(np.allclose(np.asarray(loo_core()[0]), np.asarray(elpd.elpd_i))),
        loadavg_end=os.getloadavg(),
    )
    return out


def report(r: dict) -> str:
    def cell(s):
        return f"{fmt_time(s['median_s'])} ({fmt_time(s['min_s'])})"

    def mins(numerator, denominator):
        return f"{r[numerator]['min_s'] / r[denominator]['min_s']:.3g}"

    lines = [
        f"N = {r['n']:,}, D = {r['d']}, B = {r['batch_size']}, {r['dtype']}; minibatch path: "
        f"{r['minibatch_path']}; load avg. {r['loadavg_start'][0]:.1f} → "
        f"{r['loadavg_end'][0]:.1f}",
        "",
        "| step | median (min) | / Adam step: paired median (ratio of mins) |",
        "|---|---:|---:|",
        f"| optax Adam (jitted, batch indices given) | {cell(r['adam_step'])} | 1 |",
        f"| optax Adam, picking its batch as BLR does (`minibatch_indices` in the step) | "
        f"{cell(r['adam_own_batch_step'])} | - |",
        f"| iBLR, jitted step `blr_update` | {cell(r['iblr_step'])} | "
        f"{fmt_ratio(r['step_ratio'], STEP_TARGET, True)} ({mins('iblr_step', 'adam_step')}) |",
        f"| iBLR, jitted step on the weighted O(N) fallback path | "
        f"{cell(r['weighted_step'])} | - |",
        f"| iBLR, `BLR.update` | {cell(r['blr_update'])} | "
        f"{fmt_ratio(r['step_ratio_public'], STEP_TARGET, True)} "
        f"({mins('blr_update', 'adam_step')}) |",
        "",
        f"iBLR jitted step / Adam picking its batch the same way: "
        f"{r['step_ratio_own_batch']:.3g} (paired median), "
        f"{mins('iblr_step', 'adam_own_batch_step')} (ratio of mins).",
        "",
        f"Checkpoint after one epoch ({r['epoch_steps']} `BLR.update` steps, "
        f"{fmt_time(r['epoch_s'])}); elpd_loo {r['elpd_loo']:.2f}, core matches `mpe.loo`: "
        f"{r['core_matches_loo']}.",
        "",
        "| MPE-LOO | median (min) | / per-example gradient pass: paired median (ratio of mins) |",
        "|---|---:|---:|",
        f"| per-example gradients, `jit(vmap(grad))` over all N | {cell(r['gradient_pass'])} "
        "| 1 |",
        f"| jitted core `numpyro_mpe.crossval.mpe_loo.loo_core` | {cell(r['loo_core'])} | "
        f"{fmt_ratio(r['loo_ratio'], LOO_TARGET, True)} ({mins('loo_core', 'gradient_pass')}) |",
        f"| checkpoint: `prepare_loo(...)(params)`, as `BLR.run(checkpoints=)` | "
        f"{cell(r['loo_checkpoint'])} | {fmt_ratio(r['loo_ratio_checkpoint'], LOO_TARGET, True)} "
        f"({mins('loo_checkpoint', 'gradient_pass')}) |",
        f"| `numpyro_mpe.loo` end to end | {cell(r['loo_public'])} | "
        f"{fmt_ratio(r['loo_ratio_public'], LOO_TARGET, True)} "
        f"({mins('loo_public', 'gradient_pass')}) |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e4, fewer repeats")
    parser.add_argument("--n", type=lambda s: int(float(s)), default=None, help="N (1e5)")
    parser.add_argument("--d", type=int, default=100, help="D (100)")
    parser.add_argument("--batch-size", type=int, default=256, help="B (256)")
    parser.add_argument("--step-repeats", type=int, default=None, help="timed steps (1000)")
    parser.add_argument("--loo-repeats", type=int, default=None, help="timed LOO calls (7)")
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    parser.add_argument("--json", default=None, help="write the raw results to this file")
    args = parser.parse_args(argv)
    if args.float32:
        jax.config.update("jax_enable_x64", False)
    n = args.n or (10_000 if args.quick else 100_000)
    step_repeats = args.step_repeats or (100 if args.quick else 1000)
    loo_repeats = args.loo_repeats or (3 if args.quick else 7)
    env = environment()
    print("# iBLR step and MPE-LOO checkpoint benchmark: logistic regression", flush=True)
    print(
        f"jax {env['jax']} ({env['backend']}), numpyro {env['numpyro']}, optax "
        f"{optax.__version__}, {env['cpu_count']} x {env['cpu']}, Python {env['python']}, "
        f"numpyro_mpe at commit {env['commit']}\n",
        flush=True,
    )
    start = time.perf_counter()
    result = run(
        n,
        args.d,
        args.batch_size,
        step_repeats,
        loo_repeats,
        np.float32 if args.float32 else np.float64,
    )
    result["wall_s"] = time.perf_counter() - start
    print(report(result))
    print(f"\nTotal benchmark wall time: {result['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "result": result}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
