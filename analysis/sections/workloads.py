"""Q5 across workloads: the science sweep (``make sweep GRID=science``) on every workload and target: steps to each
target per (workload, target, optimizer), the shape checks (small-B slope, the hyperbola's R², each optimizer's
B_crit against the reference optimizer's), and B_simple against B_crit.

The facts (:func:`workload_facts`) are pure: the science sweep's runs table (``analysis.load``) and, optionally,
a history of ``grad/b_simple`` in, a frozen dataclass out.

A workload is ``<dataset>-<model>``, labelled and ordered as the grid's ``[[workloads]]`` (the first is the
headline); a target is one of :data:`mbstudy.metrics.TARGETS` (the training-loss target, ``steps_to_target``, or
the validation target, ``steps_to_val_target``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import load, order, plots, reduce
from analysis.markdown import interval, md_table
from analysis.order import optimizers_in, reference_optimizer
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from mbstudy.metrics import TARGET_LABELS, TARGETS, TRAIN_TARGET

plt = plots.plt
SMALL_B = 16  # the perfect-scaling slope is fitted for B up to this
B_SIMPLE_FACTOR = 3.0  # "B_simple ≈ B_crit" holds when their ratio is within this factor either way


def workload_of(runs: pd.DataFrame) -> pd.Series:
    """``<dataset>-<model>`` of every run (runs from before the ``model`` field are MLPs; a table without a
    ``dataset`` column holds TrainConfig's default, MNIST-1D)."""
    model = runs["model"].fillna("mlp") if "model" in runs else pd.Series("mlp", index=runs.index)
    data = runs["dataset"].fillna("mnist1d") if "dataset" in runs else pd.Series("mnist1d", index=runs.index)
    return data.astype(str) + "-" + model.astype(str)


def ordered(names, labels: dict[str, str]) -> list[str]:
    """``names`` in the order of ``labels`` (the grid's), others after them by name."""
    return order.ordered(names, labels)


@dataclass(frozen=True)
class Panel:
    """One (workload, target): steps to the target per optimizer and B, with the hyperbola fits."""

    workload: str
    target: str  # one of mbstudy.metrics.TARGETS
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
    labels: dict[str, str] = field(default_factory=dict)  # workload -> its grid's label, in the grid's order

    @property
    def workloads(self) -> list[str]:
        return ordered({w for w, _ in self.panels}, self.labels)

    def label(self, workload: str) -> str:
        """How tables and figures name a workload: its grid's label, else its name."""
        return self.labels.get(workload, workload)


def panels(runs: pd.DataFrame, n_boot: int = 1000, labels: dict[str, str] | None = None
           ) -> dict[tuple[str, str], Panel]:
    """One :class:`Panel` per workload and target that some run reached, workloads in the order of ``labels``."""
    out = {}
    work = runs.assign(workload=workload_of(runs))
    for w in ordered(work["workload"], labels or {}):
        sub = work[work["workload"] == w]
        for target, metric in TARGETS.items():
            if metric not in sub or sub[metric].notna().sum() == 0:
                continue
            st = reduce.steps_to_target(sub, metric=metric)
            table = reduce.per_seed_steps(sub, metric=metric, drop_bounds=True)
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
    ref = reference_optimizer()
    rows = []
    for (w, target), p in pan.items():
        for opt, fit in p.fits.items():
            row = {"workload": w, "target": target, "optimizer": opt, "n_seeds": p.n_seeds,
                   "batch_sizes": int(np.isfinite(p.steps[p.steps["optimizer"] == opt]["steps"]).sum())}
            for k in ("B_crit", "S_min", "E_min", "slope"):
                row[k], row[f"{k}_lo"], row[f"{k}_hi"] = fit.get(k, (np.nan,) * 3)
            row["r2"] = fit.get("r2", (np.nan,))[0]
            row["slope_verdict"] = _verdict_slope(row["slope_lo"], row["slope_hi"])
            if opt != ref and ref in p.fits:
                r = reduce.bootstrap_ratio(p.per_seed.loc[opt], p.per_seed.loc[ref], n_boot=n_boot)
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
    crit = checks[checks["target"] == TRAIN_TARGET][["workload", "optimizer", "B_crit", "B_crit_lo", "B_crit_hi"]]
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
                   n_boot: int = 1000, labels: dict[str, str] | None = None) -> WorkloadFacts:
    """``labels``: workload -> label in the order tables and panels show them; by default the grid
    ``experiments/grids/<experiment>.toml``'s (:func:`analysis.order.workload_labels`)."""
    labels = order.workload_labels(experiment) if labels is None else labels
    pan = panels(runs, n_boot, labels)
    checks = shape_checks(pan, n_boot)
    bs = b_simple_table(runs, history, checks) if history is not None and len(checks) else pd.DataFrame()
    return WorkloadFacts(experiment, pan, checks, bs, runs, labels)


