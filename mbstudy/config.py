"""One training run's configuration: its fields, their checks, and how each becomes an MLflow param.

:class:`TrainConfig` is a frozen dataclass; every field carries its own
documentation, its check and its role in the metadata of ``dataclasses.field``:

- ``program``: decides the compiled training program or the data it runs on
  (model shape, loss, reduction, optimizer kind and its static values such as
  Adam's betas, batch size, micro-batches, chunk lengths);
  :meth:`TrainConfig.program_key` is exactly these fields, so runs that share
  a key share one compiled program;
- ``traced``: an argument of the compiled program (learning rate, momentum,
  eps, the seed); a grid over it compiles once;
- ``host``: read by the Python loop only (the target, when to stop).

A configuration checks itself when it is made: every problem at once, each
naming the field, the value received and what is expected
(:class:`ConfigError`). The sweep's grid expansion runs the same check on a
plain dict (:func:`problems`) so that a whole grid's problems are listed
together, before anything runs.

Adding a field is one ``_field(...)`` line below, with its check.

>>> from mbstudy.config import TrainConfig
>>> cfg = TrainConfig(optimizer="adam", learning_rate=1e-3, batch_size=32)
>>> cfg.to_params()["hidden"], cfg.hash()
('100,100', '14269d28466688f4')
>>> TrainConfig(batch_size=5000)
Traceback (most recent call last):
...
mbstudy.config.ConfigError: TrainConfig: 1 problem(s):
  - batch_size: expected 1 <= batch_size <= 4000 (the mnist1d training set); received 5000
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from mbstudy.data import DATASETS, Dataset, n_validation
from mbstudy.losses import LOSSES, REDUCTIONS, loss_for_task
from mbstudy.model import ACTIVATIONS
from mbstudy.optimizers import OPTIMIZERS
from mbstudy import schedule as _schedule
from mbstudy.model_registry import MODELS, build

INT32_MAX = 2**31 - 1  # the compiled loop counts steps in int32; JAX's PRNG takes 32-bit seeds

Check = Callable[[Any, Mapping[str, Any]], "str | None"]


class ConfigError(ValueError):
    """Every problem with a configuration, one per line; ``problems`` holds them as a list."""

    def __init__(self, problems: list[str], source: str = "TrainConfig"):
        self.problems = list(problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def _field(default: Any, role: str, doc: str, check: Check | None = None, since: int = 1) -> Any:
    """A field; ``since`` > 1 marks one added after runs were stored: :meth:`TrainConfig.as_dict` (and so
    the hash) leaves it out while it has its default, so the configurations stored before keep their hash."""
    return dataclasses.field(default=default, metadata={"role": role, "doc": doc, "check": check, "since": since})


def _one_of(choices: Callable[[], list[str]]) -> Check:
    def check(v, d):
        return None if v in choices() else f"expected one of {choices()}; received {v!r}"
    return check


def _at_least(low: int, what: str = "") -> Check:
    def check(v, d):
        if low <= v <= INT32_MAX:
            return None
        if v > INT32_MAX:
            return f"expected an int <= {INT32_MAX} (the compiled program holds it as int32); received {v!r}"
        return f"expected {what or f'an int >= {low}'}; received {v!r}"
    return check


def _check_loss(v, d):
    known = ["auto", *LOSSES]
    if v not in known:
        return f"expected one of {known}; received {v!r}"
    source = DATASETS.get(d.get("dataset"))
    if v != "auto" and source is not None and LOSSES[v].task != source.task:
        want = loss_for_task(source.task)
        return f"{d['dataset']!r} is a {source.task} data set and needs {want!r} (or 'auto'); received {v!r}"
    return None


def _size(source, d) -> int:
    """The size of the data set's training set a configuration generates (its ``n_train``, else the registered one)."""
    n = d.get("n_train")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 and source.resize else source.n_train


def _n_train(source, d) -> int:
    """The training-set size a configuration trains on: the data set's, less its validation split."""
    f = d.get("val_fraction")
    held = n_validation(_size(source, d), f) if isinstance(f, float) and 0 <= f <= 0.5 else 0
    return _size(source, d) - held


def _what_train(source, d) -> str:
    held = _size(source, d) - _n_train(source, d)
    return f"the {source.name} training set" + (f" less its {held} validation examples" if held else "")


