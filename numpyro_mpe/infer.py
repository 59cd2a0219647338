"""``BLR``: the driver that fits an :class:`~numpyro_mpe.AutoGaussian`, shaped like SVI."""

from __future__ import annotations

import inspect
import operator
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from tqdm.auto import tqdm

from numpyro_mpe.guide import AutoGaussian
from numpyro_mpe.model import join_arguments, split_arguments, trace_model
from numpyro_mpe.optim import NaturalGradientOptimizer

__all__ = ["BLR", "BLRRunResult", "BLRState", "NotPositiveDefiniteError"]


class NotPositiveDefiniteError(ValueError):
    """The fitted precision is not positive definite: the Gaussian is not a posterior."""


class BLRState(NamedTuple):
    """State of :class:`BLR`.

    Attributes
    ----------
    optim_state : Any
        The optimizer's state.
    rng_key : jax.Array
        Random key of the next step (split once per step; stochastic optimizers get one
        half).
    step : jax.Array or None
        Steps taken (picks the minibatch: epoch ``step // (N // B)``).
    data_key : jax.Array or None
        Key of the minibatch permutations: epoch ``e`` uses
        ``permutation(fold_in(data_key, e), N)``.
    """

    optim_state: Any
    rng_key: jax.Array
    step: jax.Array | None = None
    data_key: jax.Array | None = None


class BLRRunResult(NamedTuple):
    """Result of :meth:`BLR.run`.

    Attributes
    ----------
    params : dict
        Guide params (``{prefix}_loc``, ``{prefix}_precision``).
    state : BLRState
        The final state (pass it to :meth:`BLR.update` to go on).
    checkpoints : dict or None
        ``{step: checkpoint_fn(params, step)}`` for the steps named in ``run``'s
        ``checkpoints`` (MPE-LOO by default); None when none were asked for.
    losses : jax.Array, shape (num_steps_taken,)
        Negative log joint at the mean after each step (with minibatches, its unbiased
        estimate from the step's batch; for :func:`~numpyro_mpe.optim.iblr`, at the
        step's samples).
    """

    params: dict
    state: BLRState
    losses: jax.Array
    checkpoints: dict | None = None


def _accepts(function: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _negative_log_joint(model, plate, static, arrays, batch=None):
    """``theta -> -log p(theta, y)``, or with ``batch = (key, step, B)`` its estimate.

    The estimate weights the ``B`` examples of the step's batch by ``N / B`` and the rest
    by 0: unbiased, but it still evaluates all ``N`` log likelihoods (O(N) per step).
    """
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=False, **kwargs)
    if batch is None:
        return lambda theta: -plate_model.log_joint(theta), plate_model.num_examples
    data_key, step, batch_size = batch
    num_examples = plate_model.num_examples
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be in [1, {num_examples}], got {batch_size}")
    num_batches = num_examples // batch_size
    epoch, index = jnp.divmod(step, num_batches)
    permutation = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
    members = jax.lax.dynamic_slice(permutation, (index * batch_size,), (batch_size,))
    weights = jnp.zeros(num_examples, plate_model.init_theta.dtype)
    weights = weights.at[members].set(num_examples / batch_size)
    return lambda theta: -plate_model.log_joint(theta, weights), num_examples


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _blr_init(model, optimizer, plate, static, mean, arrays):
    loss_fn, num_examples = _negative_log_joint(model, plate, static, arrays)
    if _accepts(optimizer.init, "num_examples"):
        return optimizer.init(mean, loss_fn, num_examples=num_examples)
    return optimizer.init(mean, loss_fn)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _blr_update(model, optimizer, plate, static, batch_size, state, arrays):
    batch = None if batch_size is None else (state.data_key, state.step, batch_size)
    loss_fn, _ = _negative_log_joint(model, plate, static, arrays, batch)
    next_key, step_key = jax.random.split(state.rng_key)
    if _accepts(optimizer.update, "rng_key"):
        optim_state, info = optimizer.update(state.optim_state, loss_fn, rng_key=step_key)
    else:
        optim_state, info = optimizer.update(state.optim_state, loss_fn)
    step = None if state.step is None else state.step + 1
    return BLRState(optim_state, next_key, step, state.data_key), info


