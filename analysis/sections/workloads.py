"""Q5 across workloads: the science sweep (``make sweep GRID=science``) on every workload, target and level: the
per-seed fits of steps against B (:mod:`analysis.science`), the hyperbola tested against its rivals, each
optimizer's B_crit against the reference optimizer's under Holm's rule, B_crit against the target level, and
B_simple against B_crit.

A workload is ``<dataset>-<model>``, labelled and ordered as the grid's ``[[workloads]]`` (the first is the
headline); a target is one of :data:`mbstudy.metrics.TARGETS`, read at the levels of the grid's ``[meta.levels]``
and at the runs' own (hardest) level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from analysis import load, order, plots, science
from analysis.markdown import md_table
from analysis.order import label, optimizers_in, reference_optimizer
from analysis.plots import Skip
from analysis.science import ScienceFacts, workload_of  # noqa: F401 - workload_of: the sections' name for it
from analysis.section import Context, FigureSpec, Provider, Section
from mbstudy.metrics import TARGET_LABELS, TRAIN_TARGET

plt = plots.plt
SMALL_B = science.SMALL_B
B_SIMPLE_FACTOR = 3.0  # "B_simple ≈ B_crit" holds when their ratio is within this factor either way


def ordered(names, labels: dict[str, str]) -> list[str]:
    """``names`` in the order of ``labels`` (the grid's), others after them by name."""
    return order.ordered(names, labels)


@dataclass(frozen=True)
class Panel:
    """One (workload, target) at one level, every optimizer: what a figure of steps against B draws."""

    workload: str
    target: str
    level: float
    steps: pd.DataFrame  # optimizer, batch_size, steps (median over seeds), steps_min, steps_max, n_seeds, n_bound
    fits: dict[str, dict[str, tuple[float, float, float]]]  # optimizer -> B_crit, S_min, E_min: (value, lo, hi)
    bounds: dict[str, str]  # optimizer -> "" or the bound of its B_crit (">=", "<=")
    n_seeds: int


def panel(f: ScienceFacts, workload: str, target: str, level: float | None = None) -> Panel | None:
    """The panel of ``workload`` at ``target`` (its hardest level unless ``level``), None without runs there."""
    if (workload, target) not in f.levels:
        return None
    level = f.hardest(workload, target) if level is None else level
    rows, fits, bounds, n = [], {}, {}, 0
    for opt in optimizers_in(f.best.loc[f.best["workload"] == workload, "optimizer"]):
        c = f.cell(workload, target, opt, level)
        if c is None:
            continue
        g = f.best[(f.best["workload"] == workload) & (f.best["target"] == target) & (f.best["optimizer"] == opt)
                   & np.isclose(f.best["level"], level)]
        for b, gb in g.groupby("batch_size"):
            s = gb["steps"].to_numpy(float)
            if not (np.isfinite(s).sum() > len(s) / 2):
                continue  # more than half of the seeds must reach the level
            rates = gb.loc[np.isfinite(gb["steps"]), "learning_rate"].round(12).mode()
            rows.append({"optimizer": opt, "batch_size": int(b), "steps": float(np.median(s)),
                         "steps_min": float(np.min(s)), "steps_max": float(np.max(s[np.isfinite(s)])),
                         "n_seeds": len(s), "n_bound": int(gb["bound"].sum()),
                         "learning_rate": float(rates.min()) if len(rates) else np.nan})
        fits[opt] = {k: (v.value, v.lo, v.hi) for k, v in (("B_crit", c.b_crit), ("S_min", c.s_min),
                                                              ("E_min", c.e_min), ("slope", c.slope))}
        bounds[opt] = c.b_crit.bound
        n = max(n, c.n_seeds)
    steps = pd.DataFrame(rows, columns=["optimizer", "batch_size", "steps", "steps_min", "steps_max", "n_seeds",
                                        "n_bound", "learning_rate"])
    steps["examples"] = steps["steps"] * steps["batch_size"]
    return Panel(workload, target, level, steps, fits, bounds, n)


def b_simple_table(f: ScienceFacts, history: pd.DataFrame) -> pd.DataFrame:
    """B_simple of the runs that set each seed's steps to the hardest training-loss level (per workload, optimizer,
    B, seed: the fastest rate): at initialisation, over training (median) and where the run stopped, each the median
    over those runs; beside B_crit there (a measured value only: a bound has no ratio)."""
    if history is None or history.empty:
        return pd.DataFrame()
    h = history[history["metric"] == "grad/b_simple"].dropna(subset=["value"]).sort_values("step")
    per_run = h.groupby("run_id")["value"].agg(at_init="first", over_training="median", at_end="last")
    rows = []
    for w in f.workloads:
        if (w, TRAIN_TARGET) not in f.levels:
            continue
        lev = f.hardest(w, TRAIN_TARGET)
        best = f.best[(f.best["workload"] == w) & (f.best["target"] == TRAIN_TARGET) & np.isclose(f.best["level"], lev)]
        runs = f.runs.assign(workload=workload_of(f.runs))
        fastest = best.merge(runs[["run_id", "workload", "optimizer", "batch_size", "seed", "learning_rate"]],
                             on=["workload", "optimizer", "batch_size", "seed", "learning_rate"])
        fastest = fastest[np.isfinite(fastest["steps"])].merge(per_run, left_on="run_id", right_index=True)
        for opt, g in fastest.groupby("optimizer"):
            c = f.cell(w, TRAIN_TARGET, opt)
            rows.append({"workload": w, "optimizer": opt, "B_crit": c.b_crit.value, "B_crit_lo": c.b_crit.lo,
                         "B_crit_hi": c.b_crit.hi, "bound": c.b_crit.bound,
                         **{k: float(g[k].median()) for k in ("at_init", "over_training", "at_end")}})
    out = pd.DataFrame(rows)
    if not out.empty:
        for k in ("at_init", "over_training", "at_end"):
            out[f"{k}_ratio"] = np.where(out["bound"] == "", out[k] / out["B_crit"], np.nan)
    return out


def _read(ctx: Context) -> ScienceFacts:
    name = ctx.experiments["science"]
    runs = load.load_runs(name, hint=f"make sweep GRID={name}")
    hist = load.load_history(runs, name, keys=("train/loss", "val/acc", "val/loss", "grad/b_simple"),
                             progress=ctx.progress)
    f = science.science_facts(runs, hist, name, order.workload_labels(name), order.meta(name).get("levels", {}))
    return science.ScienceFacts(**{**f.__dict__, "b_simple": b_simple_table(f, hist)})


def headline(f: ScienceFacts) -> str:
    """The workload the report's detailed Q5 figures (and Q7-Q9's comparisons) show: the grid's first that the
    sweep has, else the sweep's first."""
    return f.workloads[0]


def headline_panel(ctx: Context, target: str = TRAIN_TARGET) -> Panel | None:
    """The headline workload's panel at ``target``'s hardest level (None when the science sweep is missing)."""
    f = ctx.workloads
    return None if f is None or f.runs.empty else panel(f, headline(f), target)


def headline_b_crit(ctx: Context) -> dict[str, float]:
    """The headline workload's measured B_crit per optimizer at the hardest training-loss level (a bound is left out:
    it is not a number to compute with)."""
    p = headline_panel(ctx)
    return {} if p is None else {o: v["B_crit"][0] for o, v in p.fits.items() if not p.bounds.get(o)}


# ------------------------------------------------------------------ text


def _q(summary) -> str:
    return summary.text(".3g")


def fits_table(f: ScienceFacts, hardest_only: bool = True) -> pd.DataFrame:
    """One row per (workload, target, level, optimizer): B_crit, S_min, E_min, the small-B slope, the seeds and
    batch sizes, and which model predicted the left-out batch sizes best."""
    rows = []
    for (w, t, lev, opt), c in f.cells.items():
        if hardest_only and lev != f.hardest(w, t):
            continue
        m = c.models
        rows.append({"workload": f.label(w), "target": TARGET_LABELS[t], "level": f"{lev:g}", "optimizer": label(opt),
                     "seeds": c.n_seeds, "B's": int(np.isfinite(c.table.to_numpy(float)).any(axis=1).sum()),
                     "B_crit [95% CI]": _q(c.b_crit), "S_min [95% CI]": _q(c.s_min), "E_min [95% CI]": _q(c.e_min),
                     f"slope B ≤ {SMALL_B} [95% CI]": c.slope.text(".2f"),
                     "best model (LOO)": m.get("winner") or "–",
                     "χ²/dof": f"{m['chi2_dof']:.2g}" if np.isfinite(m.get("chi2_dof", np.nan)) else "–"})
    return pd.DataFrame(rows)


def comparison_rows(f: ScienceFacts) -> pd.DataFrame:
    """The verdicts: each optimizer's B_crit against the reference's at the hardest level, Holm over all of them."""
    c = f.comparisons.dropna(subset=["p_holm"], how="all")
    c = c[pd.Series([f.hardest(w, t) == lev for w, t, lev in zip(c["workload"], c["target"], c["level"])],
                    index=c.index, dtype=bool)]
    out = c.assign(verdict=[science.verdict(r.ratio, r.p_holm, "larger", "smaller", "not resolved")
                            for r in c.itertuples()])
    return out


def _ratio_text(r) -> str:
    if r.bound:
        return "a bound (not compared)"
    if not np.isfinite(r.ratio):
        return "–"
    return f"{r.ratio:.2f} [{r.lo:.2f}, {r.hi:.2f}]"


def text(ctx: Context) -> str:
    """Q5's second half: the science sweep across workloads."""
    f = ctx.workloads
    if f is None or not f.cells:
        return ""
    ref = reference_optimizer()
    comp = comparison_rows(f)
    verdicts = comp["verdict"].value_counts()
    models = pd.DataFrame([{"winner": c.models.get("winner", ""), "chi2": c.models.get("chi2_dof", np.nan)}
                           for (w, t, lev, o), c in f.cells.items() if lev == f.hardest(w, t)])
    fitted = models[models["winner"] != ""]
    hyper = int((fitted["winner"] == "hyperbola").sum())
    within = int((fitted["chi2"] <= 2).sum())
    sl = f.slopes.dropna(subset=["p_holm"])
    departs = sl[sl["p_holm"] < 0.05]
    n_targets = len(f.levels)
    parts = [
        f"### Across {len(f.workloads)} workloads\n",
        ("**The hyperbola is the best of the three shapes tested, though not exact, and the optimizers differ in "
         "B_crit where the seeds say so.**" if hyper * 2 > len(fitted) and within * 2 <= len(fitted) else
         "**The hyperbola is the best of the three shapes tested, within the seeds' noise in most curves.**"
         if hyper * 2 > len(fitted) else
         "**The hyperbola is not the best of the three shapes tested in most curves.**")
        + f" It predicted left-out batch sizes best in {hyper} of {len(fitted)} curves that could be tested "
        f"(five or more batch sizes every seed reached; a power law and a broken power law the others), and its "
        f"residuals were within the seeds' own variance (χ²/dof ≤ 2) in {within}; against {label(ref)}, "
        + ", ".join(f"{n} {v}" for v, n in verdicts.items())
        + f" of {len(comp)} B_crit comparisons at the hardest levels (Holm's rule over all of them, 5%).\n",
        f"The science sweep trains {len(f.workloads)} workloads ({', '.join(f.label(w) for w in f.workloads)}) "
        f"to {n_targets} (workload, target) pairs' hardest levels, with easier levels read from the same histories; "
        "every level is beyond what a linear model reaches (Methods). Per seed, the fewest steps over the searched "
        "learning rates at each B make one curve, fitted alone; B_crit is the geometric mean over seeds with its "
        "t-interval, or a bound (≥ the largest B measured) where a seed's curve never leaves perfect scaling.\n",
        "Each workload's and optimizer's B_crit at its hardest training-loss level is in 'What batch size should I "
        "use?' above; every level's fit (B_crit, S_min, E_min, the small-B slope and the model comparison) is in "
        "the appendix.\n",
        ctx.figure("w1_steps_to_target"),
        ctx.figure("w4_b_crit_levels"),
        "**Small-B slope.** Perfect scaling is a slope of −1 of log steps against log B for B ≤ "
        f"{SMALL_B}; per seed, then over seeds: {len(departs)} of {len(sl)} (workload, target, optimizer) slopes depart "
        "from −1 at Holm's 5%" + (": " + ", ".join(f"{f.label(r.workload)} {TARGET_LABELS[r.target]} {label(r.optimizer)} "
                                                    f"{r.slope:.2f} [{r.lo:.2f}, {r.hi:.2f}]"
                                                    for r in departs.itertuples()) if len(departs) else "") + ".\n",
        _b_simple(ctx, f),
    ]
    return "\n".join(p for p in parts if p)


def appendix(ctx: Context) -> str:
    f = ctx.workloads
    if f is None or not f.cells:
        return ""
    comp = comparison_rows(f)
    table = pd.DataFrame({"workload": comp["workload"].map(f.label), "target": comp["target"].map(TARGET_LABELS),
                          "optimizer": comp["optimizer"].map(label),
                          f"B_crit / {label(reference_optimizer())}'s [95% CI]": [_ratio_text(r) for r in comp.itertuples()],
                          "p (Holm)": comp["p_holm"].map(lambda p: f"{p:.3g}" if np.isfinite(p) else "–"),
                          "verdict": comp["verdict"]})
    return "\n".join([
        "### Steps to target, every level", "",
        "Per (workload, target, level, optimizer), the per-seed fits summarised over seeds (geometric mean, 95% "
        "t-interval; ≥: a bound), the small-B slope (mean over seeds), and which of the hyperbola, a power law and a "
        "broken power law predicted the left-out batch sizes best.", "",
        md_table(fits_table(f, hardest_only=False)), "",
        "### B_crit against the reference optimizer's", "",
        md_table(table), ""])


def _b_simple(ctx: Context, f: ScienceFacts) -> str:
    t = f.b_simple
    if t.empty:
        return ""
    m = t[t["bound"] == ""]
    ok = {k: m[f"{k}_ratio"].between(1 / B_SIMPLE_FACTOR, B_SIMPLE_FACTOR) for k in ("at_init", "over_training", "at_end")}
    return (
        "**B_simple against B_crit (McCandlish et al.: B_crit ≈ B_noise, B_simple its proxy).** For the runs that "
        "set each seed's steps to the hardest training-loss level, B_simple at initialisation, over training and where "
        f"the run stopped, against B_crit where it is measured ({len(m)} of {len(t)} (workload, optimizer) pairs): "
        f"within a factor of {B_SIMPLE_FACTOR:g} at initialisation in {int(ok['at_init'].sum())}, over training in "
        f"{int(ok['over_training'].sum())}, where the run stopped in {int(ok['at_end'].sum())}"
        + (f"; the ratio where the run stopped ranges {m['at_end_ratio'].min():.2g}–{m['at_end_ratio'].max():.2g}"
           if len(m) else "") + ".\n\n" + ctx.figure("w2_b_simple_vs_b_crit"))


# ------------------------------------------------------------------ figures

MARKERS = {"at_init": ("o", "at initialisation"), "over_training": ("s", "median over training"),
           "at_end": ("^", "where the run stopped")}


def steps_to_target_by_workload(ctx: Context):
    """Steps to each target's hardest level against B: rows the targets, columns the workloads."""
    f = ctx.workloads
    cols = f.workloads
    rows = [t for t in TARGET_LABELS if any((c, t) in f.levels for c in cols)]
    if not cols or not rows:
        raise Skip("no workload reached a target")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.0 * len(cols), 2.8 * len(rows)), squeeze=False)
    colors = plots.optimizer_colors(f.runs["optimizer"])
    for i, t in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            p = panel(f, c, t)
            if p is None or p.steps.empty:
                ax.set_axis_off()
                continue
            for opt in optimizers_in(p.steps["optimizer"]):
                st = p.steps[p.steps["optimizer"] == opt]
                B = st["batch_size"].to_numpy(float)
                bound = (st["n_bound"] > 0).to_numpy()
                color = colors.get(opt)
                ax.errorbar(B, st["steps"], yerr=[st["steps"] - st["steps_min"], (st["steps_max"] - st["steps"]).fillna(0)],
                            fmt="o", ms=3, color=color, alpha=0.8, lw=0.8, label=label(opt))
                if bound.any():
                    ax.plot(B[bound], st["steps"].to_numpy()[bound], "v", mfc="none", ms=6, color=color)
                b_crit, s_min = p.fits[opt]["B_crit"][0], p.fits[opt]["S_min"][0]
                if not p.bounds[opt] and np.isfinite(b_crit) and np.isfinite(s_min) and len(B):
                    grid = np.geomspace(B.min(), B.max(), 100)
                    ax.plot(grid, s_min * (1 + b_crit / grid), "-", color=color, lw=1, alpha=0.7)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{f.label(c)}\n{TARGET_LABELS[t]} {p.level:g}", fontsize=8)
            ax.set_xlabel("batch size B")
            if j == 0:
                ax.set_ylabel("steps to target")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    plots.suptitle(fig, f"Steps to the hardest target on {len(cols)} workloads: median over seeds (bars: range), the "
                        "hyperbola of the per-seed fits' geometric means (none where B_crit is a bound)")
    return fig


