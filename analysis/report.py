"""The write-up: ``report/REPORT.md``, one section per question of the study (``QUESTIONS``), from the runs alone.

``python -m analysis.report`` (``make report``) collects the facts of every
experiment once (``analysis.facts.collect``: the two sweeps and the side
experiments ``equivalence``, ``reduction``, ``benchmarks``), draws the figures
from them (``analysis.figures.render``) and writes the report with its figures
linked relative to ``report/``. Every number in the text is computed from
those facts; a section whose runs are missing says which command produces
them. ``text()`` is pure: facts and the names of the drawn figures in,
Markdown out.

``python -m analysis.report --sweep NAME`` (``make report SWEEP=NAME``)
writes the report of one sweep instead (NAME: its experiment, or the run id
of one of its parent runs): what varied, the best learning rate per group,
the steps-to-target fit when some run reached its target, every figure the
runs support and why each other one was skipped, into
``report/sweeps/<NAME>/REPORT.md`` beside its ``figures/`` (never
``report/REPORT.md`` or ``report/figures/``).

The study's report (``report/REPORT.md``) also rewrites the table "What the
study found" in ``README.md`` from the same facts (:mod:`analysis.findings`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures, findings, load, report_q8, report_q9, report_workloads
from analysis.facts import LOSS_LEVEL, SMALL_B_LR, SMALL_B_STEPS, Facts, collect

REPORT_DIR = load.tracking.ROOT / "report"

QUESTIONS = {
    "Q1": "Is the gradient of the mini-batch loss the average of the per-example gradients?",
    "Q2": "\"Only o_11 contributes to the update\": what goes wrong in that chain rule?",
    "Q3": "Why back-propagate a scalar and not the B×outputs matrix? Is averaging B per-example gradients B times the work?",
    "Q4": "Sum or mean over the batch: does it only rescale the learning rate?",
    "Q5": "Update after every example, or after the batch? How does the number of steps depend on the batch size?",
    "Q5b": "Do small batches generalise better?",
    "Q6": "Why powers of two for the batch size?",
    "Q7": "Per-example losses 2 and −2 \"average to zero\": do per-example gradients cancel?",
    "Q8": "Accumulate micro-batches into one step, or take more small steps?",
    "Q9": "What sets the critical batch size? Over training, with data size, with model size, and in the noisy "
          "quadratic model",
}


# What each answer did not measure (Q5 and Q5b state theirs with their evidence, analysis.report_workloads)
LIMITS = {
    "Q1": "Three small networks (MLP, CNN, the teacher's MLP) in float32 and float64 on CPU; the 4-device data "
          "parallelism is simulated on host devices, so no real interconnect or reduction order was tested.",
    "Q2": "The error of the single-output term is measured on the same three networks; its size depends on the "
          "outputs and batch, not on anything that would make it right.",
    "Q3": "One CPU (2 cores); an MLP of up to 670k parameters and the 5k-parameter CNN; no GPU, where memory "
          "bandwidth and kernel launch costs differ; one benchmark run per study, so timings carry this machine's "
          "load.",
    "Q4": "The MNIST-1D MLP only, a one-decade learning-rate grid (the slopes' resolution), no weight decay or "
          "schedule, Adam at one eps; β2 is varied only in Q8's half-life experiment.",
    "Q6": "This CPU alone, B around 2^k for a few k, one network; accelerators with fixed tile sizes (GPU warps, "
          "tensor cores) were not measured.",
    "Q7": "B_simple on the default sweep's MNIST-1D MLP runs at their best learning rate; it estimates the noise "
          "scale under the assumption of a well-conditioned Hessian (McCandlish et al.), which is not checked here.",
    "Q8": report_q8.LIMITS,
    "Q9": report_q9.LIMITS,
}


def md_table(df: pd.DataFrame, floatfmt: str = ".2e") -> str:
    """A Markdown table (no extra dependency)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def figure_markdown(drawn: Collection[str], name: str, caption: str) -> str:
    """The Markdown that shows figure ``name`` with its caption, or "" when it was not drawn."""
    if name not in drawn:
        return ""
    return f"![{caption}](figures/{name}.png)\n\n*{caption}* ([PDF](figures/{name}.pdf))\n"


