"""Q9, part 3: the critical batch size against data size and model size (Zhang et al. 2024; ``scaling.toml``):
B_crit (the science sweep's hyperbola fit, :mod:`analysis.reduce`) per training-set size and per width, and the
log-log slope of B_crit against each with a bootstrap interval (seeds resampled within every size; a size whose
B_crit the fit leaves unbounded is left out of the slope)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from analysis import load, plots, reduce
from analysis.markdown import finite, interval, md_table, open_interval
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.branching import LEVEL, MIN_SEEDS, UNBOUNDED
from mbstudy.metrics import TARGET_LABELS, TARGETS, TRAIN_TARGET, VAL_TARGET

plt = plots.plt


@dataclass(frozen=True)
class ScalingFacts:
    experiment: str
    fits: pd.DataFrame  # axis ("data" or "width"), value, target, B_crit, lo, hi, S_min, r2, n_seeds
    slopes: pd.DataFrame  # axis, target, slope, lo, hi, n_points
    steps: pd.DataFrame  # axis, value, target, batch_size, steps (median over seeds of per-seed minima)


def _width(hidden) -> int:
    return int(str(hidden).split(",")[0])


BASE_N, BASE_WIDTH = 4000, 100  # the scaling sweep's fixed size and width (MNIST-1D's own size, the science MLP)


def _slope(x: np.ndarray, y: np.ndarray, *, every: bool = False) -> float:
    """The least-squares slope of log y against log x; NaN with fewer than 2 points, or (``every``) when any y is
    missing, so that every bootstrap replicate is fitted on the same sizes."""
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    if (every and not ok.all()) or ok.sum() < 2:
        return np.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def scaling_facts(runs: pd.DataFrame, experiment: str = "scaling", n_boot: int = 1000, seed: int = 0) -> ScalingFacts:
    n = runs["n_train"].astype(int) if "n_train" in runs else pd.Series(0, index=runs.index)
    runs = runs.assign(width=runs["hidden"].map(_width), n=n.where(n > 0, BASE_N))  # 0: the data set's own 4000
    axes = {"data": (runs[runs["width"] == BASE_WIDTH], "n"), "width": (runs[runs["n"] == BASE_N], "width")}
    fits, slopes, steps = [], [], []
    for axis, (sub, col) in axes.items():
        for target, metric in TARGETS.items():
            values, point, reps = [], [], []  # reps: per value, n_boot B_crit replicates (seeds resampled)
            for k, (value, g) in enumerate(sub.groupby(col)):
                t = reduce.per_seed_steps(g, by=("batch_size",), metric=metric, drop_bounds=True)
                B, v = np.asarray(t.index, float), t.to_numpy(float)
                est = reduce.estimate_fit(B, v, None)
                bound = UNBOUNDED * B.max()
                rep = np.full(n_boot, np.nan)
                lo = hi = np.nan
                if v.shape[1] >= MIN_SEEDS:
                    rng = np.random.default_rng([seed, k])
                    rep = np.array([reduce.estimate_fit(B, v[:, rng.integers(0, v.shape[1], v.shape[1])], None)["B_crit"]
                                    for _ in range(n_boot)])
                    lo, hi = reduce.percentile_interval(rep, LEVEL, n_boot)
                    hi = np.inf if hi > bound else hi  # the fit does not bound B_crit from above
                fits.append({"axis": axis, "value": int(value), "target": target, "B_crit": est["B_crit"], "lo": lo,
                             "hi": hi, "S_min": est["S_min"], "r2": est["r2"], "n_seeds": v.shape[1]})
                steps += [{"axis": axis, "value": int(value), "target": target, "batch_size": int(b), "steps": m}
                          for b, m in zip(B, np.nanmedian(v, axis=1))]
                if np.isfinite(est["B_crit"]) and est["B_crit"] <= bound:  # an unbounded size is left out
                    values.append(float(value))
                    point.append(est["B_crit"])
                    reps.append(np.where(rep <= bound, rep, np.nan))
            x = np.array(values)
            slope_reps = [_slope(x, np.array([r[i] for r in reps]), every=True) for i in range(n_boot)]
            lo, hi = reduce.percentile_interval(slope_reps, LEVEL, n_boot) if reps else (np.nan, np.nan)
            slopes.append({"axis": axis, "target": target, "slope": _slope(x, np.array(point)), "lo": lo, "hi": hi,
                           "n_points": len(values)})
    return ScalingFacts(experiment, pd.DataFrame(fits), pd.DataFrame(slopes), pd.DataFrame(steps))


def text(ctx: Context) -> str:
    sc = ctx.scaling
    if sc is None:
        return "### Data size and model size\n\n" + ctx.not_measured("scaling", "make sweep GRID=scaling")
    rows = []
    for axis, label in (("data", "N (training set before the split)"), ("width", "width")):
        for value in sorted(sc.fits.loc[sc.fits["axis"] == axis, "value"].unique()):
            r = {"axis": label, "value": value}
            for target, name in ((TRAIN_TARGET, "B_crit, train loss"), (VAL_TARGET, "B_crit, validation")):
                x = sc.fits[(sc.fits["axis"] == axis) & (sc.fits["value"] == value) & (sc.fits["target"] == target)]
                r[name] = open_interval(*x[["B_crit", "lo", "hi"]].iloc[0]) if len(x) else "–"
            rows.append(r)
    sl = sc.slopes.set_index(["axis", "target"])

    def slope(axis, target):
        if (axis, target) not in sl.index:
            return np.nan, np.nan, np.nan
        x = sl.loc[(axis, target)]
        return x["slope"], x["lo"], x["hi"]

    def says(axis, target):
        est, lo, hi = slope(axis, target)
        if not finite(est, lo, hi):
            return "not resolved"
        return "grows" if lo > 0 else "falls" if hi < 0 else "no trend resolved"

    d, m = slope("data", TRAIN_TARGET), slope("width", TRAIN_TARGET)
    data_grows = says("data", TRAIN_TARGET) == "grows"
    # "barely with model size": the width slope's whole interval is smaller in size than the data slope's lower bound
    width_small = data_grows and finite(*m) and max(abs(m[1]), abs(m[2])) < d[1]
    width_says = says("width", TRAIN_TARGET)
    verdict = ("holds" if data_grows and width_small else
               f"holds for data size, not for model size (B_crit {width_says} with width)" if data_grows
               and width_says in ("grows", "falls") else
               "holds for data size; the model-size part is not resolved" if data_grows else
               "does not hold" if says("data", TRAIN_TARGET) in ("falls", "no trend resolved") else "is not resolved")
    return "\n".join([
        "### Data size and model size (Zhang et al. 2024)",
        "",
        "B_crit from the science sweep's protocol (steps to each target against B, the rate tuned per B and seed, "
        "the hyperbola fit, 95% bootstrap over seeds) for MNIST-1D generated at five sizes with the MLP 40-100-100-10, "
        "and for five widths at N = 4000. The slope is a least-squares line through log B_crit against log N (or "
        "log width), its interval from the same bootstrap (seeds resampled at every size). A target a size never "
        "reaches (the validation target at small N or width) leaves that size out of its fit.",
        "",
        md_table(pd.DataFrame(rows)),
        "",
        f"Slopes (training-loss target): against data size {interval(*d, fmt='.2f')} (B_crit {says('data', TRAIN_TARGET)}), "
        f"against width {interval(*m, fmt='.2f')} ({says('width', TRAIN_TARGET)}); validation target: data "
        f"{interval(*slope('data', VAL_TARGET), fmt='.2f')}, width {interval(*slope('width', VAL_TARGET), fmt='.2f')}. Zhang et "
        f"al.'s claim (B_crit grows with data and barely with model size) **{verdict}** here on the training-loss "
        "target (\"barely\": the width slope's interval lies closer to 0 than the data slope's lower bound).",
        "",
        ctx.figure("q9c_scaling"),
    ])


def scaling_figure(ctx: Context):
    """B_crit against the training-set size and against the width, both targets, with the log-log fits."""
    sc = ctx.scaling
    if sc.fits.empty:
        raise Skip("the scaling sweep holds no fit")
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    labels = {"data": "training-set size N (before the 20% validation split)", "width": "MLP width (two hidden layers)"}
    for ax, axis in zip(axes, ("data", "width")):
        for k, (target, name) in enumerate(TARGET_LABELS.items()):
            fit = sc.fits[(sc.fits["axis"] == axis) & (sc.fits["target"] == target)].sort_values("value")
            fit = fit[np.isfinite(fit["B_crit"])]
            if fit.empty:
                continue
            sl = sc.slopes[(sc.slopes["axis"] == axis) & (sc.slopes["target"] == target)].iloc[0]
            plots.errorbar(ax, fit["value"], fit["B_crit"], fit["lo"], fit["hi"], fmt="o", color=f"C{k}",
                      label=f"{name}: slope {sl['slope']:.2f} [{sl['lo']:.2f}, {sl['hi']:.2f}]")
            if np.isfinite(sl["slope"]) and len(fit) >= 2:
                x = np.geomspace(fit["value"].min(), fit["value"].max(), 20)
                logx, logy = np.log(fit["value"]), np.log(fit["B_crit"])
                ax.plot(x, np.exp(logy.mean() + sl["slope"] * (np.log(x) - logx.mean())), "--", color=f"C{k}", lw=0.9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(sorted(sc.fits.loc[sc.fits["axis"] == axis, "value"].unique()))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel(labels[axis])
        ax.set_ylabel("B_crit (hyperbola fit, 95% CI over seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    axes[0].set_title("against data size (MLP 40-100-100-10)", fontsize=8)
    axes[1].set_title("against model width (N = 4000)", fontsize=8)
    plots.suptitle(fig, "Q9c: the critical batch size against data size and model size (MNIST-1D, SGD; dashed: "
                 "least-squares fit on log-log axes;\narrow: an interval the fit leaves open above)", fontsize=9)
    return fig




SECTION = Section(
    "scaling",
    text=text,
    provides=(Provider("scaling", lambda ctx: scaling_facts(load.load_runs("scaling", hint="make sweep GRID=scaling"))),),
    figures=(FigureSpec("q9c_scaling", scaling_figure, ("scaling",),
                        ("Q9c. B_crit against the training-set size and against the MLP's width, "
                        "with the log-log fits.")),),
)
