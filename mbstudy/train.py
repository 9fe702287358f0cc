"""Training one configuration: a pure, compiled loop, evaluated every few steps.

The steps between two evaluations run inside ONE compiled ``lax.scan``; Python
only loops over evaluations. What changes the compiled program (model, loss,
reduction, optimizer kind, batch size, chunk length) is static; what does not
(learning rate, momentum, eps, the random key) is an ordinary argument, so a
learning-rate grid compiles once per shape.

Mini-batches: each epoch draws a fresh permutation of the N training examples
(NumPy, seeded by ``(seed, epoch)``: :func:`batch_indices`) and cuts it into ``N // B`` batches of exactly B
examples, sampling without replacement. The last ``N mod B`` examples of each
epoch's permutation are dropped (a different few each epoch), so every step
sees exactly B examples and the sum reduction's scale is the same at every
step.

Divergence: if a step's batch loss is NaN or inf, that step's update and all
later ones are skipped (parameters stay at the values that produced the
first non-finite loss) and the run is reported as diverged at the next
evaluation, as it is when the full training loss is NaN/inf or exceeds
``diverge_factor`` times its initial value. Only the scalar loss is checked
in the loop: a check of every parameter at every step was, on 2 CPU cores,
as expensive as the rest of a small-batch step (``make bench`` reports the
step against the leanest possible scan).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbstudy import losses as _losses
from mbstudy.data import Dataset, load_dataset
from mbstudy.model import MLP
from mbstudy.noise import _noise_stats, sq_norm

OPTIMIZERS = ("sgd", "momentum", "adam")
DATA_ORDER = 0xDA7A  # a constant that keeps the data-order stream apart from other uses of a seed


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field is logged as an MLflow param.

    ``loss="auto"`` picks cross-entropy for classification data and MSE for
    regression. ``momentum`` is used by ``optimizer="momentum"`` only (heavy
    ball, ``v <- g + momentum v``, ``theta <- theta - lr v``), ``eps`` by
    ``adam`` only. ``target_loss`` (None: no target) is a training-loss level;
    ``stop_at_target`` ends the run at the first evaluation that reaches it.
    ``init_perturbation`` adds that much N(0, 1) noise to the initial weights:
    the control of the reduction experiment. ``noise_batch`` is the size of
    the fixed evaluation batch for gradient-noise statistics (the first
    examples of the training set; 0 = all of it, which makes B_simple exact).
    """

    dataset: str = "mnist1d"
    data_seed: int = 0
    hidden: tuple[int, ...] = (100, 100)
    activation: str = "tanh"
    loss: str = "auto"
    reduction: str = "mean"
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    eps: float = 1e-8
    batch_size: int = 64
    seed: int = 0
    steps: int = 2000
    eval_every: int = 100
    target_loss: float | None = None
    stop_at_target: bool = False
    diverge_factor: float = 10.0
    init_perturbation: float = 0.0
    noise_batch: int = 0

    def model(self, data: Dataset) -> MLP:
        return MLP((data.n_inputs, *self.hidden, data.n_outputs), self.activation)

    def loss_name(self, data: Dataset) -> str:
        return data.loss_name if self.loss == "auto" else self.loss


class Hyper(NamedTuple):
    """The hyper-parameters that do not change the compiled program."""

    learning_rate: jax.Array
    momentum: jax.Array
    eps: jax.Array


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32: steps taken (counting skipped ones after divergence)
    diverged: jax.Array  # bool


@dataclasses.dataclass(frozen=True)
class Spec:
    """The static part of a configuration: what the compiled program depends on."""

    model: MLP
    loss_name: str
    reduction: str
    optimizer: str
    batch_size: int


def make_optimizer(kind: str, hyper: Hyper) -> optax.GradientTransformation:
    """optax's SGD, heavy-ball momentum or Adam, from (possibly traced) hyper-parameters."""
    if kind == "sgd":
        return optax.sgd(hyper.learning_rate)
    if kind == "momentum":
        return optax.sgd(hyper.learning_rate, momentum=hyper.momentum)
    if kind == "adam":
        return optax.adam(hyper.learning_rate, eps=hyper.eps)
    raise ValueError(f"optimizer: expected one of {OPTIMIZERS}; received {kind!r}")