def _not_measured(facts: Facts, name: str, fallback: str) -> str:
    return f"Not measured yet: {facts.missing.get(name, fallback)}.\n"


# ------------------------------------------------------------------ sections


def q1(facts: Facts) -> str:
    if facts.equivalence is None:
        return _not_measured(facts, "equivalence", "run make equivalence")
    eq = facts.equivalence.runs
    cols = ["per_sample_mean_vs_batch", "sum_vs_B_mean", "accumulated_equal", "accumulated_unequal",
            "accumulated_equal_weights_mistake", "sharded", "fast_vs_vmap", "norms_vs_vmap"]
    t = eq[["setting", "dtype", *[f"err/{c}" for c in cols if f"err/{c}" in eq]]].copy()
    t.columns = ["setting", "dtype", *[c for c in cols if f"err/{c}" in eq]]
    exact = [c for c in t.columns[2:] if "mistake" not in c]
    f64 = t[t["dtype"] == "float64"][exact].to_numpy(float)
    f32 = t[t["dtype"] == "float32"][exact].to_numpy(float)
    mistake = t["accumulated_equal_weights_mistake"]
    return (
        f"**Yes, exactly, by linearity of the derivative.** Over {len(t) // 2} networks, the mean of the "
        f"per-example gradients, the gradient of the mean loss, B⁻¹× the gradient of the sum, gradient "
        f"accumulation over equal or unequal micro-batches, and a data-parallel gradient over 4 devices "
        f"agree to at most **{np.nanmax(f64):.1e}** relative error in float64 and **{np.nanmax(f32):.1e}** in "
        f"float32 (rounding: float32's eps is 1.2e-7). The one way to get it wrong is to average the MEANS "
        f"of unequal micro-batches with equal weights: relative error **{mistake.min():.0%}–{mistake.max():.0%}** "
        f"here (a micro-batch of B−1 examples and one of 1).\n\n"
        f"Relative errors ‖a − b‖/‖b‖ (experiment `equivalence`):\n\n{md_table(t.sort_values(['setting', 'dtype']))}\n"
    )


def q2(facts: Facts) -> str:
    if facts.equivalence is None:
        return _not_measured(facts, "equivalence", "run make equivalence")
    eq = facts.equivalence.runs
    wrong = eq["err/single_output_vs_true"]
    fd = eq["err/true_vs_finite_difference"].dropna() if "err/true_vs_finite_difference" in eq else pd.Series(dtype=float)
    return (
        "The batch loss depends on every output o_ij of every example, so the chain rule sums over all of "
        "them: ∂L/∂w = Σ_ij ∂L/∂o_ij · ∂o_ij/∂w. Keeping only the o_11 term is not a gradient of the loss: "
        f"against the true gradient its relative error is **{wrong.min():.0%}–{wrong.max():.0%}** on the three "
        f"networks, while the true gradient matches central finite differences to **{fd.max():.1e}** "
        "(float64). Summing the single-output term over every (example, output) recovers the true gradient "
        "exactly (`tests/test_grads.py`).\n"
    )