def checks_table(c: pd.DataFrame) -> pd.DataFrame:
    """The shape checks as the report prints them: one row per workload, target and optimizer."""
    return pd.DataFrame({
        "workload": c["workload"], "target": c["target"].map(lambda t: "train loss" if t == TRAIN_TARGET else "validation"),
        "optimizer": c["optimizer"], "seeds": c["n_seeds"].astype(int), "B's": c["batch_sizes"].astype(int),
        "B_crit [95% CI]": [interval(*r) for r in c[["B_crit", "B_crit_lo", "B_crit_hi"]].to_numpy()],
        "S_min [95% CI]": [interval(*r) for r in c[["S_min", "S_min_lo", "S_min_hi"]].to_numpy()],
        f"slope B ≤ {SMALL_B} [95% CI]": [interval(*r, fmt=".2f") for r in c[["slope", "slope_lo", "slope_hi"]].to_numpy()],
        "R²": c["r2"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "–"),
        "B_crit / SGD's [95% CI]": [interval(*r, fmt=".2f") for r in c[["ratio_vs_sgd", "ratio_lo", "ratio_hi"]].to_numpy()],
    })


def _count(mask: pd.Series) -> str:
    return f"{int(mask.sum())} of {len(mask)}"


def text(ctx: Context) -> str:
    """Q5's second half: the science sweep across workloads."""
    w = ctx.workloads
    if w is None or w.checks.empty:
        return ""
    c = w.checks
    n_work = len(w.workloads)
    perfect = c["slope_verdict"].str.startswith("perfect")
    near = (c["slope"].astype(float) + 1).abs() <= 0.1
    r2 = c["r2"].astype(float)
    good_fit = r2 >= 0.95
    ratio = c[c["optimizer"] != reference_optimizer()]
    parts = [
        f"### Across {n_work} workloads and two targets\n",
        f"The science sweep trains {n_work} workloads ({', '.join(w.label(x) for x in w.workloads)}), each "
        "with a training-loss target and a validation target on a 20% split of its training set (the test set is "
        "never used to choose anything), and measures the steps to each target as above: per seed the fewest steps "
        "over the learning rates, then the median over seeds, with 95% bootstrap intervals over seeds.\n",
        "**What holds across workloads, computed from the table below:**\n",
        f"- Perfect scaling at small B (the interval of the log-log slope for B ≤ {SMALL_B} holds −1): "
        f"{_count(perfect)} fits; within 0.1 of −1 (the point estimate) in {_count(near)}; the others: "
        + (", ".join(f"{r.workload} {r.target} {r.optimizer} {r.slope_verdict} ({r.slope:.2f})"
                     for r in c[~perfect].itertuples()) or "none") + ". Steps to target are read at evaluations "
        "and minimised over a half-decade rate grid, which limits how close to −1 a slope can be measured.",
        f"- The hyperbola S(B) = S_min(1 + B_crit/B) fits with R² ≥ 0.95 in {_count(good_fit)} fits "
        f"(lowest R² {np.nanmin(r2):.3f}, {c.loc[r2.idxmin(), 'workload']} {c.loc[r2.idxmin(), 'target']} "
        f"{c.loc[r2.idxmin(), 'optimizer']})." if np.isfinite(r2).any() else "- No hyperbola could be fitted.",
    ]
    for opt in optimizers_in(ratio["optimizer"]):
        sub = ratio[ratio["optimizer"] == opt]
        if len(sub):
            yes = sub["extends_scaling"].str.startswith("yes")
            no = sub["extends_scaling"].str.startswith("no:")
            unresolved = sub["extends_scaling"].str.startswith("not resolved")
            parts.append(
                f"- {opt.capitalize()} extends perfect scaling beyond SGD (its B_crit / SGD's, paired bootstrap "
                f"interval above 1) in {_count(yes)} (workload, target) pairs; below 1 in {int(no.sum())}; not resolved "
                f"(interval holds 1) in {int(unresolved.sum())}; not measured (a fit missing) in "
                f"{int(len(sub) - yes.sum() - no.sum() - unresolved.sum())}. Ratios: "
                + ", ".join(f"{r.workload} {r.target} {interval(r.ratio_vs_sgd, r.ratio_lo, r.ratio_hi, '.2f')}"
                            for r in sub.itertuples()) + ".")
    parts.append("")
    parts.append(md_table(checks_table(c)) + "\n")
    parts.append(ctx.figure("w1_steps_to_target"))
    parts.append(_b_simple(ctx, w))
    parts.append(
        "**Limits.** One architecture per data set except MNIST-1D; small networks and data sets (800 to 3200 "
        "training examples), so the largest batch is the full set; learning rate is the only tuned "
        "hyperparameter (momentum 0.9, Adam's betas at their defaults, no schedule, no weight decay), on "
        "half-decade grids, so steps-to-target carries the grid's resolution; targets were set once per workload "
        "by hand, reachable at every B, and B_crit depends on the target; 3 seeds for the CNN give intervals "
        "that undercover (37 of 50 in the synthetic coverage test), 5 for the others (46 of 50).\n")
    return "\n".join(p for p in parts if p is not None)


