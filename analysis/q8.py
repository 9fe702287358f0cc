"""Q8, accumulate or step? The three experiments reduced: gradient accumulation against small steps
(``accumulation``), Adam's β2 at a fixed half-life against a fixed β2 (``beta2``), and the SDE square-root
rule (``sde``).

Pure: the runs tables of :mod:`analysis.load` (and, for ``sde``, the training-loss histories) in, frozen
dataclasses of DataFrames out; every interval is a 95% percentile bootstrap over seeds (paired where two
arms share a seed: seed k is the same initial weights in both, and the same data order where the two have the
same batch size).

Steps to a target are :mod:`analysis.reduce`'s: per seed the fewest steps over the learning rates, then the
median over seeds; examples = steps x the batch size of one update (k micro-batches of b: kb).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import reduce

TARGET_METRICS = {"loss": "steps_to_target", "val": "steps_to_val_target"}
TIME_METRICS = {"loss": "time_to_target", "val": "time_to_val_target"}
FIXED, HALF, SGD = "adam, β2 = 0.999", "adam, β2 half-life", "sgd"  # the beta2 sweep's arms
ARMS = (FIXED, HALF, SGD)
RULES = ("square-root", "linear", "none")  # the sde sweep's rules, in the order tables and figures show them
BAND = 2.0  # a learning rate is in the robust band when its steps to target are within this factor of the best
LEVEL, N_BOOT = 0.95, 1000


def _interval(reps, n_boot: int = N_BOOT) -> tuple[float, float]:
    return reduce._percentile(reps, LEVEL, n_boot)


def paired_ratio(num: pd.Series, den: pd.Series, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
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
    return (point, *_interval(reps, n_boot))


# ------------------------------------------------------------------ accumulation against small steps


@dataclass(frozen=True)
class AccumulationFacts:
    """Per (target, optimizer, micro-batch b, k): examples and wall time to the target, and their ratios to
    k = 1 (k steps of b instead of one accumulated step of kb)."""

    experiment: str
    table: pd.DataFrame
    runs: pd.DataFrame


def _fastest(runs: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Per group and seed the run with the fewest steps to the target (inf: none reached it)."""
    df = runs.assign(s=reduce.reached_steps(runs, metric)).sort_values("learning_rate", kind="stable")
    return df.loc[df.groupby([*by, "seed"])["s"].idxmin()]


def accumulation_facts(runs: pd.DataFrame, experiment: str = "accumulation", n_boot: int = N_BOOT) -> AccumulationFacts:
    runs = runs.assign(accumulation=runs["accumulation"].fillna(1).astype(int) if "accumulation" in runs else 1)
    runs = runs.assign(micro=runs["batch_size"] // runs["accumulation"])
    by = ["optimizer", "micro", "accumulation"]
    rows = []
    for target, metric in TARGET_METRICS.items():
        if metric not in runs:
            continue
        best = _fastest(runs, metric, by)
        best = best.assign(examples=best["s"] * best["batch_size"],
                           time=best[TIME_METRICS[target]].where(np.isfinite(best["s"])) if TIME_METRICS[target]
                           in best else np.nan)
        for (opt, micro), g in best.groupby(["optimizer", "micro"]):
            one = g[g["accumulation"] == 1].set_index("seed")
            for k, gk in g.groupby("accumulation"):
                gk = gk.set_index("seed")
                ex = paired_ratio(gk["examples"], one["examples"], n_boot=n_boot) if len(one) else (np.nan,) * 3
                tm = paired_ratio(gk["time"].astype(float), one["time"].astype(float), n_boot=n_boot) \
                    if len(one) else (np.nan,) * 3
                rows.append({"target": target, "optimizer": opt, "micro": int(micro), "k": int(k),
                             "batch_size": int(micro * k), "examples": float(np.median(gk["examples"])),
                             "steps": float(np.median(gk["s"])),
                             "eval_every": float(gk["eval_every"].iloc[0]) if "eval_every" in gk else np.nan,
                             "time_s": float(np.nanmedian(gk["time"].astype(float)))
                             if gk["time"].notna().any() else np.nan, "n_seeds": len(gk),
                             "examples_ratio": ex[0], "examples_lo": ex[1], "examples_hi": ex[2],
                             "time_ratio": tm[0], "time_lo": tm[1], "time_hi": tm[2]})
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["target", "optimizer", "micro", "k"]).reset_index(drop=True)
    return AccumulationFacts(experiment, table, runs)