def q3(facts: Facts, drawn: Collection[str]) -> str:
    bench = facts.bench
    if bench is None:
        return _not_measured(facts, "bench", "run make bench")
    b = bench.per_example
    if b.empty:
        return "The benchmark runs hold no per-example results; run `make bench`.\n"
    big = b[b["P"] == b["P"].max()].sort_values("B")
    cols = {"B": "B", "ratio/vmap_to_batch": "vmap(grad)", "ratio/fast_to_batch": "fast", "ratio/norms_to_batch": "norms",
            "ratio/floor_to_batch": "write floor", "ratio/fast_to_floor": "fast / floor",
            "ratio/outer_to_floor": "outer products alone / floor", "ratio/loop_to_batch": "Python loop",
            "ratio/torch_vmap_to_batch": "torch.func vmap", "ratio/fused_mean_vmap_to_batch": "mean(vmap) under jit"}
    t = big[[c for c in cols if c in big]].rename(columns=cols)
    t["B"] = t["B"].astype(int)
    P = int(big["P"].iloc[0])
    vm, loop = big["ratio/vmap_to_batch"], big["ratio/loop_to_batch"]
    ff = big[big["B"] >= 32]["ratio/fast_to_floor"]
    cnn = b[b["net"].astype(str).str.startswith("cnn")]
    b = b[~b["net"].astype(str).str.startswith("cnn")]
    big = b[b["P"] == b["P"].max()].sort_values("B")
    nm = b["ratio/norms_to_batch"]
    tr = bench.train.sort_values("B")
    train_txt = ""
    if len(tr) and "ratio/torch_to_compiled" in tr and tr["ratio/torch_to_compiled"].notna().any():
        small = tr[tr["B"] <= 64]
        train_txt = (f" For training, mbstudy's compiled `lax.scan` loop takes {tr['s/compiled'].min() * 1e6:.0f}–"
                     f"{tr['s/compiled'].max() * 1e6:.0f} µs per step (B = {int(tr['B'].min())}–{int(tr['B'].max())}); "
                     f"a PyTorch eager loop is {small['ratio/torch_to_compiled'].min():.1f}–"
                     f"{small['ratio/torch_to_compiled'].max():.1f}× slower at B ≤ 64.")
    return (
        "Back-propagating the scalar mean loss yields the averaged gradient from ONE backward pass. "
        "Materialising the B per-example gradients first costs what the extra B × P numbers cost to write. "
        f"On the {P:,}-parameter MLP (`make bench`, {bench.runs['mode'].iloc[0]} mode, one run, "
        f"{bench.runs['device'].iloc[0]}, {bench.runs['cpu'].iloc[0]}), "
        f"`vmap(grad)` with the per-example tensor kept costs **{vm.min():.0f}–{vm.max():.0f}×** the batch "
        f"gradient, and a Python loop of B single-example gradients (seed 004's method) **{loop.min():.0f}–{loop.max():.0f}×**. "
        f"The one-backward-pass recipe (outer products a_i ⊗ δ_i) runs at **{ff.min():.2f}–{ff.max():.2f}×** the "
        f"time of merely writing B × P floats (B ≥ 32), and per-example norms cost **{nm.min():.2f}–{nm.max():.2f}×** the "
        f"batch gradient with no B × P tensor. Under one `jit`, `mean(vmap(grad))` costs {big['ratio/fused_mean_vmap_to_batch'].min():.2f}–"
        f"{big['ratio/fused_mean_vmap_to_batch'].max():.2f}× the batch gradient against {vm.min():.0f}–{vm.max():.0f}× with the "
        "tensor returned: XLA need not materialise what is reduced at once, so a benchmark of per-example "
        f"gradients must return them.{train_txt}\n\n"
        f"Time relative to the batch-mean gradient, P = {P:,}:\n\n{md_table(t, '.2f')}\n\n"
        + _cnn_cost(cnn, bench.train_cnn)
        + figure_markdown(drawn, "q3_cost", "Per-example gradient cost relative to the batch gradient, against the memory-write floor.")
    )