def _check_n_train(v, d):
    source = DATASETS.get(d.get("dataset"))
    if v == 0 or source is None or v == source.n_train:
        return None
    if source.resize is None:
        sizable = [k for k, s in DATASETS.items() if s.resize]
        return (f"{source.name!r} has a fixed training set of {source.n_train} examples; expected 0 (the data set's "
                f"own size); received {v!r} (data sets generated at any size: {sizable})")
    return source.check_size(v) if v > 0 else f"expected 0 (the data set's own size) or a positive size; received {v!r}"


def _check_batch_size(v, d):
    source = DATASETS.get(d.get("dataset"))
    if source is None or 1 <= v <= _n_train(source, d):
        return None
    return f"expected 1 <= batch_size <= {_n_train(source, d)} ({_what_train(source, d)}); received {v!r}"


def _check_val_fraction(v, d):
    if not 0 <= v <= 0.5:
        return f"expected 0 (no validation split) <= val_fraction <= 0.5; received {v!r}"
    source = DATASETS.get(d.get("dataset"))
    if v > 0 and source is not None and n_validation(_size(source, d), v) < 2:
        return f"holds out {n_validation(_size(source, d), v)} of {_size(source, d)} examples; expected at least 2"
    return None


def _check_target_val(v, d):
    if v is None:
        return None
    if not v > 0:
        return f"expected > 0 or none; received {v!r}"
    if not d.get("val_fraction"):
        return f"a validation target needs a validation split: set val_fraction (e.g. 0.2); received target_val={v!r}"
    return None


def _check_hyper_fields(name: str) -> str | None:
    missing = [k for k in OPTIMIZERS[name].fields if k not in TrainConfig.__dataclass_fields__]
    if missing:
        return (f"{name!r} reads {missing}, which are not TrainConfig fields; add them to mbstudy/config.py "
                "(see CONTRIBUTING.md, 'An optimizer')")
    return None


def _check_beta(v, d):
    return None if 0 <= v < 1 else f"expected 0 <= value < 1 (a decay rate); received {v!r}"


def _check_accumulation(v, d):
    bad = _at_least(1, "a positive int")(v, d)
    if bad:
        return bad
    b = d.get("batch_size")
    if isinstance(b, int) and not isinstance(b, bool) and b % v:
        return (f"expected a divisor of batch_size ({b}): each step's batch is cut into equal micro-batches; "
                f"received {v!r} (set batch_size to {v} x the micro-batch size)")
    return None


def _check_schedule(v, d):
    try:
        entries = _schedule.parse(v)
    except ValueError as e:
        return str(e)
    if not entries:
        return None
    if d.get("accumulation", 1) != 1:
        return f"a schedule runs without accumulation; set accumulation = 1 (received {d.get('accumulation')!r})"
    source = DATASETS.get(d.get("dataset"))
    limit = _n_train(source, d) if source is not None else None
    big = [b for _, b, _ in entries if limit is not None and b > limit]
    if big:
        return f"batch size(s) {big} exceed {_what_train(source, d)} ({limit}); received {v!r}"
    b, every, lr, steps = (d.get(k) for k in ("batch_size", "eval_every", "learning_rate", "steps"))
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (b, every, steps)):
        return None  # those fields' own checks report them
    try:
        _schedule.phases(v, batch_size=b, learning_rate=lr, steps=steps, eval_every=every)
    except ValueError as e:
        return f"{e}; received {v!r}"
    return None


def _check_stats_every(v, d):
    every = d.get("eval_every")
    if v == 0 or (isinstance(every, int) and every > 0 and v % every == 0):
        return None
    return f"expected 0 (every evaluation) or a positive multiple of eval_every ({every}); received {v!r}"


