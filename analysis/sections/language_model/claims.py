"""The language model, part 2: Q8 and Q9 on the transformer, and Gray et al.'s LayerNorm noise scale.

Four sweeps on the ``lm`` workload (the transformer on CPython's documentation as characters), every one to the lm
sweep's validation-loss target: ``lm_beta2`` (Adam's β2 at a fixed half-life in examples against 0.999, and plain
SGD, Marek et al. 2025), ``lm_accumulation`` (one step of k accumulated micro-batches against k steps),
``lm_warmup`` (doubling batch-size warm-ups, Merrill et al. 2025), ``lm_branching`` (the local critical batch
size over training by branching, Merrill et al.; its reference runs log the noise statistics per layer, which give
the LayerNorm parameters' own noise scale, Gray et al. 2024) and ``lm_warmup_placed`` (a warm-up placed where
``lm_branching``'s local B_crit says, as ``warmup_placed`` on MNIST-1D; issue 25).

Each is read by the MNIST-1D section's own facts function (:func:`analysis.sections.beta2.beta2_facts`,
``accumulation_facts``, ``warmup_facts``, ``branch_facts``), which read a run's training-loss target:
:func:`on_validation_target` hands them the validation target in its place, so the LM's Q8 and Q9 are measured on
held-out text. The constant batch sizes a warm-up is compared with, and the k steps an accumulation is compared
with, are the lm sweep's own runs (the same seeds, their learning rates searched).

:func:`tests` gathers every comparison of this part (each a paired ratio over seeds: geometric mean, 95%
t-interval, p-value of a ratio of 1) and adjusts their p-values together by Holm's rule; a verdict is resolved when
its adjusted p-value is below 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from analysis import load, plots, stats
from analysis.load import MissingRuns
from analysis.markdown import MIN_INTERVAL_SEEDS, interval, md_table, verdict_of
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections import branching as q9_branching
from analysis.sections import warmup as q9_warmup
from analysis.sections.accumulation import AccumulationFacts, accumulation_facts
from analysis.sections.beta2 import Beta2Facts, arm_test, beta2_facts
from analysis.sections.branching import TOL, BranchFacts, branch_facts, value_text
from analysis.sections.language_model import layernorm
from analysis.sections.warmup import WarmupFacts, warmup_facts
from mbstudy.metrics import TARGETS, layer_metric_name

plt = plots.plt
GRIDS = {"beta2": "lm_beta2", "accumulation": "lm_accumulation", "warmup": "lm_warmup", "branching": "lm_branching",
         "placed": "lm_warmup_placed"}
RENAMED = {"steps_to_val_target": "steps_to_target", "examples_to_val_target": "examples_to_target",
           "time_to_val_target": "time_to_target", "target_val": "target_loss"}


def on_validation_target(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each validation-target column in the training-loss target's place (``steps_to_val_target`` as
    ``steps_to_target``, ``target_val`` as ``target_loss``, ...; NaN where a run has none), for the facts functions
    that read the training-loss target.

    >>> r = on_validation_target(pd.DataFrame({"steps_to_val_target": [40.0], "steps_to_target": [99.0],
    ...                                         "target_val": [2.4]}))
    >>> r[["steps_to_target", "target_loss"]].values.tolist()
    [[40.0, 2.4]]
    """
    out = runs.copy()
    for src, dst in RENAMED.items():
        out[dst] = runs[src] if src in runs else np.nan
    return out


def validation_as_loss(history: pd.DataFrame) -> pd.DataFrame:
    """``history`` with ``val/loss`` in the place of ``train/loss`` (the curves the branching criterion reads)."""
    h = history[history["metric"] != "train/loss"]
    return h.assign(metric=h["metric"].replace({"val/loss": "train/loss"}))


def _lm_runs(ctx: Context, what: str) -> pd.DataFrame:
    f = ctx.language_model
    if f is None:
        raise MissingRuns(f"the {what} are the lm sweep's runs; run make sweep GRID=lm first")
    return f.science.runs


def _load(name: str) -> pd.DataFrame:
    return load.load_runs(name, hint=f"make sweep GRID={name}")


# ------------------------------------------------------------------ providers


def read_beta2(ctx: Context) -> Beta2Facts:
    name = GRIDS["beta2"]
    return beta2_facts(on_validation_target(_load(name)), None, name)