def _cnn_cost(cnn: pd.DataFrame, train: pd.DataFrame) -> str:
    """The same for the MNIST-1D CNN, whose weights are shared across positions."""
    if cnn.empty:
        return ""
    cnn = cnn.sort_values("B")
    P = int(cnn["P"].iloc[0])
    ff = cnn[cnn["B"] >= 32]["ratio/fast_to_floor"]
    vf = cnn["ratio/fast_to_batch"] / cnn["ratio/vmap_to_batch"]
    out = (f"**The MNIST-1D CNN** (P = {P:,}; a convolution shares its weights across positions, so example i's "
           "gradient is a sum over positions of input patch ⊗ delta, one einsum after the batched backward pass): "
           f"`vmap(grad)` costs {cnn['ratio/vmap_to_batch'].min():.1f}–{cnn['ratio/vmap_to_batch'].max():.1f}× the batch "
           f"gradient, the one-pass recipe {cnn['ratio/fast_to_batch'].min():.1f}–{cnn['ratio/fast_to_batch'].max():.1f}× "
           f"({vf.min():.2f}–{vf.max():.2f}× vmap's time"
           + (f"; {ff.min():.2f}–{ff.max():.2f}× the write floor at B ≥ 32" if len(ff) else "")
           + f"), and per-example norms {cnn['ratio/norms_to_batch'].min():.2f}–{cnn['ratio/norms_to_batch'].max():.2f}× "
           "(for a convolution, the norm comes from the patches and deltas' Gram matrices or from the per-example "
           "gradient of that layer, whichever is smaller).")
    if len(train):
        train = train.sort_values("B")
        big = train[train["B"] >= 16]
        out += (f" A CNN training step takes {train['s/compiled'].min() * 1e6:.0f}–{train['s/compiled'].max() * 1e6:.0f} µs "
                f"(B = {int(train['B'].min())}–{int(train['B'].max())}), {train['ratio/compiled_to_lean_scan'].min():.2f}–"
                f"{train['ratio/compiled_to_lean_scan'].max():.2f}× the leanest scan of the same step"
                + (f", at {big['ratio/cnn_to_mlp_flop_rate'].min():.0%}–{big['ratio/cnn_to_mlp_flop_rate'].max():.0%} of "
                   "the MLP step's FLOP rate for B ≥ 16" if len(big) else "") + ".")
    cols = {"B": "B", "ratio/vmap_to_batch": "vmap(grad)", "ratio/fast_to_batch": "fast",
            "ratio/norms_to_batch": "norms", "ratio/floor_to_batch": "write floor", "ratio/fast_to_floor": "fast / floor"}
    t = cnn[list(cols)].rename(columns=cols)
    t["B"] = t["B"].astype(int)
    return out + f"\n\n{md_table(t, '.2f')}\n\n"


def q4(facts: Facts, drawn: Collection[str]) -> str:
    parts = []
    if facts.default is not None and len(facts.default.sum_mean_slopes):
        sl = {r.optimizer: r.slope for r in facts.default.sum_mean_slopes.itertuples()}
        parts.append(
            "**For SGD and momentum, sum is mean with the learning rate multiplied by B; for Adam the reduction "
            "barely matters.** Across the default sweep, the best learning rate of `sum` divided by that of "
            f"`mean` scales as B^s with s = **{sl.get('sgd', np.nan):.2f}** (SGD), **{sl.get('momentum', np.nan):.2f}** "
            f"(momentum) and **{sl.get('adam', np.nan):.2f}** (Adam); the algebra predicts −1, −1 and 0 "
            "(the learning-rate grid is one decade apart, which limits the slope's resolution). At a fixed "
            "learning rate, sum reduction is the linear scaling rule built in. "
            + _stable_band(facts.default.largest_stable_sgd_lr) + "\n")
    parts.append(figure_markdown(drawn, "b_heatmaps", "Final training loss over batch size × learning rate; × marks divergence."))
    if facts.reduction is None:
        parts.append(f"The side-by-side trajectories are not measured yet: "
                     f"{facts.missing.get('reduction', 'run make reduction')}.\n")
    else:
        r = facts.reduction.runs.assign(ratio=facts.reduction.final_ratio)
        t = r[["comparison", "batch_size", "final/dist_pair", "final/dist_control", "ratio"]].sort_values(
            ["comparison", "batch_size"], key=lambda s: s.astype(int) if s.name == "batch_size" else s)
        alg = r[r["comparison"] != "adam_same_eps"]
        exact = alg[alg["final/dist_pair"] == 0]
        same = r[r["comparison"] == "adam_same_eps"]
        parts.append(
            f"Trained side by side for {int(float(r['steps'].iloc[0]))} steps (experiment `reduction`), the "
            f"algebraic pairs (SGD/momentum: sum at lr/B; Adam: sum at eps·B) end **bit-identical** in "
            f"{len(exact)} of {len(alg)} cases (B a power of two: scaling by 2^k is exact in floating point) and "
            f"at most {alg['ratio'].max():.2g}× the distance of a control run whose initial weights were perturbed "
            f"by 1e-7. Adam with the same eps under sum and mean differs by {same['ratio'].min():.2g}–"
            f"{same['ratio'].max():.2g}× the control's distance: eps is compared with √v, which sum scales by B"
            + ("; with eps = 1e-8 ≪ √v that stays within 10× of the control here, i.e. near rounding level."
               if same["ratio"].max() < 10 else "; that difference is well above the control.") + "\n\n"
            f"{md_table(t, '.2e')}\n")
        parts.append(figure_markdown(drawn, "f_reduction_distance", "Parameter distance between sum and mean runs against the perturbation control."))
    parts.append(report_q8.q4_beta2(facts))
    return "\n".join(p for p in parts if p)