def _check_noise_batch(v, d):
    source = DATASETS.get(d.get("dataset"))
    if source is None or v == 0 or 2 <= v <= _n_train(source, d):
        return None
    return f"expected 0 (the whole training set) or 2..{_n_train(source, d)}; received {v!r}"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field is logged as an MLflow param (:meth:`to_params`).

    ``loss="auto"`` picks cross-entropy for classification data and MSE for
    regression. ``momentum`` is used by ``optimizer="momentum"`` only (heavy
    ball, ``v <- g + momentum v``, ``theta <- theta - lr v``), ``eps``, ``beta1`` and
    ``beta2`` by ``adam`` only (:mod:`mbstudy.scaling_rules` rescales them with B).
    ``accumulation`` = k computes each step's gradient over k micro-batches of
    ``batch_size / k`` examples (the same examples, in the same order, as the
    step at ``batch_size``) and sums them before the one update: gradient
    accumulation, equal to the step at ``batch_size`` up to the order of the
    floating-point sums. ``target_loss`` (None: no target) is a training-loss level,
    ``target_val`` a validation level (error rate or MSE; needs ``val_fraction``);
    ``stop_at_target`` ends the run at the first evaluation by which every target
    it sets has been reached.
    ``init_perturbation`` adds that much N(0, 1) noise to the initial weights:
    the control of the reduction experiment. ``noise_batch`` is the size of
    the fixed evaluation batch for gradient-noise statistics (the first
    examples of the training set; 0 = all of it, which makes B_simple exact).
    ``stats_every`` (a multiple of ``eval_every``; 0: every evaluation) spaces
    out the full statistics: at the evaluations between, only the training
    loss (what targets and divergence read) is computed, exactly as it is at
    the others; the first and last evaluations are always full.
    ``model`` picks the network (:mod:`mbstudy.model_registry`): ``"mlp"`` reads
    ``hidden`` and ``activation``; ``"cnn"`` (the MNIST-1D paper's ReLU CNN,
    :class:`mbstudy.model.CNN`) reads ``channels`` and takes its input length
    from the data set.
    """

    dataset: str = _field("mnist1d", "program", "a registered data set (mbstudy.data.DATASETS)",
                          _one_of(lambda: list(DATASETS)))
    data_seed: int = _field(0, "program", "the data set's seed", _at_least(0, "a non-negative int"))
    n_train: int = _field(0, "program", "the training-set size to generate (0: the data set's own; "
                          "mnist1d takes any multiple of 10), before the validation split", _check_n_train, since=2)
    model: str = _field("mlp", "program", "a registered model (mbstudy.model_registry.MODELS): mlp or cnn",
                        _one_of(lambda: list(MODELS)), since=2)
    hidden: tuple[int, ...] = _field((100, 100), "program", "hidden-layer widths of the MLP (checked by type)")
    activation: str = _field("tanh", "program", "the MLP's activation", _one_of(lambda: sorted(ACTIVATIONS)))
    channels: int = _field(25, "program", "channels of each of the CNN's convolutions (model cnn)",
                           _at_least(1, "a positive int"), since=2)
    loss: str = _field("auto", "program", "a registered loss, or auto (by the data set's task)", _check_loss)
    reduction: str = _field("mean", "program", "mean or sum over the batch", _one_of(lambda: list(REDUCTIONS)))
    optimizer: str = _field("sgd", "program", "a registered optimizer (mbstudy.optimizers.OPTIMIZERS)",
                            lambda v, d: _one_of(lambda: list(OPTIMIZERS))(v, d) or _check_hyper_fields(v))
    learning_rate: float = _field(0.1, "traced", "the step size",
                                  lambda v, d: None if v > 0 else f"expected > 0; received {v!r}")
    momentum: float = _field(0.9, "traced", "heavy-ball momentum (optimizer momentum)",
                             lambda v, d: None if 0 <= v < 1 else f"expected 0 <= momentum < 1; received {v!r}")
    eps: float = _field(1e-8, "traced", "Adam's epsilon", lambda v, d: None if v > 0 else f"expected > 0; received {v!r}")
    beta1: float = _field(0.9, "program", "Adam's first-moment decay (optimizer adam)", _check_beta, since=2)
    beta2: float = _field(0.999, "program", "Adam's second-moment decay (optimizer adam); mbstudy.scaling_rules "
                          "converts it between batch sizes", _check_beta, since=2)
    batch_size: int = _field(64, "program", "examples per step, drawn without replacement", _check_batch_size)
    accumulation: int = _field(1, "program", "micro-batches per step: the step's batch_size examples in this many "
                               "micro-batches, their gradients summed before one update", _check_accumulation, since=2)
    schedule: str = _field("", "program", "phases before batch_size: comma-separated STEPSxB@LR, e.g. "
                           "'64x16@0.1,32x32@0.2' (mbstudy.schedule; empty: none)", _check_schedule, since=2)
    seed: int = _field(0, "traced", "initial weights and data order", _at_least(0, "a non-negative int"))
    steps: int = _field(2000, "program", "training steps at batch_size (after the schedule's)",
                        _at_least(1, "a positive int"))
    eval_every: int = _field(100, "program", "steps between evaluations", _at_least(1, "a positive int"))
    target_loss: float | None = _field(None, "host", "training-loss target (none: no target)",
                                       lambda v, d: None if v is None or v > 0 else f"expected > 0 or none; received {v!r}")
    stop_at_target: bool = _field(False, "host", "end the run when its targets are reached")
    diverge_factor: float = _field(10.0, "host", "diverged when the loss exceeds this times its initial value",
                                   lambda v, d: None if v > 1 else f"expected > 1; received {v!r}")
    init_perturbation: float = _field(0.0, "traced", "std of N(0, 1) noise added to the initial weights",
                                      lambda v, d: None if v >= 0 else f"expected >= 0; received {v!r}")
    noise_batch: int = _field(0, "program", "examples for the noise statistics (0: all)", _check_noise_batch)
    stats_every: int = _field(0, "host", "steps between the full statistics (0: at every evaluation)",
                              _check_stats_every, since=2)
    val_fraction: float = _field(0.0, "program", "fraction of the training set held out for validation "
                                 "(mbstudy.data.with_validation; 0: none)", _check_val_fraction, since=2)
    target_val: float | None = _field(None, "host", "validation target: error rate (classification) or MSE "
                                      "(regression); none: no target", _check_target_val, since=2)

    def __post_init__(self) -> None:
        for name, value in _coerced(dataclasses.asdict(self)).items():
            object.__setattr__(self, name, value)
        found = problems(dataclasses.asdict(self))
        if found:
            raise ConfigError(found)

    # ----------------------------------------------------------------- uses

    def build_model(self, data: Dataset) -> Any:
        """The model of field ``model`` for ``data`` (:func:`mbstudy.model_registry.build`)."""
        return build(self, data)

    def loss_name(self, data: Dataset) -> str:
        return loss_for_task(data.task) if self.loss == "auto" else self.loss

    def hyper(self) -> dict[str, float]:
        """The values the optimizer reads (traced in the compiled program)."""
        return {k: getattr(self, k) for k in OPTIMIZERS[self.optimizer].hyper}

    def static_hyper(self) -> tuple[tuple[str, float], ...]:
        """``(field, value)`` of the optimizer's static fields (compiled into the program: Adam's betas)."""
        return tuple((k, getattr(self, k)) for k, _ in OPTIMIZERS[self.optimizer].static)

    def phases(self) -> list[_schedule.Phase]:
        """The run's phases (:mod:`mbstudy.schedule`): the schedule's, then ``steps`` at ``batch_size``."""
        return _schedule.phases(self.schedule, batch_size=self.batch_size, learning_rate=self.learning_rate,
                                steps=self.steps, eval_every=self.eval_every)

    def total_steps(self) -> int:
        """Steps of the whole run: the schedule's and ``steps``."""
        return self.phases()[-1].end

    def examples_at(self, step: int) -> int:
        """Examples seen in the first ``step`` steps (``step * batch_size`` without a schedule)."""
        return _schedule.examples_at(self.phases(), step) if self.schedule else step * self.batch_size

    def program_key(self) -> tuple[tuple[str, Any], ...]:
        """``(field, value)`` of every ``program`` field: runs with the same key share one compiled program."""
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata["role"] == "program")

    # ------------------------------------------------------------- identity

    def as_dict(self, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields as JSON-able values (tuples as lists), ``without`` some.

        A field added later (``since`` > 1 in its metadata: ``model``, ``channels``) is left out
        while it has its default, so a configuration stored before it existed keeps its hash.
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if k not in without and not (FIELDS[k].metadata["since"] > 1 and v == FIELDS[k].default)}

    def hash(self, *, without: tuple[str, ...] = ()) -> str:
        """A stable hash of the configuration (16 hex digits); ``without`` drops fields (the seed)."""
        blob = json.dumps(self.as_dict(without=without), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_name(self) -> str:
        prefix = "" if self.model == "mlp" else f"{self.model}-"  # MLP runs keep the names they always had
        extra = "".join(f"-{tag}{getattr(self, k):.6g}" for k, tag in (("accumulation", "acc"), ("beta1", "b1"),
                                                                        ("beta2", "b2"))
                        if getattr(self, k) != FIELDS[k].default and (k == "accumulation" or self.optimizer == "adam"))
        sched = f"-after{self.schedule.replace(' ', '')}" if self.schedule else ""
        return (f"{prefix}{self.optimizer}-{self.reduction}-B{self.batch_size}{extra}-lr{self.learning_rate:.3g}"
                f"{sched}-s{self.seed}")

    def to_params(self) -> dict[str, str]:
        """Every field as an MLflow param: tuples as ``100,100``, None as ``None``."""
        return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def parse_param(cls, name: str, text: str) -> Any:
        """One MLflow param back into its field's type (None for ``None``); unknown names stay strings."""
        hint = HINTS.get(name)
        if hint is None:
            return text
        if text == "None":
            return None
        if name in SEQUENCE_FIELDS:
            return tuple(int(x) for x in text.split(",") if x)
        base = _base_type(hint)
        if base is bool:
            return text == "True"
        return base(text)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TrainConfig:
        """The configuration an MLflow run's params describe (inverse of :meth:`to_params`)."""
        return cls(**{k: cls.parse_param(k, v) for k, v in params.items() if k in FIELDS})


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)
SEQUENCE_FIELDS = frozenset(k for k, h in HINTS.items() if typing.get_origin(h) is tuple)