def b_crit_levels(ctx: Context):
    """B_crit against the target level (McCandlish et al.: B_crit grows as the loss falls): one panel per workload
    and target, one line per optimizer; a bound is an arrow."""
    f = ctx.workloads
    pairs = [(w, t) for w in f.workloads for t in TARGET_LABELS if (w, t) in f.levels and len(f.levels[(w, t)]) > 1]
    if not pairs:
        raise Skip("every (workload, target) was read at one level only")
    fig, axes = plt.subplots(1, len(pairs), figsize=(2.7 * len(pairs), 2.9), squeeze=False)
    colors = plots.optimizer_colors(f.runs["optimizer"])
    for ax, (w, t) in zip(axes[0], pairs):
        levels = f.levels[(w, t)]
        for opt in optimizers_in(f.best.loc[f.best["workload"] == w, "optimizer"]):
            cells = [f.cell(w, t, opt, lev) for lev in levels]
            x = np.array(levels, float)
            y = np.array([c.b_crit.value for c in cells])
            lo = np.array([c.b_crit.lo if not c.b_crit.bound else c.b_crit.value for c in cells])
            hi = np.array([c.b_crit.hi if not c.b_crit.bound else np.inf for c in cells])
            plots.errorbar(ax, x, y, lo, hi, fmt="o-", color=colors.get(opt), label=label(opt))
        ax.set_xscale("log")
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=6, rotation=45)
        ax.invert_xaxis()  # harder targets to the right
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_title(f"{f.label(w)}\n{TARGET_LABELS[t]}", fontsize=7)
        ax.set_xlabel("target level (harder →)")
        ax.set_ylabel("B_crit")
    handles, labs = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="upper center", ncol=len(labs), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    plots.suptitle(fig, "B_crit against the target level: geometric mean over seeds, 95% t-interval; an arrow: a bound "
                        "(every batch size still in perfect scaling)")
    return fig