def _stable_band(ok: pd.Series) -> str:
    """The largest learning rate that did not diverge, per B, for SGD with sum and with mean."""
    parts = []
    for red in ("mean", "sum"):
        if red in ok.index.get_level_values(0):
            v = ok.loc[red]
            parts.append(f"{red}: {v.iloc[0]:g} at B = {v.index[0]} to {v.iloc[-1]:g} at B = {v.index[-1]}")
    return ("The largest SGD learning rate that did not diverge went " + "; ".join(parts) + ".") if parts else ""


def with_interval(interval, estimate: float, fmt: str = ".0f") -> str:
    """``178 [150, 210]`` from ``(estimate, lo, hi)``; the estimate alone when there is no interval."""
    if interval is None or not np.all(np.isfinite(interval[1:])):
        return format(estimate, fmt)
    return f"{format(estimate, fmt)} [{format(interval[1], fmt)}, {format(interval[2], fmt)}]"


def _seeds_note(n_seeds: int) -> str:
    if n_seeds < 2:
        return "one seed per configuration, so no interval"
    return (f"median over {n_seeds} seeds of each seed's fewest steps over learning rates; in brackets the 95% "
            "bootstrap interval, resampling seeds and refitting")


def _fit_table(rows: pd.DataFrame, ci: dict) -> pd.DataFrame:
    """The fit per optimizer, with the bootstrap interval of B_crit, S_min and E_min where there is one."""
    out = rows[["optimizer", "S_min", "E_min", "B_crit", "r2", "n"]].copy()
    for name in ("B_crit", "S_min", "E_min"):
        lo = [ci.get(o, {}).get(name, (np.nan,) * 3)[1] for o in out["optimizer"]]
        hi = [ci.get(o, {}).get(name, (np.nan,) * 3)[2] for o in out["optimizer"]]
        if np.isfinite(lo).any():
            out.insert(out.columns.get_loc(name) + 1, f"{name} 95% CI", [
                f"[{a:.3g}, {b:.3g}]" if np.isfinite(a) else "" for a, b in zip(lo, hi)])
    return out