def _base_type(hint: Any) -> type:
    """``float`` for ``float | None``, else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _coerced(d: Mapping[str, Any]) -> dict[str, Any]:
    """Ints given for float fields become floats, lists for sequence fields tuples; a schedule is written one way
    (``mbstudy.schedule.format_schedule``: no spaces, each rate as Python prints it) and ``n_train`` equal to the
    data set's own size becomes 0, so that one configuration has one hash; nothing else changes."""
    out = {}
    for k, v in d.items():
        base = _base_type(HINTS[k]) if k in HINTS else None
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        elif k in SEQUENCE_FIELDS and isinstance(v, list):
            v = tuple(v)
        elif k == "schedule" and isinstance(v, str):
            try:
                v = _schedule.format_schedule(_schedule.parse(v))
            except ValueError:
                pass  # the field's check reports it
        elif k == "n_train" and d.get("dataset") in DATASETS and v == DATASETS[d["dataset"]].n_train:
            v = 0
        out[k] = v
    return out


def _type_problem(name: str, value: Any) -> str | None:
    """None if ``value`` fits the field's type, else the message."""
    hint = HINTS[name]
    if name in SEQUENCE_FIELDS:
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= INT32_MAX for v in value)
        return None if ok else f"{name}: expected a non-empty list of positive ints such as [100, 100]; received {value!r}"
    optional = type(None) in typing.get_args(hint)
    if value is None:
        return None if optional else f"{name}: expected a value, not none"
    base = _base_type(hint)
    if base is bool:
        return None if isinstance(value, bool) else f"{name}: expected true or false; received {value!r}"
    if base is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{name}: expected an int; received {value!r}"
    if base is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name}: expected a number; received {value!r}"
        return None if math.isfinite(value) else f"{name}: expected a finite number; received {value!r}"
    if base is str:
        return None if isinstance(value, str) else f"{name}: expected a string; received {value!r}"
    return None


def problems(d: Mapping[str, Any]) -> list[str]:
    """Every problem with a configuration given as a dict of fields (missing fields take their defaults).

    Unknown fields, wrong types, then each field's own check (run only when the
    fields it reads have the right type, so one mistake gives one message).
    """
    found = [f"{k}: unknown field; known fields: {', '.join(FIELDS)}" for k in d if k not in FIELDS]
    full = {**{k: f.default for k, f in FIELDS.items()}, **{k: v for k, v in d.items() if k in FIELDS}}
    typed = {k: p for k in FIELDS if (p := _type_problem(k, full[k]))}
    found += typed.values()
    for name, f in FIELDS.items():
        check = f.metadata["check"]
        # a check may read the data set: skip it when the data set's own value is wrong
        if check is None or name in typed or (name != "dataset" and "dataset" in typed):
            continue
        msg = check(full[name], full)
        if msg:
            found.append(f"{name}: {msg}")
    return found