def _b_simple(ctx: Context, w: WorkloadFacts) -> str:
    t = w.b_simple
    if t.empty:
        return ""
    ok = {k: (t[f"{k}_ratio"].between(1 / B_SIMPLE_FACTOR, B_SIMPLE_FACTOR)) for k in ("at_init", "over_training", "at_end")}
    table = pd.DataFrame({
        "workload": t["workload"], "optimizer": t["optimizer"],
        "B_crit [95% CI]": [interval(*r) for r in t[["B_crit", "B_crit_lo", "B_crit_hi"]].to_numpy()],
        "B_simple at init": t["at_init"].map(lambda v: f"{v:.3g}"),
        "over training (median)": t["over_training"].map(lambda v: f"{v:.3g}"),
        "where the run stopped": t["at_end"].map(lambda v: f"{v:.3g}"),
        "stopped / B_crit": t["at_end_ratio"].map(lambda v: f"{v:.2f}"),
    })
    return (
        "**B_simple against B_crit (McCandlish et al.: B_crit ≈ B_noise, with B_simple its proxy).** For the runs "
        "that set each seed's steps to the training-loss target, B_simple = tr(Σ)/‖G‖² at initialisation, its "
        "median over training and its value where the run stopped, each the median over those runs, against the "
        f"fitted B_crit. Counting 'agrees' as within a factor of {B_SIMPLE_FACTOR:g} either way: at initialisation in "
        f"{_count(ok['at_init'])} (workload, optimizer) pairs, over training in {_count(ok['over_training'])}, "
        f"where the run stopped in {_count(ok['at_end'])}; the ratio B_simple/B_crit where the run stopped "
        f"ranges {t['at_end_ratio'].min():.2g}–{t['at_end_ratio'].max():.2g} (median {t['at_end_ratio'].median():.2g}). "
        + _spread(t) + "\n\n"
        + md_table(table) + "\n\n"
        + ctx.figure("w2_b_simple_vs_b_crit")
    )


def _spread(t: pd.DataFrame) -> str:
    """How much B_simple and B_crit vary across optimizers within a workload (max / min)."""
    g = t.groupby("workload").agg(bs_hi=("at_end", "max"), bs_lo=("at_end", "min"), bc_hi=("B_crit", "max"),
                                  bc_lo=("B_crit", "min"))
    bs, bc = (g["bs_hi"] / g["bs_lo"]).max(), (g["bc_hi"] / g["bc_lo"]).max()
    if not (np.isfinite(bs) and np.isfinite(bc)):
        return ""
    return (f"Within a workload, B_simple where the runs stopped differs across optimizers by at most {bs:.2g}×, "
            f"B_crit by up to {bc:.2g}×: " + ("the noise scale does not carry the optimizer's effect on the critical "
                                             "batch size." if bc > 2 * bs else "both move together."))


MARKERS = {"at_init": ("o", "at initialisation"), "over_training": ("s", "median over training"),
           "at_end": ("^", "where the run stopped (both targets reached)")}


def steps_to_target_by_workload(ctx: Context):
    """Steps to each target against B: rows are the targets, columns the workloads, one line per optimizer."""
    w = ctx.workloads
    cols = w.workloads
    rows = [t for t in TARGET_LABELS if any((c, t) in w.panels for c in cols)]
    if not cols or not rows:
        raise Skip("no workload reached a target")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.0 * len(cols), 2.8 * len(rows)), squeeze=False)
    colors = plots.optimizer_colors(w.runs["optimizer"])
    for i, t in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            p = w.panels.get((c, t))
            if p is None:
                ax.set_axis_off()
                continue
            for opt in optimizers_in(p.steps["optimizer"]):
                st = p.steps[p.steps["optimizer"] == opt]
                B = st["batch_size"].to_numpy(float)
                color = colors.get(opt)
                ax.errorbar(B, st["steps"], yerr=[st["steps"] - st["steps_min"], (st["steps_max"] - st["steps"]).fillna(0)],
                            fmt="o", ms=3, color=color, alpha=0.8, lw=0.8, label=opt)
                b_crit, s_min = p.fits[opt]["B_crit"][0], p.fits[opt]["S_min"][0]
                if np.isfinite(b_crit) and len(B):
                    grid = np.geomspace(B.min(), B.max(), 100)
                    ax.plot(grid, s_min * (1 + b_crit / grid), "-", color=color, lw=1, alpha=0.7)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{w.label(c)}\n{TARGET_LABELS[t]}", fontsize=8)
            ax.set_xlabel("batch size B")
            if j == 0:
                ax.set_ylabel("steps to target")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    c = w.checks
    perfect = int((c["slope_verdict"].str.startswith("perfect")).sum())
    plots.suptitle(fig, f"Steps to target on {len(cols)} workloads: median over seeds (bars: range), fitted hyperbola; "
                 f"small-B slope consistent with −1 in {perfect} of {len(c)} fits")
    return fig