def q5(facts: Facts, drawn: Collection[str]) -> str:
    parts = []
    ex = facts.default.examples_to_loss_1 if facts.default else None
    if ex is not None and len(ex) >= 2:
        parts.append(
            "**Per step, bigger batches make more progress; per example seen, small batches are more "
            f"efficient.** In the default sweep (best learning rate per B), reaching training loss {LOSS_LEVEL:g} took "
            f"{ex.iloc[0]:,.0f} examples at B = {ex.index[0]} against {ex.iloc[-1]:,.0f} at B = {ex.index[-1]}.\n")
    parts.append(figure_markdown(drawn, "a_loss_curves", "Training loss against steps (top) and examples seen (bottom); best learning rate per B, mean and range over seeds."))
    sci = facts.science
    if sci is not None and sci.fits:
        rows = pd.DataFrame([{"optimizer": o, **f} for o, f in sci.fits.items()])
        good = rows[np.isfinite(rows["B_crit"])]
        ci = sci.intervals
        if len(good):
            parts.append(
                "**Steps to a target follow McCandlish et al.'s hyperbola S(B) = S_min(1 + B_crit/B).** On the "
                "MNIST-1D MLP, training-loss target (the other workloads and the validation target below): "
                + ", ".join(f"{r.optimizer}: B_crit ≈ {with_interval(ci.get(r.optimizer, {}).get('B_crit'), r.B_crit)}, "
                            f"S_min ≈ {with_interval(ci.get(r.optimizer, {}).get('S_min'), r.S_min)}, R² = {r.r2:.3f}"
                            for r in good.itertuples())
                + f" ({_seeds_note(sci.n_seeds)}). Below B_crit, doubling B halves the steps (perfect scaling); "
                "above it, returns diminish and the steps plateau at S_min.\n\n"
                + md_table(_fit_table(rows, ci), ".3g") + "\n")
        slopes = {o: ci.get(o, {}).get("slope", (s, np.nan, np.nan)) for o, s in sci.small_b_steps_slopes.items()}
        if slopes:
            parts.append(f"Log-log slope of steps against B for B ≤ {SMALL_B_STEPS}: "
                         + ", ".join(f"{o} {with_interval(iv, iv[0], '.2f')}" for o, iv in slopes.items())
                         + " (−1 is perfect scaling).\n")
    parts.append(figure_markdown(drawn, "c_steps_to_target", "Steps and examples to reach the target training loss, learning rate tuned per B; fitted hyperbola and B_crit."))
    s = sci.sgd_lr_slope if sci else None
    if s is not None and np.isfinite(s):
        parts.append(f"The best SGD learning rate grows with B (log-log slope {s:.2f} for B ≤ {SMALL_B_LR}), then saturates.\n")
    parts.append(figure_markdown(drawn, "c2_best_lr", "Best learning rate (fewest steps to target) against batch size."))
    parts.append(figure_markdown(drawn, "e_loss_vs_time", "Training loss against wall-clock training time on this CPU."))
    parts.append(report_workloads.q5_workloads(facts, drawn, md_table, figure_markdown))
    if not any(parts):
        return "Not measured yet: run `make sweep` and `make sweep GRID=science`.\n"
    return "\n".join(p for p in parts if p)


def q6(facts: Facts, drawn: Collection[str]) -> str:
    if facts.bench is None:
        return _not_measured(facts, "bench", "run make bench")
    p2 = facts.bench.pow2
    if p2.empty:
        return "The benchmark runs hold no powers-of-two results; run `make bench`.\n"
    t = p2[["device", "k", "us/pow2_minus_1", "us/pow2", "us/pow2_plus_1"]].copy()
    for c in ("us/pow2_minus_1", "us/pow2", "us/pow2_plus_1"):
        t[c] = t[c].astype(float)
    t["k"] = t["k"].astype(int)
    t = t.sort_values(["device", "k"])
    r_minus = (t["us/pow2_minus_1"] / t["us/pow2"]).astype(float)
    r_plus = (t["us/pow2_plus_1"] / t["us/pow2"]).astype(float)
    worst = float(max(abs(r_plus - 1).max(), abs(r_minus - 1).max()))
    fastest = int(((t["us/pow2"] < t["us/pow2_minus_1"]) & (t["us/pow2"] < t["us/pow2_plus_1"])).sum())
    med = float(np.median(np.concatenate([r_minus, r_plus])))
    if fastest <= len(t) / 2 and abs(med - 1) < 0.1:
        verdict = (f"no systematic advantage for a power of two: 2^k was the fastest of the three in {fastest} of "
                   f"{len(t)} cases, the median ratio (2^k ± 1)/2^k is {med:.2f}, and the scatter (up to {worst:.0%}) "
                   "goes both ways")
    else:
        verdict = (f"2^k was the fastest of the three in {fastest} of {len(t)} cases; median ratio (2^k ± 1)/2^k = "
                   f"{med:.2f} (up to {worst:.0%} apart)")
    return (
        f"Measured ({', '.join(sorted(set(t['device'])))}): {verdict}. A batch of 2^k + 1 costs "
        f"{r_plus.min():.2f}–{r_plus.max():.2f}× a batch of 2^k and 2^k − 1 costs {r_minus.min():.2f}–"
        f"{r_minus.max():.2f}× (per training step, `make bench`). Powers of two matter where hardware tiles "
        "work in fixed-size blocks (GPU warps of 32, tensor-core tiles, vector registers).\n\n"
        f"Training-step time (µs), MNIST-1D MLP, SGD with momentum:\n\n{md_table(t, '.1f')}\n\n"
        + figure_markdown(drawn, "q6_powers_of_two", "Training-step time at B = 2^k ± 1 relative to 2^k.")
    )


