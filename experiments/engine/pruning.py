"""Pruning: giving up a run that can no longer lower its group's steps-to-target.

Steps-to-target (Shallue et al.) is, per seed, a minimum over learning rates.
A run that has not reached the target by the step where another run of its
group already did cannot change that minimum, so the sweep gives it up there
(outcome ``pruned``, ``mbstudy.train.train``'s ``give_up``): exact, not a
heuristic. With two targets (training loss and validation) a run is given
up only once that holds for every target it has not reached. The analysis
reads a pruned run as "not reached by step S".

The local executor's workers read the sweep's :class:`PruneBoard` in shared
memory at every evaluation (:func:`set_board_steps`, :func:`worker_give_up`);
a Ray task reads its group's best from the store when a run starts
(:func:`best_steps_to_target`).
"""

from __future__ import annotations

import functools
import math
import multiprocessing as mp

from experiments.engine import store
from mbstudy.config import TrainConfig
from mbstudy.metrics import TARGETS  # a target and its summary metric


@functools.lru_cache(maxsize=1 << 16)  # a hash of the whole configuration, asked for several times per dispatch
def prune_group(cfg) -> str | None:
    """The runs a steps-to-target minimum is taken over: the configuration without its learning rate.

    None for a run that does not stop at a target: its later history is wanted, so it is never given up.

    >>> a, b = (TrainConfig(learning_rate=lr, target_loss=0.7, stop_at_target=True) for lr in (0.1, 0.2))
    >>> prune_group(a) == prune_group(b), prune_group(TrainConfig(target_loss=0.7))
    (True, None)
    """
    if not (cfg.stop_at_target and (cfg.target_loss is not None or cfg.target_val is not None)):
        return None
    return cfg.hash(without=("learning_rate",))


def _family(cfg) -> tuple:
    """The arm a group belongs to across batch sizes: where the previous batch size's best rate is a guess."""
    return (cfg.dataset, cfg.model, cfg.optimizer, cfg.reduction, cfg.seed)


def board_limit(steps, slot: int) -> dict[str, int]:
    """The give-up steps a board's array holds for group ``slot``: ``{target: steps}`` of the targets reached."""
    return {t: int(v) for k, t in enumerate(TARGETS) if (v := steps[2 * slot + k]) >= 0}


class PruneBoard:
    """The best steps to each target so far of every prune group of a sweep, in memory shared with the workers.

    ``steps`` is an array of int64 (-1: none yet) in shared memory, one pair per
    group (``slot * 2 + k`` for the k-th target of :data:`TARGETS`), that the
    local executor's worker processes read at every evaluation
    (so a run in flight is given up as soon as another run of its group finishes
    earlier). The driver alone writes it (:meth:`record`). It starts from the
    store's finished runs, so pruning holds across a resume.
    """

    def __init__(self, configs, finished_runs=()):
        groups = sorted({g for c in configs if (g := prune_group(c)) is not None})
        self.slots = {g: i for i, g in enumerate(groups)}
        self.steps = mp.get_context("spawn").Array("q", [-1] * max(2, 2 * len(groups)), lock=False)
        self.best_lr: dict[str, float] = {}
        self.latest_lr: dict[tuple, float] = {}
        for r in finished_runs:
            reached = {t: int(r.data.metrics[m]) for t, m in TARGETS.items() if m in r.data.metrics}
            if not reached or r.data.tags.get("outcome") not in ("completed", "pruned"):
                continue
            tag = r.data.tags.get("prune_group")  # older runs have none: their group is computed from the params
            if tag is not None and tag not in self.slots:
                continue
            try:
                cfg = TrainConfig.from_params(r.data.params)
            except Exception:  # noqa: BLE001 - a run this version cannot read does not prune anything
                continue
            self.record(cfg, reached)

    def slot(self, cfg) -> int | None:
        g = prune_group(cfg)
        return None if g is None else self.slots.get(g)

    def limit(self, cfg) -> dict[str, int] | None:
        i = self.slot(cfg)
        return None if i is None else board_limit(self.steps, i)

    def record(self, cfg, reached: dict[str, int]) -> None:
        """A run of ``cfg`` (completed or pruned) reached the targets ``reached`` ({"loss": steps, ...})."""
        i = self.slot(cfg)
        if i is None or not reached:
            return
        g = prune_group(cfg)
        for k, target in enumerate(TARGETS):
            steps = reached.get(target)
            if steps is None:
                continue
            j = 2 * i + k
            if self.steps[j] < 0 or steps < self.steps[j]:
                self.steps[j] = steps
                if target == ("loss" if cfg.target_loss is not None else "val"):  # the rate guess follows one target
                    self.best_lr[g] = cfg.learning_rate
        if g in self.best_lr:
            self.latest_lr[_family(cfg)] = self.best_lr[g]

    def record_result(self, cfg, result) -> None:
        if result is not None and result.outcome in ("completed", "pruned"):
            self.record(cfg, {t: s for t, m in TARGETS.items() if (s := getattr(result, m)) is not None})

    def guess(self, cfg, rates) -> float:
        """The likely best rate of ``cfg``'s group: its best so far, else the best of the arm's latest group
        (the previous batch size, in dispatch order), else the middle of ``rates`` (in log)."""
        g = prune_group(cfg)
        if g in self.best_lr:
            return self.best_lr[g]
        if _family(cfg) in self.latest_lr:
            return self.latest_lr[_family(cfg)]
        logs = sorted(math.log(r) for r in rates if r > 0)
        return math.exp(logs[(len(logs) - 1) // 2]) if logs else 1.0


_BOARD_STEPS = None  # this process's view of the PruneBoard's shared steps (set_board_steps)


def set_board_steps(steps) -> None:
    """The local executor's worker initializer (and, with one worker, the driver) keep the board's array here."""
    global _BOARD_STEPS
    _BOARD_STEPS = steps


def worker_give_up(slot: int | None):
    """What ``train``'s ``give_up`` reads in this process for group ``slot``: its board entry, read at every
    evaluation; None without a slot or a board."""
    if slot is None or _BOARD_STEPS is None:
        return None
    steps = _BOARD_STEPS
    return lambda: board_limit(steps, slot)


def best_steps_to_target(experiment_id: str, group: str) -> dict[str, int]:
    """The fewest steps to each target (``{"loss": steps, "val": steps}``, the targets some run reached) of the
    completed or pruned runs of prune group ``group`` in the store."""
    runs = store.search_all(store.client(), experiment_id, f"tags.`mbstudy.kind` = 'run' and attributes.status = "
                                                           f"'FINISHED' and tags.prune_group = '{group}'")  # no IN for tags
    runs = [r for r in runs if r.data.tags.get("outcome") in ("completed", "pruned")]
    out = {}
    for target, metric in TARGETS.items():
        steps = [r.data.metrics[metric] for r in runs if metric in r.data.metrics]
        if steps:
            out[target] = int(min(steps))
    return out
