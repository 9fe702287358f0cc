"""Training one configuration: the compiled loop of :mod:`mbstudy.step`, evaluated every few steps.

The steps between two evaluations run inside ONE compiled ``lax.scan``; Python
only loops over evaluations. Each program (and the evaluation) is compiled
ahead of time once per shape and kept for the life of the process, so a
second run of the same shape compiles nothing.

A run is reported as diverged at the first evaluation where a step's batch
loss was NaN or inf (the updates stop there, :mod:`mbstudy.step`), the full
training loss is NaN or inf, or it exceeds ``diverge_factor`` times its
initial value.

A run has up to two targets: ``target_loss`` on the full training loss and
``target_val`` on the validation split (error rate for classification, MSE
for regression); each is checked at every evaluation, and ``stop_at_target``
ends the run once all it sets are reached.

A run that stops at its targets can be given up early (``give_up``, what a
sweep's pruning passes): a step for each target (``{"loss": s, "val": s}``,
or one int for all). It stops, with outcome ``pruned``, at the first
evaluation at or after the give-up step of EVERY target it has not reached.
Its steps to such a target, had it gone on, would be larger than that step,
so a minimum over runs that some other run reached by then is the same with
or without it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbstudy import _checks
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.data import Dataset, load_dataset, with_validation
from mbstudy.evaluate import EvalData, evaluate_jit, training_loss_jit, validation_rows
from mbstudy.losses import LOSSES
from mbstudy.metrics import metric_for
from mbstudy.schedule import data_step
from mbstudy.step import Program, TrainState, batch_indices, init_state, run_chunk_jit, traced_hyper

__all__ = ["Checkpoint", "RunResult", "TrainConfig", "eval_data", "evaluation_sizes", "train"]

_COMPILED: dict[Any, Any] = {}


def _compiled(fn, args, static: dict):
    """AOT-compile ``fn`` once per (static args, argument shapes); returns (compiled, seconds)."""
    avals = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(args))
    key = (fn, tuple(sorted(static.items())), avals)
    if key in _COMPILED:
        return _COMPILED[key], 0.0
    t0 = time.perf_counter()
    _COMPILED[key] = fn.lower(*args, **static).compile()
    return _COMPILED[key], time.perf_counter() - t0


class Checkpoint(NamedTuple):
    """A run's training state after ``step`` steps (``RunResult.checkpoints``; ``train``'s ``start``)."""

    step: int
    state: TrainState


@dataclasses.dataclass
class RunResult:
    """What one run produced. ``history`` maps a metric to its values at ``history['step']``."""

    config: TrainConfig
    history: dict[str, np.ndarray]
    outcome: str  # "completed", "diverged" or "pruned" (given up: see ``train``'s ``give_up``)
    steps_to_target: int | None
    timings: dict[str, float]
    data_digest: str
    model_params: int
    steps_to_val_target: int | None = None
    checkpoints: dict[int, TrainState] = dataclasses.field(default_factory=dict, repr=False)  # train's ``keep``

    def summary(self) -> dict[str, float]:
        """``final/<metric>`` and ``best/<metric>`` as :mod:`mbstudy.metrics` says, ignoring NaN/inf;
        ``steps_to_target``, ``examples_to_target`` and ``time_to_target`` (seconds of training steps, without
        the evaluations) when reached (``*_val_target`` likewise); the timings as ``time/<name>``."""
        out: dict[str, float] = {}
        for key, values in self.history.items():
            rule = metric_for(key)
            if rule is None or not rule.summary:
                continue
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                continue
            out[f"final/{key}"] = float(finite[-1])
            if rule.best:
                out[f"best/{key}"] = float(finite.max() if rule.best == "max" else finite.min())
        if self.outcome == "pruned":  # where it stopped: its steps-to-target, had it gone on, is larger
            out["pruned_at"] = float(self.history["step"][-1])
        if self.steps_to_target is not None:
            out["steps_to_target"] = float(self.steps_to_target)
            out["examples_to_target"] = float(self.config.examples_at(self.steps_to_target))
        if self.steps_to_val_target is not None:
            out["steps_to_val_target"] = float(self.steps_to_val_target)
            out["examples_to_val_target"] = float(self.config.examples_at(self.steps_to_val_target))
        for name, steps in (("time_to_target", self.steps_to_target), ("time_to_val_target", self.steps_to_val_target)):
            if steps is not None and "time/train_s" in self.history:  # training seconds (no evaluations) until then
                out[name] = float(self.history["time/train_s"][np.searchsorted(self.history["step"], steps)])
        out.update({f"time/{k}": v for k, v in self.timings.items()})
        return out


def evaluation_sizes(cfg: TrainConfig, data: Dataset) -> tuple[int, int]:
    """``(noise batch, training examples of train/loss)``: the configuration's ``noise_batch`` and ``eval_train``,
    or where it leaves them at 0 the data set's defaults (``Dataset.default_*``; 0 there: the whole training set)."""
    return (min(cfg.noise_batch or data.default_noise_batch or data.n_train, data.n_train),
            min(cfg.eval_train or data.default_eval_train or data.n_train, data.n_train))


