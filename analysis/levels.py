"""Steps to any level of a metric, read from the runs' histories: several targets from the same runs.

A run of the science sweep trains until it reaches its hardest targets (its ``target_loss`` and ``target_val``);
every easier level of the same metric was crossed on the way, so its steps can be read from the history the run
logged at every evaluation (McCandlish et al. measure B_crit at several losses this way). :func:`crossings` does
that for every run and level:

- the steps to a level are the crossing, interpolated between the last evaluation above the level and the first
  at or below it (linearly in the log of the metric; in the metric itself where it can be 0, as an error rate),
  so that they are not quantised to the evaluation grid;
- a crossing inside the first evaluation interval is only an upper bound (the curve between step 0 and the first
  evaluation is not measured): ``bound`` is True there, and fits leave such points out;
- a level never reached (the run diverged, ran out of budget or was pruned first) is ``inf``. Pruning stays
  exact: a run is given up only at a step by which another rate of its seed reached the hardest level, so it
  had reached no easier level sooner than that rate either, unless its history says so.

Pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mbstudy.losses import LOSSES, loss_for_task
from mbstudy.metrics import TRAIN_TARGET, VAL_TARGET


def validation_reads(task: str) -> str:
    """What a validation target compares with on a data set of ``task``: ``"error"`` (1 − ``val/acc``) or
    ``"loss"`` (``val/loss``), as the task's loss says (:attr:`mbstudy.losses.Loss.val_target`).

    >>> validation_reads("classification"), validation_reads("regression"), validation_reads("next_token")
    ('error', 'loss', 'loss')
    """
    loss = LOSSES[loss_for_task(task)]
    return loss.val_target or ("error" if "acc" in loss.metrics else "loss")


def target_values(history: pd.DataFrame, target: str, task_of: pd.Series) -> pd.DataFrame:
    """The quantity a target compares with, per run and step: the training loss (``train/loss``) for the
    training-loss target; for the validation target what the task's loss says (:func:`validation_reads`): the
    validation error (1 − ``val/acc``) of a classification run, the validation loss (``val/loss``) of a regression
    run (the MSE) or of a next-token run (the cross-entropy per token) (``task_of``: run_id -> task)."""
    if target == TRAIN_TARGET:
        h = history[history["metric"] == "train/loss"]
        return h[["run_id", "step", "value"]].reset_index(drop=True)
    if target != VAL_TARGET:
        raise ValueError(f"target: expected {TRAIN_TARGET!r} or {VAL_TARGET!r}; received {target!r}")
    reads = history["run_id"].map(task_of).map(lambda t: validation_reads(t) if isinstance(t, str) else "")
    acc = history[(history["metric"] == "val/acc") & (reads == "error")]
    loss = history[(history["metric"] == "val/loss") & (reads == "loss")]
    out = pd.concat([acc.assign(value=1.0 - acc["value"]), loss], ignore_index=True)
    return out[["run_id", "step", "value"]]


def crossing(steps: np.ndarray, values: np.ndarray, level: float) -> tuple[float, bool]:
    """The (interpolated) step at which ``values`` (at ``steps``, ascending, step 0 first) first fall to ``level``
    or below, and whether it is only an upper bound (crossed by the first evaluation); ``(inf, False)`` if never.

    >>> crossing(np.array([0, 10, 20, 30]), np.array([4.0, 2.0, 1.0, 0.5]), 1.0)
    (20.0, False)
    >>> s, bound = crossing(np.array([0, 10, 20, 30]), np.array([4.0, 2.0, 1.0, 0.5]), 1.4142135623730951)
    >>> round(s, 6), bound
    (15.0, False)
    >>> crossing(np.array([0, 10, 20]), np.array([4.0, 2.0, 1.0]), 3.0)[1], crossing(np.array([0, 10]), np.array([4.0, 2.0]), 1.0)
    (True, (inf, False))
    """
    ok = np.isfinite(values)
    steps, values = steps[ok], values[ok]
    hit = np.flatnonzero(values <= level)
    if not len(hit):
        return np.inf, False
    i = int(hit[0])
    if i == 0:
        return float(steps[0]), True
    a, b = values[i - 1], values[i]
    if a > 0 and b > 0 and level > 0:
        t = (np.log(a) - np.log(level)) / (np.log(a) - np.log(b)) if a != b else 1.0
    else:
        t = (a - level) / (a - b) if a != b else 1.0
    s = float(steps[i - 1] + t * (steps[i] - steps[i - 1]))
    return s, i == 1


def crossings(values: pd.DataFrame, levels) -> pd.DataFrame:
    """Per run (of ``values``: run_id, step, value) and level: ``steps`` (interpolated as :func:`crossing` does;
    inf: not reached) and ``bound`` (crossed by the first evaluation). Vectorised over the levels of a run."""
    L = np.asarray(sorted(float(x) for x in levels), float)
    out_id, out_level, out_steps, out_bound = [], [], [], []
    for run_id, g in values.sort_values(["run_id", "step"]).groupby("run_id", sort=False):
        st, v = g["step"].to_numpy(float), g["value"].to_numpy(float)
        ok = np.isfinite(v)
        st, v = st[ok], v[ok]
        hit = v[None, :] <= L[:, None]  # (levels, evaluations)
        reached = hit.any(axis=1)
        i = np.where(reached, hit.argmax(axis=1), 0)
        prev = np.maximum(i - 1, 0)
        a, b = v[prev], v[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = (a > 0) & (b > 0) & (L > 0)
            t = np.where(logs, (np.log(a) - np.log(L)) / (np.log(a) - np.log(b)), (a - L) / (a - b))
        t = np.where(a == b, 1.0, t)
        s = np.where(i == 0, st[0] if len(st) else np.nan, st[prev] + t * (st[i] - st[prev]))
        out_id += [run_id] * len(L)
        out_level += list(L)
        out_steps += list(np.where(reached, s, np.inf))
        out_bound += list(reached & (i <= 1))
    return pd.DataFrame({"run_id": out_id, "level": out_level, "steps": out_steps, "bound": out_bound})


def per_seed(runs: pd.DataFrame, cross: pd.DataFrame, by=("optimizer", "batch_size")) -> pd.DataFrame:
    """Per group, seed and level the fewest steps over learning rates (inf: no rate reached it) and whether that
    fastest run's steps are a bound: ``by`` + seed, level, steps, bound, learning_rate."""
    df = cross.merge(runs[["run_id", *by, "seed", "learning_rate"]], on="run_id")
    df = df.sort_values(["steps", "learning_rate"], kind="stable")
    best = df.groupby([*by, "seed", "level"], as_index=False).head(1)
    return best[[*by, "seed", "level", "steps", "bound", "learning_rate"]].reset_index(drop=True)


def table(best: pd.DataFrame, level: float, by: str = "batch_size") -> pd.DataFrame:
    """A (B × seeds) table of steps at one level from :func:`per_seed`'s rows of one group; a batch size where some
    seed's value is a bound is NaN throughout (left out of fits)."""
    g = best[np.isclose(best["level"], level)]
    t = g.pivot_table(index=by, columns="seed", values="steps", aggfunc="first")
    bounded = g[g["bound"]][by].unique()
    t.loc[t.index.isin(bounded)] = np.nan
    return t