def batch_indices(seed: int, step0: int, n_steps: int, n: int, batch_size: int) -> np.ndarray:
    """The example indices of steps ``step0 .. step0 + n_steps - 1``, shape ``(n_steps, B)``.

    Step t uses slice ``t mod (N // B)`` of epoch ``t // (N // B)``'s permutation,
    drawn by NumPy from ``SeedSequence([seed, DATA_ORDER, epoch])``: the same
    indices however the steps are cut into chunks. They are made on the host
    because a permutation in XLA on a CPU is a sort, many times slower than
    NumPy's shuffle (``make bench`` prints both), and a large B needs one every
    N // B steps.
    """
    per_epoch = n // batch_size
    t = np.arange(step0, step0 + n_steps)
    epoch, pos = t // per_epoch, t % per_epoch
    out = np.empty((n_steps, batch_size), np.int32)
    cols = np.arange(batch_size)
    for e in np.unique(epoch):
        perm = np.random.default_rng([seed, DATA_ORDER, int(e)]).permutation(n)
        rows = np.nonzero(epoch == e)[0]
        out[rows] = perm[pos[rows, None] * batch_size + cols]
    return out


def run_chunk(state: TrainState, hyper: Hyper, x, y, idx, *, spec: Spec):
    """One training step per row of ``idx: (n_steps, B)``, in one ``lax.scan``.

    Returns the new state and the batch losses.
    """
    opt = make_optimizer(spec.optimizer, hyper)
    loss_fn = _losses.LOSSES[spec.loss_name]

    def batch_loss(params, xb, yb):
        return _losses.reduce(loss_fn(spec.model.apply(params, xb), yb), spec.reduction)

    def step(s: TrainState, idx):
        loss, g = jax.value_and_grad(batch_loss)(s.params, x[idx], y[idx])
        updates, opt_state = opt.update(g, s.opt_state, s.params)
        params = optax.apply_updates(s.params, updates)
        diverged = s.diverged | ~jnp.isfinite(loss)
        keep = lambda new, old: jnp.where(diverged, old, new)  # noqa: E731
        params = jax.tree.map(keep, params, s.params)
        opt_state = jax.tree.map(keep, opt_state, s.opt_state)
        return TrainState(params, opt_state, s.step + 1, diverged), loss

    return jax.lax.scan(step, state, idx)


def evaluate(params, x_tr, y_tr, x_te, y_te, x_nb, y_nb, fpc, *, model: MLP, loss_name: str) -> dict[str, jax.Array]:
    """Metrics of the current parameters: full-set losses, accuracy, noise statistics, norm."""
    loss_fn = _losses.LOSSES[loss_name]
    out_te = model.apply(params, x_te)
    metrics = {
        "train/loss": jnp.mean(loss_fn(model.apply(params, x_tr), y_tr)),
        "test/loss": jnp.mean(loss_fn(out_te, y_te)),
    }
    if loss_name == "cross_entropy":
        metrics["test/acc"] = jnp.mean(jnp.argmax(out_te, axis=-1) == y_te)
    stats = _noise_stats(params, x_nb, y_nb, fpc, model=model, loss_name=loss_name)
    metrics["grad/g_norm_sq"] = stats.g_true_sq
    metrics["grad/trace_cov"] = stats.trace_cov
    metrics["grad/b_simple"] = stats.b_simple
    metrics["param/norm"] = jnp.sqrt(sq_norm(params))
    return metrics


_run_chunk = jax.jit(run_chunk, static_argnames=("spec",))
_evaluate = jax.jit(evaluate, static_argnames=("model", "loss_name"))
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


@dataclasses.dataclass
class RunResult:
    """What one run produced. ``history`` maps a metric to its values at ``history['step']``."""

    config: TrainConfig
    history: dict[str, np.ndarray]
    outcome: str  # "completed" or "diverged"
    steps_to_target: int | None
    timings: dict[str, float]
    data_digest: str
    model_params: int

    def summary(self) -> dict[str, float]:
        """Final and best values (best: min of losses, max of accuracy), ignoring NaN/inf."""
        out: dict[str, float] = {}
        for key, values in self.history.items():
            if key == "step" or key.startswith("time/"):
                continue
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                continue
            out[f"final/{key}"] = float(finite[-1])
            if key.endswith("/loss") or key.endswith("/acc"):
                out[f"best/{key}"] = float(finite.max() if key.endswith("/acc") else finite.min())
        if self.steps_to_target is not None:
            out["steps_to_target"] = float(self.steps_to_target)
            out["examples_to_target"] = float(self.steps_to_target * self.config.batch_size)
        out.update({f"time/{k}": v for k, v in self.timings.items()})
        return out


def _device_data(cfg: TrainConfig, data: Dataset, loss_name: str):
    ydt = jnp.int32 if loss_name == "cross_entropy" else jnp.float32
    x_tr, y_tr = jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train, ydt)
    x_te, y_te = jnp.asarray(data.x_test, jnp.float32), jnp.asarray(data.y_test, ydt)
    nb = data.n_train if cfg.noise_batch == 0 else cfg.noise_batch
    return x_tr, y_tr, x_te, y_te, x_tr[:nb], y_tr[:nb], nb


