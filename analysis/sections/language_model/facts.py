"""The language model, part 2, its facts: Q8 and Q9 on the transformer, and Gray et al.'s LayerNorm noise scale
(the text, the appendix and the figure that read them: :mod:`analysis.sections.language_model.claims`).

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

from analysis import load, stats
from analysis.load import MissingRuns
from analysis.markdown import MIN_INTERVAL_SEEDS
from analysis.section import Context
from analysis.sections import local_critical as q9_local
from analysis.sections import warmup as q9_warmup
from analysis.sections.accumulation import AccumulationFacts, accumulation_facts
from analysis.sections.beta2 import Beta2Facts, beta2_facts
from analysis.sections.local_critical import TOL, BranchFacts, branch_facts
from analysis.sections.language_model import layernorm
from analysis.sections.warmup import WarmupFacts, warmup_facts
from mbstudy.metrics import TARGETS, layer_metric_name

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


def load_grid(name: str) -> pd.DataFrame:
    return current_runs(load.load_runs(name, hint=f"make sweep GRID={name}"), name)


def current_runs(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """``runs`` (a sweep's runs table) less those read on other validation windows than the grid ``name`` reads
    now (its ``eval_val``): a store that ran the language model's sweeps before they read 512 of the validation
    block's windows holds both kinds, whose validation losses must not be compared or pooled.

    >>> import pandas as pd
    >>> current_runs(pd.DataFrame({"run_id": ["a", "b"], "eval_val": [float("nan"), 512.0]}), "lm")["run_id"].tolist()
    ['b']
    """
    from experiments.engine import grid as grids

    sweep = grids.load(name)
    want = {c.eval_val for c in (sweep.configs or [cell.template for cell in sweep.cells])}
    have = runs["eval_val"].fillna(0).astype(int) if "eval_val" in runs else pd.Series(0, index=runs.index)
    keep = have.isin(want)
    if not keep.any():
        raise MissingRuns(f"experiment {name!r}: none of its {len(runs)} finished runs reads eval_val = "
                          f"{' or '.join(map(str, sorted(want)))} as the grid does now; run make sweep GRID={name}")
    return runs[keep].reset_index(drop=True)


# ------------------------------------------------------------------ providers


def read_beta2(ctx: Context) -> Beta2Facts:
    name = GRIDS["beta2"]
    return beta2_facts(on_validation_target(load_grid(name)), None, name)


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
    acc = load_grid(name)
    return combine_accumulation(_lm_runs(ctx, "accumulation's unaccumulated steps"), acc, name)


def combine_warmup(lm: pd.DataFrame, warm: pd.DataFrame, name: str, *, tuned: bool = False) -> WarmupFacts:
    """The warm-up schedules with the lm sweep's constant-B runs of their optimizer and seeds (``tuned``: a
    schedule's rate levels are one arm, each seed's fastest, :func:`warmup_facts`)."""
    const = lm[lm["optimizer"].isin(warm["optimizer"].unique()) & lm["seed"].isin(warm["seed"].unique())]
    runs = pd.concat([const.assign(schedule=""), warm], ignore_index=True)
    return warmup_facts(on_validation_target(runs), name, tuned=tuned)


def read_warmup(ctx: Context) -> WarmupFacts:
    name = GRIDS["warmup"]
    warm = load_grid(name)
    return combine_warmup(_lm_runs(ctx, "warm-ups' constant batch sizes"), warm, name)


def read_placed(ctx: Context) -> WarmupFacts:
    """The placed warm-up's arms (each the fastest of its rate levels per seed) against the lm sweep's constant B."""
    name = GRIDS["placed"]
    placed = load_grid(name)
    return combine_warmup(_lm_runs(ctx, "placed warm-up's constant batch sizes"), placed, name, tuned=True)


def common_range(f: BranchFacts) -> str:
    """``1, 2, 4, 16, 64, 256``: the batch sizes every branch point was branched into."""
    every = set.intersection(*f.kept.groupby("s")["batch_size"].agg(set))
    return ", ".join(str(int(b)) for b in sorted(every)) if every else "–"


def _branching_runs(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    name = GRIDS["branching"]
    runs = on_validation_target(load_grid(name))
    hist = load.load_history(runs, name, keys=("val/loss", "grad/b_simple"), progress=ctx.progress)
    return runs, validation_as_loss(hist)


def read_branching(ctx: Context) -> BranchFacts:
    return branch_facts(*_branching_runs(ctx), GRIDS["branching"])


def read_branching_common(ctx: Context) -> BranchFacts | None:
    """``lm_branching`` read against one smallest B at every checkpoint (:func:`q9_local.at_common_smallest`);
    None when every checkpoint already has the same smallest B."""
    f = ctx.lm_branching
    if f is None or not q9_local.smallest_text(f.kept):
        return None
    runs, hist = _branching_runs(ctx)
    runs = q9_local.at_common_smallest(runs)
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
    runs = load_grid(name)
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
    c = q9_local.comparisons(f.local, f.per_seed)
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
