"""Q5b, do small batches generalise better? The ``generalisation`` sweep read under three budgets.

Every run of ``experiments/grids/generalisation.toml`` logs the validation and
test error at every evaluation. From each run's history:

- ``fixed epochs``: the first evaluation at or after :data:`EPOCHS` passes over
  the training set (``EPOCHS * n_train / B`` steps);
- ``fixed steps``: the evaluation at :data:`STEPS` steps;
- ``to convergence``: the evaluation with the lowest validation error over the
  whole run (early stopping; the runs are long enough to be past it).

For each (workload, B, budget, seed) the learning rate is the one with the
lowest validation error at that budget (tuned per B, as Shallue et al. §4.8
require), and the test error is read at the same evaluation. Error is
1 − accuracy for classification and the MSE for regression (the teacher).
Pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.workloads import workload_of
from mbstudy.data import DATASETS, n_validation

EPOCHS = 10
STEPS = 1000
BUDGETS = (f"fixed epochs ({EPOCHS})", f"fixed steps ({STEPS})", "to convergence (best validation error)")
KEYS = ("val/acc", "val/loss", "test/acc", "test/loss")  # the history the reduction reads


@dataclass(frozen=True)
class GeneralisationFacts:
    experiment: str
    runs: pd.DataFrame
    table: pd.DataFrame  # per workload, budget, B: test error median, lo, hi over seeds; n; learning rates chosen
    gaps: pd.DataFrame  # per workload, budget: test error at the largest B minus at the smallest, per seed and summary


def _errors(history: pd.DataFrame) -> pd.DataFrame:
    """Per run and step: ``val`` and ``test`` error (1 − accuracy where logged, else the MSE)."""
    wide = history[history["metric"].isin(KEYS)].pivot_table(index=["run_id", "step"], columns="metric",
                                                              values="value", aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for split in ("val", "test"):
        acc, loss = wide.get(f"{split}/acc"), wide.get(f"{split}/loss")
        out[split] = (1 - acc).where(acc.notna(), loss) if acc is not None else loss
    return out.dropna().reset_index()


def _n_train(row) -> int:
    n = DATASETS[row["dataset"]].n_train
    return n - n_validation(n, float(row.get("val_fraction", 0.0) or 0.0))


def budget_points(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per run and budget: the step read, the validation and test error there."""
    err = _errors(history)
    rows = []
    for r in runs.to_dict("records"):
        e = err[err["run_id"] == r["run_id"]].sort_values("step")
        if e.empty or r["outcome"] != "completed":
            continue
        at_epochs = math.ceil(EPOCHS * _n_train(r) / r["batch_size"])
        picks = {BUDGETS[0]: e[e["step"] >= at_epochs].head(1),
                 BUDGETS[1]: e[e["step"] >= STEPS].head(1),
                 BUDGETS[2]: e.loc[[e["val"].idxmin()]]}
        for budget, p in picks.items():
            if len(p):
                rows.append({"run_id": r["run_id"], "budget": budget, "step": int(p["step"].iloc[0]),
                             "val": float(p["val"].iloc[0]), "test": float(p["test"].iloc[0])})
    return pd.DataFrame(rows, columns=["run_id", "budget", "step", "val", "test"])


def generalisation_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "generalisation"
                         ) -> GeneralisationFacts:
    pts = budget_points(runs, history)
    cols = ["run_id", "workload", "optimizer", "batch_size", "learning_rate", "seed"]
    df = pts.merge(runs.assign(workload=workload_of(runs))[cols], on="run_id")
    keys = ["workload", "budget", "batch_size", "seed"]
    best = df.sort_values(["val", "learning_rate"], kind="stable").groupby(keys, as_index=False).head(1)
    table = best.groupby(["workload", "budget", "batch_size"], as_index=False).agg(
        median=("test", "median"), lo=("test", "min"), hi=("test", "max"), n=("test", "size"),
        step=("step", "median"), learning_rates=("learning_rate", lambda s: ",".join(f"{x:g}" for x in sorted(set(s)))))
    return GeneralisationFacts(experiment, runs, table, gaps(best))


def gaps(best: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, budget): the test error at the largest B minus at the smallest, seed by seed (the same
    seed: the same initialisation), with the mean and range over seeds and a verdict that needs every seed
    to agree (with 3 seeds a sign test cannot do better): ``larger B worse``, ``larger B better`` or ``no
    consistent gap``."""
    rows = []
    for (w, budget), g in best.groupby(["workload", "budget"], sort=False):
        small, large = g["batch_size"].min(), g["batch_size"].max()
        a = g[g["batch_size"] == small].set_index("seed")["test"]
        b = g[g["batch_size"] == large].set_index("seed")["test"]
        d = (b - a).dropna()
        if d.empty:
            continue
        verdict = ("larger B worse" if (d > 0).all() else "larger B better" if (d < 0).all()
                   else "no consistent gap")
        rows.append({"workload": w, "budget": budget, "small_B": int(small), "large_B": int(large),
                     "gap": float(d.mean()), "gap_lo": float(d.min()), "gap_hi": float(d.max()),
                     "n_seeds": int(len(d)), "verdict": verdict, "error_small_B": float(a.median()),
                     "error_large_B": float(b.median())})
    return pd.DataFrame(rows)


def figure_table(g: GeneralisationFacts) -> pd.DataFrame:
    """The table the Q5b figure draws: ``table`` with the budgets in :data:`BUDGETS` order."""
    t = g.table.copy()
    t["budget"] = pd.Categorical(t["budget"], categories=[b for b in BUDGETS if b in set(t["budget"])], ordered=True)
    return t.sort_values(["budget", "workload", "batch_size"])