def eval_data(cfg: TrainConfig, data: Dataset, loss_name: str) -> EvalData:
    """The data set on the device, targets in the loss's dtype, the noise batch and the examples of the training
    loss (:func:`evaluation_sizes`), and the validation split (its ``eval_val`` rows; zero rows when ``data`` has
    none)."""
    ydt = jnp.dtype(LOSSES[loss_name].target_dtype)
    x_tr, y_tr = jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train, ydt)
    x_te, y_te = jnp.asarray(data.x_test, jnp.float32), jnp.asarray(data.y_test, ydt)
    n_noise, n_eval = evaluation_sizes(cfg, data)
    factor = jnp.float32(1.0 / n_noise - 1.0 / data.n_train)
    if data.x_val is None:
        x_va, y_va = x_tr[:0], y_tr[:0]
    else:
        rows = validation_rows(len(data.x_val), cfg.eval_val) if cfg.eval_val else slice(None)
        x_va, y_va = jnp.asarray(data.x_val[rows], jnp.float32), jnp.asarray(data.y_val[rows], ydt)
    x_ev, y_ev = (x_tr, y_tr) if n_eval == data.n_train else (x_tr[:n_eval], y_tr[:n_eval])
    return EvalData(x_tr, y_tr, x_te, y_te, x_tr[:n_noise], y_tr[:n_noise], factor, x_va, y_va, x_ev, y_ev)


def split_for(cfg: TrainConfig, data: Dataset) -> Dataset:
    """``data`` with the validation split ``cfg.val_fraction`` asks for (carved here unless ``data`` has one)."""
    if cfg.val_fraction == 0 or data.x_val is not None:
        return data
    return with_validation(data, cfg.val_fraction)


def validation_error(metrics: dict, loss_name: str) -> float:
    """What ``target_val`` is compared with (:meth:`mbstudy.losses.Loss.validation_error`): the error rate
    (1 - ``val/acc``) for cross-entropy, the validation loss for MSE and next-token cross-entropy."""
    return LOSSES[loss_name].validation_error(metrics)


def _give_up_step(limit, pending: list[str]) -> int | None:
    """The step from which a run that has not reached the targets ``pending`` may be given up; None: not yet."""
    value = limit()
    if value is None or not pending:
        return None
    if not isinstance(value, dict):
        return int(value)
    steps = [value.get(t) for t in pending]
    return None if any(x is None for x in steps) else int(max(steps))


def _model_for(cfg: TrainConfig, data: Dataset, *, given: bool) -> Any:
    """The model of ``cfg`` for ``data``, after the only checks that need the loaded data.

    A configuration was checked once, when it was made (:mod:`mbstudy.config.checks`), against its
    registered data set. Two things only the loaded data can say: whether the model fits its inputs (their
    shape is known once they are loaded), and, for a data set the caller passes in (``given``), which may
    differ from the registered one, whether the sizes the configuration asks for fit it.
    """
    found = []
    if given:
        if cfg.batch_size > data.n_train:
            found.append(f"batch_size: expected 1 <= batch_size <= {data.n_train} (the {data.name} training set); "
                         f"received {cfg.batch_size}")
        big = sorted({p.batch_size for p in cfg.phases()[:-1] if p.batch_size > data.n_train})
        if big:
            found.append(f"schedule: batch size(s) {big} exceed the {data.name} training set ({data.n_train})")
        if cfg.noise_batch > data.n_train:
            found.append(f"noise_batch: expected 0 (the whole training set) or 2..{data.n_train}; "
                         f"received {cfg.noise_batch}")
        if cfg.eval_train > data.n_train:
            found.append(f"eval_train: expected 0 (the data set's default) or 1..{data.n_train}; "
                         f"received {cfg.eval_train}")
    n_val = 0 if data.x_val is None else len(data.x_val)
    if cfg.eval_val > n_val:
        none = "; the data have no validation split: set val_fraction" if n_val == 0 else ""
        found.append(f"eval_val: expected 0 (all of them) or 1..{n_val} (the {data.name} validation split); received "
                     f"{cfg.eval_val}{none}")
    model = None
    try:
        model = cfg.build_model(data)
        _checks.check_batch(model, cfg.loss_name(data), data.x_train[:1], data.y_train[:1])
    except (ValueError, TypeError) as e:
        found.append(f"model: {cfg.model!r} cannot take the {data.name} data ({data.n_inputs} inputs): {e}")
    if found:
        raise ConfigError(found)
    return model