def init_state(cfg: TrainConfig, model: MLP, hyper: Hyper) -> TrainState:
    """Initial parameters and optimizer state from ``cfg.seed`` (the data order: :func:`batch_indices`)."""
    # three keys: the middle one once drew the data order; kept so initial weights stay as logged
    k_init, _, k_perturb = jax.random.split(jax.random.key(cfg.seed), 3)
    params = model.init(k_init, dtype=jnp.float32)
    if cfg.init_perturbation:
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(k_perturb, len(leaves))
        leaves = [l + cfg.init_perturbation * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
        params = jax.tree.unflatten(tree, leaves)
    opt_state = make_optimizer(cfg.optimizer, hyper).init(params)
    return TrainState(params, opt_state, jnp.int32(0), jnp.bool_(False))


def train(cfg: TrainConfig, data: Dataset | None = None, *, on_eval=None) -> RunResult:
    """Train one configuration and return its metric history.

    ``data`` defaults to ``load_dataset(cfg.dataset, seed=cfg.data_seed)``;
    pass it to reuse one loaded data set across runs. ``on_eval(step, params)``
    is called at every evaluation (for example to keep parameter snapshots).
    Check the configuration first with ``experiments``' validation: this
    function trusts it.

    >>> from mbstudy.train import TrainConfig, train
    >>> r = train(TrainConfig(dataset="teacher", hidden=(16,), optimizer="adam",
    ...                       learning_rate=1e-2, batch_size=32, steps=40, eval_every=20))
    >>> r.outcome, r.history["step"].tolist(), bool(r.history["train/loss"][-1] < r.history["train/loss"][0])
    ('completed', [0, 20, 40], True)
    """
    data = data if data is not None else load_dataset(cfg.dataset, seed=cfg.data_seed)
    model = cfg.model(data)
    loss_name = cfg.loss_name(data)
    spec = Spec(model, loss_name, cfg.reduction, cfg.optimizer, cfg.batch_size)
    x_tr, y_tr, x_te, y_te, x_nb, y_nb, nb = _device_data(cfg, data, loss_name)
    fpc = jnp.float32(1.0 / nb - 1.0 / data.n_train)
    hyper = Hyper(*(jnp.float32(v) for v in (cfg.learning_rate, cfg.momentum, cfg.eps)))
    state = init_state(cfg, model, hyper)

    timings = {"compile_s": 0.0, "train_s": 0.0, "eval_s": 0.0}
    eval_args = (state.params, x_tr, y_tr, x_te, y_te, x_nb, y_nb, fpc)
    ev, dt = _compiled(_evaluate, eval_args, {"model": model, "loss_name": loss_name})
    timings["compile_s"] += dt

    history: dict[str, list[float]] = {"step": []}
    outcome, steps_to_target, initial_loss = "completed", None, None
    step, batch_loss = 0, float("nan")
    while True:
        t0 = time.perf_counter()
        metrics = jax.device_get(ev(state.params, x_tr, y_tr, x_te, y_te, x_nb, y_nb, fpc))
        timings["eval_s"] += time.perf_counter() - t0
        history["step"].append(step)
        if on_eval is not None:
            on_eval(step, state.params)
        for k, v in metrics.items():
            history.setdefault(k, []).append(float(v))
        history.setdefault("train/batch_loss", []).append(batch_loss)
        history.setdefault("time/train_s", []).append(timings["train_s"])
        loss = float(metrics["train/loss"])
        initial_loss = loss if initial_loss is None else initial_loss
        if cfg.target_loss is not None and steps_to_target is None and loss <= cfg.target_loss:
            steps_to_target = step
        if bool(state.diverged) or not np.isfinite(loss) or loss > cfg.diverge_factor * initial_loss:
            outcome = "diverged"
            break
        if step >= cfg.steps or (cfg.stop_at_target and steps_to_target is not None):
            break
        n = min(cfg.eval_every, cfg.steps - step)
        idx = batch_indices(cfg.seed, step, n, data.n_train, cfg.batch_size)
        chunk, dt = _compiled(_run_chunk, (state, hyper, x_tr, y_tr, idx), {"spec": spec})
        timings["compile_s"] += dt
        t0 = time.perf_counter()
        state, losses = chunk(state, hyper, x_tr, y_tr, idx)
        losses = np.asarray(losses)  # waits for the chunk
        timings["train_s"] += time.perf_counter() - t0
        finite = losses[np.isfinite(losses)]
        batch_loss = float(finite.mean()) if finite.size == losses.size else float("nan")
        step += n

    hist = {k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64) for k, v in history.items()}
    return RunResult(cfg, hist, outcome, steps_to_target, timings, data.digest, model.num_params)