def hyperbola_ratio(b_crit: float, micro: int, k: int) -> float:
    """What McCandlish et al.'s hyperbola predicts for the examples ratio of one step of kb to k steps of b:
    E(B) = E_min (1 + B / B_crit), so E(kb) / E(b) = (B_crit + kb) / (B_crit + b).

    >>> hyperbola_ratio(100, 10, 1), round(hyperbola_ratio(100, 10, 10), 4)
    (1.0, 1.8182)
    """
    return (b_crit + k * micro) / (b_crit + micro)


# ------------------------------------------------------------------ beta2 at a fixed half-life


@dataclass(frozen=True)
class Beta2Facts:
    """Per (arm, B): steps and examples to the target, the fraction of runs that diverged, the robust band
    of learning rates (decades within ``BAND``x of the fewest steps), and the best rate."""

    experiment: str
    table: pd.DataFrame
    per_seed: dict[str, pd.DataFrame]  # arm -> reduce.per_seed_steps (rows B, columns seeds), training-loss target
    runs: pd.DataFrame


def beta2_arm(runs: pd.DataFrame) -> pd.Series:
    """``sgd``, ``adam, β2 = 0.999`` or ``adam, β2 half-life`` of every run."""
    beta2 = runs["beta2"].astype(float) if "beta2" in runs else pd.Series(0.999, index=runs.index)
    adam = np.where(np.isclose(beta2, 0.999, rtol=0, atol=1e-12) & (runs["batch_size"] != 128),
                    FIXED, HALF)
    return pd.Series(np.where(runs["optimizer"] == "adam", adam, runs["optimizer"]), index=runs.index)


def band_width(steps: pd.Series, factor: float = BAND) -> float:
    """The width in decades of the learning rates (index) whose steps are within ``factor`` of the fewest
    (0 when one rate is; NaN when none reached the target).

    >>> band_width(pd.Series([900.0, 300, 400, 1000, np.inf], index=[1e-3, 1e-2, 1e-1, 1, 10]))
    1.0
    """
    s = steps[np.isfinite(steps)]
    if s.empty:
        return np.nan
    inside = np.asarray(s[s <= factor * s.min()].index, float)
    return float(np.log10(inside.max() / inside.min()))


def beta2_facts(runs: pd.DataFrame, experiment: str = "beta2", n_boot: int = N_BOOT) -> Beta2Facts:
    runs = runs.assign(arm=beta2_arm(runs))
    rows, per_seed = [], {}
    for arm, g in runs.groupby("arm"):
        per_seed[arm] = reduce.per_seed_steps(g, by=("batch_size",))
        for B, gb in g.groupby("batch_size"):
            s = reduce.reached_steps(gb)
            widths = gb.assign(s=s).groupby("seed").apply(
                lambda d: band_width(d.set_index("learning_rate")["s"]), include_groups=False)
            seeds = per_seed[arm].loc[B]
            best = gb.assign(s=s).sort_values("s").groupby("seed").head(1)["learning_rate"]
            rows.append({"arm": arm, "batch_size": int(B), "steps": float(np.median(seeds)),
                         "examples": float(np.median(seeds)) * B, "n_seeds": int(seeds.size),
                         "diverged": float((gb["outcome"] == "diverged").mean()), "n_runs": len(gb),
                         "band": float(np.nanmedian(widths)) if widths.notna().any() else np.nan,
                         "band_min": float(widths.min()), "band_max": float(widths.max()),
                         "best_lr": float(best.mode().min()) if len(best) else np.nan,
                         "beta2": float(gb["beta2"].iloc[0]) if "beta2" in gb else np.nan,
                         "eval_every": float(gb["eval_every"].iloc[0]) if "eval_every" in gb else np.nan})
    table = pd.DataFrame(rows).sort_values(["arm", "batch_size"]).reset_index(drop=True)
    return Beta2Facts(experiment, table, per_seed, runs)