def _on_grid(phases, step: int) -> bool:
    """Whether the run evaluates at ``step`` (a phase boundary or a whole number of its intervals into a phase)."""
    return any(p.start <= step <= p.end and ((step - p.start) % p.eval_every == 0 or step == p.end) for p in phases)


def _start_state(cfg: TrainConfig, start: Checkpoint, fresh: TrainState) -> tuple[int, TrainState]:
    """``start`` checked against the run: an evaluation step of ``cfg`` and a state of its model and optimizer."""
    if not isinstance(start, Checkpoint):
        raise TypeError(f"start: expected an mbstudy.train.Checkpoint; received {type(start).__name__}")
    step = int(start.step)
    if not _on_grid(cfg.phases(), step) or int(start.state.step) != step:
        raise ValueError(f"start: step {step} (state at step {int(start.state.step)}) is not an evaluation step of "
                         f"this run ({cfg.total_steps()} steps; phases {cfg.schedule or 'none'}); checkpoint at one")
    shapes = lambda t: jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), t)  # noqa: E731
    if jax.tree.structure(start.state) != jax.tree.structure(fresh) or shapes(start.state) != shapes(fresh):
        raise ValueError("start: the checkpoint's parameters or optimizer state do not fit this run's model and "
                         f"optimizer ({cfg.model}, {cfg.optimizer}); branch from a run of the same configuration")
    return step, start.state


