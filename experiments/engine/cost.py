"""What one run is expected to cost, from its configuration alone: :func:`expected_cost`.

The sweep's progress bar weighs its ETA by it (``progress.py``), ``make
study`` makes its first guesses from it (``experiments/study.py``), and
``--dry-run`` estimates with it when the store has no past runs to go by.
It is the one interface a scheduler of runs needs from this module.

The cost is seconds of one worker process on the reference machine (two
cores of an Intel Xeon with AVX-512, this project's CI machine), a linear
model of what a run does::

    PER_RUN                                   creating, logging and ending the run
  + PER_STEP  x steps x micro-batches          the compiled loop's fixed cost per step
  + PER_FLOP  x examples trained x flops       forward and backward of every training example
  + PER_EVAL  x evaluations                    each evaluation's fixed cost (the training loss)
  + PER_STAT_FLOP x full evaluations x examples x flops   noise statistics, test and validation

``flops`` is the forward FLOPs of ONE example of the run's model, from XLA's
cost analysis of the compiled-to-be ``apply`` (no compilation, any registered
model): 30,210 for the MNIST-1D MLP, 65,213 for its CNN. A workload's FLOPs and
test-set size are measured once (loading its data set) and kept in
``.cache/cost-shapes.json``. The constants are a
non-negative least-squares fit to the 1234 runs of a ``make study-quick`` store
made on the reference machine (their sum is the measured sum; per sweep 0.74-1.21x
the measured one, but 0.52x for ``published``, whose CNN run is slower per FLOP). A run that stops at its target is expected to
use a fraction of its budget: :data:`AT_TARGET` with pruning (measured: a
median 3-13% in the quick study's pruned sweeps), :data:`AT_TARGET_UNPRUNED`
without. Divergence, which ends a run early, is not foreseen: a sweep's
progress bar learns it from the runs done (``progress.py``).

>>> from mbstudy.config import TrainConfig
>>> small, big = TrainConfig(batch_size=1), TrainConfig(batch_size=1024)
>>> round(expected_cost(small), 2), round(expected_cost(big), 1)
(0.22, 3.9)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os

from experiments.engine.store import ROOT

PER_RUN = 0.1  # s
PER_STEP = 3e-5  # s per step and micro-batch
PER_FLOP = 6e-11  # s per forward FLOP of a training example (forward and backward)
PER_EVAL = 6e-4  # s per evaluation
PER_STAT_FLOP = 1.5e-11  # s per forward FLOP of an example of a full evaluation
AT_TARGET = 0.12  # the share of its budget a run that stops at a target uses, with pruning
AT_TARGET_UNPRUNED = 0.7  # ... without


SHAPES = ROOT / ".cache" / "cost-shapes.json"  # each workload's FLOPs and test-set size, kept across processes
_KEEP = [True]  # whether a measured shape is written to SHAPES (not by a command that promises to write nothing)


@contextlib.contextmanager
def writing_nothing():
    """Within it, a workload's shape is measured but not kept in :data:`SHAPES` (``--dry-run``)."""
    _KEEP.append(False)
    try:
        yield
    finally:
        _KEEP.pop()


@functools.cache
def _dataset(name: str):
    from mbstudy import load_dataset

    return load_dataset(name)


@functools.cache
def _model_shape(dataset: str, model: str, hidden: tuple[int, ...], channels: int, activation: str) -> tuple[float, int]:
    """(forward FLOPs of one example, test-set size) of a workload: from :data:`SHAPES`, else measured (which loads
    the data set: seconds for MNIST-1D) and kept there."""
    key = f"{dataset}|{model}|{','.join(map(str, hidden))}|{channels}|{activation}"
    try:
        known = json.loads(SHAPES.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), list) and len(known[key]) == 2:
        return float(known[key][0]), int(known[key][1])
    shape = _measure(dataset, model, hidden, channels, activation)
    if not _KEEP[-1]:
        return shape
    try:
        SHAPES.parent.mkdir(parents=True, exist_ok=True)
        tmp = SHAPES.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: list(shape)}, indent=1, sort_keys=True))
        tmp.replace(SHAPES)
    except OSError:  # a read-only checkout measures again next time
        pass
    return shape


def _measure(dataset: str, model: str, hidden: tuple[int, ...], channels: int, activation: str) -> tuple[float, int]:
    import jax

    from mbstudy.config import TrainConfig

    data = _dataset(dataset)
    net = TrainConfig(dataset=dataset, model=model, hidden=hidden, channels=channels,
                      activation=activation).build_model(data)
    try:
        params = jax.eval_shape(lambda: net.init(jax.random.key(0)))
        x = jax.ShapeDtypeStruct(data.x_train.shape[1:], data.x_train.dtype)
        analysis = jax.jit(net.apply).lower(params, x).cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        flops = float(analysis["flops"])
    except Exception:  # noqa: BLE001 - a model XLA cannot analyse: two FLOPs per parameter (a dense layer's)
        flops = 2.0 * net.num_params
    return flops, int(data.x_test.shape[0])


def features(cfg, *, steps: int | None = None) -> dict[str, float]:
    """What the model of :func:`expected_cost` multiplies, for ``steps`` steps (default: the whole budget)."""
    from mbstudy.data import DATASETS, n_validation

    flops, n_test = _model_shape(cfg.dataset, cfg.model, tuple(cfg.hidden), cfg.channels, cfg.activation)
    steps = cfg.total_steps() if steps is None else steps
    n = cfg.n_train or DATASETS[cfg.dataset].n_train
    n_val = n_validation(n, cfg.val_fraction)
    full = steps // (cfg.stats_every or cfg.eval_every) + 1
    return {
        "run": 1.0,
        "step": float(steps * cfg.accumulation),
        "flop": float(cfg.examples_at(steps)) * flops,
        "eval": float(steps // cfg.eval_every + 1),
        "stat_flop": float(full * ((cfg.noise_batch or n - n_val) + n_test + n_val)) * flops,
    }


COST = {"run": PER_RUN, "step": PER_STEP, "flop": PER_FLOP, "eval": PER_EVAL, "stat_flop": PER_STAT_FLOP}


def cost_at(cfg, steps: int) -> float:
    """Expected seconds of the run ``cfg`` had it stopped after ``steps`` steps (one that diverged or was given up)."""
    return sum(COST[k] * v for k, v in features(cfg, steps=steps).items())


def expected_steps(cfg, *, prune: bool = True) -> int:
    """The steps :func:`expected_cost` expects the run to take: its budget, or a share of it if it stops at a target."""
    steps = cfg.total_steps()
    if cfg.stop_at_target and (cfg.target_loss is not None or cfg.target_val is not None):
        steps = max(1, round(steps * (AT_TARGET if prune else AT_TARGET_UNPRUNED)))
    return steps


def expected_cost(cfg, *, prune: bool = True) -> float:
    """Expected seconds of the run ``cfg`` in one worker process of the reference machine (the module's model).

    ``prune``: whether the sweep gives up runs that can no longer reach their
    target first (``pruning.py``); it shortens runs that stop at a target.
    """
    return cost_at(cfg, expected_steps(cfg, prune=prune))
