"""Pure pandas reductions of the runs and history tables (``analysis.load``).

Nothing here reads MLflow or draws; every function takes DataFrames and
returns DataFrames or plain dicts, so each is tested on synthetic tables.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

GROUP = ("optimizer", "reduction", "batch_size")


def _score(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The metric, with diverged, failed or pruned runs counted as +inf (never the best)."""
    s = runs[metric].astype(float).where(runs["outcome"] == "completed", np.inf)
    return s.fillna(np.inf)


def best_lr(runs: pd.DataFrame, metric: str = "final/train/loss", by=GROUP) -> pd.DataFrame:
    """The learning rate with the lowest median (over seeds) ``metric`` per group.

    Returns one row per group: the group keys, ``learning_rate``, ``score``
    (the median), ``n_seeds`` and ``stable`` (False when every learning rate of
    the group diverged).
    """
    df = runs.assign(score=_score(runs, metric))
    per_lr = df.groupby([*by, "learning_rate"], as_index=False).agg(score=("score", "median"), n_seeds=("score", "size"))
    idx = per_lr.groupby(list(by))["score"].idxmin()
    best = per_lr.loc[idx].reset_index(drop=True)
    best["stable"] = np.isfinite(best["score"])
    return best


def select(runs: pd.DataFrame, best: pd.DataFrame, by=GROUP) -> pd.DataFrame:
    """The runs (all seeds) at each group's best learning rate."""
    keys = [*by, "learning_rate"]
    return runs.merge(best[keys], on=keys)


def rate_edge(chosen: pd.DataFrame, runs: pd.DataFrame, keys) -> pd.Series:
    """Per row of ``chosen`` (a learning rate picked for a group of ``keys``): ``"lowest"`` or ``"highest"`` where it
    is the smallest or largest rate ``runs`` tried in that group, ``""`` inside the rates tried.

    >>> runs = pd.DataFrame({"g": [1, 1, 1, 2, 2], "learning_rate": [0.1, 0.3, 1.0, 0.3, 1.0]})
    >>> rate_edge(pd.DataFrame({"g": [1, 2], "learning_rate": [0.3, 0.3]}), runs, ["g"]).tolist()
    ['', 'lowest']
    """
    keys = list(keys)
    at = chosen.join(runs.groupby(keys)["learning_rate"].agg(["min", "max"]), on=keys)
    lr = at["learning_rate"]
    return pd.Series(np.where(np.isclose(lr, at["min"]), "lowest", np.where(np.isclose(lr, at["max"]), "highest", "")),
                     index=chosen.index)


def reached_steps(runs: pd.DataFrame, metric: str = "steps_to_target") -> pd.Series:
    """Each run's steps to a target (``metric``: ``steps_to_target`` for the training loss, ``steps_to_val_target``
    for the validation target), inf where it did not reach it (diverged, failed, out of budget, or pruned
    before it: a run pruned after reaching this target, while short of its other one, keeps its count)."""
    col = runs[metric] if metric in runs else pd.Series(np.nan, index=runs.index)
    return col.where(runs["outcome"].isin(["completed", "pruned"]), np.nan).astype(float).fillna(np.inf)


def first_eval_bound(runs: pd.DataFrame, metric: str = "steps_to_target") -> pd.Series:
    """Whether each run reached the target at its first evaluation (``metric`` ≤ its ``eval_every``): its steps
    are then only an upper bound (the target was crossed somewhere in the first interval), not a measurement."""
    if metric not in runs or "eval_every" not in runs:
        return pd.Series(False, index=runs.index)
    return (runs[metric].astype(float) <= runs["eval_every"].astype(float)).fillna(False)


