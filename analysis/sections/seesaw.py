"""Seesaw (Meterez et al. 2025, arXiv:2510.14717): trade a learning-rate decay for a batch-size increase.

The claim: where a step-decay schedule would halve the learning rate, multiplying it by 1/√2 and doubling B
instead gives the same loss per example seen, in fewer serial steps (about 36% less wall-clock time reported on
language models; proved on noisy linear regression). The ``seesaw`` sweep runs four arms over the same examples
in four equal phases: step decay (B fixed, the rate halved), Seesaw (B doubled, the rate / √2), the batch ramp
alone (B doubled, the rate kept: Smith et al. 2018's "increase the batch size instead of decaying") and the
constant rate; each from three starting rates, for SGD and Adam.

Each arm is read at its own best starting rate (the lowest mean log final training loss over seeds): the same
tuning for every arm. Seesaw against step decay, seed-paired (the same seed draws the same initial weights): the
difference of the log final training loss and of the final validation error, t-intervals; they match when both
intervals lie inside ± the step-decay arm's seed-to-seed spread (its SD over seeds), differ when Holm's rule over
the section's comparisons says so, and are otherwise not resolved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, order, plots, stats
from analysis.markdown import md_table
from analysis.order import label as opt_label
from analysis.order import optimizers_in
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from mbstudy import schedule as sched

plt = plots.plt
REFERENCE_ARM = "step decay"
ARMS = ("step decay", "seesaw", "batch ramp", "constant")  # the grid's labels, in the order shown
COMPARED = ("seesaw", "batch ramp", "constant")  # each against the reference arm


@dataclass(frozen=True)
class SeesawFacts:
    experiment: str
    runs: pd.DataFrame  # with arm, lr0, steps_total, examples, final loss and error
    chosen: pd.DataFrame  # optimizer, arm: the best starting rate, its mean log loss, serial steps, time
    comparisons: pd.DataFrame  # optimizer, arm, metric: paired difference against step decay, margin, p, Holm
    curves: pd.DataFrame  # optimizer, arm, examples: median training loss over seeds at the chosen rate


def _start_rate(schedule: str, learning_rate: float) -> float:
    entries = sched.parse(schedule) if isinstance(schedule, str) and schedule.strip() else []
    return float(entries[0][2]) if entries else float(learning_rate)


def _total_steps(r) -> int:
    entries = sched.parse(r.schedule) if isinstance(r.schedule, str) and r.schedule.strip() else []
    return int(sum(e[0] for e in entries) + int(r.steps))


def seesaw_facts(runs: pd.DataFrame, history: pd.DataFrame | None, experiment: str = "seesaw") -> SeesawFacts:
    """``runs`` with an ``arm`` column (the grid's arm labels); ``history``: train/loss per run and step."""
    r = runs.copy()
    r["schedule"] = r["schedule"].fillna("") if "schedule" in r else ""
    for k in ("learning_rate", "batch_size", "steps", "eval_every", "seed", "final/train/loss", "final/val/acc",
              "time/train_s"):
        r[k] = pd.to_numeric(r[k], errors="coerce") if k in r else np.nan
    r["lr0"] = [_start_rate(s, lr) for s, lr in zip(r["schedule"], r["learning_rate"])]
    r["steps_total"] = [_total_steps(x) for x in r.itertuples()]
    ok = r["outcome"].fillna("").isin(("", "completed", "target")) if "outcome" in r else True
    r["loss"] = np.where(ok & np.isfinite(r["final/train/loss"]), r["final/train/loss"], np.inf)
    r["error"] = np.where(ok, 1.0 - r["final/val/acc"], np.nan)
    chosen, comps = [], []
    for opt in optimizers_in(r["optimizer"]):
        ro = r[r["optimizer"] == opt]
        best: dict[str, pd.DataFrame] = {}
        for arm in [a for a in ARMS if a in set(ro["arm"])]:
            ra = ro[ro["arm"] == arm]
            score = ra.groupby("lr0")["loss"].apply(lambda v: np.mean(np.log(v)) if np.isfinite(v).all() else np.inf)
            lr0 = float(score.idxmin())
            sel = ra[np.isclose(ra["lr0"], lr0)].set_index("seed").sort_index()
            best[arm] = sel
            lrs = sorted(ra["lr0"].unique())
            chosen.append({"optimizer": opt, "arm": arm, "lr0": lr0, "edge": lr0 in (lrs[0], lrs[-1]),
                           "loss": float(np.exp(score.min())), "error": float(sel["error"].mean()),
                           "steps": int(sel["steps_total"].median()), "seconds": float(sel["time/train_s"].median()),
                           "n": int(np.isfinite(sel["loss"]).sum())})
        ref = best.get(REFERENCE_ARM)
        if ref is None:
            continue
        spread_loss = float(np.nanstd(np.log(ref["loss"].replace(np.inf, np.nan)), ddof=1))
        spread_err = float(np.nanstd(ref["error"], ddof=1))
        for arm in COMPARED:
            if arm not in best:
                continue
            a = best[arm].reindex(ref.index)
            for metric, d, margin in (("training loss (log)", np.log(a["loss"]) - np.log(ref["loss"]), spread_loss),
                                      ("validation error", a["error"] - ref["error"], spread_err)):
                d = d.replace([np.inf, -np.inf], np.nan).dropna().to_numpy(float)
                est, lo, hi, p = stats.mean_interval(d) if len(d) >= 2 else (np.nan,) * 4
                comps.append({"optimizer": opt, "arm": arm, "metric": metric, "diff": est, "lo": lo, "hi": hi,
                              "p": p, "margin": margin, "n": len(d)})
    comps = pd.DataFrame(comps, columns=["optimizer", "arm", "metric", "diff", "lo", "hi", "p", "margin", "n"])
    comps["p_holm"] = stats.holm(comps["p"].fillna(1.0)) if len(comps) else []
    chosen = pd.DataFrame(chosen)
    curves = pd.DataFrame()
    if history is not None and not history.empty and not chosen.empty:
        keep = r.merge(chosen[["optimizer", "arm", "lr0"]], on=["optimizer", "arm", "lr0"])
        h = history[(history["metric"] == "train/loss") & history["run_id"].isin(keep["run_id"])]
        h = h.merge(keep[["run_id", "optimizer", "arm", "schedule", "batch_size", "learning_rate", "steps",
                          "eval_every"]], on="run_id")
        ex = []
        for run_id, g in h.groupby("run_id"):
            x = g.iloc[0]
            ph = sched.phases(x["schedule"], batch_size=int(x["batch_size"]), learning_rate=float(x["learning_rate"]),
                              steps=int(x["steps"]), eval_every=int(x["eval_every"]))
            ex.append(g.assign(examples=[sched.examples_at(ph, int(s)) for s in g["step"]]))
        h = pd.concat(ex, ignore_index=True)
        curves = h.groupby(["optimizer", "arm", "examples"], as_index=False)["value"].median()
    return SeesawFacts(experiment, r, chosen, comps, curves)


def _read(ctx: Context) -> SeesawFacts:
    runs = load.load_runs("seesaw", hint="make sweep GRID=seesaw")
    runs = runs.assign(arm=order.labels_of(runs, "seesaw")["arm"])
    hist = load.load_history(runs, "seesaw", keys=("train/loss",), progress=ctx.progress)
    return seesaw_facts(runs, hist)


# ------------------------------------------------------------------ verdicts and text


def verdict(row) -> str:
    """``matches`` (both ends inside ± the margin), ``worse``/``better`` (Holm), else ``not resolved``."""
    if not (np.isfinite(row.lo) and np.isfinite(row.hi)):
        return "too few seeds"
    if np.isfinite(row.margin) and -row.margin < row.lo and row.hi < row.margin:
        return "matches"
    if row.p_holm < 0.05:
        return "worse" if row.diff > 0 else "better"
    return "not resolved"


def _iv(row, pct: bool = False) -> str:
    f = (lambda v: f"{v:+.1%}") if pct else (lambda v: f"{v:+.3f}")
    return f"{f(row.diff)} [{f(row.lo)}, {f(row.hi)}]" if np.isfinite(row.lo) else f(row.diff)


def _time_text(s: SeesawFacts) -> str:
    """Serial steps against the training time these CPU cores took (a step's cost grows with B here)."""
    t = s.chosen.set_index(["optimizer", "arm"])
    parts = []
    for o in dict.fromkeys(s.chosen["optimizer"]):
        if (o, "seesaw") in t.index and (o, REFERENCE_ARM) in t.index:
            a, b = t.loc[(o, "seesaw")], t.loc[(o, REFERENCE_ARM)]
            parts.append(f"{opt_label(o)}: {a['steps']} against {b['steps']} steps, {a['seconds']:.1f} s against "
                         f"{b['seconds']:.1f} s")
    if not parts:
        return ""
    return ("Serial steps and training time per run (median, on the two CPU cores the study ran on, where a step's "
            "cost grows with B; on an accelerator that runs the larger batches in parallel the time would follow the "
            "steps more closely): " + "; ".join(parts) + ". ")


def text(ctx: Context) -> str:
    s = ctx.seesaw
    if s is None or s.comparisons.empty:
        return ctx.not_measured("seesaw", "run make sweep GRID=seesaw")
    c = s.comparisons.assign(verdict=[verdict(r) for r in s.comparisons.itertuples()])
    ss = c[c["arm"] == "seesaw"]
    steps = s.chosen.set_index(["optimizer", "arm"])["steps"]
    opts = list(dict.fromkeys(ss["optimizer"]))
    saved = {o: 1 - steps.get((o, "seesaw"), np.nan) / steps.get((o, REFERENCE_ARM), np.nan) for o in opts}
    per_opt = []
    for o in opts:
        v = ss[ss["optimizer"] == o].set_index("metric")["verdict"]
        per_opt.append(f"{opt_label(o)}: training loss {v.get('training loss (log)', '–')}, validation error "
                       f"{v.get('validation error', '–')}")
    n_match = int((ss.groupby("optimizer")["verdict"].apply(lambda v: (v == "matches").all())).sum())
    head = (f"**Seesaw matched step decay on both measures for {n_match} of {len(opts)} optimizers, in "
            + ", ".join(f"{saved[o]:.0%} fewer serial steps ({opt_label(o)})" for o in opts) + "** ("
            + "; ".join(per_opt) + "). The claim (Meterez et al. 2025): where step decay halves the rate, "
            "dividing it by √2 and doubling B instead gives the same loss per example in fewer serial steps. "
            "Measured on the MNIST-1D MLP, every arm over the same examples at its own best starting rate; "
            "a verdict 'matches' when the seed-paired difference's 95% interval lies inside ± the step-decay "
            "arm's seed SD, 'worse'/'better' under Holm's rule over the section's comparisons.")
    edge = s.chosen[s.chosen["edge"]]
    return "\n\n".join([
        head, "Every comparison, and each arm at its best starting rate, are in the appendix.",
        (f"{len(edge)} arm(s) chose a starting rate at the edge of the three tried ("
         + ", ".join(f"{opt_label(x.optimizer)} {x.arm}" for x in edge.itertuples())
         + "): their best may lie outside; the verdicts for them are lower bounds on what tuning could reach."
         if len(edge) else "Every arm's best starting rate is inside the three tried."),
        ctx.figure("s2_seesaw"),
        _time_text(s),
    ]) + "\n"


def appendix(ctx: Context) -> str:
    s = ctx.seesaw
    if s is None or s.comparisons.empty:
        return ""
    c = s.comparisons.assign(verdict=[verdict(r) for r in s.comparisons.itertuples()])
    rows = [{"optimizer": opt_label(r.optimizer), "arm against step decay": r.arm, "measure": r.metric,
             "difference (95%)": _iv(r, pct=r.metric.startswith("validation")),
             "± margin": f"{r.margin:.3f}" if not r.metric.startswith("validation") else f"{r.margin:.1%}",
             "Holm p": f"{r.p_holm:.3f}", "verdict": r.verdict} for r in c.itertuples()]
    ch = s.chosen.assign(optimizer=s.chosen["optimizer"].map(opt_label))
    ch = ch.rename(columns={"lr0": "best starting rate", "loss": "final training loss (geo. mean)",
                            "error": "final validation error (mean)", "steps": "serial steps",
                            "seconds": "training time per run, s (median)", "n": "seeds"})
    return ("### Seesaw: every comparison against step decay\n\n" + md_table(pd.DataFrame(rows))
            + "\n\n### Seesaw: each arm at its best starting rate\n\n" + md_table(ch.drop(columns=["edge"]),
                                                                                   floatfmt=".4g"))


def finding(ctx: Context) -> Answer | None:
    s = ctx.seesaw
    if s is None or s.comparisons.empty:
        return None
    c = s.comparisons.assign(verdict=[verdict(r) for r in s.comparisons.itertuples()])
    ss = c[(c["arm"] == "seesaw") & (c["metric"] == "training loss (log)")]
    if ss.empty:
        return None
    r = next(ss.itertuples())
    return Answer(f"Seesaw against step decay: {', '.join(f'{opt_label(x.optimizer)} {x.verdict}' for x in ss.itertuples())}",
                  f"{opt_label(r.optimizer)}: Δ log loss {_iv(r)}", "one small MLP; serial steps, not GPU time")


# ------------------------------------------------------------------ figure


def _draw(ctx: Context):
    s = ctx.seesaw
    if s is None or s.curves.empty:
        raise Skip("no seesaw runs")
    opts = list(optimizers_in(s.curves["optimizer"]))
    fig, axes = plt.subplots(1, len(opts), figsize=(4.6 * len(opts), 3.6), constrained_layout=True, squeeze=False)
    colors = dict(zip(ARMS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, o in zip(axes[0], opts):
        for arm in ARMS:
            g = s.curves[(s.curves["optimizer"] == o) & (s.curves["arm"] == arm)]
            if len(g):
                ax.plot(g["examples"], g["value"], color=colors[arm], label=arm)
        ax.set_yscale("log")
        ax.set_xlabel("examples seen")
        ax.set_ylabel("training loss (median over seeds)")
        ax.set_title(opt_label(o), fontsize=9)
    axes[0][0].legend(fontsize=8)
    plots.suptitle(fig, "Seesaw against step decay: training loss per example seen, each arm at its best starting rate")
    return fig


SECTION = Section(
    "Seesaw", "Can doubling B replace halving the learning rate?",
    heading="Seesaw: can doubling B (and the rate / √2) replace halving the rate?",
    text=text,
    provides=(Provider("seesaw", _read),),
    appendix=appendix,
    figures=(FigureSpec("s2_seesaw", _draw, ("seesaw",), "Training loss against examples seen (median over seeds) "
                        "for step decay, Seesaw, the batch ramp and the constant rate, each at its best starting "
                        "rate; the phase boundaries are every 16,384 examples."),),
    limits="One workload (the MNIST-1D MLP), one decay factor (2) and four phases, three starting rates per arm; "
           "the paper's setting is language-model pre-training with AdamW.",
    finding=("Seesaw: can doubling B replace a rate decay?", finding),
)
