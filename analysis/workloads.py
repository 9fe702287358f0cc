"""The science sweep across workloads: steps to each target per (workload, target, optimizer), the shape checks
(small-B slope, the hyperbola's R², momentum's and Adam's B_crit against SGD's), and B_simple against B_crit.

``workload_facts(runs)`` reduces the science sweep's runs table (``analysis.load``)
with :mod:`analysis.reduce`; ``b_simple`` (a history of ``grad/b_simple``) is
optional. Pure: DataFrames in, a frozen dataclass out; nothing here reads MLflow.

A workload is ``<dataset>-<model>`` (``mnist1d-mlp``, ``mnist1d-cnn``,
``digits-mlp``, ``teacher-mlp``); a target is ``loss`` (the training-loss
target, ``steps_to_target``) or ``val`` (the validation target,
``steps_to_val_target``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import reduce

WORKLOADS = {  # the order of tables and panels, and each workload's label
    "mnist1d-mlp": "MNIST-1D, MLP 40-100-100-10",
    "mnist1d-cnn": "MNIST-1D, CNN (Greydanus 2020)",
    "digits-mlp": "digits (scikit-learn), MLP 64-100-100-10",
    "teacher-mlp": "teacher (seed 000), MLP 128-64-10, MSE",
}
TARGETS = {"loss": "training-loss target", "val": "validation target"}
SMALL_B = 16  # the perfect-scaling slope is fitted for B up to this
B_SIMPLE_FACTOR = 3.0  # "B_simple ≈ B_crit" holds when their ratio is within this factor either way


def workload_of(runs: pd.DataFrame) -> pd.Series:
    """``<dataset>-<model>`` of every run (runs from before the ``model`` field are MLPs; a table without a
    ``dataset`` column holds TrainConfig's default, MNIST-1D)."""
    model = runs["model"].fillna("mlp") if "model" in runs else pd.Series("mlp", index=runs.index)
    data = runs["dataset"].fillna("mnist1d") if "dataset" in runs else pd.Series("mnist1d", index=runs.index)
    return data.astype(str) + "-" + model.astype(str)


def ordered(names) -> list[str]:
    """``names`` in :data:`WORKLOADS` order, others after them by name."""
    names = set(names)
    return [w for w in WORKLOADS if w in names] + sorted(names - set(WORKLOADS))


@dataclass(frozen=True)
class Panel:
    """One (workload, target): steps to the target per optimizer and B, with the hyperbola fits."""

    workload: str
    target: str  # "loss" or "val"
    steps: pd.DataFrame  # reduce.steps_to_target, with "optimizer"
    per_seed: pd.DataFrame  # reduce.per_seed_steps: rows (optimizer, B), columns seeds
    fits: dict[str, dict[str, tuple[float, float, float]]]  # per optimizer: reduce.bootstrap_fit
    n_seeds: int


@dataclass(frozen=True)
class WorkloadFacts:
    """Every panel of the science sweep, the shape checks and B_simple."""

    experiment: str
    panels: dict[tuple[str, str], Panel]
    checks: pd.DataFrame  # one row per (workload, target, optimizer): see shape_checks
    b_simple: pd.DataFrame = field(default_factory=pd.DataFrame)  # see b_simple_table
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # every finished run of the sweep

    @property
    def workloads(self) -> list[str]:
        return ordered({w for w, _ in self.panels})


def panels(runs: pd.DataFrame, n_boot: int = 1000) -> dict[tuple[str, str], Panel]:
    """One :class:`Panel` per workload and target that some run reached."""
    out = {}
    work = runs.assign(workload=workload_of(runs))
    for w in ordered(work["workload"]):
        sub = work[work["workload"] == w]
        for target, metric in reduce.TARGET_METRICS.items():
            if metric not in sub or sub[metric].notna().sum() == 0:
                continue
            st = reduce.steps_to_target(sub, metric=metric)
            table = reduce.per_seed_steps(sub, metric=metric)
            fits = {o: reduce.bootstrap_fit(table.loc[o], small_b=SMALL_B, n_boot=n_boot)
                    for o in st["optimizer"].unique() if o in table.index.get_level_values(0)}
            out[(w, target)] = Panel(w, target, st, table, fits, int(table.shape[1]))
    return out


def _verdict_slope(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "not measured"
    if lo <= -1 <= hi:
        return "perfect scaling (interval holds −1)"
    return "steeper than −1" if hi < -1 else "flatter than −1"


def _verdict_ratio(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "not measured"
    if lo > 1:
        return "yes (interval above 1)"
    if hi < 1:
        return "no: smaller (interval below 1)"
    return "not resolved (interval holds 1)"


def shape_checks(pan: dict[tuple[str, str], Panel], n_boot: int = 1000) -> pd.DataFrame:
    """Per (workload, target, optimizer): B_crit, S_min and the small-B slope with 95% intervals, the fit's R²,
    the ratio of its B_crit to SGD's with a paired bootstrap interval, and a verdict for the slope and ratio."""
    rows = []
    for (w, target), p in pan.items():
        for opt, fit in p.fits.items():
            row = {"workload": w, "target": target, "optimizer": opt, "n_seeds": p.n_seeds,
                   "batch_sizes": int(np.isfinite(p.steps[p.steps["optimizer"] == opt]["steps"]).sum())}
            for k in ("B_crit", "S_min", "E_min", "slope"):
                row[k], row[f"{k}_lo"], row[f"{k}_hi"] = fit.get(k, (np.nan,) * 3)
            row["r2"] = fit.get("r2", (np.nan,))[0]
            row["slope_verdict"] = _verdict_slope(row["slope_lo"], row["slope_hi"])
            if opt != "sgd" and "sgd" in p.fits:
                r = reduce.bootstrap_ratio(p.per_seed.loc[opt], p.per_seed.loc["sgd"], n_boot=n_boot)
                row["ratio_vs_sgd"], row["ratio_lo"], row["ratio_hi"] = r
                row["extends_scaling"] = _verdict_ratio(r[1], r[2])
            else:
                row["ratio_vs_sgd"] = row["ratio_lo"] = row["ratio_hi"] = np.nan
                row["extends_scaling"] = ""
            rows.append(row)
    return pd.DataFrame(rows)


def b_simple_table(runs: pd.DataFrame, history: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """B_simple of the runs that set steps to the training-loss target (per workload, optimizer, B, seed: the
    fastest rate), at initialisation (step 0), over training (median of every logged value) and where the run
    stopped (its last evaluation, once both targets were reached), each the median over those runs; beside the
    fitted B_crit of the training-loss target with its interval, and the ratio B_simple/B_crit."""
    if history.empty:
        return pd.DataFrame()
    h = history[history["metric"] == "grad/b_simple"].dropna(subset=["value"]).sort_values("step")
    per_run = h.groupby("run_id")["value"].agg(at_init="first", over_training="median", at_end="last")
    df = runs.assign(workload=workload_of(runs)).merge(per_run, left_on="run_id", right_index=True)
    out = df.groupby(["workload", "optimizer"], as_index=False)[["at_init", "over_training", "at_end"]].median()
    crit = checks[checks["target"] == "loss"][["workload", "optimizer", "B_crit", "B_crit_lo", "B_crit_hi"]]
    out = out.merge(crit, on=["workload", "optimizer"], how="inner")
    for k in ("at_init", "over_training", "at_end"):
        out[f"{k}_ratio"] = out[k] / out["B_crit"]
    return out


def fastest_runs(runs: pd.DataFrame, metric: str = "steps_to_target") -> pd.DataFrame:
    """Per (workload, optimizer, B, seed), the run that reached ``metric``'s target in the fewest steps."""
    df = runs.assign(workload=workload_of(runs), s=reduce.reached_steps(runs, metric))
    df = df[np.isfinite(df["s"])].sort_values(["s", "learning_rate"], kind="stable")
    return df.groupby(["workload", "optimizer", "batch_size", "seed"], as_index=False).head(1)


def workload_facts(runs: pd.DataFrame, experiment: str, history: pd.DataFrame | None = None,
                   n_boot: int = 1000) -> WorkloadFacts:
    pan = panels(runs, n_boot)
    checks = shape_checks(pan, n_boot)
    bs = b_simple_table(runs, history, checks) if history is not None and len(checks) else pd.DataFrame()
    return WorkloadFacts(experiment, pan, checks, bs, runs)