def steps_to_target(runs: pd.DataFrame, by=("optimizer", "batch_size"), metric: str = "steps_to_target") -> pd.DataFrame:
    """Shallue et al.'s steps-to-result: the first evaluation that reaches the target, minimised over learning
    rates for each seed, then the median over seeds, per group.

    A run that did not reach the target (it diverged, ran out of budget, or
    was pruned: given up at a step where another rate of its seed had already
    reached it) counts as never, so it is never the minimum; a group needs
    more than half of its seeds to reach the target. Because the minimum is
    taken per seed, pruning (which compares runs of one seed) changes nothing
    here. Returns the group keys, ``learning_rate`` (the rate that is best for
    the most seeds that reached the target; ties: the smallest), ``steps`` (median over seeds),
    ``steps_min``, ``steps_max`` (range over seeds), ``n_seeds``,
    ``examples = steps * batch_size`` and ``n_bound``: the seeds whose fastest
    run reached the target at its first evaluation (an upper bound,
    :func:`first_eval_bound`; a fit leaves such a group out). Groups that do
    not reach the target are left out.
    """
    df = runs.assign(s=reached_steps(runs, metric), bound=first_eval_bound(runs, metric))
    df = df.sort_values("learning_rate", kind="stable")
    keys = [*by, "seed"] if "seed" in df else list(by)
    per_seed = df.loc[df.groupby(keys)["s"].idxmin(), [*keys, "learning_rate", "s", "bound"]]

    # a seed that reached the target at no rate has no best rate: it votes for none
    per_seed["voted"] = per_seed["learning_rate"].where(np.isfinite(per_seed["s"]))

    def mode_rate(rates: pd.Series) -> float:
        counts = rates.dropna().value_counts()
        return float(min(counts.index[counts == counts.max()])) if len(counts) else np.nan

    best = per_seed.groupby(list(by), as_index=False).agg(
        learning_rate=("voted", mode_rate), steps=("s", "median"), steps_min=("s", "min"),
        steps_max=("s", "max"), n_seeds=("s", "size"), n_bound=("bound", "sum"))
    best = best[np.isfinite(best["steps"])]
    if best.empty:
        return best.assign(examples=[])
    best["n_bound"] = best["n_bound"].astype(int)
    best["steps_max"] = best["steps_max"].replace(np.inf, np.nan)
    best["examples"] = best["steps"] * best["batch_size"]
    return best.sort_values(list(by)).reset_index(drop=True)


def fit_hyperbola(batch_size, steps) -> dict[str, float]:
    """Fit ``S(B) = S_min (1 + B_crit / B)`` (McCandlish et al. 2018) in log space.

    Returns ``S_min``, ``B_crit``, ``E_min = S_min * B_crit`` and ``r2`` (of
    log S). Needs at least 3 batch sizes; otherwise every value is NaN.

    >>> import numpy as np
    >>> B = np.array([1, 4, 16, 64, 256, 1024.0])
    >>> fit = fit_hyperbola(B, 100 * (1 + 50 / B))
    >>> round(fit["B_crit"], 6), round(fit["S_min"], 6), round(fit["r2"], 6)
    (50.0, 100.0, 1.0)
    """
    from scipy.optimize import curve_fit

    B = np.asarray(batch_size, float)
    S = np.asarray(steps, float)
    ok = np.isfinite(S) & (S > 0)
    B, S = B[ok], S[ok]
    nan = {"S_min": np.nan, "B_crit": np.nan, "E_min": np.nan, "r2": np.nan, "n": int(len(B))}
    if len(B) < 3:
        return nan

    def model(b, log_smin, log_bcrit):
        return log_smin + np.log1p(np.exp(log_bcrit) / b)

    p0 = (np.log(S.min()), np.log(np.median(B)))
    try:
        (ls, lb), _ = curve_fit(model, B, np.log(S), p0=p0, maxfev=20000)
    except RuntimeError:
        return nan
    resid = np.log(S) - model(B, ls, lb)
    ss_tot = np.sum((np.log(S) - np.log(S).mean()) ** 2)
    r2 = 1 - np.sum(resid**2) / ss_tot if ss_tot > 0 else np.nan
    s_min, b_crit = float(np.exp(ls)), float(np.exp(lb))
    return {"S_min": s_min, "B_crit": b_crit, "E_min": s_min * b_crit, "r2": float(r2), "n": int(len(B))}


def best_lr_to_target(runs: pd.DataFrame, by=GROUP, metric: str = "steps_to_target") -> pd.DataFrame:
    """:func:`best_lr` by steps to target, defined as :func:`steps_to_target` defines it (so exact under
    pruning): per group the rate that is fastest for the most seeds, ``score`` the median over seeds of each
    seed's fewest steps, ``n_seeds``, and ``stable`` False (rate NaN) where the target was not reached."""
    st = steps_to_target(runs, by, metric)
    keys = runs[list(by)].drop_duplicates().sort_values(list(by))
    out = keys.merge(st[[*by, "learning_rate", "steps", "n_seeds"]], on=list(by), how="left")
    out = out.rename(columns={"steps": "score"}).reset_index(drop=True)
    out["stable"] = out["score"].notna()
    return out


def per_seed_steps(runs: pd.DataFrame, by=("optimizer", "batch_size"), metric: str = "steps_to_target",
                   drop_bounds: bool = False) -> pd.DataFrame:
    """Per group and seed, the fewest steps to target over learning rates (inf: no rate reached it):
    a table with one row per group and one column per seed (what :func:`steps_to_target` takes the median of).
    ``drop_bounds``: a group where some seed's fastest run reached the target at its first evaluation (an upper
    bound, :func:`first_eval_bound`) is NaN throughout, so a fit leaves it out."""
    s = reached_steps(runs, metric)
    seed = runs["seed"] if "seed" in runs else pd.Series(0, index=runs.index)
    keys = [*(runs[k] for k in by), seed.rename("seed")]
    table = s.groupby(keys).min().unstack("seed")
    if drop_bounds:
        df = pd.DataFrame({"s": s, "bound": first_eval_bound(runs, metric)})
        fastest = df.sort_values("s", kind="stable").groupby(keys).head(1)
        bounded = fastest[fastest["bound"]].groupby([k.loc[fastest[fastest["bound"]].index] for k in keys[:-1]]).size()
        if len(bounded):
            table.loc[table.index.isin(bounded.index)] = np.nan
    return table