def arm_ratio(facts: Beta2Facts, num: str, den: str, batch_size: int, n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """Steps of arm ``num`` over arm ``den`` at one B (median over seeds, paired bootstrap)."""
    a, b = facts.per_seed.get(num), facts.per_seed.get(den)
    if a is None or b is None or batch_size not in a.index or batch_size not in b.index:
        return np.nan, np.nan, np.nan
    return paired_ratio(a.loc[batch_size], b.loc[batch_size], n_boot=n_boot)


# ------------------------------------------------------------------ the SDE square-root rule


@dataclass(frozen=True)
class SdeFacts:
    """The reference at B0 and each rule's training-loss curve against examples seen, and the distance
    between each rule's curve and the reference's (mean over the evaluations of |difference of the medians
    over seeds of log loss|; its bootstrap interval resamples both arms' seeds, which biases it upward),
    the reference's seed-to-seed spread (mean over evaluations of the std over seeds of log loss) and the
    seed-noise level (95th percentile of the reference's distance to itself under resampling)."""

    experiment: str
    b0: int
    lr0: float
    curves: pd.DataFrame  # rule, kappa, batch_size, seed, examples, loss
    distances: pd.DataFrame  # rule, kappa, distance [lo, hi], spread, noise, within (distance <= noise)
    reference_rates: pd.DataFrame  # learning_rate, final loss (median over seeds) at B0


def sde_rule_of(runs: pd.DataFrame, b0: int, lr0: float) -> pd.Series:
    """``reference``, ``square-root``, ``linear``, ``none`` (or ``other``) of every run of the sde grid."""
    kappa = runs["batch_size"] / b0
    beta1 = runs["beta1"].astype(float) if "beta1" in runs else pd.Series(0.9, index=runs.index)
    lr = runs["learning_rate"].astype(float)
    out = np.select(
        [(kappa == 1) & np.isclose(lr, lr0), (kappa == 1), ~np.isclose(beta1, 0.9),
         np.isclose(lr, lr0 * kappa), np.isclose(lr, lr0)],
        ["reference", "other", *RULES], "other")
    return pd.Series(out, index=runs.index)


def _distance(rule: np.ndarray, ref: np.ndarray) -> float:
    """Mean over examples of |median over seeds of log loss, rule − reference| (rows: seeds)."""
    with np.errstate(invalid="ignore"):
        d = np.abs(np.median(rule, axis=0) - np.median(ref, axis=0))
    return float(np.mean(d)) if np.all(np.isfinite(d)) else np.inf


def sde_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "sde", b0: int = 32, lr0: float = 0.01,
              n_boot: int = N_BOOT) -> SdeFacts:
    runs = runs.assign(rule=sde_rule_of(runs, b0, lr0), kappa=(runs["batch_size"] // b0).astype(int))
    h = history[history["metric"] == "train/loss"].merge(
        runs[["run_id", "rule", "kappa", "batch_size", "seed", "learning_rate"]], on="run_id")
    h = h.assign(examples=h["step"] * h["batch_size"], loss=h["value"].astype(float))
    h = h[h["examples"] > 0]
    final = h.sort_values("examples").groupby("run_id").tail(1)
    ref_rates = (final[final["kappa"] == 1].groupby("learning_rate", as_index=False)["loss"].median()
                 .rename(columns={"loss": "final_loss"}))
    curves = h[h["rule"] != "other"][["rule", "kappa", "batch_size", "seed", "examples", "loss"]]

    def matrix(d: pd.DataFrame) -> np.ndarray:
        return np.log(d.pivot_table(index="seed", columns="examples", values="loss", aggfunc="first").to_numpy(float))

    ref = matrix(curves[curves["rule"] == "reference"])
    spread = float(np.mean(np.std(ref, axis=0, ddof=1))) if ref.shape[0] > 1 else np.nan
    rng = np.random.default_rng(0)
    n = len(ref)
    # seed noise: the distance between two resamples of the reference's own seeds; a rule whose distance is
    # under its 95th percentile is as close to the reference as the reference is to itself
    null = [_distance(ref[rng.integers(0, n, n)], ref[rng.integers(0, n, n)]) for _ in range(n_boot)]
    noise = float(np.quantile(null, LEVEL)) if n > 1 else np.nan
    rows = []
    for (rule, kappa), d in curves[curves["rule"] != "reference"].groupby(["rule", "kappa"]):
        m = matrix(d)
        cols = min(m.shape[1], ref.shape[1])
        m, r = m[:, :cols], ref[:, :cols]
        point = _distance(m, r)
        reps = [_distance(m[rng.integers(0, len(m), len(m))], r[rng.integers(0, len(r), len(r))]) for _ in range(n_boot)]
        lo, hi = _interval(reps, n_boot)
        rows.append({"rule": rule, "kappa": int(kappa), "batch_size": int(kappa * b0), "distance": point, "lo": lo,
                     "hi": hi, "spread": spread, "noise": noise, "within": bool(point <= noise), "n_seeds": len(m)})
    distances = pd.DataFrame(rows)
    if not distances.empty:
        order = {rule: i for i, rule in enumerate(RULES)}
        distances = distances.sort_values(["kappa", "rule"], key=lambda s: s.map(order) if s.name == "rule" else s)
        distances = distances.reset_index(drop=True)
    return SdeFacts(experiment, b0, lr0, curves.reset_index(drop=True), distances, ref_rates)
