"""``BLR``: the driver that fits an :class:`~numpyro_mpe.AutoGaussian`, shaped like SVI."""

from __future__ import annotations

import functools
import math
import operator
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from tqdm.auto import tqdm

from numpyro_mpe.core.curvature import gauss_newton_matrix
from numpyro_mpe.core.gaussian import check_positive_definite
from numpyro_mpe.core.model import ModelError, join_arguments, split_arguments, trace_model
from numpyro_mpe.core.options import check_flag
from numpyro_mpe.core.rows import (
    MinibatchPlan,
    gather_rows,
    leading_axis_mask,
    limit_compilations,
    plan_row_slicing,
)
from numpyro_mpe.infer.guide import AutoGaussian, array_arguments, check_model
from numpyro_mpe.infer.minibatch import check_batch_size, minibatch_indices
from numpyro_mpe.optim.base import (
    NaturalGradientOptimizer,
    check_count,
    check_rng_key,
    check_schedule,
)

__all__ = [
    "BLR",
    "BLRRunResult",
    "BLRState",
    "ConvergenceWarning",
    "blr_update",
    "check_optimizer_for_guide",
    "default_checkpoint",
    "gauss_newton_fn",
    "negative_log_joint",
]


class ConvergenceWarning(UserWarning):
    """A fit that did not converge or diverged: its Gaussian is not the posterior."""


def _check_integer(name: str, value: Any) -> int:
    """``value`` as an int, or a ``TypeError`` naming it (a bool or 2.5 is refused)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _check_steps(name: str, value: Any) -> int:
    """``value`` as an int of at least 1, or a ``TypeError`` / ``ValueError`` naming it."""
    check_count(name, value, 1)
    return int(value)


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
        Steps taken (picks the minibatch: epoch ``step // ceil(N / B)``).
    data_key : jax.Array or None
        Key of the minibatch permutations: epoch ``e`` visits the examples in the order
        of a pseudorandom permutation keyed by ``fold_in(data_key, e)``
        (:func:`minibatch_indices`).
    minibatch : MinibatchPlan or None
        How minibatches are evaluated (gathered, O(B), or weighted, O(N)); set by
        :meth:`BLR.init` or the first :meth:`BLR.update` with a ``batch_size``. None
        for full-batch fits.
    """

    optim_state: Any
    rng_key: jax.Array
    step: jax.Array | None = None
    data_key: jax.Array | None = None
    minibatch: MinibatchPlan | None = None


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
    converged : bool
        Whether the last step reported convergence (``info.converged``), or ended with
        a Newton decrement below the loss's float resolution (``10 eps |L|``: float32
        cannot reach ``tol = 1e-10``). False when ``num_steps`` ran out first, when
        Newton stopped because no step decreased the loss any more, and always for
        optimizers that never report it (:func:`~numpyro_mpe.optim.iblr`,
        :func:`~numpyro_mpe.optim.von` with draws), which run the steps they are given.
        :meth:`BLR.run` warns (:class:`ConvergenceWarning`) in the first two cases on a
        full batch, and for every optimizer when the loss rose over the run or the data
        look separable. For optimizers that average their precision over the steps
        (iBLR, VON with draws) it warns on a full batch while that average has not
        settled: its initial value still carries more than half the weight or pulls it
        more than 5% away from the estimates' average, or its Monte Carlo error is above
        10% (``info.initial_weight``, ``initial_bias``, ``precision_error``).
    losses : jax.Array, shape (num_steps_taken,)
        Negative log joint at the mean after each step (with minibatches, its unbiased
        estimate from the step's batch; for :func:`~numpyro_mpe.optim.iblr`, at the
        step's samples).
    """

    params: dict
    state: BLRState
    losses: jax.Array
    checkpoints: dict | None = None
    converged: bool | None = None


def _selected_terms(model, plate, static, arrays, batch=None, plan=None, with_predictor=False):
    """The model view a step evaluates, each likelihood term's weight, and ``N``.

    Full batch (``batch`` None): all ``N`` terms, weight 1. With ``batch = (key, step,
    B)``, the ``B`` examples of :func:`minibatch_indices`, weight ``N / B``: with a
    ``plan`` whose path is ``"gather"`` (and arrays shaped as when it was made) the model
    runs on the batch's rows only, O(B); otherwise all ``N`` terms are weighted (``N / B``
    on the batch, 0 elsewhere), O(N).
    """
    if batch is not None and plan is not None and plan.path == "gather":
        num_examples = plan.num_examples
        if leading_axis_mask(arrays, num_examples) == plan.gathered:
            data_key, step, batch_size = batch
            members = minibatch_indices(data_key, step, batch_size, num_examples)
            args, kwargs = join_arguments(gather_rows(arrays, plan, members), static)
            part = trace_model(model, *args, plate=plate, with_predictor=with_predictor, **kwargs)
            return part, num_examples / batch_size, num_examples
    args, kwargs = join_arguments(arrays, static)
    plate_model = trace_model(model, *args, plate=plate, with_predictor=with_predictor, **kwargs)
    num_examples = plate_model.num_examples
    if batch is None:
        return plate_model, 1.0, num_examples
    data_key, step, batch_size = batch
    check_batch_size(batch_size, num_examples)
    members = minibatch_indices(data_key, step, batch_size, num_examples)
    weights = jnp.zeros(num_examples, plate_model.init_theta.dtype)
    return plate_model, weights.at[members].set(num_examples / batch_size), num_examples


def negative_log_joint(model, plate, static, arrays, batch=None, plan=None):
    """``theta -> -log p(theta, y)``, or with ``batch = (key, step, B)`` its estimate
    (the prior plus ``N / B`` times the batch's log likelihood; see
    :func:`_selected_terms`), and ``N``."""
    part, weights, num_examples = _selected_terms(model, plate, static, arrays, batch, plan)

    def loss_fn(theta):
        return -(part.log_prior(theta) + jnp.sum(weights * part.log_lik(theta)))

    return loss_fn, num_examples


def gauss_newton_fn(model, plate, static, arrays, names, batch=None, plan=None):
    """``theta -> (P, P)``: the prior's Hessian plus the generalised Gauss-Newton matrix
    of the (selected, weighted) likelihood terms
    (:func:`~numpyro_mpe.core.curvature.gauss_newton_matrix`). ``names``: the
    predictor's parameter names (:func:`_predictor_names`, found outside ``jit``)."""
    part, weights, _ = _selected_terms(
        model, plate, static, arrays, batch, plan, with_predictor=names
    )
    return gauss_newton_matrix(part.predictor, part.log_prior, weights)