def _bcrit_in_range(fits: dict, b_simple: pd.DataFrame) -> str:
    """Whether each fitted B_crit lies within the range B_simple spanned over training."""
    vals = {o: f["B_crit"] for o, f in fits.items() if np.isfinite(f.get("B_crit", np.nan))}
    if not vals:
        return ""
    bs = b_simple
    lo, hi = float(bs["mean"].min()), float(bs["mean"].max())
    inside = [o for o, v in vals.items() if lo <= v <= hi]
    return (f" B_simple ranged over {lo:.0f}–{hi:.0f} in these runs; the fitted critical batch sizes "
            f"({', '.join(f'{o} {v:.0f}' for o, v in vals.items())}) lie inside that range for "
            f"{len(inside)} of {len(vals)} optimizers.")


def q7(facts: Facts, drawn: Collection[str]) -> str:
    noise = facts.noise
    if noise is None:
        return "Not measured yet: run `make sweep`.\n"
    init, end = noise.at_init, noise.end_median
    fits = facts.science.fits if facts.science else {}
    eq = facts.equivalence.runs if facts.equivalence else None
    eqs = ""
    if eq is not None and "err/b_simple_vs_direct" in eq:
        eqs = (f" The estimate from per-example norms (no B × P tensor) matches the direct computation from "
               f"per-example gradients to {eq['err/b_simple_vs_direct'].max():.1e}.")
    return (
        "Losses do not cancel (each is ≥ 0); gradients are vectors and partly do. How much is measured by the "
        "simple noise scale B_simple = tr(Σ)/‖G‖², the ratio of per-example gradient variance to the squared "
        f"mean gradient, computed exactly over the whole training set at every evaluation.{eqs} At "
        f"initialisation B_simple ≈ **{init:.0f}**: the spread of the per-example gradients is {init:.0f}× the squared "
        "norm of their mean, so single examples point in very different directions and it takes a batch of "
        f"about that size before the mean's signal outweighs the sampling noise. By the end of training the median is "
        f"**{end:.0f}** ({end / init:.0f}×): the mean gradient shrinks faster than the spread, so larger "
        "batches become useful later in training (McCandlish et al. 2018)."
        + _bcrit_in_range(fits, noise.curves) + "\n\n"
        + figure_markdown(drawn, "d_b_simple", "B_simple over training per batch size (best learning rate), against the fitted B_crit.")
    )


# -------------------------------------------------------------------- driver