def b_simple_vs_b_crit(ctx: Context):
    """B_simple (at initialisation, over training, where the run stopped) against the measured B_crit, y = x."""
    f = ctx.workloads
    t = f.b_simple
    t = t[t["bound"] == ""] if not t.empty else t
    if t.empty or not np.isfinite(t["B_crit"]).any():
        raise Skip("no B_simple history of the science sweep's fastest runs, or no measured B_crit")
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    names = ordered(set(f.labels) | set(t["workload"]), f.labels)
    palette = dict(zip(names, plots.sns.color_palette("colorblind", len(names))))
    for k, (marker, lab) in MARKERS.items():
        for r in t.itertuples():
            err = [[r.B_crit - r.B_crit_lo], [r.B_crit_hi - r.B_crit]] if np.isfinite(r.B_crit_lo) else None
            ax.errorbar(r.B_crit, getattr(r, k), xerr=err, fmt=marker, ms=5, lw=0.6,
                        color=palette.get(r.workload, "gray"), alpha=0.85,
                        markerfacecolor="none" if k == "at_init" else None)
        ax.plot([], [], marker, color="gray", label=lab, ls="none")
    for wl, color in palette.items():
        if wl in set(t["workload"]):
            ax.plot([], [], "-", color=color, label=f.label(wl))
    vals = np.concatenate([t["B_crit"], t["at_init"], t["over_training"], t["at_end"]]).astype(float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    ax.plot([vals.min() / 2, vals.max() * 2], [vals.min() / 2, vals.max() * 2], "k--", lw=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("B_crit (hardest training-loss level), 95% CI")
    ax.set_ylabel("B_simple = tr(Σ)/‖G‖²")
    ax.legend(fontsize=6, loc="upper left")
    r = t["at_end_ratio"].astype(float)
    ax.set_title(f"B_simple where the runs stopped / B_crit: median {np.nanmedian(r):.2g} "
                 f"(range {np.nanmin(r):.2g}–{np.nanmax(r):.2g})", fontsize=8)
    return fig


SECTION = Section(
    "workloads",
    text=text,
    appendix=appendix,
    provides=(Provider("workloads", _read),),
    figures=(FigureSpec("w1_steps_to_target", steps_to_target_by_workload, ("workloads",),
                        "Steps to each target's hardest level against B on every workload (rows: target; columns: "
                        "workload); median over seeds, bars the range, lines the hyperbola of the per-seed fits; ▽: "
                        "reached at the first evaluation (an upper bound, not fitted)."),
             FigureSpec("w4_b_crit_levels", b_crit_levels, ("workloads",),
                        "B_crit against the target level, per workload, target and optimizer (geometric mean over "
                        "seeds of the per-seed fits, 95% t-interval; an arrow marks a bound)."),
             FigureSpec("w2_b_simple_vs_b_crit", b_simple_vs_b_crit, ("workloads",),
                        "B_simple (at initialisation, over training, where the run stopped) against the measured "
                        "B_crit, every workload and optimizer; the dashed line is y = x.")),
)

