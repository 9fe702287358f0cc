"""The main sweep (``make sweep``, grid ``default``): every (optimizer, reduction, B, lr, seed) trained for a
fixed number of steps. Its facts are read by Q4 (heatmaps, the best rate of sum against mean), Q5 (loss
curves) and Q7 (B_simple over training); this part of the report has no text of its own.

In ``--sweep NAME`` mode the same facts are computed from that one sweep's runs
(:func:`analysis.sweeps.collect_sweep`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis import load, reduce
from analysis.order import optimizers_in, reference_optimizer
from analysis.section import Context, Provider, Section

LOSS_LEVEL = 1.0  # the training loss whose first crossing is counted in examples (Q5, figure a), if no run sets one


@dataclass(frozen=True)
class DefaultFacts:
    """The main sweep (``make sweep``): every (optimizer, reduction, B, lr, seed)."""

    experiment: str  # the MLflow experiment (``--default``)
    runs: pd.DataFrame  # one row per finished run (``load.load_runs``)
    optimizers: tuple[str, ...]  # those in the runs, in the registry's order
    best_lr: pd.DataFrame  # lowest final training loss per (optimizer, reduction, B): ``reduce.best_lr``
    loss_curves: pd.DataFrame  # training loss over steps at each group's best lr: ``reduce.curves``
    loss_level: float  # the runs' training-loss target when they share one, else LOSS_LEVEL
    examples_to_level: pd.Series  # per B: fewest examples (over optimizers) to reach loss_level, mean reduction
    heatmap: pd.DataFrame  # median final loss and diverged fraction per (optimizer, reduction, B, lr)
    sum_mean_slopes: pd.DataFrame  # per optimizer: slope in B of best lr(sum) / best lr(mean)
    largest_stable_sgd_lr: pd.Series  # per (reduction, B): the largest lr of the reference optimizer that did not diverge
    b_simple_curves: pd.DataFrame  # B_simple over steps at each group's best lr (may be empty)
    b_simple_runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the same per run: group keys, seed, step, value

    @property
    def curve_reduction(self) -> str:
        """The reduction the loss-curve figures show: ``mean``, or the first one the runs have."""
        reds = set(self.runs["reduction"])
        return "mean" if "mean" in reds or not reds else sorted(reds)[0]

    @property
    def mean_loss_curves(self) -> pd.DataFrame:
        """The loss curves of ``curve_reduction`` (``mean`` in the study)."""
        return self.loss_curves[self.loss_curves["reduction"] == self.curve_reduction]


def default_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str) -> DefaultFacts:
    best = reduce.best_lr(runs)
    at_best = reduce.select(runs, best)
    curves = reduce.curves(history, at_best)
    reds = set(runs["reduction"])
    mean_curves = curves[curves["reduction"] == ("mean" if "mean" in reds or not reds else sorted(reds)[0])]
    targets = set(runs["target_loss"].dropna()) if "target_loss" in runs else set()
    level = float(targets.pop()) if len(targets) == 1 else LOSS_LEVEL
    crossing = reduce.first_crossing(mean_curves, "examples", level)
    ref = runs[runs["optimizer"] == reference_optimizer()]
    return DefaultFacts(
        experiment=experiment,
        runs=runs,
        optimizers=optimizers_in(runs["optimizer"]),
        best_lr=best,
        loss_curves=curves,
        loss_level=level,
        examples_to_level=crossing.groupby("batch_size")["examples"].min().dropna(),
        heatmap=reduce.heatmap_table(runs),
        sum_mean_slopes=reduce.sum_mean_best_lr_slopes(best),
        largest_stable_sgd_lr=ref[ref["outcome"].isin(["completed", "pruned"])].groupby(
            ["reduction", "batch_size"])["learning_rate"].max(),
        b_simple_curves=reduce.curves(history, at_best, metric="grad/b_simple"),
        b_simple_runs=_per_run(history, at_best, "grad/b_simple"),
    )


def _per_run(history: pd.DataFrame, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` over steps per run (the seeds kept apart): optimizer, reduction, batch_size, seed, step, value."""
    keys = ["optimizer", "reduction", "batch_size"]
    r = runs.assign(seed=runs["seed"] if "seed" in runs else 0)[["run_id", *keys, "seed"]]
    h = history[history["metric"] == metric][["run_id", "step", "value"]].merge(r, on="run_id")
    return h[[*keys, "seed", "step", "value"]].reset_index(drop=True)


def _read(ctx: Context) -> DefaultFacts:
    name = ctx.experiments["default"]
    runs = load.load_runs(name, hint=f"make sweep GRID={name}")
    return default_facts(runs, load.load_history(runs, name, progress=ctx.progress), name)


SECTION = Section("main sweep", provides=(Provider("default", _read),))