def _predictor_names(model, plate, args, kwargs) -> tuple[str, ...]:
    """The predictor's parameter names, for the Gauss-Newton matrix (traced eagerly:
    finding the predictor needs concrete values)."""
    plate_model = trace_model(model, *args, plate=plate, with_predictor=True, **kwargs)
    if plate_model.predictor is None:
        raise ModelError(
            "the Gauss-Newton Hessian needs an observation whose distribution has a "
            "predictor (one observed site in the plate, its parameters rebuilt from "
            "the latents); use hessian='exact' or 'price'"
        )
    return plate_model.predictor.names


def check_optimizer_for_guide(optimizer: Any, guide: AutoGaussian, where: str = "") -> None:
    """Refuse what is not a :class:`NaturalGradientOptimizer`, or one that keeps another
    covariance than the guide's (a diagonal fit read as a dense guide's, or back).

    Raises
    ------
    TypeError, ValueError
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(optimizer, NaturalGradientOptimizer):
        raise TypeError(
            f"{prefix}optimizer must be a numpyro_mpe.optim optimizer "
            f"(NaturalGradientOptimizer, e.g. optim.newton()), got {type(optimizer).__name__}"
        )
    if optimizer.covariance not in (None, guide.covariance):
        raise ValueError(
            f"{prefix}the optimizer keeps a {optimizer.covariance} precision but the guide "
            f"is AutoGaussian(covariance={guide.covariance!r}); use "
            f"AutoGaussian(model, covariance={optimizer.covariance!r}) or give the "
            f"optimizer covariance={guide.covariance!r}"
        )


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 7))
def _blr_init(model, optimizer, plate, static, mean, rng_key, arrays, names=None):
    loss_fn, num_examples = negative_log_joint(model, plate, static, arrays)
    gauss_newton = None
    if names is not None:
        gauss_newton = gauss_newton_fn(model, plate, static, arrays, names)
    return optimizer.init(
        mean, loss_fn, rng_key=rng_key, num_examples=num_examples, gauss_newton_fn=gauss_newton
    )


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 7))
def blr_update(model, optimizer, plate, static, batch_size, state, arrays, names=None):
    """One jitted :class:`BLR` step: ``(state, info)``. Compiled once per model,
    optimizer, plate, static arguments and ``batch_size``; :meth:`BLR.update` calls it
    after its checks (and benchmarks time it directly)."""
    batch = None if batch_size is None else (state.data_key, state.step, batch_size)
    loss_fn, num_examples = negative_log_joint(
        model, plate, static, arrays, batch, state.minibatch
    )
    next_key, step_key = jax.random.split(state.rng_key)
    gauss_newton = None
    if names is not None:
        gauss_newton = gauss_newton_fn(model, plate, static, arrays, names, batch, state.minibatch)
    optim_state, info = optimizer.update(
        state.optim_state,
        loss_fn,
        rng_key=step_key,
        num_examples=num_examples,
        gauss_newton_fn=gauss_newton,
    )
    step = None if state.step is None else state.step + 1
    return BLRState(optim_state, next_key, step, state.data_key, state.minibatch), info


def _last_finite(losses: list) -> str:
    """The last finite loss and its step, for :meth:`BLR.run`'s divergence error."""
    values = [float(loss) for loss in losses]
    for step in range(len(values), 0, -1):
        if math.isfinite(values[step - 1]):
            return f"{values[step - 1]:.6g} at step {step}"
    return "none"