def check_positive_definite(precision: jax.Array, where: str) -> None:
    """Raise :class:`NotPositiveDefiniteError` unless ``precision`` is positive definite."""
    precision = np.asarray(precision)
    if precision.ndim == 2:
        eigenvalues = np.linalg.eigvalsh(0.5 * (precision + precision.T))
    else:
        eigenvalues = precision
    if not np.all(np.isfinite(eigenvalues)) or eigenvalues.min() <= 0:
        raise NotPositiveDefiniteError(
            f"{where}: the precision is not positive definite (smallest eigenvalue "
            f"{eigenvalues.min():.3g}); the mean is not at a local maximum of the log "
            "joint (run more steps) or the posterior is not locally Gaussian there"
        )


class BLR:
    """Fit an :class:`~numpyro_mpe.AutoGaussian` with a Bayesian-learning-rule optimizer.

    Mirrors :class:`numpyro.infer.SVI`: :meth:`init`, :meth:`update`, :meth:`run`,
    :meth:`get_params`. Array arguments of the model are traced under ``jit``; other
    arguments (Python numbers, strings) are static, and a new value compiles anew.

    Parameters
    ----------
    model : callable
        NumPyro model with its observed sites in a plate.
    guide : AutoGaussian
        The Gaussian family to fit (dense or diagonal).
    optimizer : NaturalGradientOptimizer
        E.g. :func:`numpyro_mpe.optim.newton`, :func:`~numpyro_mpe.optim.online_newton`,
        :func:`~numpyro_mpe.optim.iblr`.
    plate : str, optional
        Name of the plate of examples, when the model has several.

    Examples
    --------
    >>> blr = BLR(model, AutoGaussian(model), optim.newton())  # doctest: +SKIP
    >>> result = blr.run(jax.random.PRNGKey(0), 50, X, y)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Callable,
        guide: AutoGaussian,
        optimizer: NaturalGradientOptimizer,
        *,
        plate: str | None = None,
    ):
        if not isinstance(guide, AutoGaussian):
            raise TypeError(f"guide must be a numpyro_mpe.AutoGaussian, got {type(guide)}")
        self.model = model
        self.guide = guide
        self.optimizer = optimizer
        self.plate = plate

    def init(self, rng_key: jax.Array, *args: Any, **kwargs: Any) -> BLRState:
        """Check the model (errors are raised here, before any fitting) and start."""
        plate_model = trace_model(
            self.model, *args, plate=self.plate, with_predictor=False, **kwargs
        )
        if self.guide.prototype_trace is None:
            with handlers.seed(rng_seed=rng_key):
                self.guide._setup_prototype(*args, **kwargs)
        mean = self.guide._init_latent
        if mean.shape != plate_model.init_theta.shape:
            raise ValueError(
                f"guide latent size {mean.shape} differs from the model's "
                f"{plate_model.init_theta.shape}"
            )
        arrays, static = split_arguments(args, kwargs)
        optim_state = _blr_init(self.model, self.optimizer, self.plate, static, mean, arrays)
        data_key = jax.random.fold_in(rng_key, 1)
        return BLRState(optim_state, rng_key, jnp.zeros((), jnp.int32), data_key)

    def update(self, state: BLRState, *args: Any, batch_size: int | None = None, **kwargs: Any):
        """One optimizer step; returns ``(state, info)`` with ``info.loss``.

        Compiled once per model, optimizer, ``batch_size`` and argument structure: a
        second call with arrays of the same shapes does not recompile.

        Parameters
        ----------
        state : BLRState
        *args, **kwargs
            The model's arguments (``batch_size`` is taken by this method, not passed on).
        batch_size : int, optional
            Minibatch size ``B``: the loss is the prior plus ``N / B`` times the
            log-likelihood terms of ``B`` examples, a fresh random permutation of the
            examples each epoch of ``N // B`` steps (the last ``N mod B`` examples of a
            permutation are skipped that epoch). Implemented by per-example weights
            (``N / B`` on the batch, 0 elsewhere), so each step still evaluates all ``N``
            log likelihoods: O(N) per step, it saves no compute, only gives the
            stochastic-gradient behaviour. None: full batch.
        """
        arrays, static = split_arguments(args, kwargs)
        if batch_size is not None:
            batch_size = operator.index(batch_size)
            if state.step is None or state.data_key is None:
                raise ValueError("minibatches need a BLRState from BLR.init (step, data_key)")
        return _blr_update(
            self.model, self.optimizer, self.plate, static, batch_size, state, arrays
        )

    def get_params(self, state: BLRState) -> dict:
        """Guide params of the current Gaussian (no extra Hessian pass)."""
        mean, precision = self.optimizer.mean_precision(state.optim_state, self.guide.covariance)
        return self.guide.params_from_mean_precision(mean, precision)

    def run(
        self,
        rng_key: jax.Array,
        num_steps: int,
        *args: Any,
        progress_bar: bool = True,
        init_state: BLRState | None = None,
        batch_size: int | None = None,
        checkpoints: Sequence[int] | None = None,
        checkpoint_fn: Callable[[dict, int], Any] | None = None,
        **kwargs: Any,
    ) -> BLRRunResult:
        """Run up to ``num_steps`` steps, stopping early once the optimizer converges.

        ``batch_size``: minibatches of that size (see :meth:`update`); None: full batch.

        ``checkpoints``: steps (counted from 1) after which ``checkpoint_fn(params, step)``
        is called on the current guide params, read off the optimizer's state (no extra
        Hessian pass for :func:`~numpyro_mpe.optim.iblr` or
        :func:`~numpyro_mpe.optim.online_newton`). By default it is
        :func:`numpyro_mpe.loo` on the full data: MPE-LOO during training. Other steps
        are not slowed. Results are in ``BLRRunResult.checkpoints``.

        Raises
        ------
        NotPositiveDefiniteError
            When the final precision is not positive definite.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        wanted = set() if checkpoints is None else {int(step) for step in checkpoints}
        bad = sorted(step for step in wanted if not 1 <= step <= num_steps)
        if bad:
            raise ValueError(f"checkpoint steps must be in [1, {num_steps}], got {bad}")
        if wanted and checkpoint_fn is None:
            from numpyro_mpe.loo import loo

            def checkpoint_fn(params, step):
                return loo(self.model, self.guide, params, *args, plate=self.plate, **kwargs)

        recorded = {}
        state = self.init(rng_key, *args, **kwargs) if init_state is None else init_state
        losses = []
        with tqdm(total=num_steps, disable=not progress_bar, desc="BLR") as bar:
            for step in range(1, num_steps + 1):
                state, info = self.update(state, *args, batch_size=batch_size, **kwargs)
                losses.append(info.loss)
                if step in wanted:
                    recorded[step] = checkpoint_fn(self.get_params(state), step)
                bar.update(1)
                bar.set_postfix_str(f"loss {float(info.loss):.6g}")
                if bool(info.converged):
                    break
        # A rejected step with a negligible decrement is float precision, not a failure.
        if hasattr(info, "accepted") and not bool(info.accepted) and info.decrement > 1e-6:
            warnings.warn(
                "BLR.run: no step decreased the loss any more; stopped with Newton "
                f"decrement {float(info.decrement):.3g} (float precision reached, or a "
                "badly scaled model)",
                RuntimeWarning,
                stacklevel=2,
            )
        params = self.get_params(state)
        check_positive_definite(params[self.guide.precision_name], "BLR.run")
        return BLRRunResult(
            params, state, jnp.stack(losses), recorded if checkpoints is not None else None
        )
