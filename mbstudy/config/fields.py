"""One training run's configuration: :class:`TrainConfig`, its fields and what it derives from them.

Every field carries its documentation, its check (``mbstudy/config/checks.py``)
and its role in the metadata of ``dataclasses.field``:

- ``program``: decides the compiled training program or the data it runs on
  (model shape, loss, reduction, optimizer kind, batch size, micro-batches,
  chunk lengths); :meth:`TrainConfig.program_key` is these fields and the
  optimizer's static hyper-parameters, so runs that share a key share one
  compiled program;
- ``traced``: an argument of the compiled program (learning rate, the seed);
  a grid over it compiles once;
- ``optimizer``: a hyper-parameter some optimizers read (momentum, eps,
  Adam's betas, ``opt_args``); its registry entry (:mod:`mbstudy.optimizers`)
  says whether it is traced or static;
- ``host``: read by the Python loop only (the target, when to stop).

A configuration checks itself when it is made: every problem at once, each
naming the field, the value received and what is expected
(:class:`~mbstudy.config.ConfigError`). What identifies it (hash, run name,
program key) is ``identity.py``; its MLflow params, ``params.py``.

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
import typing
from collections.abc import Mapping
from typing import Any

from mbstudy import schedule as _schedule
from mbstudy.config import checks, identity, params
from mbstudy.config.checks import ConfigError, Check
from mbstudy.data import DATASETS, Dataset
from mbstudy.losses import loss_for_task
from mbstudy.model_registry import build
from mbstudy.optimizers import OPTIMIZERS


def _field(default: Any, role: str, doc: str, check: Check | None = None, since: int = 1) -> Any:
    """A field; ``since`` > 1 marks one added after runs were stored: :meth:`TrainConfig.as_dict` (and so
    the hash) leaves it out while it has its default, so the configurations stored before keep their hash."""
    return dataclasses.field(default=default, metadata={"role": role, "doc": doc, "check": check, "since": since})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field is logged as an MLflow param (:meth:`to_params`).

    ``loss="auto"`` picks cross-entropy for classification data and MSE for
    regression. ``momentum`` is used by ``optimizer="momentum"`` only (heavy
    ball, ``v <- g + momentum v``, ``theta <- theta - lr v``), ``eps``, ``beta1`` and
    ``beta2`` by ``adam`` and ``adamw`` (``muon`` reads ``eps``; :mod:`mbstudy.scaling_rules` rescales them with B);
    an optimizer's other hyper-parameters go in ``opt_args`` (:mod:`mbstudy.optimizers`).
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
    from the data set; ``"transformer"`` (:class:`mbstudy.transformer.Transformer`,
    on the ``"text"`` data set) reads ``d_model``, ``n_heads`` and ``n_blocks``
    and takes its vocabulary and context from the data, whose windows are
    ``context`` tokens long (a data set's options that are fields here are read
    from the configuration: :meth:`data_options`). ``eval_train`` is how many
    training examples (the first) the evaluation's ``train/loss`` reads; 0, like
    ``noise_batch`` = 0, leaves it to the data set (all of them; the text's
    defaults keep an evaluation affordable). ``eval_val`` is how many validation
    examples the evaluation's ``val/`` metrics (and so ``target_val``) read, evenly
    spaced across the validation split (:func:`mbstudy.evaluate.validation_rows`);
    0 reads all of them. ``init`` (the MLP's and the CNN's
    initialisation, :data:`mbstudy.layers.INITS`) and ``data_order`` (the
    mini-batches' order, :data:`mbstudy.step.ORDERS`) default to what the study
    always did: He/LeCun-normal weights with zero biases, and a fresh shuffle every epoch.
    """

    dataset: str = _field("mnist1d", "program", "a registered data set (mbstudy.data.DATASETS)",
                          checks.dataset)
    data_seed: int = _field(0, "program", "the data set's seed", checks.data_seed)
    n_train: int = _field(0, "program", "the training-set size to generate (0: the data set's own; "
                          "mnist1d takes any multiple of 10), before the validation split", checks.n_train, since=2)
    model: str = _field("mlp", "program", "a registered model (mbstudy.model_registry.MODELS): mlp, cnn or "
                        "transformer",
                        checks.model, since=2)
    hidden: tuple[int, ...] = _field((100, 100), "program", "hidden-layer widths of the MLP (checked by type)")
    activation: str = _field("tanh", "program", "the MLP's activation", checks.activation)
    channels: int = _field(25, "program", "channels of each of the CNN's convolutions (model cnn)",
                           checks.channels, since=2)
    init: str = _field("he_normal", "program", "how the MLP's and the CNN's dense and convolutional layers draw their "
                       "initial values (mbstudy.layers.INITS): he_normal, N(0, gain / fan_in) weights (He before a "
                       "ReLU, else LeCun) and zero biases; torch_default, PyTorch's default, weights and biases from "
                       "U(-1/sqrt(fan_in), 1/sqrt(fan_in))", checks.init, since=2)
    context: int = _field(32, "program", "tokens per example of a data set with that option (text), the "
                          "transformer's context", checks.context, since=2)
    d_model: int = _field(32, "program", "the transformer's width (model transformer)", checks.d_model, since=2)
    n_heads: int = _field(4, "program", "the transformer's attention heads", checks.n_heads, since=2)
    n_blocks: int = _field(1, "program", "the transformer's blocks", checks.n_blocks, since=2)
    loss: str = _field("auto", "program", "a registered loss, or auto (by the data set's task)", checks.loss)
    reduction: str = _field("mean", "program", "mean or sum over the batch", checks.reduction)
    optimizer: str = _field("sgd", "program", "a registered optimizer (mbstudy.optimizers.OPTIMIZERS)",
                            checks.optimizer)
    learning_rate: float = _field(0.1, "traced", "the step size",
                                  checks.learning_rate)
    momentum: float = _field(0.9, "optimizer", "heavy-ball momentum (optimizer momentum)",
                             checks.momentum)
    eps: float = _field(1e-8, "optimizer", "Adam's epsilon (optimizers adam, adamw and muon)", checks.eps)
    beta1: float = _field(0.9, "optimizer", "Adam's first-moment decay (optimizers adam and adamw)", checks.beta,
                          since=2)
    beta2: float = _field(0.999, "optimizer", "Adam's second-moment decay (optimizers adam and adamw); "
                          "mbstudy.scaling_rules converts it between batch sizes", checks.beta, since=2)
    opt_args: str = _field("", "optimizer", "the optimizer's own hyper-parameters (not TrainConfig fields) that "
                           "differ from their defaults, as name=value pairs separated by commas, e.g. 'b2=0.95' "
                           "(its entry in mbstudy.optimizers lists them and their defaults)", checks.opt_args, since=2)
    batch_size: int = _field(64, "program", "examples per step, drawn without replacement", checks.batch_size)
    accumulation: int = _field(1, "program", "micro-batches per step: the step's batch_size examples in this many "
                               "micro-batches, their gradients summed before one update", checks.accumulation, since=2)
    data_order: str = _field("shuffle", "host", "the order of the mini-batches (mbstudy.step.ORDERS): shuffle, a new "
                             "permutation every epoch from the seed; sequential, the training set in its stored order "
                             "every epoch (the MNIST-1D paper's loop)", checks.data_order, since=2)
    schedule: str = _field("", "program", "phases before batch_size: comma-separated STEPSxB@LR, e.g. "
                           "'64x16@0.1,32x32@0.2' (mbstudy.schedule; empty: none)", checks.schedule, since=2)
    seed: int = _field(0, "traced", "initial weights and data order", checks.seed)
    steps: int = _field(2000, "program", "training steps at batch_size (after the schedule's)",
                        checks.steps)
    eval_every: int = _field(100, "program", "steps between evaluations", checks.eval_every)
    target_loss: float | None = _field(None, "host", "training-loss target (none: no target)",
                                       checks.target_loss)
    stop_at_target: bool = _field(False, "host", "end the run when its targets are reached")
    diverge_factor: float = _field(10.0, "host", "diverged when the loss exceeds this times its initial value",
                                   checks.diverge_factor)
    init_perturbation: float = _field(0.0, "traced", "std of N(0, 1) noise added to the initial weights",
                                      checks.init_perturbation)
    noise_batch: int = _field(0, "program", "examples for the noise statistics (0: the data set's default, all of "
                              "them; text: 512)", checks.noise_batch)
    eval_train: int = _field(0, "program", "training examples (the first) of the evaluation's train/loss (0: the data "
                             "set's default, all of them; text: 2048)", checks.eval_train, since=2)
    eval_val: int = _field(0, "program", "validation examples of the evaluation's val/ metrics, evenly spaced across "
                           "the validation split (0: all of them)", checks.eval_val, since=2)
    stats_every: int = _field(0, "host", "steps between the full statistics (0: at every evaluation)",
                              checks.stats_every, since=2)
    val_fraction: float = _field(0.0, "program", "fraction of the training set held out for validation "
                                 "(mbstudy.data.with_validation; 0: none)", checks.val_fraction, since=2)
    target_val: float | None = _field(None, "host", "validation target: error rate (classification) or MSE "
                                      "(regression); none: no target", checks.target_val, since=2)

    def __post_init__(self) -> None:
        # every field is a scalar or a tuple of them: a shallow dict is what dataclasses.asdict (a deep copy, most of
        # the time a grid of 30,000 configurations takes to load) would give
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        found = problems(given)  # on the values as given, so that a message shows what was received
        if found:
            raise ConfigError(found)
        for name, value in checks.coerced(given, HINTS).items():
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------- uses

    def build_model(self, data: Dataset) -> Any:
        """The model of field ``model`` for ``data`` (:func:`mbstudy.model_registry.build`)."""
        return build(self, data)

    def data_options(self) -> dict[str, Any]:
        """The keyword options of its data set that this configuration sets (``load_dataset(..., **options)``)."""
        return {k: getattr(self, k) for k, _ in DATASETS[self.dataset].options if k in FIELDS}

    def loss_name(self, data: Dataset) -> str:
        return loss_for_task(data.task) if self.loss == "auto" else self.loss

    def hyper_values(self) -> dict[str, Any]:
        """Every hyper-parameter the optimizer reads, by name: a field's value, or one of its own from ``opt_args``,
        else its default (:meth:`mbstudy.optimizers.Optimizer.values`)."""
        return OPTIMIZERS[self.optimizer].values(vars(self), self.opt_args)

    def hyper(self) -> dict[str, Any]:
        """The optimizer's traced hyper-parameters (arguments of the compiled program)."""
        values = self.hyper_values()
        return {k: values[k] for k in OPTIMIZERS[self.optimizer].traced}

    def static_hyper(self) -> tuple[tuple[str, Any], ...]:
        """``(name, value)`` of the optimizer's static hyper-parameters (compiled into the program: Adam's betas)."""
        values = self.hyper_values()
        return tuple((k, values[k]) for k in OPTIMIZERS[self.optimizer].static)

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

    # ------------------------------------------------------------- identity (identity.py, params.py)

    def program_key(self) -> tuple[tuple[str, Any], ...]:
        """What the compiled program depends on: runs with the same key share one (:func:`identity.program_key`)."""
        return identity.program_key(self)

    def as_dict(self, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields as JSON-able values, ``without`` some; a later field at its default is left out."""
        return identity.as_dict(self, without=without)

    def hash(self, *, without: tuple[str, ...] = ()) -> str:
        """A stable hash of the configuration (16 hex digits); ``without`` drops fields (the seed)."""
        return identity.cfg_hash(self, without=without)

    def run_name(self) -> str:
        return identity.run_name(self)

    def to_params(self) -> dict[str, str]:
        """Every field as an MLflow param: tuples as ``100,100``, None as ``None``."""
        return params.to_params(self)

    @classmethod
    def parse_param(cls, name: str, text: str) -> Any:
        """One MLflow param back into its field's type (None for ``None``); unknown names stay strings."""
        return params.parse_param(name, text, HINTS)

    @classmethod
    def from_params(cls, params_: Mapping[str, str]) -> TrainConfig:
        """The configuration an MLflow run's params describe (inverse of :meth:`to_params`)."""
        return cls(**params.fields_of(params_, HINTS))


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)
SEQUENCE_FIELDS = frozenset(k for k, h in HINTS.items() if checks.is_sequence(h))


def problems(d: Mapping[str, Any]) -> list[str]:
    """Every problem with a configuration given as a dict of fields (missing fields take their defaults): what
    ``TrainConfig(**d)`` would raise, as a list (:func:`mbstudy.config.checks.problems`)."""
    return checks.problems(d, FIELDS, HINTS)


def coerced(d: Mapping[str, Any]) -> dict[str, Any]:
    """A dict of fields as :class:`TrainConfig` stores them (:func:`mbstudy.config.checks.coerced`)."""
    return checks.coerced(d, HINTS)