@functools.singledispatch
def default_checkpoint(guide: Any, model: Callable, args: tuple, kwargs: dict, plate):
    """``(params, step) -> value``: what :meth:`BLR.run` records at a checkpoint when no
    ``checkpoint_fn`` is given, chosen by the guide's type.

    :mod:`numpyro_mpe.crossval.mpe_loo` registers MPE-LOO for
    :class:`~numpyro_mpe.AutoGaussian` (so this layer never imports cross-validation).
    """
    raise TypeError(
        f"no default checkpoint function for a {type(guide).__name__}; pass checkpoint_fn"
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
        check_model(model, "BLR")
        if not isinstance(guide, AutoGaussian):
            raise TypeError(f"guide must be a numpyro_mpe.AutoGaussian, got {type(guide)}")
        if guide.model != model:
            # The fit would run this model, the guide would unpack its params into the
            # sites of its own: latents under another model's names, silently.
            raise ValueError(
                f"BLR: the guide was built for another model "
                f"({getattr(guide.model, '__name__', guide.model)!r}, not "
                f"{getattr(model, '__name__', model)!r}); use AutoGaussian(model) of the "
                "model fitted"
            )
        check_optimizer_for_guide(optimizer, guide)
        self.model = model
        self.guide = guide
        self.optimizer = optimizer
        self.plate = plate
        self._names_cache = {}

    def init(
        self,
        rng_key: jax.Array,
        *args: Any,
        batch_size: int | None = None,
        init_params: dict | None = None,
        **kwargs: Any,
    ) -> BLRState:
        """Check the model (errors are raised here, before any fitting) and start.

        With ``batch_size``, also decide how minibatches are evaluated
        (``state.minibatch``, a :class:`MinibatchPlan`; see :meth:`update`) and check
        ``batch_size`` against ``N``. Without it that is done by the first :meth:`update`
        with a ``batch_size``.

        ``init_params`` (as in :meth:`numpyro.infer.SVI.init`): guide params, e.g. a
        previous fit's ``result.params``; the optimizer starts at their mean
        (``{prefix}_loc``, shape ``(P,)``), every part of its state evaluated under the
        model's arguments given here (a warm start for a new hyperparameter value, as
        :func:`~numpyro_mpe.select_prior` does). Default: the guide's initial mean
        (numpyro's ``init_to_median``, or the guide's ``init_loc_fn``).
        """
        check_rng_key(rng_key, "BLR.init")
        self._refuse_plate(kwargs, "init")
        self._refuse_minibatches(batch_size)
        args, kwargs = array_arguments(args, kwargs, "BLR.init")
        plate_model = trace_model(
            self.model, *args, plate=self.plate, with_predictor=False, **kwargs
        )
        if self.guide.prototype_trace is None:
            with handlers.seed(rng_seed=rng_key):
                self.guide._setup_prototype(*args, **kwargs)
        mean = self.guide._init_latent
        if init_params is not None:
            if not isinstance(init_params, dict):
                raise TypeError(
                    f"init_params must be guide params (a dict holding "
                    f"{self.guide.loc_name!r}), got {type(init_params).__name__}"
                )
            if self.guide.loc_name not in init_params:
                raise ValueError(
                    f"init_params must hold the guide's mean {self.guide.loc_name!r}; got "
                    f"keys {sorted(init_params)}"
                )
            mean = jnp.asarray(init_params[self.guide.loc_name], mean.dtype)
            if not bool(jnp.all(jnp.isfinite(mean))):
                index = int(np.argmax(~np.isfinite(np.asarray(mean)).reshape(-1)))
                raise ValueError(
                    f"init_params[{self.guide.loc_name!r}] is not finite at index {index}"
                )
        if mean.shape != plate_model.init_theta.shape:
            raise ValueError(
                f"guide latent size {mean.shape} differs from the model's "
                f"{plate_model.init_theta.shape}"
            )
        plan = None
        if batch_size is not None:
            check_batch_size(_check_integer("batch_size", batch_size), plate_model.num_examples)
            plan = plan_row_slicing(self.model, self.plate, args, kwargs, plate_model)
        arrays, static = split_arguments(args, kwargs)
        names = self._gauss_newton_names(args, kwargs, static)
        settings = {"model": self.model, "optimizer": self.optimizer, "plate": self.plate}
        limit_compilations(
            _blr_init, (mean, arrays), {**settings, "static": static, "names": names}
        )
        optim_state = _blr_init(
            self.model,
            self.optimizer,
            self.plate,
            static,
            mean,
            jax.random.fold_in(rng_key, 2),
            arrays,
            names,
        )
        data_key = jax.random.fold_in(rng_key, 1)
        return BLRState(optim_state, rng_key, jnp.zeros((), jnp.int32), data_key, plan)

    def _with_plan(self, state: BLRState, batch_size: int, args: tuple, kwargs: dict):
        """``state`` with its :class:`MinibatchPlan` (made now if missing), ``B`` checked."""
        plan = state.minibatch
        if plan is None:
            plate_model = trace_model(
                self.model, *args, plate=self.plate, with_predictor=False, **kwargs
            )
            check_batch_size(batch_size, plate_model.num_examples)
            plan = plan_row_slicing(self.model, self.plate, args, kwargs, plate_model)
            return state._replace(minibatch=plan)
        check_batch_size(batch_size, plan.num_examples)
        return state

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
            Minibatch size ``B`` in ``[1, N]``: the loss is the prior plus ``N / B`` times
            the log-likelihood terms of ``B`` examples, an unbiased estimate of the full
            loss, so the fit targets the full-data posterior. Each epoch of ``ceil(N /
            B)`` steps visits the examples in a fresh random order
            (:func:`minibatch_indices`). None: full batch.

            How a batch is evaluated is decided once (``state.minibatch``, a
            :class:`MinibatchPlan`, made by :meth:`init` with ``batch_size`` or by the
            first call here): ``"gather"`` when the model can run on the batch alone, the
            usual case of a plate whose size is the leading axis of the data arrays
            (``numpyro.plate("data", X.shape[0])``). Then every array argument whose
            leading axis has length ``N`` is indexed by the batch, the model is traced on
            those ``B`` rows and the step costs O(B). Otherwise (the plate's size is a
            Python number, an array with ``N`` rows is not per example, the model fails
            on a slice) the fallback ``"weights"`` runs the model on all ``N`` examples
            and weights their terms (``N / B`` on the batch, 0 elsewhere): the same
            batches and loss, but O(N) per step. ``state.minibatch.reason`` says why.
        """
        self._refuse_plate(kwargs, "update")
        if not isinstance(state, BLRState):
            raise TypeError(
                f"BLR.update: state must be a BLRState (from BLR.init, or result.state of "
                f"BLR.run), got {type(state).__name__}"
            )
        self._refuse_minibatches(batch_size)
        arrays, static = split_arguments(args, kwargs)
        if batch_size is not None:
            batch_size = _check_integer("batch_size", batch_size)
            if state.step is None or state.data_key is None:
                raise ValueError("minibatches need a BLRState from BLR.init (step, data_key)")
            state = self._with_plan(state, batch_size, args, kwargs)
        names = self._gauss_newton_names(args, kwargs, static)
        # One compilation per data size: bounded, as loo's (a run per size would keep all).
        settings = {"model": self.model, "optimizer": self.optimizer, "plate": self.plate}
        limit_compilations(
            blr_update,
            (state, arrays),
            {**settings, "static": static, "batch_size": batch_size, "names": names},
        )
        return blr_update(
            self.model, self.optimizer, self.plate, static, batch_size, state, arrays, names
        )

    def _gauss_newton_names(self, args: tuple, kwargs: dict, static) -> tuple | None:
        """The predictor's names when the optimizer takes a Gauss-Newton matrix (found
        once per argument structure), else None."""
        if not self.optimizer.uses_gauss_newton:
            return None
        if static not in self._names_cache:
            self._names_cache[static] = _predictor_names(self.model, self.plate, args, kwargs)
        return self._names_cache[static]

    def get_params(self, state: BLRState) -> dict:
        """Guide params of the current Gaussian (no extra Hessian pass)."""
        if not isinstance(state, BLRState):
            raise TypeError(
                f"BLR.get_params: state must be a BLRState (result.state of BLR.run, or "
                f"from BLR.init / BLR.update), got {type(state).__name__}; a BLRRunResult "
                "holds its params already (result.params)"
            )
        mean, precision = self.optimizer.mean_precision(state.optim_state, self.guide.covariance)
        return self.guide.params_from_mean_precision(mean, precision)

    def run(
        self,
        rng_key: jax.Array,
        num_steps: int | None,
        *args: Any,
        progress_bar: bool = True,
        init_state: BLRState | None = None,
        batch_size: int | None = None,
        epochs: int | None = None,
        checkpoints: Sequence[int] | None = None,
        checkpoint_fn: Callable[[dict, int], Any] | None = None,
        init_params: dict | None = None,
        **kwargs: Any,
    ) -> BLRRunResult:
        """Run up to ``num_steps`` steps, stopping early once the optimizer converges.

        ``batch_size``: minibatches of that size (see :meth:`update`); None: full batch.

        ``init_params``: start from these guide params' mean (see :meth:`init`), as
        :meth:`numpyro.infer.SVI.run`. ``init_state`` already holds a start: giving
        both is a ``ValueError``.

        ``epochs``: instead of ``num_steps`` (pass ``num_steps=None``), run ``epochs *
        ceil(N / B)`` steps, each example seen at least once per epoch; without
        ``batch_size`` an epoch is one full-batch step. Example:
        ``blr.run(key, None, X, y, batch_size=256, epochs=5)``.

        ``checkpoints``: steps (counted from 1) after which ``checkpoint_fn(params, step)``
        is called on the current guide params, read off the optimizer's state (no extra
        Hessian pass for :func:`~numpyro_mpe.optim.iblr` or
        :func:`~numpyro_mpe.optim.online_newton`). By default it is
        :func:`numpyro_mpe.loo` on the full data (through :func:`~numpyro_mpe.prepare_loo`,
        which traces the model once for all checkpoints): MPE-LOO during training. Other steps
        are not slowed. Results are in ``BLRRunResult.checkpoints``.

        ``progress_bar``: a tqdm bar, with tqdm's conventions: refreshed at most every
        ``mininterval`` (0.1 s; the loss is read back from the device only then), and
        off when standard error is not a terminal (a log, CI, captured output), so no
        line is written per step. ``progress_bar=False`` turns it off everywhere.

        Raises
        ------
        TypeError
            ``progress_bar`` not a bool; ``init_state`` not a :class:`BLRState`.
        ValueError
            When both or neither of ``num_steps`` and ``epochs`` are given, or either is
            below 1, or ``batch_size`` is outside ``[1, N]``; a data argument whose
            finite values overflow jax's float dtype (1e300 in float32).
        FloatingPointError
            At the first step whose loss is not finite (the optimizer diverged), naming
            the step and the last finite loss, instead of running on with NaN.
        NotPositiveDefiniteError
            When the final precision is not positive definite.

        Warns
        -----
        ConvergenceWarning
            When the loss rose over the run; on a full batch, when an optimizer that
            reports convergence did not, and when a stochastic optimizer's precision
            average has not settled (see :attr:`BLRRunResult.converged`), e.g.
            ``optim.iblr(0.1, beta2=0.99999)`` after 3000 steps: "the precision of
            optim.iblr has not settled after 3000 steps: its initial value still carries
            weight 0.97 and shifts it by ...".
        """
        check_rng_key(rng_key, "BLR.run")
        self._refuse_plate(kwargs, "run")
        check_flag("progress_bar", progress_bar)
        args, kwargs = array_arguments(args, kwargs, "BLR.run")
        if init_state is not None and not isinstance(init_state, BLRState):
            raise TypeError(
                f"init_state must be a BLRState (result.state of an earlier run), got "
                f"{type(init_state).__name__}"
            )
        if num_steps is not None and epochs is not None:
            raise ValueError(
                f"pass num_steps or epochs, not both (got num_steps={num_steps}, "
                f"epochs={epochs}); use num_steps=None with epochs"
            )
        if init_state is not None and init_params is not None:
            raise ValueError("pass init_state or init_params, not both")
        if num_steps is None and epochs is None:
            raise ValueError("num_steps is None: pass num_steps, or num_steps=None and epochs")
        self._refuse_minibatches(batch_size)
        if batch_size is not None:
            batch_size = _check_integer("batch_size", batch_size)
        state = init_state
        if epochs is not None:
            epochs = _check_steps("epochs", epochs)
            steps_per_epoch = 1
            if batch_size is not None:
                if state is None:
                    state = self.init(
                        rng_key, *args, batch_size=batch_size, init_params=init_params, **kwargs
                    )
                else:
                    state = self._with_plan(state, batch_size, args, kwargs)
                steps_per_epoch = math.ceil(state.minibatch.num_examples / batch_size)
            num_steps = epochs * steps_per_epoch
        num_steps = _check_steps("num_steps", num_steps)
        wanted = _checkpoint_steps(checkpoints)
        bad = sorted(step for step in wanted if not 1 <= step <= num_steps)
        if bad:
            raise ValueError(f"checkpoint steps must be in [1, {num_steps}], got {bad}")
        first_step = 0 if state is None or state.step is None else int(state.step)
        check_schedule(self.optimizer, first_step, first_step + num_steps)
        if checkpoint_fn is not None and not callable(checkpoint_fn):
            raise TypeError(
                f"checkpoint_fn must be a function (params, step) -> value, got "
                f"{type(checkpoint_fn).__name__}"
            )
        if wanted and checkpoint_fn is None:
            # Traced and planned once here; each checkpoint runs the compiled part only.
            checkpoint_fn = default_checkpoint(self.guide, self.model, args, kwargs, self.plate)

        recorded = {}
        if state is None:
            state = self.init(
                rng_key, *args, batch_size=batch_size, init_params=init_params, **kwargs
            )
        losses = []
        # tqdm's conventions: disable=None turns the bar off when stderr is not a
        # terminal (a log gets no line per step); the loss is read back only as often as
        # the bar refreshes (mininterval), not every step.
        with tqdm(total=num_steps, disable=None if progress_bar else True, desc="BLR") as bar:
            shown = time.monotonic()
            for step in range(1, num_steps + 1):
                state, info = self.update(state, *args, batch_size=batch_size, **kwargs)
                losses.append(info.loss)
                converged, loss = jax.device_get((info.converged, info.loss))
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"BLR.run: the loss is {loss} after step {step} of {num_steps} (last "
                        f"finite: {_last_finite(losses)}); the optimizer diverged. Take a "
                        "smaller lr or a decaying schedule, or fit with optim.newton()"
                    )
                if step in wanted:
                    recorded[step] = checkpoint_fn(self.get_params(state), step)
                if not bar.disable and time.monotonic() - shown >= bar.mininterval:
                    bar.set_postfix_str(f"loss {float(info.loss):.6g}", refresh=False)
                    shown = time.monotonic()
                bar.update(1)
                if bool(converged):
                    break
        # Stacked on the host: jnp.stack of T scalars would compile a T-ary concatenate
        # for every new run length (2 s for T = 1000 on CPU).
        losses = jnp.asarray(np.stack(jax.device_get(losses)))
        params = self.get_params(state)
        check_positive_definite(params[self.guide.precision_name], "BLR.run")
        converged, diverged = self._warn_unless_converged(
            info, losses, batch_size, num_steps, step
        )
        if not diverged:
            if batch_size is None:
                self._warn_if_unsettled(info, step)
            self._warn_if_saturated(params, args, kwargs)
        return BLRRunResult(
            params, state, losses, recorded if checkpoints is not None else None, converged
        )

    def _warn_unless_converged(
        self, info, losses, batch_size, num_steps, steps_taken
    ) -> tuple[bool, bool]:
        """Warn (:class:`ConvergenceWarning`) when the run diverged, stalled or ran out
        of steps before its optimizer reported convergence; return ``(converged,
        diverged)``."""
        diverged = _loss_rose(np.asarray(losses, dtype=float))
        if diverged is not None:
            warnings.warn(
                f"BLR.run: the loss rose from {diverged[0]:.6g} to {diverged[1]:.6g} over "
                f"the run; the fit is diverging (lr too large, or a schedule that grows), "
                "and its Gaussian is not the posterior",
                ConvergenceWarning,
                stacklevel=3,
            )
        # A rejected step with a negligible decrement is float precision, not a failure.
        stalled = hasattr(info, "accepted") and not bool(info.accepted) and info.decrement > 1e-6
        if stalled:
            warnings.warn(
                "BLR.run: no step decreased the loss any more; stopped with Newton "
                f"decrement {float(info.decrement):.3g} (float precision reached, or a "
                "badly scaled model)",
                ConvergenceWarning,
                stacklevel=3,
            )
        converged = bool(info.converged) and not stalled
        decrement = getattr(info, "decrement", None)
        if not converged and not stalled and decrement is not None:
            # A predicted decrease below the loss's float resolution cannot be realised:
            # converged as far as the dtype allows (float32 never reaches tol=1e-10).
            resolution = 10 * np.finfo(np.asarray(info.loss).dtype).eps
            converged = float(decrement) <= resolution * max(1.0, abs(float(info.loss)))
        if (
            not converged
            and not stalled
            and diverged is None
            and self.optimizer.reports_convergence
            and batch_size is None
        ):
            said = "" if decrement is None else f" (Newton decrement {float(decrement):.3g})"
            warnings.warn(
                f"BLR.run: not converged after {steps_taken} of num_steps={num_steps} "
                f"steps{said}; run more steps (result.state continues the fit), or check "
                "that the posterior has a mode (separable data under a flat prior has none)",
                ConvergenceWarning,
                stacklevel=3,
            )
        return converged, diverged is not None

    def _warn_if_unsettled(self, info: Any, steps_taken: int) -> None:
        """Warn when a stochastic optimizer's precision average has not settled: its
        initial value still shows (``info.initial_weight`` above 1/2, or
        ``info.initial_bias`` above 5%), or its estimated Monte Carlo standard error
        ``info.precision_error`` is above 10%. Optimizers without these diagnostics
        (Newton, online Newton) are not checked."""
        if not all(
            hasattr(info, name) for name in ("initial_weight", "initial_bias", "precision_error")
        ):
            return
        weight, bias, error = (
            float(value)
            for value in (info.initial_weight, info.initial_bias, info.precision_error)
        )
        reasons = []
        if not (weight <= _INITIAL_WEIGHT and bias <= _INITIAL_BIAS):
            reasons.append(
                f"its initial value still carries weight {weight:.3g} and shifts it by "
                f"{bias:.1%} from the average of its estimates"
            )
        if not error <= _PRECISION_ERROR:
            reasons.append(f"its Monte Carlo standard error is about {error:.1%}")
        if not reasons:
            return
        name = f"optim.{self.optimizer.name}" if self.optimizer.name else "the optimizer"
        warnings.warn(
            f"BLR.run: the precision of {name} has not settled after {steps_taken} "
            f"steps: {'; '.join(reasons)}. Run more steps (result.state continues the "
            "fit) or draw more mc_samples per step; a fixed averaging rate (iblr's beta2 "
            "close to 1, von's lr) keeps the initial value for about 1 / (1 - beta2) or "
            "1 / lr steps, while iblr's default beta2=None averages over the run",
            ConvergenceWarning,
            stacklevel=3,
        )

    def _warn_if_saturated(self, params: dict, args: tuple, kwargs: dict) -> None:
        """Warn when discrete observations are fitted with probability one: separable
        data, where the likelihood has no maximum and the prior alone holds the mean."""
        observed = [
            site
            for site in (self.guide.prototype_trace or {}).values()
            if site["type"] == "sample" and site["is_observed"]
        ]
        if not observed or not all(site["fn"].support.is_discrete for site in observed):
            return
        plate_model = trace_model(
            self.model, *args, plate=self.plate, with_predictor=False, **kwargs
        )
        # Eager, not jitted: a jit of this fresh function would compile on every run.
        log_lik = np.asarray(plate_model.log_lik(params[self.guide.loc_name]))
        if plate_model.observed_mask is not None:  # masked examples have no term
            log_lik = log_lik[plate_model.observed_mask]
        saturated = int(np.sum(log_lik > _SATURATED_LOG_LIK))
        if saturated >= max(1, _SATURATED_SHARE * log_lik.size):
            warnings.warn(
                f"BLR.run: {saturated} of {log_lik.size} examples are fitted with "
                f"probability above 1 - {-_SATURATED_LOG_LIK:.0e}: the data look "
                "separable, the likelihood has no maximum and the mean is held by the "
                "prior alone (a flat prior lets it drift); use an informative prior",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _refuse_plate(self, kwargs: dict, method: str) -> None:
        if "plate" in kwargs:
            raise TypeError(
                f"BLR.{method} got plate={kwargs['plate']!r}: the plate of examples is set "
                "once, BLR(model, guide, optimizer, plate=...) (a model argument named "
                "plate is passed positionally)"
            )

    def _refuse_minibatches(self, batch_size: int | None) -> None:
        if batch_size is not None and self.optimizer.full_batch_only:
            raise ValueError(
                f"batch_size={batch_size}: this optimizer (optim.newton) needs the full-data "
                "loss at every step; for minibatches use optim.online_newton or optim.iblr"
            )


# When BLR.run calls a stochastic optimizer's precision unsettled: the initial value's
# weight in it, its pull away from the estimates' average, and the Monte Carlo error.
_INITIAL_WEIGHT = 0.5
_INITIAL_BIAS = 0.05
_PRECISION_ERROR = 0.1

# Per-example log likelihood above which a discrete observation counts as fitted with
# probability one, and the share of such examples that makes BLR.run warn.
_SATURATED_LOG_LIK = -1e-8
_SATURATED_SHARE = 0.1


def _checkpoint_steps(checkpoints: Any) -> set[int]:
    """The set of checkpoint steps, each an integer (``TypeError`` naming the culprit)."""
    if checkpoints is None:
        return set()
    if isinstance(checkpoints, str) or not isinstance(checkpoints, Sequence | np.ndarray):
        raise TypeError(
            f"checkpoints must be a sequence of steps, e.g. [100, 200], got {checkpoints!r}"
        )
    return {_check_integer("a checkpoint step", step) for step in checkpoints}


def _loss_rose(losses: np.ndarray) -> tuple[float, float] | None:
    """``(lowest, final)`` when the run ended clearly above its lowest point, else None.

    ``final`` is the mean of the last tenth of the losses and ``lowest`` the least of the
    first loss and such window means, so that sampling noise averages out.
    """
    window = max(1, losses.size // 10)
    if losses.size < 2:
        return None
    means = np.convolve(losses, np.ones(window) / window, mode="valid")
    lowest, final = min(float(losses[0]), float(means.min())), float(means[-1])
    if final > lowest + max(5.0, 0.1 * abs(lowest)):
        return lowest, final
    return None