def train(cfg: TrainConfig, data: Dataset | None = None, *, on_eval=None, give_up=None, keep=(),
          start: Checkpoint | None = None) -> RunResult:
    """Train one configuration and return its metric history.

    ``data`` defaults to ``load_dataset(cfg.dataset, seed=cfg.data_seed, n_train=cfg.n_train or None,
    **cfg.data_options())`` (the text's ``context``);
    pass it to reuse one loaded data set across runs. ``on_eval(step, params)``
    is called at every evaluation (for example to keep parameter snapshots).
    ``give_up`` (only with ``cfg.stop_at_target``): a step count, a dict of one
    per target (``"loss"``, ``"val"``), or a function returning either (or None),
    read at every evaluation; see the module docstring for when the run stops,
    ``pruned``. A configuration with ``val_fraction`` trains on the training set
    less its validation split (carved here unless ``data`` has one).
    A configuration checks itself when it is made (:class:`mbstudy.config.ConfigError`); here only what
    needs the loaded data is checked (:func:`_model_for`).

    A run with a ``schedule`` (:mod:`mbstudy.schedule`) trains its phases in
    turn, one compiled program per distinct batch size. ``keep``: evaluation
    steps whose state is kept in ``RunResult.checkpoints`` (a run that stops
    early keeps only those it reached); ``start``: a :class:`Checkpoint` to
    continue from instead of the initial state (the history, the targets and
    the divergence test's initial loss then count from its step). Continuing
    from a run's checkpoint computes, bit for bit, what the run itself computed
    after it; only the divergence test can read differently, since its
    reference loss is the checkpoint's rather than the initial one.

    >>> from mbstudy.train import TrainConfig, train
    >>> r = train(TrainConfig(dataset="teacher", hidden=(16,), optimizer="adam",
    ...                       learning_rate=1e-2, batch_size=32, steps=40, eval_every=20))
    >>> r.outcome, r.history["step"].tolist(), bool(r.history["train/loss"][-1] < r.history["train/loss"][0])
    ('completed', [0, 20, 40], True)
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected an mbstudy.config.TrainConfig; received {type(cfg).__name__}")
    given = data is not None
    data = split_for(cfg, data if given else load_dataset(cfg.dataset, seed=cfg.data_seed, n_train=cfg.n_train or None,
                                                          **cfg.data_options()))
    model = _model_for(cfg, data, given=given)
    targets = [t for t, v in (("loss", cfg.target_loss), ("val", cfg.target_val)) if v is not None]
    if give_up is not None and not (cfg.stop_at_target and targets):
        raise ValueError("give_up: only a run that stops at its targets (stop_at_target and target_loss or "
                         "target_val) can be given up; its later history would be lost otherwise")
    limit = give_up if callable(give_up) else (lambda: give_up)
    loss_name = cfg.loss_name(data)
    program = Program(model, loss_name, cfg.reduction, cfg.optimizer, cfg.batch_size, cfg.accumulation,
                      cfg.static_hyper())
    evd = eval_data(cfg, data, loss_name)
    phases = cfg.phases()
    total = phases[-1].end
    hypers = [traced_hyper(cfg.optimizer, {**cfg.hyper(), "learning_rate": p.learning_rate}) for p in phases]
    hyper = hypers[-1]
    state = init_state(model, cfg.optimizer, hyper, seed=cfg.seed, init_perturbation=cfg.init_perturbation,
                       static_hyper=program.static_hyper)
    step = 0
    if start is not None:
        step, state = _start_state(cfg, start, state)
    off = [k for k in keep if not (isinstance(k, int) and _on_grid(phases, k))]
    if off:
        raise ValueError(f"keep: {off} are not evaluation steps of this run ({total} steps; evaluations every "
                         f"{', '.join(str(p.eval_every) for p in phases)} steps in its phases); keep evaluation steps")
    checkpoints: dict[int, TrainState] = {}

    timings = {"compile_s": 0.0, "train_s": 0.0, "eval_s": 0.0}
    static = {"model": model, "loss_name": loss_name}
    evaluate, dt = _compiled(evaluate_jit, (state.params, evd), static)
    timings["compile_s"] += dt
    if cfg.stats_every:
        loss_only, dt = _compiled(training_loss_jit, (state.params, evd), static)
        timings["compile_s"] += dt

    def measure(program):
        t0 = time.perf_counter()
        out = jax.device_get(program(state.params, evd))
        timings["eval_s"] += time.perf_counter() - t0
        return out

    history: dict[str, list[float]] = {"step": []}
    chunks: dict[tuple[int, int], Any] = {}  # (phase, steps) -> its compiled chunk
    outcome, reached, initial_loss = "completed", {}, None
    batch_loss = float("nan")
    while True:
        full = not cfg.stats_every or step % cfg.stats_every == 0
        metrics = measure(evaluate if full else loss_only)
        loss = float(metrics["train/loss"])
        initial_loss = loss if initial_loss is None else initial_loss
        if cfg.target_loss is not None and "loss" not in reached and loss <= cfg.target_loss:
            reached["loss"] = step
        if cfg.target_val is not None and "val" not in reached and validation_error(metrics, loss_name) <= cfg.target_val:
            reached["val"] = step
        diverged = bool(state.diverged) or not np.isfinite(loss) or loss > cfg.diverge_factor * initial_loss
        pending = [t for t in targets if t not in reached]
        stop_at = _give_up_step(limit, pending)
        pruned = not diverged and stop_at is not None and step >= stop_at and step < total
        last = diverged or pruned or step >= total or (cfg.stop_at_target and targets and not pending)
        if last and not full:  # the last evaluation is always full; its training loss is the same number
            metrics = measure(evaluate)
        history["step"].append(step)
        if on_eval is not None:
            on_eval(step, state.params)
        if step in keep:
            checkpoints[step] = state
        for k in history.keys() - {"step", "train/batch_loss", "time/train_s"} - metrics.keys():
            history[k].append(float("nan"))  # not measured at this evaluation (stats_every)
        for k, v in metrics.items():
            history.setdefault(k, []).append(float(v))
        history.setdefault("train/batch_loss", []).append(batch_loss)
        history.setdefault("time/train_s", []).append(timings["train_s"])
        if diverged or pruned:
            outcome = "diverged" if diverged else "pruned"
            break
        if last:
            break
        i = next(i for i, p in enumerate(phases) if step < p.end)  # the phase this chunk is in
        phase, hyper = phases[i], hypers[i]
        n = min(phase.eval_every, phase.end - step)
        idx = batch_indices(cfg.seed, data_step(phases, step), n, data.n_train, phase.batch_size, cfg.data_order)
        chunk = chunks.get((i, n))
        if chunk is None:  # a phase's chunk of n steps: looked up once per run (the lookup reads every leaf's shape)
            chunk, dt = _compiled(run_chunk_jit, (state, hyper, evd.x_train, evd.y_train, idx),
                                  {"program": dataclasses.replace(program, batch_size=phase.batch_size)})
            chunks[(i, n)] = chunk
            timings["compile_s"] += dt
        t0 = time.perf_counter()
        state, losses = chunk(state, hyper, evd.x_train, evd.y_train, idx)
        losses = np.asarray(losses)  # waits for the chunk
        timings["train_s"] += time.perf_counter() - t0
        finite = losses[np.isfinite(losses)]
        batch_loss = float(finite.mean()) if finite.size == losses.size else float("nan")
        step += n

    hist = {k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64) for k, v in history.items()}
    return RunResult(cfg, hist, outcome, reached.get("loss"), timings, data.digest, model.num_params,
                     reached.get("val"), checkpoints)