def _provenance(facts: Facts) -> str:
    """Which runs the report was drawn from, and which are missing."""
    lines = []
    if facts.default is not None:
        runs = facts.default.runs
        commits = ", ".join(sorted(set(runs["git_commit"])))[:200]
        lines.append(f"- sweep `{facts.default.experiment}`: {len(runs)} finished runs; git commit(s) {commits}; "
                     f"jax {runs['jax_version'].iloc[0]}, optax {runs['optax_version'].iloc[0]}, "
                     f"mlflow {runs['mlflow_version'].iloc[0]}; device {runs['device'].iloc[0]}")
    if facts.science is not None:
        sci = facts.workloads.runs if facts.workloads is not None else facts.science.runs
        lines.append(f"- sweep `{facts.science.experiment}`: {len(sci)} finished runs; git commit(s) "
                     f"{', '.join(sorted(set(sci['git_commit'])))[:200]}")
    for name, found in (("generalisation", facts.generalisation), ("equivalence", facts.equivalence),
                        ("reduction", facts.reduction),
                        ("benchmarks", facts.bench), ("published", facts.published)):
        if found is not None:
            df = found.runs
            lines.append(f"- experiment `{name}`: {len(df)} runs; git commit(s) {', '.join(sorted(set(df['git_commit'])))[:200]}")
    # a missing equivalence experiment is told in Q1, Q2 and Q7, not here
    for name, msg in facts.missing.items():
        if name != "equivalence":
            lines.append(f"- missing ({name}): {msg}")
    lines.append(f"- store: `{load.tracking.tracking_uri()}`")
    return "\n".join(lines)


def text(facts: Facts, drawn: Collection[str], generated: str) -> str:
    """The report's Markdown from the facts, the names of the figures drawn and the generation time."""
    body = {
        "Q1": q1(facts), "Q2": q2(facts), "Q3": q3(facts, drawn), "Q4": q4(facts, drawn),
        "Q5": q5(facts, drawn),
        "Q5b": report_workloads.q5b(facts, drawn, md_table, figure_markdown, _not_measured),
        "Q6": q6(facts, drawn), "Q7": q7(facts, drawn),
        "Q8": report_q8.q8(facts, drawn, md_table, figure_markdown, _not_measured),
        "Q9": report_q9.q9(facts, drawn, md_table, figure_markdown, _not_measured),
    }
    lines = [
        "# What mini-batch backpropagation computes, and what it costs",
        "",
        "Generated by `make report` from the MLflow runs; every number below is computed from them "
        f"({generated}).",
        "",
        "Drawn from:",
        "",
        _provenance(facts),
        "",
    ]
    for q, question in QUESTIONS.items():
        lines += [f"## {q}. {question}", "", body[q], ""]
        if q in LIMITS:
            lines += [f"**Limits.** {LIMITS[q]}", ""]
    lines += ["## Sanity check: the MNIST-1D paper's accuracies", "",
              report_workloads.published(facts, md_table, _not_measured), ""]
    return "\n".join(lines)


def build(default: str = "default", science: str = "science", out: Path = REPORT_DIR, progress: bool = True) -> Path:
    """Collect the facts once, draw the figures into ``out/figures`` and write ``out/REPORT.md``."""
    t0 = time.perf_counter()
    facts = collect(default, science, progress)
    drawn = figures.render(facts, out / "figures")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "REPORT.md"
    path.write_text(text(facts, drawn, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    readme = load.tracking.ROOT / "README.md"
    if out == REPORT_DIR and readme.exists() and findings.update_readme(readme, findings.table(facts)):
        print(f"updated the findings table of {readme} from the same runs", file=sys.stderr)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", metavar="NAME",
                    help="the report of this one sweep (experiment name, or a parent run id), written to "
                         "report/sweeps/NAME/REPORT.md beside its figures")
    ap.add_argument("--default", default="default")
    ap.add_argument("--science", default="science")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"the report folder (default: {REPORT_DIR}, or with --sweep report/sweeps/NAME)")
    a = ap.parse_args(argv)
    if a.sweep is not None:
        from analysis.sweep_report import build_sweep

        try:
            print(build_sweep(a.sweep, a.out))
        except load.MissingRuns as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    print(build(a.default, a.science, a.out or REPORT_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