def bootstrap_fit(table: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, small_b: int | None = None,
                  seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """The hyperbola fit of one optimizer's steps-to-target, with bootstrap intervals over seeds.

    ``table``: :func:`per_seed_steps` of one optimizer (rows: batch sizes,
    columns: seeds). The estimate fits the median over seeds at each batch
    size (batch sizes whose median is inf are left out, as in
    :func:`steps_to_target`); each of ``n_boot`` replicates resamples the seeds
    with replacement, takes the median again and refits. Returns
    ``{name: (estimate, lo, hi)}`` for ``B_crit``, ``S_min``, ``E_min`` and, with
    ``small_b``, ``slope`` (log-log slope of steps for B <= small_b): the
    percentile interval at ``level``. With one seed the intervals are NaN.

    >>> B = np.array([1, 4, 16, 64, 256, 1024])
    >>> t = pd.DataFrame({s: 100 * (1 + 50 / B) * f for s, f in enumerate((0.9, 1.0, 1.1))}, index=B)
    >>> fit = bootstrap_fit(t, n_boot=200)
    >>> round(fit["B_crit"][0], 6), fit["B_crit"][1] <= 50 <= fit["B_crit"][2]
    (50.0, True)
    """
    B = np.asarray(table.index, float)
    values = table.to_numpy(float)
    point = estimate_fit(B, values, small_b)
    n_seeds = values.shape[1]
    if n_seeds < 2:
        return {k: (v, np.nan, np.nan) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    reps = [estimate_fit(B, values[:, rng.integers(0, n_seeds, n_seeds)], small_b) for _ in range(n_boot)]
    return {k: (v, *percentile_interval([rep[k] for rep in reps], level, n_boot)) for k, v in point.items()}


def estimate_fit(B: np.ndarray, values: np.ndarray, small_b: int | None) -> dict[str, float]:
    """The fit of the median over seeds (columns) at each batch size (rows), and the small-B slope."""
    # NaN: a seed with no finished run at that B, left out as steps_to_target leaves it out; inf: not reached
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a batch size left out (NaN for every seed)
        med = np.nanmedian(values, axis=1)
    fit = fit_hyperbola(B, med)
    out = {k: fit[k] for k in ("B_crit", "S_min", "E_min", "r2")}
    if small_b is not None:
        out["slope"] = loglog_slope(B[B <= small_b], med[B <= small_b])
    return out


def percentile_interval(values, level: float, n_boot: int, need: float = 0.5) -> tuple[float, float]:
    """The percentile interval at ``level`` of the finite replicates among ``n_boot``; NaN when fewer than
    ``need`` of them (a fraction) are finite, or none is."""
    r = np.asarray(values, float)
    r = r[np.isfinite(r)]
    if len(r) == 0 or len(r) < need * n_boot:
        return np.nan, np.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_ratio(num: pd.DataFrame, den: pd.DataFrame, *, key: str = "B_crit", n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``key`` of one :func:`per_seed_steps` table's fit divided by another's (momentum's B_crit over SGD's),
    with a paired bootstrap over the seeds the two share (seed k is the same initialisation and data order
    in both): ``(estimate, lo, hi)``; the interval is NaN with fewer than 2 shared seeds.

    >>> B = np.array([1, 4, 16, 64, 256, 1024])
    >>> a = pd.DataFrame({s: 100 * (1 + 50 / B) * f for s, f in enumerate((0.9, 1.0, 1.1))}, index=B)
    >>> b = pd.DataFrame({s: 100 * (1 + 200 / B) * f for s, f in enumerate((0.9, 1.0, 1.1))}, index=B)
    >>> r = bootstrap_ratio(b, a, n_boot=100)
    >>> round(r[0], 6), r[1] <= 4 <= r[2]
    (4.0, True)
    """
    seeds = [c for c in num.columns if c in set(den.columns)]
    index = num.index.union(den.index)
    a = num.reindex(index)[seeds].to_numpy(float)
    b = den.reindex(index)[seeds].to_numpy(float)
    B = np.asarray(index, float)

    def ratio(cols) -> float:
        return estimate_fit(B, a[:, cols], None)[key] / estimate_fit(B, b[:, cols], None)[key]

    point = ratio(np.arange(len(seeds))) if seeds else np.nan
    if len(seeds) < 2:
        return point, np.nan, np.nan
    rng = np.random.default_rng(seed)
    reps = [ratio(rng.integers(0, len(seeds), len(seeds))) for _ in range(n_boot)]
    return (point, *percentile_interval(reps, level, n_boot))


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (NaN with fewer than 2 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return np.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def curves(history: pd.DataFrame, runs: pd.DataFrame, metric: str = "train/loss",
           by=GROUP) -> pd.DataFrame:
    """Mean, min and max over seeds of ``metric`` at each step, per group.

    Adds ``examples = step * batch_size`` and the mean cumulative training
    seconds ``time_s`` when ``time/train_s`` is in the history.
    """
    h = history[history["metric"] == metric].merge(runs[["run_id", *by]], on="run_id")
    out = h.groupby([*by, "step"], as_index=False)["value"].agg(mean="mean", lo="min", hi="max", n="size")
    t = history[history["metric"] == "time/train_s"]
    if len(t):
        t = t.merge(runs[["run_id", *by]], on="run_id").groupby([*by, "step"], as_index=False)["value"].mean()
        out = out.merge(t.rename(columns={"value": "time_s"}), on=[*by, "step"], how="left")
    out["examples"] = out["step"] * out["batch_size"]
    return out


def heatmap_table(runs: pd.DataFrame, metric: str = "final/train/loss") -> pd.DataFrame:
    """Median over seeds of ``metric`` per (optimizer, reduction, B, lr), with ``diverged``:
    the fraction of seeds that diverged (or failed). A pruned run (given up before its target, in a grid that
    stops there) has no final value to compare and counts as neither: NaN, left out of the median."""
    ok = runs["outcome"].isin(["completed", "pruned"])
    v = runs[metric].astype(float).where(runs["outcome"] != "pruned")
    df = runs.assign(v=v, div=(~ok).astype(float))
    return df.groupby([*GROUP, "learning_rate"], as_index=False).agg(value=("v", "median"), diverged=("div", "mean"))


def sum_mean_best_lr_slopes(best: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: log-log slope against B of the best lr of ``sum`` divided by that of ``mean``.

    -1 means sum's best learning rate shifts as 1/B (SGD's algebra); 0 means
    the reduction does not matter (Adam's).
    """
    rows = []
    for opt, g in best[best["stable"]].groupby("optimizer"):
        p = g.pivot_table(index="batch_size", columns="reduction", values="learning_rate")
        if {"sum", "mean"} <= set(p.columns):
            p = p.dropna()
            rows.append({"optimizer": opt, "slope": loglog_slope(p.index, p["sum"] / p["mean"]), "n": len(p)})
    return pd.DataFrame(rows, columns=["optimizer", "slope", "n"])


def first_crossing(cur: pd.DataFrame, x: str, level: float, by=GROUP) -> pd.DataFrame:
    """Per group of a ``curves`` table, the first ``x`` at which the mean falls to ``level`` (NaN: never)."""
    rows = []
    for keys, g in cur.sort_values("step").groupby(list(by)):
        hit = g[g["mean"] <= level]
        rows.append({**dict(zip(by, keys)), x: float(hit[x].iloc[0]) if len(hit) else np.nan})
    return pd.DataFrame(rows, columns=[*by, x])


def paired_ratio(num: pd.Series, den: pd.Series, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """median(num) / median(den) over the seeds both have (index: seed), with a paired bootstrap over seeds:
    ``(estimate, lo, hi)``; inf where a median is inf (the target not reached), NaN intervals under 2 seeds.

    >>> r = paired_ratio(pd.Series([2.0, 4, 6]), pd.Series([1.0, 2, 3]), n_boot=50)
    >>> r[0], r[1] <= 2 <= r[2]
    (2.0, True)
    """
    seeds = sorted(set(num.dropna().index) & set(den.dropna().index))
    a, b = num.reindex(seeds).to_numpy(float), den.reindex(seeds).to_numpy(float)
    if not seeds:
        return np.nan, np.nan, np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(np.median(a) / np.median(b))
        if len(seeds) < 2:
            return point, np.nan, np.nan
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(seeds), (n_boot, len(seeds)))
        reps = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
    return (point, *percentile_interval(reps, 0.95, n_boot))


def median_interval(values, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` (one per seed) and its percentile-bootstrap interval over seeds."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    if len(v) == 1:
        return float(v[0]), np.nan, np.nan
    rng = np.random.default_rng(seed)
    reps = np.median(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
    return (float(np.median(v)), *percentile_interval(reps, 0.95, n_boot, need=0))
