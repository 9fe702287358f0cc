"""The science sweep's facts: steps to several target levels per (workload, optimizer, B, seed), per-seed
hyperbola fits, the comparisons the report's verdicts read, and the coverage of its intervals.

Every run trains to its workload's hardest targets; the easier levels (a grid's ``[meta.levels]``, per workload
and target) are read from the same histories (:mod:`analysis.levels`). Per (workload, target, level, optimizer)
each seed's fewest steps over learning rates at every B make a curve; each seed's curve is fitted alone
(:func:`analysis.stats.seed_fits`) and summarised over seeds (geometric mean, t-interval on the log scale, a bound
where a seed's fit leaves the measured range). One optimizer's B_crit over the reference's is a paired ratio over
seeds; its p-value enters a family of the section's comparisons, adjusted by Holm's rule.

Pure: DataFrames in, DataFrames and a frozen dataclass out; nothing here reads MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import levels as lv
from analysis import stats
from analysis.order import optimizers_in, reference_optimizer
from mbstudy.data import DATASETS
from mbstudy.metrics import TRAIN_TARGET, VAL_TARGET

SMALL_B = 16  # the perfect-scaling slope is fitted per seed for B up to this
TARGET_FIELDS = {TRAIN_TARGET: "target_loss", VAL_TARGET: "target_val"}  # the configuration field of each target


def workload_of(runs: pd.DataFrame) -> pd.Series:
    """``<dataset>-<model>`` of every run (runs from before the ``model`` field are MLPs; a table without a
    ``dataset`` column holds TrainConfig's default, MNIST-1D)."""
    model = runs["model"].fillna("mlp") if "model" in runs else pd.Series("mlp", index=runs.index)
    data = runs["dataset"].fillna("mnist1d") if "dataset" in runs else pd.Series("mnist1d", index=runs.index)
    return data.astype(str) + "-" + model.astype(str)


def levels_of(runs: pd.DataFrame, meta: dict | None = None) -> dict[tuple[str, str], tuple[float, ...]]:
    """Per (workload, target): the levels to read, easiest first, the hardest last (the runs' own target); the
    grid's ``[meta.levels.<workload>]`` adds easier ones. A target no run sets is left out."""
    meta = meta or {}
    out = {}
    work = workload_of(runs)
    for w in work.unique():
        sub = runs[work == w]
        for target, field_name in TARGET_FIELDS.items():
            if field_name not in sub or sub[field_name].notna().sum() == 0:
                continue
            hardest = float(sub[field_name].dropna().min())
            extra = [float(x) for x in meta.get(w, {}).get(target, [])]
            out[(w, target)] = tuple(sorted({*extra, hardest}, reverse=True))  # losses and errors fall: easiest first
    return out


@dataclass(frozen=True)
class Cell:
    """One (workload, target, level, optimizer): per-seed steps at every B and what their fits say."""

    workload: str
    target: str
    level: float
    optimizer: str
    table: pd.DataFrame  # B x seeds, fewest steps over rates (NaN: left out, a bound somewhere; inf: not reached)
    fits: dict[str, np.ndarray]  # stats.seed_fits
    b_crit: stats.Summary
    s_min: stats.Summary
    e_min: stats.Summary
    slope: stats.Summary  # small-B slope: mean over seeds (not a log quantity: value is the mean, lo, hi)
    models: dict  # stats.compare_models

    @property
    def n_seeds(self) -> int:
        return int(self.table.shape[1])


@dataclass(frozen=True)
class ScienceFacts:
    """Every cell of the science sweep, the comparisons with the reference optimizer, and the checks."""

    experiment: str
    runs: pd.DataFrame
    labels: dict[str, str]  # workload -> the grid's label, in the grid's order
    levels: dict[tuple[str, str], tuple[float, ...]]
    best: pd.DataFrame  # per workload, optimizer, B, seed, target, level: steps, bound, learning_rate
    cells: dict[tuple[str, str, float, str], Cell]
    comparisons: pd.DataFrame  # per (workload, target, level, optimizer): ratio to the reference and its test
    slopes: pd.DataFrame  # per (workload, target, optimizer), hardest level: small-B slope, test against -1
    b_simple: pd.DataFrame = field(default_factory=pd.DataFrame)

    def hardest(self, workload: str, target: str) -> float:
        return self.levels[(workload, target)][-1]

    def cell(self, workload: str, target: str, optimizer: str, level: float | None = None) -> Cell | None:
        level = self.hardest(workload, target) if level is None and (workload, target) in self.levels else level
        return self.cells.get((workload, target, level, optimizer))

    @property
    def workloads(self) -> list[str]:
        from analysis.order import ordered

        return ordered({w for w, _ in self.levels}, self.labels)

    def label(self, workload: str) -> str:
        return self.labels.get(workload, workload)


def per_seed_steps(runs: pd.DataFrame, history: pd.DataFrame, levels) -> pd.DataFrame:
    """Every (workload, optimizer, B, seed, target, level): the fewest steps over rates, read from the histories."""
    work = workload_of(runs)
    task = pd.Series([DATASETS[d].task if d in DATASETS else "classification" for d in runs.get(
        "dataset", pd.Series("mnist1d", index=runs.index))], index=runs["run_id"].to_numpy())
    parts = []
    for (w, target), lev in levels.items():
        sub = runs[work == w]
        values = lv.target_values(history[history["run_id"].isin(sub["run_id"])], target, task)
        cross = lv.crossings(values, lev)
        # a run that diverged, failed or was pruned keeps the crossings its history shows (pruning is exact)
        best = lv.per_seed(sub.assign(workload=w), cross, by=("workload", "optimizer", "batch_size"))
        parts.append(best.assign(target=target))
    cols = ["workload", "optimizer", "batch_size", "seed", "target", "level", "steps", "bound", "learning_rate"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def make_cell(best: pd.DataFrame, workload: str, target: str, level: float, optimizer: str) -> Cell:
    g = best[(best["workload"] == workload) & (best["target"] == target) & (best["optimizer"] == optimizer)]
    t = lv.table(g, level)
    B = np.asarray(t.index, float)
    fits = stats.seed_fits(B, t.to_numpy(float))
    summ = stats.summarise_b_crit(B, t.to_numpy(float))
    sl = stats.seed_slopes(B, t.to_numpy(float), SMALL_B)
    m, lo, hi, _ = stats.mean_interval(sl)
    slope = stats.Summary(m, lo, hi, int(np.isfinite(sl).sum()))
    return Cell(workload, target, level, optimizer, t, fits, summ["B_crit"], summ["S_min"], summ["E_min"], slope,
                stats.compare_models(B, t.to_numpy(float)))


def comparisons(cells: dict, reference: str) -> pd.DataFrame:
    """Per (workload, target, level, optimizer other than ``reference``): B_crit / the reference's B_crit, paired
    by seed, with its p-value; NaN where either is a bound or a seed is missing in one."""
    rows = []
    for (w, t, lev, opt), c in cells.items():
        ref = cells.get((w, t, lev, reference))
        if opt == reference or ref is None:
            continue
        seeds = [s for s in c.table.columns if s in set(ref.table.columns)]
        ia = [list(c.table.columns).index(s) for s in seeds]
        ib = [list(ref.table.columns).index(s) for s in seeds]
        est, lo, hi, p, n = stats.paired_ratio(c.fits["B_crit"][ia], ref.fits["B_crit"][ib],
                                               c.fits["censored"][ia], ref.fits["censored"][ib])
        rows.append({"workload": w, "target": t, "level": lev, "optimizer": opt, "ratio": est, "lo": lo, "hi": hi,
                     "p": p, "n": n, "bound": bool(c.b_crit.bound or ref.b_crit.bound)})
    return pd.DataFrame(rows, columns=["workload", "target", "level", "optimizer", "ratio", "lo", "hi", "p", "n",
                                       "bound"])


def verdict(estimate: float, p_adjusted: float, above: str, below: str, neither: str) -> str:
    """A ratio's verdict under Holm's rule: ``above`` (or ``below``) 1 only when its adjusted p-value is below
    0.05, ``neither`` otherwise, "not measured" without a p-value (a bound, or a missing fit)."""
    if not np.isfinite(p_adjusted):
        return "not measured"
    if p_adjusted >= 0.05:
        return neither
    return above if estimate > 1 else below


def science_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str, labels: dict[str, str],
                  meta_levels: dict | None = None, b_simple: pd.DataFrame | None = None) -> ScienceFacts:
    lev = levels_of(runs, meta_levels)
    best = per_seed_steps(runs, history, lev)
    cells = {}
    for (w, target), levels in lev.items():
        for opt in optimizers_in(runs.loc[workload_of(runs) == w, "optimizer"]):
            for level in levels:
                cells[(w, target, level, opt)] = make_cell(best, w, target, level, opt)
    comp = comparisons(cells, reference_optimizer())
    hardest = comp[pd.Series([lev.get((r.workload, r.target), (np.nan,))[-1] == r.level for r in comp.itertuples()],
                             index=comp.index, dtype=bool)]
    comp["p_holm"] = np.nan
    comp.loc[hardest.index, "p_holm"] = stats.holm(hardest["p"])  # the family: the verdicts the report states
    rows = []
    for (w, target), levels in lev.items():
        for opt in optimizers_in(runs.loc[workload_of(runs) == w, "optimizer"]):
            c = cells[(w, target, levels[-1], opt)]
            sl = stats.seed_slopes(np.asarray(c.table.index, float), c.table.to_numpy(float), SMALL_B)
            m, lo, hi, p = stats.mean_interval(sl + 1)  # H0: slope = -1
            rows.append({"workload": w, "target": target, "optimizer": opt, "slope": m - 1, "lo": lo - 1,
                         "hi": hi - 1, "p": p, "n": int(np.isfinite(sl).sum())})
    slopes = pd.DataFrame(rows, columns=["workload", "target", "optimizer", "slope", "lo", "hi", "p", "n"])
    slopes["p_holm"] = stats.holm(slopes["p"])
    return ScienceFacts(experiment, runs, labels, lev, best, cells, comp, slopes,
                        b_simple if b_simple is not None else pd.DataFrame())