def combine_accumulation(lm: pd.DataFrame, acc: pd.DataFrame, name: str) -> AccumulationFacts:
    """The accumulated runs with the lm sweep's runs at their micro-batch (same optimizers and seeds) as k = 1."""
    k = acc["accumulation"].fillna(1).astype(int)
    micro = set((acc["batch_size"] // k).astype(int))
    base = lm[lm["optimizer"].isin(acc["optimizer"].unique()) & lm["seed"].isin(acc["seed"].unique())
              & lm["batch_size"].isin(micro)]
    runs = pd.concat([base.assign(accumulation=1), acc], ignore_index=True)
    empty = [m for m in TARGETS.values() if m in runs and runs[m].isna().all()]  # the lm's runs have no train target
    return accumulation_facts(runs.drop(columns=empty), None, name)


def read_accumulation(ctx: Context) -> AccumulationFacts:
    name = GRIDS["accumulation"]
    acc = _load(name)
    return combine_accumulation(_lm_runs(ctx, "accumulation's unaccumulated steps"), acc, name)


def combine_warmup(lm: pd.DataFrame, warm: pd.DataFrame, name: str, *, tuned: bool = False) -> WarmupFacts:
    """The warm-up schedules with the lm sweep's constant-B runs of their optimizer and seeds (``tuned``: a
    schedule's rate levels are one arm, each seed's fastest, :func:`warmup_facts`)."""
    const = lm[lm["optimizer"].isin(warm["optimizer"].unique()) & lm["seed"].isin(warm["seed"].unique())]
    runs = pd.concat([const.assign(schedule=""), warm], ignore_index=True)
    return warmup_facts(on_validation_target(runs), name, tuned=tuned)


def read_warmup(ctx: Context) -> WarmupFacts:
    name = GRIDS["warmup"]
    warm = _load(name)
    return combine_warmup(_lm_runs(ctx, "warm-ups' constant batch sizes"), warm, name)


def read_placed(ctx: Context) -> WarmupFacts:
    """The placed warm-up's arms (each the fastest of its rate levels per seed) against the lm sweep's constant B."""
    name = GRIDS["placed"]
    placed = _load(name)
    return combine_warmup(_lm_runs(ctx, "placed warm-up's constant batch sizes"), placed, name, tuned=True)


def _common_range(f: BranchFacts) -> str:
    """``1, 2, 4, 16, 64, 256``: the batch sizes every branch point was branched into."""
    every = set.intersection(*f.kept.groupby("s")["batch_size"].agg(set))
    return ", ".join(str(int(b)) for b in sorted(every)) if every else "–"


def _branching_runs(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    name = GRIDS["branching"]
    runs = on_validation_target(_load(name))
    hist = load.load_history(runs, name, keys=("val/loss", "grad/b_simple"), progress=ctx.progress)
    return runs, validation_as_loss(hist)


def read_branching(ctx: Context) -> BranchFacts:
    return branch_facts(*_branching_runs(ctx), GRIDS["branching"])


def read_branching_common(ctx: Context) -> BranchFacts | None:
    """``lm_branching`` read against one smallest B at every checkpoint (:func:`q9_branching.at_common_smallest`);
    None when every checkpoint already has the same smallest B."""
    f = ctx.lm_branching
    if f is None or not q9_branching.smallest_text(f.kept):
        return None
    runs, hist = _branching_runs(ctx)
    runs = q9_branching.at_common_smallest(runs)
    return branch_facts(runs, hist[hist["run_id"].isin(runs["run_id"])], GRIDS["branching"])


@dataclass(frozen=True)
class LayerNormFacts:
    """Gray et al.'s comparison on the branching sweep's reference runs: the LayerNorm parameters' B_simple against
    the whole model's over training (:mod:`analysis.sections.language_model.layernorm`)."""

    experiment: str
    layers: tuple[int, ...]  # the LayerNorm layers' indices among the parametrised layers
    n_layers: int  # parametrised layers in all
    table: pd.DataFrame  # layernorm.subset_b_simple: run_id, step, subset, total, ratio
    agreement: pd.DataFrame  # layernorm.agreement: per step over seeds
    drift: dict  # layernorm.drift: the ratio's change from the first to the last step
    batch_size: int
    noise_batch: int
    steps_to_target: float  # the references' median steps to the target


def layer_indices(run: pd.Series) -> tuple[tuple[int, ...], int]:
    """The LayerNorm layers of a run's model (built from its configuration) and its parametrised layers' number."""
    from mbstudy import layers_of_type, load_dataset
    from mbstudy.config import TrainConfig
    from mbstudy.config.fields import HINTS
    from mbstudy.transformer import LayerNorm

    fields = {}
    for k in ("model", "dataset", "context", "d_model", "n_heads", "n_blocks"):
        if k in run.index and not (isinstance(run[k], float) and np.isnan(run[k])):
            fields[k] = int(run[k]) if HINTS[k] is int else run[k]
    cfg = TrainConfig(**fields)
    model = cfg.build_model(load_dataset(cfg.dataset, **cfg.data_options()))
    return layers_of_type(model, LayerNorm), len(model.param_layers)


def layernorm_facts(ref: pd.DataFrame, history: pd.DataFrame, layers: tuple[int, ...], n_layers: int,
                    experiment: str) -> LayerNormFacts:
    """From the reference runs and their per-layer noise histories."""
    h = history[history["run_id"].isin(ref["run_id"])]
    table = layernorm.subset_b_simple(h, layers)
    seed_of = ref.set_index("run_id")["seed"]
    steps = ref["steps_to_val_target"].to_numpy(float) if "steps_to_val_target" in ref else np.array([np.nan])
    return LayerNormFacts(experiment, tuple(layers), n_layers, table, layernorm.agreement(table, seed_of),
                          layernorm.drift(table, seed_of), int(ref["batch_size"].iloc[0]),
                          int(ref["noise_batch"].iloc[0]) if "noise_batch" in ref else 0,
                          float(np.nanmedian(steps)) if np.isfinite(steps).any() else np.nan)


def read_layernorm(ctx: Context) -> LayerNormFacts:
    name = GRIDS["branching"]
    runs = _load(name)
    ref = runs[runs["target_val"].notna()] if "target_val" in runs else runs.iloc[:0]
    if ref.empty:
        raise MissingRuns(f"the {name} sweep holds no reference run yet; run make sweep GRID={name}")
    layers, n = layer_indices(ref.iloc[0])
    keys = ("grad/b_simple", *(layer_metric_name(i, k) for i in layers for k in ("trace_cov", "g_norm_sq")))
    hist = load.load_history(ref, f"{name}-layernorm", keys=keys, progress=ctx.progress)
    return layernorm_facts(ref, hist, layers, n, name)


def edges(runs: pd.DataFrame, steps: pd.Series, by: list[str]) -> tuple[int, int]:
    """(how many, of how many) (group, seed) cells had their fewest steps only at the smallest or the largest
    learning rate their group tried (a tie with an inner rate is not an edge); cells where no rate reached the
    target are not counted.

    >>> r = pd.DataFrame({"g": 1, "seed": [0, 0, 0, 1, 1, 1, 2, 2, 2], "learning_rate": [1, 2, 3] * 3})
    >>> edges(r, pd.Series([5.0, 4, 6, 3, 4, 6, 4, 4, 6]), ["g"])
    (1, 3)
    """
    r = runs.assign(_s=steps.to_numpy(float))
    r = r.assign(_lo=r.groupby(by)["learning_rate"].transform("min"),
                 _hi=r.groupby(by)["learning_rate"].transform("max"))
    r = r[np.isfinite(r["_s"])]
    if r.empty:
        return 0, 0
    r = r.assign(_best=r.groupby([*by, "seed"])["_s"].transform("min"))
    best = r[r["_s"] == r["_best"]]
    inner = (best["learning_rate"] > best["_lo"]) & (best["learning_rate"] < best["_hi"])
    at = ~inner.groupby([best[k] for k in [*by, "seed"]]).any()
    return int(at.sum()), len(at)


# ------------------------------------------------------------------ the part's comparisons, one Holm family

COLUMNS = ["part", "key", "comparison", "estimate", "lo", "hi", "p", "n", "null"]


def _row(part, key, what, result, null=1.0) -> dict:
    est, lo, hi, p, n = (list(result) + [np.nan] * 5)[:5]
    if n is not None and np.isfinite(n) and n < MIN_INTERVAL_SEEDS:
        lo = hi = p = np.nan
    return {"part": part, "key": key, "comparison": what, "estimate": est, "lo": lo, "hi": hi, "p": p, "n": n,
            "null": null}


def beta2_rows(b: Beta2Facts) -> list[dict]:
    fixed, half, plain = b.arms
    name = {half: "half-life β2", plain: "plain SGD", fixed: "β2 = 0.999"}
    return [_row("Q8 β2", f"beta2:{'half' if r.num == half else 'plain'}:{r.batch_size}",
                 f"steps at B = {r.batch_size}: {name.get(r.num, r.num)} / {name.get(r.den, r.den)}",
                 (r.ratio, r.lo, r.hi, r.p, r.n)) for r in b.comparisons.itertuples()]


def accumulation_rows(a: AccumulationFacts) -> list[dict]:
    t = a.table
    if t.empty:
        return []
    t = t[(t["k"] > 1) & (t["target"] == "val")]
    return [_row("Q8 accumulation", f"acc:{r.optimizer}:{r.micro}:{r.k}",
                 f"examples {r.optimizer}, b = {r.micro}, k = {r.k} / k steps of b",
                 (r.examples_ratio, r.examples_lo, r.examples_hi, r.examples_p, r.n_seeds)) for r in t.itertuples()]


def warmup_rows(w: WarmupFacts, part: str = "Q9 warm-up", prefix: str = "warmup") -> list[dict]:
    """Each warm-up's steps over those of the constant B it starts at and of the constant B with the fewest steps,
    paired by seed (Merrill et al. compare with both); keys ``<prefix>:start|best:<arm>``."""
    ps = w.per_seed
    const = ps[ps["arm"].str.startswith("B=") & np.isfinite(ps["steps"])]
    rows = []
    for sched, g in ps[~ps["arm"].str.startswith("B=")].groupby("arm"):
        steps = g.set_index("seed")["steps"]
        b0 = q9_warmup.start_b(sched)
        for key, what, B in (("start", "its starting B", b0), ("best", "the fastest constant B", w.best_constant)):
            c = const[const["batch_size"] == B].set_index("seed")["steps"]
            if len(c):
                rows.append(_row(part, f"{prefix}:{key}:{sched}", f"steps of {sched} / B = {B} ({what})",
                                 q9_warmup._paired(steps, c)))
    return rows


def branching_rows(f: BranchFacts) -> list[dict]:
    c = q9_branching.comparisons(f.local, f.per_seed)
    c = c[c["tol"] == TOL]
    return [_row("Q9 branching", f"branch:{r.claim}", f"local B_crit at step {r.to_s} / at step {r.from_s} "
                 f"({r.claim})", (np.nan,) * 5 if r.bound else (r.ratio, r.lo, r.hi, r.p, r.n_seeds))
            for r in c.itertuples()]


def layernorm_rows(ln: LayerNormFacts) -> list[dict]:
    """The ratio LayerNorm-only / total at the last step every seed measured (against 1), and its change from the
    first such step."""
    rows = []
    a = ln.agreement[ln.agreement["n_invalid"] == 0]
    if len(a):
        last = a.iloc[-1]
        rows.append(_row("Gray", "gray:last", f"B_simple LayerNorm / whole model at step {int(last['step'])}",
                         (last["ratio"], last["lo"], last["hi"], last["p"], int(last["n"]))))
    d = ln.drift
    if np.isfinite(d.get("change", np.nan)):
        rows.append(_row("Gray", "gray:drift", f"that ratio at step {d['last']:.0f} / at step {d['first']:.0f}",
                         (d["change"], d["lo"], d["hi"], d["p"], d["n"])))
    return rows


def placed_rows(w: WarmupFacts) -> list[dict]:
    return warmup_rows(w, "Q9 placed warm-up", "placed")


def tests(beta2=None, accumulation=None, warmup=None, branching=None, layernorm_=None, placed=None) -> pd.DataFrame:
    """Every comparison of the part whose facts exist, with Holm's adjusted p-value over all of them."""
    rows = []
    for facts, fn in ((beta2, beta2_rows), (accumulation, accumulation_rows), (warmup, warmup_rows),
                      (branching, branching_rows), (layernorm_, layernorm_rows), (placed, placed_rows)):
        if facts is not None:
            rows += fn(facts)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["p_holm"] = stats.holm(out["p"]) if len(out) else pd.Series(dtype=float)
    return out


@dataclass(frozen=True)
class ClaimTests:
    experiment: str
    table: pd.DataFrame


def read_tests(ctx: Context) -> ClaimTests | None:
    facts = (ctx.lm_beta2, ctx.lm_accumulation, ctx.lm_warmup, ctx.lm_branching, ctx.lm_layernorm,
             ctx.lm_warmup_placed)
    if all(f is None for f in facts):
        raise MissingRuns("no sweep of the language model's Q8 and Q9 is in the store; run make study-extended "
                          "(or make sweep GRID=lm_beta2, lm_accumulation, lm_warmup, lm_branching, lm_warmup_placed)")
    return ClaimTests("lm_branching", tests(*facts))


# ------------------------------------------------------------------ text


def _get(t: pd.DataFrame, key: str):
    r = t[t["key"] == key]
    return None if r.empty else r.iloc[0]


def said(r, above: str, below: str) -> str:
    """``above``/``below`` when resolved under Holm, else why not."""
    if r is None:
        return "not measured"
    if not np.isfinite(r["p_holm"]):
        return "not tested (a bound, or too few seeds)"
    return verdict_of(r["estimate"], r["p_holm"], above, below)


def ratio(r) -> str:
    return "–" if r is None else interval(r["estimate"], r["lo"], r["hi"], ".2f")


def _mnist_beta2(ctx: Context, plain: bool) -> str:
    b = ctx.beta2
    if b is None or b.table.empty:
        return "not measured"
    fixed, half, pl = b.arms
    B = int(b.table["batch_size"].min())
    t = arm_test(b, pl, half, B) if plain else arm_test(b, half, fixed, B)
    v = "" if not np.isfinite(t[3]) else verdict_of(t[0], t[3], "more steps", "fewer steps")
    return f"{interval(*t[:3], fmt='.2f')} at B = {B}" + (f" ({v})" if v else "")


def _lm_beta2(ctx: Context, t: pd.DataFrame, plain: bool) -> str:
    b = ctx.lm_beta2
    if b is None or b.table.empty:
        return "not measured"
    B = int(b.table["batch_size"].min())
    r = _get(t, f"beta2:{'plain' if plain else 'half'}:{B}")
    return f"{ratio(r)} at B = {B} ({said(r, 'more steps', 'fewer steps')})"


def _acc_summary(table: pd.DataFrame, holm_col: str = "examples_holm") -> str:
    if table is None or table.empty:
        return "not measured"
    more = table[table["k"] > 1]
    costly = sum(verdict_of(r.examples_ratio, getattr(r, holm_col), "x", "y") == "x" for r in more.itertuples())
    cheaper = sum(verdict_of(r.examples_ratio, getattr(r, holm_col), "x", "y") == "y" for r in more.itertuples())
    w = more.loc[more["examples_ratio"].idxmax()]
    return (f"more examples in {costly} of {len(more)} cells, fewer in {cheaper}; at most "
            f"{interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}× (b = {int(w.micro)}, k = {int(w.k)})")


def _mnist_acc_cells(ctx: Context) -> pd.DataFrame | None:
    """Q8's accumulation cells as its section counts them (the training-loss target, k > 1)."""
    from analysis.sections.accumulate_or_step import _cells

    return _cells(ctx)


def _lm_acc(ctx: Context, t: pd.DataFrame) -> str:
    a = ctx.lm_accumulation
    if a is None:
        return "not measured"
    rows = t[t["part"] == "Q8 accumulation"]
    if rows.empty:
        return "not measured"
    costly = sum(said(r, "x", "y") == "x" for _, r in rows.iterrows())
    cheaper = sum(said(r, "x", "y") == "y" for _, r in rows.iterrows())
    w = rows.loc[rows["estimate"].idxmax()]
    return (f"more examples in {costly} of {len(rows)} cells, fewer in {cheaper}; at most {ratio(w)}× "
            f"({w['comparison'].split(' / ')[0].replace('examples ', '')})")


def _warm(t: pd.DataFrame, key: str, prefix: str = "warmup") -> tuple[pd.Series | None, str]:
    rows = t[t["key"].str.startswith(f"{prefix}:{key}:")]
    if rows.empty:
        return None, "not measured"
    best = rows.loc[rows["estimate"].idxmin()]
    fewer = sum(said(r, "more", "fewer") == "fewer" for _, r in rows.iterrows())
    more = sum(said(r, "more", "fewer") == "more" for _, r in rows.iterrows())
    return best, f"fewer steps in {fewer} of {len(rows)} schedules, more in {more}; the best {ratio(best)}×"


def _mnist_warm(w: WarmupFacts | None, key: str) -> str:
    """An MNIST-1D warm-up sweep's schedules against their starting B (``start``) or the fastest constant B
    (``best``)."""
    if w is None or w.schedules.empty or f"vs_{key}" not in w.schedules:
        return "not measured"
    c, n = q9_warmup.counts(w), len(w.schedules)
    r = [x for x in w.schedules[f"vs_{key}"] if np.isfinite(x[0])]
    best = min(r, key=lambda x: x[0]) if r else None
    return (f"fewer steps in {c[f'{key}_fewer']} of {n} schedules, more in {c[f'{key}_more']}"
            + (f"; the best {interval(best[0], best[1], best[2], '.2f')}×" if best is not None else ""))


def _warm_claims(claim: str, mnist: WarmupFacts | None, t: pd.DataFrame, prefix: str) -> list[dict]:
    """The two rows of the claims table for a kind of warm-up: against its starting B, then against the fastest
    constant B; the MNIST-1D column from that sweep's facts, the LM's from the part's tests (keys ``prefix:...``)."""
    return [{"claim": text, "MNIST-1D MLP (steps, half-life / 0.999)": _mnist_warm(mnist, key),
             "language model": _warm(t, key, prefix)[1]}
            for text, key in ((claim, "start"), ("… and than the fastest constant B", "best"))]


def _shape(f: BranchFacts | None) -> str:
    if f is None or f.local.empty:
        return "not measured"
    head = f.local[f.local["tol"] == TOL].sort_values("s")
    return " → ".join(f"{value_text(r)} at {r['fraction']:.0%}" for _, r in head.iterrows())


def _rise(f: BranchFacts | None) -> str:
    """Merrill et al.'s rise in a few words: resolved up, resolved down, not tested (bounds) or not resolved."""
    if f is None or f.local.empty:
        return "not measured"
    r = q9_branching.shape(f)["rise"]
    return ("a resolved rise" if r.startswith("rises") else "a resolved fall" if r.startswith("falls") else
            "no change tested (bounds at an end of the batch sizes tried)" if r.startswith("goes") else
            "no change resolved")


def text(ctx: Context) -> str:
    head = "### Q8 and Q9 on the language model, and the LayerNorm noise scale"
    c = ctx.lm_tests
    if c is None:
        return head + "\n\n" + ctx.not_measured("lm_tests", "run make study-extended")
    t = c.table
    b, br, ln, w = ctx.lm_beta2, ctx.lm_branching, ctx.lm_layernorm, ctx.lm_warmup
    gray, drift = _get(t, "gray:last"), _get(t, "gray:drift")
    _, start_text = _warm(t, "start")
    small = int(b.table["batch_size"].min()) if b is not None and len(b.table) else 0
    answer = (
        f"**On the transformer, the half-life β2 against 0.999 at B = {small}: "
        f"{said(_get(t, f'beta2:half:{small}'), 'more steps', 'fewer steps')}; accumulation: "
        f"{_lm_acc(ctx, t).split(';')[0]}; warm-up against its starting B: {start_text.split(';')[0]}; the local "
        f"B_crit (tolerance {TOL:.0%}) {_shape(br)}: {_rise(br)}; the LayerNorm-only B_simple is {ratio(gray)}× the "
        "whole model's at the "
        f"end ({said(gray, 'above it', 'below it')}).**")
    beside = pd.DataFrame([
        {"claim": "Adam's β2 at a fixed half-life beats 0.999 at small B (Marek et al. 2025)",
         "MNIST-1D MLP (steps, half-life / 0.999)": _mnist_beta2(ctx, False),
         "language model": _lm_beta2(ctx, t, False)},
        {"claim": "plain SGD is competitive at small B (Marek et al.)",
         "MNIST-1D MLP (steps, half-life / 0.999)": "SGD / half-life: " + _mnist_beta2(ctx, True),
         "language model": "SGD / half-life: " + _lm_beta2(ctx, t, True)},
        {"claim": "accumulating k micro-batches into one step costs examples (Q8)",
         "MNIST-1D MLP (steps, half-life / 0.999)": _acc_summary(_mnist_acc_cells(ctx)),
         "language model": _lm_acc(ctx, t)},
        *_warm_claims("a batch-size warm-up takes fewer steps than its starting B (Merrill et al. 2025: 43% fewer "
                      "on OLMo 1B)", ctx.warmup, t, "warmup"),
        *_warm_claims("a warm-up placed where the local B_crit says takes fewer steps than its starting B (Merrill "
                      "et al.'s recipe)", ctx.warmup_placed, t, "placed"),
        {"claim": "the local B_crit starts near zero, rises, then plateaus (Merrill et al.)",
         "MNIST-1D MLP (steps, half-life / 0.999)": _shape(ctx.branching), "language model": _shape(br)},
        {"claim": "the LayerNorm parameters' B_simple predicts the whole model's (Gray et al. 2024)",
         "MNIST-1D MLP (steps, half-life / 0.999)": "– (no LayerNorm)",
         "language model": f"ratio {ratio(gray)} at the end ({said(gray, 'above 1', 'below 1')}); its change over "
                           f"training {ratio(drift)} ({said(drift, 'rises', 'falls')})"},
    ]).rename(columns={"MNIST-1D MLP (steps, half-life / 0.999)": "MNIST-1D MLP"})
    parts = [head, "", answer, "", ctx.figure("l2_lm_training"), "",
             "The same claims on both workloads (each cell a ratio of steps or examples, paired by seed, geometric "
             "mean and 95% t-interval; every LM run read on the validation loss; verdicts under Holm's rule over the "
             f"part's {int(np.isfinite(t['p']).sum())} tested comparisons, the MNIST-1D column from Q8 and Q9 above "
             "under their own Holm families):", "", md_table(beside)]
    parts += ["", _how(ctx, br, ln, w)]
    return "\n".join(parts) + "\n"


def _against_common(ctx: Context, br: BranchFacts) -> str:
    """The local B_crit at the checkpoints read against a smaller B than the others, read against the others' one
    too (at the headline tolerance): how much those values owe to their reference. "" when there are none."""
    c = ctx.lm_branching_common
    if c is None:
        return ""
    common = int(c.kept["batch_size"].min())
    odd = [int(s) for s, b in br.kept.groupby("s")["batch_size"].min().items() if b < common]

    def at(f: BranchFacts) -> list[str]:
        rows = f.local[(f.local["tol"] == TOL) & f.local["s"].isin(odd)].sort_values("s")
        return [f"{value_text(r)} at step {int(r['s'])}" for _, r in rows.iterrows()]

    now, then = at(br), at(c)
    if not then:
        return ""
    return f"read against B = {common} as at the others, the local B_crit is {', '.join(then)} (not {', '.join(now)}); "


def _how(ctx: Context, br, ln, w) -> str:
    bits = []
    b = ctx.lm_beta2
    if b is not None and len(b.table):
        seeds = int(b.table["n_seeds"].max())
        e, n = edges(b.runs, b.runs["s"], ["arm", "batch_size"])
        bits.append(f"**β2** (`lm_beta2`, {seeds} seeds, no pruning): β2 = 0.999 against β2 = 0.999^(B/32) (a "
                    "half-life of 22,170 examples, 0.999's at B = 32) and plain SGD, at B = "
                    + ", ".join(str(int(x)) for x in sorted(b.table["batch_size"].unique()))
                    + ", three to six rates a quarter decade apart around the lm sweep's best; "
                    f"{e} of {n} (arm, B, seed) cells had their best rate at an edge of their grid.")
    a = ctx.lm_accumulation
    if a is not None and len(a.table):
        acc = a.runs[a.runs["accumulation"] > 1]
        e, n = edges(acc, acc["steps_to_val_target"].where(acc["outcome"].isin(["completed", "pruned"]), np.inf),
                     ["optimizer", "batch_size", "accumulation"])
        bits.append(f"**Accumulation** (`lm_accumulation`, {int(a.table['n_seeds'].max())} seeds): one step of k "
                    "micro-batches of b against k steps of b (the lm sweep's own runs at B = b), three rates around "
                    f"the lm sweep's best at kb; {e} of {n} (k, b, seed) cells had their best rate at an edge of its "
                    "three.")
    if w is not None and len(w.schedules):
        bits.append(f"**Warm-up** (`lm_warmup`, {int(w.schedules['n_seeds'].max())} seeds): doubling schedules from "
                    "B = 8 to 128 at the lm sweep's best rates, each seed's steps over the constant run's at its "
                    f"starting B and at the fastest constant B ({w.best_constant}); the constant arms' rates are "
                    "searched per seed, the schedules' fixed, which favours the constant arms.")
    if br is not None and not br.local.empty:
        bits.append(f"**Branching** (`lm_branching`): a reference at B = {br.reference_b}, lr {br.reference_lr:g} "
                    f"(steps to the target {br.ref_steps[0]:.0f}), branched at steps "
                    + ", ".join(str(int(s)) for s in sorted(br.local["s"].unique()))
                    + f" into B = {int(br.kept['batch_size'].min())} … {int(br.kept['batch_size'].max())}"
                    + (f" (from every branch point B = {_common_range(br)}; {extra}: added where the first design "
                       "left the local B_crit a bound)" if (extra := q9_branching.design_text(br.kept)) else "")
                    + f" for {br.budget} sequences; the local B_crit at a tolerance of {TOL:.0%} "
                    "as in Q9 (the validation loss in place of the training loss"
                    + (f"; each branch point's kept fractions against its own smallest B: {least}"
                       if (least := q9_branching.smallest_text(br.kept)) else "") + "); "
                    + _against_common(ctx, br) +
                    f"{br.edge:.0%} of the chosen rates at an edge of their grid.")
    p = ctx.lm_warmup_placed
    if p is not None and len(p.schedules) and br is not None:
        _, check = q9_warmup.placement_from(br, set(p.schedules["schedule"]), GRIDS["placed"])
        runs = _load(GRIDS["placed"])  # one arm: its final B names it
        e, n = edges(runs, runs["steps_to_val_target"].where(runs["outcome"].isin(["completed", "pruned"]), np.inf),
                     ["batch_size"])
        bits.append(f"**Placed warm-up** (`{GRIDS['placed']}`, {int(p.schedules['n_seeds'].max())} seeds): Q9's rule "
                    f"on this workload's local B_crit (tolerance {q9_warmup.PLACED_TOL:.0%}): from each branch point "
                    "on, the largest power of two at or below (or nearest to) the least local B_crit measured there "
                    "or later. " + check + " Each seed's fastest of three rate levels a quarter decade apart (the "
                    "same rate in every phase) against the lm sweep's constant batch sizes, whose rates are searched "
                    "per seed: " + "; ".join(f"`{r.schedule}` {r.steps:.0f} steps ({r.examples:.0f} sequences)"
                                             for r in p.schedules.itertuples())
                    + f"; {e} of {n} seeds had their fastest level only at the lowest or highest of the three.")
    if ln is not None and not ln.agreement.empty:
        bits.append(f"**LayerNorm noise scale**: the branching references' per-layer noise statistics (a "
                    f"{ln.noise_batch}-sequence noise batch, every 32 steps): tr Σ and |G|² summed over the "
                    f"{len(ln.layers)} LayerNorm layers of {ln.n_layers}, their ratio against the whole model's "
                    "B_simple, per seed.")
    return "\n\n".join(bits)


def appendix(ctx: Context) -> str:
    c = ctx.lm_tests
    if c is None or c.table.empty:
        return ""
    t = c.table
    rows = [{"part": r.part, "comparison": r.comparison, "ratio (95%)": interval(r.estimate, r.lo, r.hi, ".2f"),
             "seeds": "–" if not np.isfinite(r.n) else int(r.n),
             "Holm p": f"{r.p_holm:.3g}" if np.isfinite(r.p_holm) else "–",
             "verdict": said(t.loc[i], "above 1", "below 1")} for i, r in zip(t.index, t.itertuples())]
    out = ["### The language model's Q8 and Q9: every comparison", "",
           "Each a ratio paired by seed (geometric mean, 95% t-interval), Holm's rule over all of them; a row "
           "without a p-value is a bound or has too few seeds.", "", md_table(pd.DataFrame(rows))]
    br = ctx.lm_branching
    if br is not None and not br.local.empty:
        out += ["", "The local critical batch size of the language model at every tolerance, with the reference's "
                "B_simple:", "", md_table(q9_branching._table(br))]
    return "\n".join(out)


def finding_text(ctx: Context) -> str:
    c = ctx.lm_tests
    if c is None:
        return ""
    t = c.table
    b = ctx.lm_beta2
    small = int(b.table["batch_size"].min()) if b is not None and len(b.table) else 0
    gray = _get(t, "gray:last")
    return (f"half-life β2 at B = {small}: {said(_get(t, f'beta2:half:{small}'), 'more steps', 'fewer steps')}; "
            f"warm-up vs its start: {_warm(t, 'start')[1].split(';')[0]}; LayerNorm/whole B_simple {ratio(gray)}")


# ------------------------------------------------------------------ figure


def training_figure(ctx: Context):
    """Left: the local B_crit (headline tolerance) and the reference's B_simple against the point of training.
    Right: the LayerNorm-only B_simple over the whole model's, over training."""
    br, ln = ctx.lm_branching, ctx.lm_layernorm
    if br is None and ln is None:
        raise Skip("neither lm_branching's branches nor its references are in the store")
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), constrained_layout=True)
    ax = axes[0]
    if br is not None and not br.local.empty:
        loc = br.local[br.local["tol"] == TOL].sort_values("s")
        frac = loc.set_index("s")["fraction"]
        plots.errorbar(ax, loc["fraction"] * 100, loc["b_crit"], loc["lo"], loc["hi"], fmt="o-", color="C0",
                       label=f"local B_crit ({TOL:.0%} tolerance)")
        for r in loc.itertuples():
            if r.bound:
                ax.annotate({">=": "≥ (bound)", "<=": "≤ (bound)"}.get(r.bound, r.bound), (r.fraction * 100, r.b_crit),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        if not br.b_simple.empty:
            plots.errorbar(ax, br.b_simple["s"].map(frac) * 100, br.b_simple["b_simple"], br.b_simple["lo"],
                           br.b_simple["hi"], fmt="s--", color="C3", label="B_simple of the reference")
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("branch point, % of the reference's steps to the target")
        ax.set_ylabel("batch size (sequences)")
        ax.set_title(f"branches from B = {br.reference_b} (geo. mean, 95% t)", fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    ax = axes[1]
    a = ln.agreement[ln.agreement["n"] >= 2] if ln is not None else pd.DataFrame()
    if len(a):
        x = a["step"].to_numpy(float)
        plots.errorbar(ax, x, a["ratio"], a["lo"], a["hi"], fmt="o-", color="C2",
                       label=f"LayerNorm only ({len(ln.layers)} layers) / whole model")
        ax.axhline(1, color="0.4", lw=0.8, ls="--")
        ax.set_ylim(0, max(1.1, float(np.nanmax(a["hi"])) * 1.05))
        ax.set_xlabel("step of the reference run")
        ax.set_ylabel("B_simple, LayerNorm only / whole model")
        ax.set_title("Gray et al.: LayerNorm only (geo. mean, 95% t)", fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    plots.suptitle(fig, "The language model over training: the local critical batch size and the noise scales")
    return fig


SECTION = Section(
    "lm_claims",
    text=text,
    appendix=appendix,
    provides=(Provider("lm_beta2", read_beta2), Provider("lm_accumulation", read_accumulation),
              Provider("lm_warmup", read_warmup), Provider("lm_branching", read_branching),
              Provider("lm_branching_common", read_branching_common),
              Provider("lm_layernorm", read_layernorm), Provider("lm_warmup_placed", read_placed),
              Provider("lm_tests", read_tests)),
    figures=(FigureSpec("l2_lm_training", training_figure, ("lm_tests",),
                        "The language model over training. Left: the local critical batch size by branching (Q9's "
                        "method on the validation loss) and the reference's B_simple, against the branch point. "
                        "Right: the LayerNorm parameters' B_simple over the whole model's (Gray et al. 2024), per "
                        "seed then over seeds."),),
)