def b_simple_vs_b_crit(ctx: Context):
    """B_simple (at initialisation, over training, where the run stopped) against the fitted B_crit, y = x."""
    w = ctx.workloads
    t = w.b_simple
    if t.empty or not np.isfinite(t["B_crit"]).any():
        raise Skip("no B_simple history of the science sweep's fastest runs, or no fitted B_crit")
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    names = ordered(set(w.labels) | set(t["workload"]), w.labels)
    palette = dict(zip(names, plots.sns.color_palette("colorblind", len(names))))
    for k, (marker, label) in MARKERS.items():
        for r in t.itertuples():
            err = [[r.B_crit - r.B_crit_lo], [r.B_crit_hi - r.B_crit]] if np.isfinite(r.B_crit_lo) else None
            ax.errorbar(r.B_crit, getattr(r, k), xerr=err, fmt=marker, ms=5, lw=0.6,
                        color=palette.get(r.workload, "gray"), alpha=0.85,
                        markerfacecolor="none" if k == "at_init" else None)
        ax.plot([], [], marker, color="gray", label=label, ls="none")
    for wl, color in palette.items():
        if wl in set(t["workload"]):
            ax.plot([], [], "-", color=color, label=w.label(wl))
    vals = np.concatenate([t["B_crit"], t["at_init"], t["over_training"], t["at_end"]]).astype(float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = vals.min() / 2, vals.max() * 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fitted B_crit (training-loss target), 95% CI")
    ax.set_ylabel("B_simple = tr(Σ)/‖G‖²")
    ax.legend(fontsize=6, loc="upper left")
    r = t["at_end_ratio"].astype(float)
    ax.set_title(f"B_simple where the runs stopped / B_crit: median {np.nanmedian(r):.2g} "
                 f"(range {np.nanmin(r):.2g}–{np.nanmax(r):.2g})", fontsize=8)
    return fig




def _read(ctx: Context) -> WorkloadFacts:
    name = ctx.experiments["science"]
    runs = load.load_runs(name, hint=f"make sweep GRID={name}")
    fastest = fastest_runs(runs)  # the runs that set steps to the training-loss target: their B_simple
    hist = load.load_history(fastest, f"{name}-b_simple", keys=("grad/b_simple",), progress=ctx.progress)
    return workload_facts(runs, name, hist)


def headline(w: WorkloadFacts) -> str:
    """The workload the report's detailed Q5 figures (and Q7-Q9's comparisons) show: the grid's first that the
    sweep has, else the sweep's first."""
    work = workload_of(w.runs)
    return ordered(set(work), w.labels)[0]


def headline_panel(ctx: Context, target: str = TRAIN_TARGET) -> Panel | None:
    """The headline workload's panel at ``target`` (None when the science sweep is missing)."""
    w = ctx.workloads
    return None if w is None or w.runs.empty else w.panels.get((headline(w), target))


def headline_b_crit(ctx: Context) -> dict[str, float]:
    """B_crit of the headline workload, training-loss target, per optimizer (empty when missing)."""
    panel = headline_panel(ctx)
    return {} if panel is None else {opt: fit["B_crit"][0] for opt, fit in panel.fits.items()}


SECTION = Section(
    "workloads",
    text=text,
    provides=(Provider("workloads", _read),),
    figures=(FigureSpec("w1_steps_to_target", steps_to_target_by_workload, ("workloads",),
                        "Steps to each target against B on every workload (rows: target; columns: workload); median "
                        "over seeds, bars the range, lines the fitted hyperbola per optimizer."),
             FigureSpec("w2_b_simple_vs_b_crit", b_simple_vs_b_crit, ("workloads",),
                        "B_simple (at initialisation, over training, where the run stopped) against the fitted B_crit, "
                        "every workload and optimizer; the dashed line is y = x.")),
)
