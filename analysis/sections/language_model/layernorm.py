"""Gray et al. (2024, arXiv:2411.00999): does the noise scale of a transformer's LayerNorm parameters alone predict
the whole model's? Pure functions over the per-layer noise statistics a training run logs at every full
evaluation (``grad/layer{i}/trace_cov`` and ``grad/layer{i}/g_norm_sq``, :mod:`mbstudy.metrics`).

Traces and squared norms are sums over parameters, so a subset of layers has ``tr(Σ_S) = Σ_{i∈S} tr(Σ_i)`` and
``|G_S|² = Σ_{i∈S} |G_i|²`` (:func:`mbstudy.noise.subset_noise`), and its simple noise scale is their ratio.
:func:`subset_b_simple` computes it per run and evaluation beside the whole model's ``grad/b_simple``;
:func:`agreement` summarises, at each step the seeds share, the per-seed ratio subset / total as a geometric mean
with its t-interval over seeds (the statistics issue's intervals), and :func:`drift` asks whether that ratio
changes over training (first against last shared step, paired by seed): a constant ratio means the subset
*predicts* the total up to a factor; a ratio of 1 means it *equals* it.

An estimate of ``|G|²`` from a finite batch can be zero or negative (the noise term is subtracted), and then the
noise scale is not measured: such points are NaN, counted in ``n_invalid``, never read as a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import stats
from mbstudy.metrics import layer_metric_name

TOTAL = "grad/b_simple"


def subset_b_simple(history: pd.DataFrame, indices: Sequence[int]) -> pd.DataFrame:
    """Per run and step of ``history`` (long form: run_id, step, metric, value): ``subset``, the simple noise
    scale of the parametrised layers ``indices`` alone, ``total``, the whole model's, and ``ratio`` = subset /
    total; NaN where either is not a positive number (a non-positive ``|G|²`` estimate) or a layer's statistics
    are missing at that step.

    >>> h = pd.DataFrame({"run_id": "r", "step": 0, "metric": ["grad/layer0/trace_cov", "grad/layer0/g_norm_sq",
    ...                   "grad/layer2/trace_cov", "grad/layer2/g_norm_sq", "grad/b_simple"],
    ...                   "value": [6.0, 1.0, 2.0, 1.0, 5.0]})
    >>> subset_b_simple(h, [0, 2])[["subset", "total", "ratio"]].round(3).values.tolist()
    [[4.0, 5.0, 0.8]]
    """
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("indices: expected the indices of one or more parametrised layers (mbstudy.layers_of_type); "
                         "received none")
    names = [layer_metric_name(i, k) for i in idx for k in ("trace_cov", "g_norm_sq")] + [TOTAL]
    h = history[history["metric"].isin(names)]
    cols = ["run_id", "step", "subset", "total", "ratio"]
    if h.empty:
        return pd.DataFrame(columns=cols)
    wide = h.pivot_table(index=["run_id", "step"], columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=names)
    tr = wide[[layer_metric_name(i, "trace_cov") for i in idx]].sum(axis=1, min_count=len(idx))
    g = wide[[layer_metric_name(i, "g_norm_sq") for i in idx]].sum(axis=1, min_count=len(idx))
    subset = (tr / g).where((g > 0) & (tr > 0))
    total = wide[TOTAL].where(wide[TOTAL] > 0)
    out = pd.DataFrame({"subset": subset, "total": total, "ratio": subset / total}).reset_index()
    return out[cols]


def agreement(table: pd.DataFrame, seed_of: pd.Series, level: float = 0.95) -> pd.DataFrame:
    """At each step of :func:`subset_b_simple`'s ``table`` (one run per seed: ``seed_of`` maps run_id -> seed), over
    the seeds: ``ratio`` (geometric mean of the per-seed subset / total) with its t-interval ``lo``, ``hi`` and the
    p-value of a ratio of 1; the subset's and the total's geometric means with theirs; ``n`` seeds measured and
    ``n_invalid`` seeds whose ratio was not measured there.

    >>> t = pd.DataFrame({"run_id": ["a", "b", "a", "b"], "step": [0, 0, 10, 10], "subset": [2.0, 4.0, 8, 8],
    ...                   "total": [4.0, 8.0, 4, 16], "ratio": [0.5, 0.5, 2.0, 0.5]})
    >>> a = agreement(t, pd.Series({"a": 0, "b": 1}))
    >>> a[["step", "ratio", "n"]].values.tolist()
    [[0.0, 0.5, 2.0], [10.0, 1.0, 2.0]]
    """
    cols = ["step", "ratio", "lo", "hi", "p", "subset", "subset_lo", "subset_hi", "total", "total_lo", "total_hi",
            "n", "n_invalid"]
    rows = []
    t = table.assign(seed=table["run_id"].map(seed_of))
    for step, g in t.groupby("step"):
        logs = {k: np.log(g[k].to_numpy(float)) for k in ("ratio", "subset", "total")}
        est, lo, hi = (float(v) for v in stats.t_interval(logs["ratio"], level))
        row = {"step": step, "ratio": est, "lo": lo, "hi": hi, "p": float(stats.t_pvalue(logs["ratio"])),
               "n": int(np.isfinite(logs["ratio"]).sum()), "n_invalid": int((~np.isfinite(logs["ratio"])).sum())}
        for k in ("subset", "total"):
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = (float(v) for v in stats.t_interval(logs[k], level))
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def drift(table: pd.DataFrame, seed_of: pd.Series, level: float = 0.95) -> dict[str, float]:
    """Whether the ratio subset / total changes over training: per seed, its ratio at the last step all seeds
    measured over its ratio at the first, summarised over seeds (geometric mean, t-interval, p-value of no change;
    ``first`` and ``last`` are the steps). NaN without two shared steps.

    >>> t = pd.DataFrame({"run_id": ["a", "b", "a", "b"], "step": [0, 0, 10, 10], "subset": 1.0, "total": 1.0,
    ...                   "ratio": [0.5, 0.6, 1.0, 1.2]})
    >>> {k: round(v, 3) for k, v in drift(t, pd.Series({"a": 0, "b": 1})).items() if k in ("change", "first", "last")}
    {'change': 2.0, 'first': 0.0, 'last': 10.0}
    """
    t = table.assign(seed=table["run_id"].map(seed_of))
    wide = t.pivot_table(index="seed", columns="step", values="ratio", aggfunc="first")
    shared = [s for s in wide.columns if wide[s].notna().all()]
    nan = {"change": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan, "n": 0, "first": np.nan, "last": np.nan}
    if len(shared) < 2:
        return nan
    first, last = shared[0], shared[-1]
    est, lo, hi, p, n = stats.paired_ratio(wide[last].to_numpy(float), wide[first].to_numpy(float), level=level)
    return {"change": est, "lo": lo, "hi": hi, "p": p, "n": n, "first": float(first), "last": float(last)}
