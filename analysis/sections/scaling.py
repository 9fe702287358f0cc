"""Q9, part 3: the critical batch size against data size and model size (Zhang et al. 2024; ``scaling.toml``):
B_crit per training-set size and per width from the per-seed hyperbola fits of :mod:`analysis.stats` (geometric mean
over seeds, 95% t-interval; a bound where a seed's fit leaves the batch sizes measured). The trend is read by its
shape: neighbouring sizes, the two ends, and an interior minimum or maximum against each end compared (independent
seeds: Welch's interval on log B_crit), under
Holm's rule over every comparison of the section; a bound enters no comparison. A log-log slope (each seed's line
through its sizes, a t-interval over seeds) is printed only beside a monotone shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from analysis import load, plots, reduce, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, md_table, seed_summary, t_text, verdict_of
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from mbstudy.metrics import TARGET_LABELS, TARGETS, TRAIN_TARGET, VAL_TARGET

plt = plots.plt


@dataclass(frozen=True)
class ScalingFacts:
    experiment: str
    fits: pd.DataFrame  # axis ("data" or "width"), value, target, B_crit, lo, hi, bound, n_seeds
    slopes: pd.DataFrame  # axis, target, slope, lo, hi, p, n_points, n_seeds (NaN where a size is a bound)
    steps: pd.DataFrame  # axis, value, target, batch_size, steps (median over seeds of per-seed minima)
    per_seed: pd.DataFrame  # axis, value, target, seed, B_crit, censored
    tests: pd.DataFrame  # axis, target, kind ("neighbours", "ends"), a, b, ratio, lo, hi, p, p_holm, bound, verdict


def _width(hidden) -> int:
    return int(str(hidden).split(",")[0])


BASE_N, BASE_WIDTH = 4000, 100  # the scaling sweep's fixed size and width (MNIST-1D's own size, the science MLP)


def _compare(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """B_crit at b over at a (two sizes, independent seeds): exp of Welch's difference of the mean logs, its 95%
    interval and p-value; not tested when a seed of either is a bound, or with too few seeds."""
    bound = bool((a["censored"] != 0).any() or (b["censored"] != 0).any())
    la, lb = np.log(a["B_crit"].to_numpy(float)), np.log(b["B_crit"].to_numpy(float))
    if bound:
        return {"ratio": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan, "bound": True}
    d, lo, hi, p = stats.difference_interval(lb, la)
    few = min(np.isfinite(la).sum(), np.isfinite(lb).sum()) < MIN_INTERVAL_SEEDS
    return {"ratio": float(np.exp(d)), "lo": np.nan if few else float(np.exp(lo)),
            "hi": np.nan if few else float(np.exp(hi)), "p": np.nan if few else p, "bound": False}


def scaling_facts(runs: pd.DataFrame, experiment: str = "scaling", n_boot: int | None = None,
                  seed: int | None = None) -> ScalingFacts:
    """``n_boot``, ``seed``: unused (the intervals are t-intervals over seeds); kept for the callers."""
    n = runs["n_train"].astype(int) if "n_train" in runs else pd.Series(0, index=runs.index)
    runs = runs.assign(width=runs["hidden"].map(_width), n=n.where(n > 0, BASE_N))  # 0: the data set's own 4000
    axes = {"data": (runs[runs["width"] == BASE_WIDTH], "n"), "width": (runs[runs["n"] == BASE_N], "width")}
    fits, slopes, steps, seeds_rows, tests = [], [], [], [], []
    for axis, (sub, col) in axes.items():
        for target, metric in TARGETS.items():
            for value, g in sub.groupby(col):
                t = reduce.per_seed_steps(g, by=("batch_size",), metric=metric, drop_bounds=True)
                B, v = np.asarray(t.index, float), t.to_numpy(float)
                f = stats.seed_fits(B, v)
                sm = stats.summarise(f["B_crit"], f["censored"], f["edge"])
                fits.append({"axis": axis, "value": int(value), "target": target, "B_crit": sm.value, "lo": sm.lo,
                             "hi": sm.hi, "bound": sm.bound, "n_seeds": sm.n})
                seeds_rows += [{"axis": axis, "value": int(value), "target": target, "seed": sd, "B_crit": b,
                                "censored": int(c)} for sd, b, c in zip(t.columns, f["B_crit"], f["censored"])
                               if np.isfinite(b)]
                steps += [{"axis": axis, "value": int(value), "target": target, "batch_size": int(b), "steps": m}
                          for b, m in zip(B, np.nanmedian(v, axis=1))]
    per_seed = pd.DataFrame(seeds_rows, columns=["axis", "value", "target", "seed", "B_crit", "censored"])
    for (axis, target), g in per_seed.groupby(["axis", "target"], sort=False):
        values = sorted(g["value"].unique())
        pairs = [("neighbours", a, b) for a, b in zip(values, values[1:])]
        if len(values) > 2:
            pairs.append(("ends", values[0], values[-1]))
            # an interior minimum or maximum (of the seeds' geometric means) against both ends: a valley or a peak
            # that no neighbour comparison resolves can still show against the ends
            gm = g[g["B_crit"] > 0].groupby("value")["B_crit"].apply(lambda x: float(np.exp(np.log(x).mean())))
            for v in {gm.idxmin(), gm.idxmax()} - {values[0], values[-1]} if len(gm) else ():
                pairs += [("extreme", values[0], v), ("extreme", v, values[-1])]
        for kind, a, b in pairs:
            tests.append({"axis": axis, "target": target, "kind": kind, "a": a, "b": b,
                          **_compare(g[g["value"] == a], g[g["value"] == b])})
        wide = g.pivot_table(index="seed", columns="value", values="B_crit")
        bound = bool((g["censored"] != 0).any())
        per = [np.polyfit(np.log(wide.columns[ok]), np.log(row[ok]), 1)[0] if ok.sum() >= 2 else np.nan
               for row in wide.to_numpy(float) for ok in [np.isfinite(row)]] if not bound else []
        m, lo, hi, p = stats.mean_interval(per) if len(per) else (np.nan,) * 4
        n_s = int(np.isfinite(per).sum()) if len(per) else 0
        if n_s < MIN_INTERVAL_SEEDS:
            lo = hi = p = np.nan
        slopes.append({"axis": axis, "target": target, "slope": m, "lo": lo, "hi": hi, "p": p,
                       "n_points": len(values), "n_seeds": n_s})
    tests = pd.DataFrame(tests, columns=["axis", "target", "kind", "a", "b", "ratio", "lo", "hi", "p", "bound"])
    tests["p_holm"] = stats.holm(tests["p"]) if len(tests) else []
    tests["verdict"] = ["not tested (a bound)" if bd else verdict_of(r, q, "rises", "falls")
                        for r, q, bd in zip(tests["ratio"], tests["p_holm"], tests["bound"])]
    return ScalingFacts(experiment, pd.DataFrame(fits), pd.DataFrame(slopes, columns=[
        "axis", "target", "slope", "lo", "hi", "p", "n_points", "n_seeds"]), pd.DataFrame(steps), per_seed, tests)


def trend(sc: ScalingFacts, axis: str, target: str) -> str:
    """The shape of B_crit along an axis, from the Holm verdicts: ``grows`` / ``falls`` (some comparison resolved
    that way and none the other), ``is not monotone`` (neighbours resolved both ways), ``no change resolved``, or
    ``not resolved`` (nothing tested: bounds, too few seeds or sizes)."""
    t = sc.tests[(sc.tests["axis"] == axis) & (sc.tests["target"] == target)]
    v = set(t["verdict"])
    if "rises" in v and "falls" in v:
        return "is not monotone"
    if "rises" in v:
        return "grows"
    if "falls" in v:
        return "falls"
    return "no change resolved" if t["p"].notna().any() else "not resolved"


def shape_text(sc: ScalingFacts, axis: str, target: str) -> str:
    """``547 → 304 (falls) → 172 (not resolved) → ≥ 2048 (not tested (a bound))``: the values along the axis and
    each neighbour comparison's verdict."""
    f = sc.fits[(sc.fits["axis"] == axis) & (sc.fits["target"] == target)].sort_values("value").set_index("value")
    t = sc.tests[(sc.tests["axis"] == axis) & (sc.tests["target"] == target) & (sc.tests["kind"] == "neighbours")]
    said = {r.b: r.verdict for r in t.itertuples()}
    out = []
    for value, r in f.iterrows():
        v = stats.Summary(r["B_crit"], np.nan, np.nan, int(r["n_seeds"]), r["bound"]).text(".0f")
        out.append(f"{v}" + (f" ({said[value]})" if value in said else ""))
    return " → ".join(out)


def _value(r) -> str:
    return seed_summary(stats.Summary(r["B_crit"], r["lo"], r["hi"], int(r["n_seeds"]), r["bound"]), ".0f")


def slope_text(sc: ScalingFacts, axis: str, target: str) -> str:
    """The log-log slope with its t-interval, only beside a monotone shape ("" otherwise)."""
    if trend(sc, axis, target) not in ("grows", "falls"):
        return ""
    x = sc.slopes[(sc.slopes["axis"] == axis) & (sc.slopes["target"] == target)]
    if x.empty or not np.isfinite(x["slope"].iloc[0]):
        return ""
    x = x.iloc[0]
    return f"log-log slope {t_text(x['slope'], x['lo'], x['hi'], int(x['n_seeds']), '.2f')}"


def zhang_verdict(sc: ScalingFacts) -> str:
    """Zhang et al.'s claim (B_crit grows with data size and barely with model size) against both targets."""
    data = {t: trend(sc, "data", t) for t in (TRAIN_TARGET, VAL_TARGET)}
    width = {t: trend(sc, "width", t) for t in (TRAIN_TARGET, VAL_TARGET)}
    if any(d in ("falls", "is not monotone") for d in data.values()):
        return ("does not hold for data size (B_crit " + ", ".join(f"{d} on the {TARGET_LABELS[t]}"
                                                                  for t, d in data.items()) + ")")
    if not all(d == "grows" for d in data.values()):
        grows = [TARGET_LABELS[t] for t, d in data.items() if d == "grows"]
        return ("is not resolved for data size" + (f": B_crit grows on the {grows[0]} only, and the other "
                                                    "target's comparisons do not exclude the opposite" if grows else ""))
    moved = [f"{w} on the {TARGET_LABELS[t]}" for t, w in width.items() if w in ("grows", "falls", "is not monotone")]
    if moved:
        return "holds for data size, not for model size (B_crit " + ", ".join(moved) + " with width)"
    return ("holds for data size (B_crit grows on both targets); with width no change is resolved, which is "
            "consistent with \"barely\", not proof of it")


def shapes(sc: ScalingFacts) -> list[str]:
    """Per axis and target: ``against width, training-loss target: B_crit falls: 547 → 304 (falls) …; log-log slope
    …`` (the slope only beside a monotone shape)."""
    out = []
    for axis, name in (("data", "data size"), ("width", "width")):
        for target in (TRAIN_TARGET, VAL_TARGET):
            sl = slope_text(sc, axis, target)
            out.append(f"against {name}, {TARGET_LABELS.get(target, target)}: B_crit {trend(sc, axis, target)}: "
                       f"{shape_text(sc, axis, target)}" + (f"; {sl}" if sl else ""))
    return out


def text(ctx: Context) -> str:
    sc = ctx.scaling
    if sc is None:
        return "### Data size and model size\n\n" + ctx.not_measured("scaling", "make sweep GRID=scaling")
    seeds = int(sc.fits["n_seeds"].max()) if len(sc.fits) else 0
    lines = [f"- {x}." for x in shapes(sc)]
    n_tests = int(sc.tests["p"].notna().sum())
    bounds = int((sc.fits["bound"] != "").sum())
    return "\n".join([
        "### Data size and model size (Zhang et al. 2024)",
        "",
        f"**Zhang et al.'s claim (B_crit grows with data and barely with model size), with SGD, {zhang_verdict(sc)}"
        + _adam_clause(ctx) + _relative_clause(ctx) + ".**",
        "",
        "B_crit from the science sweep's protocol (steps to each target against B, the rate tuned per B and seed, "
        "each seed's hyperbola fit; the geometric mean over seeds with a 95% t-interval, or a bound where a seed's "
        f"fit leaves the batch sizes measured) for MNIST-1D generated at five sizes with the MLP 40-100-100-10, and "
        f"for five widths at N = 4000, {seeds} seeds. The trend is read by its shape: each pair of neighbouring "
        "sizes, the two ends, and an interior minimum or maximum against each end, compared by Welch's interval on log B_crit; a comparison is called (rises / falls) "
        f"when its Holm-adjusted p-value over the section's {n_tests} tested comparisons is below 0.05. A log-log "
        "slope is given only beside a monotone shape. Every size's B_crit is in the appendix.",
        "",
        *lines,
        "",
        adam_text(ctx),
        "",
        relative_text(ctx),
        "",
        "Limits: " + "; ".join(x for x in (
            f"{bounds} (size, target) cells are bounds, which enter no comparison" if bounds else "",
            f"{seeds} seeds: too few for an interval or a verdict" if seeds < MIN_INTERVAL_SEEDS else "",
            "a target a size never reaches leaves that size out") if x) + ".",
        "",
        ctx.figure("q9c_scaling"),
    ])


@dataclass(frozen=True)
class RelativeWidthFacts:
    """B_crit against width with each width's own target (scaling_width.toml): the scaling facts of that sweep, and
    per width its floor (scaling_floor.toml: the lowest training loss any rate reached), its initial loss and its
    target, with the fraction of the way from the initial loss to the floor that the target asks for."""

    experiment: str
    scaling: ScalingFacts
    targets: pd.DataFrame  # width, initial, floor, target, fraction
    edges: tuple[int, int] = (0, 0)  # (width, B, seed) cells whose best rate is only at an edge of the grid, of all


def relative_targets(floor_runs: pd.DataFrame, initial: pd.Series, width_runs: pd.DataFrame) -> pd.DataFrame:
    """Per width: ``initial`` (the training loss at step 0, median over the floor runs), ``floor`` (the lowest
    ``best/train/loss`` over the floor runs' rates), ``target`` (scaling_width's ``target_loss``) and ``fraction`` =
    (initial − target) / (initial − floor)."""
    fl = floor_runs.assign(width=floor_runs["hidden"].map(_width))
    floors = fl.groupby("width")["best/train/loss"].min()
    inits = fl.assign(init=fl["run_id"].map(initial)).groupby("width")["init"].median()
    tg = width_runs.assign(width=width_runs["hidden"].map(_width)).groupby("width")["target_loss"].first()
    t = pd.DataFrame({"initial": inits, "floor": floors, "target": tg}).dropna(subset=["target"])
    t["fraction"] = (t["initial"] - t["target"]) / (t["initial"] - t["floor"])
    return t.reset_index().rename(columns={"index": "width"})


def _read_relative(ctx: Context) -> RelativeWidthFacts:
    runs = load.load_runs("scaling_width", hint="make sweep GRID=scaling_width")
    floor = load.load_runs("scaling_floor", hint="make sweep GRID=scaling_floor")
    hist = load.load_history(floor, "scaling_floor", keys=("train/loss",), progress=ctx.progress)
    h = hist[(hist["metric"] == "train/loss") & (hist["step"] == 0)].set_index("run_id")["value"]
    from analysis.sections.language_model.facts import edges

    steps = reduce.reached_steps(runs)
    cells = edges(runs.assign(width=runs["hidden"].map(_width)), steps, ["width", "batch_size"])
    return RelativeWidthFacts("scaling_width", scaling_facts(runs, "scaling_width"), relative_targets(floor, h, runs),
                              cells)


def _relative_clause(ctx: Context) -> str:
    """The relative-target width sweep in a clause for the answer: its shape, and its two ends compared."""
    r = ctx.scaling_width
    if r is None or r.scaling.tests.empty:
        return ""
    t = r.scaling.tests
    ends = t[(t["axis"] == "width") & (t["target"] == TRAIN_TARGET) & (t["kind"] == "ends")]
    e = f"; widths {ends.iloc[0]['a']} and {ends.iloc[0]['b']} {ends.iloc[0]['verdict']} apart" if len(ends) else ""
    e = e.replace("not resolved apart", "not resolved apart").replace("rises apart", "resolved apart (larger at the "
                                                                                     "widest)")
    e = e.replace("falls apart", "resolved apart (smaller at the widest)")
    return f"; at relative targets B_crit against width {trend(r.scaling, 'width', TRAIN_TARGET)}{e}"


def adam_text(ctx: Context) -> str:
    """The scaling sweep with Adam (scaling_adam.toml): the same shapes, under that sweep's own Holm family."""
    a = ctx.scaling_adam
    if a is None:
        return "**With Adam** (Zhang et al.'s optimizer): " + ctx.not_measured("scaling_adam",
                                                                             "make sweep GRID=scaling_adam")
    seeds = int(a.fits["n_seeds"].max()) if len(a.fits) else 0
    lines = shapes(a)
    return (f"**With Adam** (`scaling_adam`, the same sizes, widths and batch sizes, five half-decade rates, {seeds} "
            f"seeds; Holm over its own {int(a.tests['p'].notna().sum())} tested comparisons): Zhang et al.'s claim "
            f"{zhang_verdict(a)}. " + "; ".join(lines)[0].upper() + "; ".join(lines)[1:] + ".")


def _adam_clause(ctx: Context) -> str:
    a = ctx.scaling_adam
    if a is None or a.fits.empty:
        return ""
    return (f"; with Adam, on the training-loss target, B_crit {trend(a, 'data', TRAIN_TARGET)} with data and "
            f"{trend(a, 'width', TRAIN_TARGET)} with width")


def relative_text(ctx: Context) -> str:
    r = ctx.scaling_width
    if r is None:
        return ("**Relative targets** (each width's target a fixed share of its own reachable loss range, as Zhang et "
                "al. set theirs): " + ctx.not_measured("scaling_width", "make sweep GRID=scaling_width"))
    sc = r.scaling
    t = r.targets
    f = sc.fits[(sc.fits["axis"] == "width") & (sc.fits["target"] == TRAIN_TARGET)].set_index("value")
    rows = [{"width": int(x.width), "initial loss": f"{x.initial:.2f}", "floor (best of 3 Adam rates)":
             f"{x.floor:.3f}", "target": f"{x.target:.3f}", "share of the range": f"{x.fraction:.0%}",
             "B_crit (95%)": _value(f.loc[int(x.width)]) if int(x.width) in f.index else "not reached"}
            for x in t.itertuples()]
    seeds = int(sc.fits["n_seeds"].max()) if len(sc.fits) else 0
    sl = slope_text(sc, "width", TRAIN_TARGET)
    e, n = r.edges
    return "\n".join([
        f"**Relative targets** (`scaling_width`, {seeds} seeds): each width's training-loss target the same share "
        "of its own range, from its initial loss to the lowest loss Adam reached in 8000 steps at B = 64 "
        "(`scaling_floor`), the share set so that width 100's target is the science sweep's 0.7. B_crit against "
        f"width {trend(sc, 'width', TRAIN_TARGET)}: {shape_text(sc, 'width', TRAIN_TARGET)}" + (f"; {sl}" if sl else "")
        + f" (Holm over this sweep's {int(sc.tests['p'].notna().sum())} tested comparisons; {e} of {n} (width, B, "
        "seed) cells had their best rate only at an edge of its grid).", "",
        md_table(pd.DataFrame(rows))])


def appendix(ctx: Context) -> str:
    sc = ctx.scaling
    if sc is None or sc.fits.empty:
        return ""
    rows = []
    for axis, label in (("data", "N (training set before the split)"), ("width", "width")):
        for value in sorted(sc.fits.loc[sc.fits["axis"] == axis, "value"].unique()):
            r = {"axis": label, "value": value}
            for target, name in ((TRAIN_TARGET, "B_crit, train loss"), (VAL_TARGET, "B_crit, validation")):
                x = sc.fits[(sc.fits["axis"] == axis) & (sc.fits["value"] == value) & (sc.fits["target"] == target)]
                r[name] = _value(x.iloc[0]) if len(x) else "–"
            rows.append(r)
    t = sc.tests.assign(ratio=[t_text(r, lo, hi, MIN_INTERVAL_SEEDS, ".2f") if np.isfinite(r) else "–"
                               for r, lo, hi in sc.tests[["ratio", "lo", "hi"]].to_numpy()])
    t = t[["axis", "target", "kind", "a", "b", "ratio", "p_holm", "verdict"]]
    return "\n".join(["### Q9c: B_crit at every data size and width", "",
                      "Geometric mean over seeds with a 95% t-interval; ≥ / ≤: a bound.", "",
                      md_table(pd.DataFrame(rows)), "",
                      "The comparisons (B_crit at b over at a, Welch's 95% interval; Holm over all of them):", "",
                      md_table(t, ".3g"), ""])


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
            monotone = slope_text(sc, axis, target)
            plots.errorbar(ax, fit["value"], fit["B_crit"], fit["lo"], fit["hi"], fmt="o", color=f"C{k}",
                      label=f"{name}: {trend(sc, axis, target)}" + (f", {monotone}" if monotone else ""))
            if monotone and len(fit) >= 2 and (fit["bound"] == "").all():
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
        ax.set_ylabel("B_crit (per-seed fits, geometric mean,\n95% t-interval over seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    axes[0].set_title("against data size (MLP 40-100-100-10)", fontsize=8)
    axes[1].set_title("against model width (N = 4000)", fontsize=8)
    plots.suptitle(fig, "Q9c: the critical batch size against data size and model size (MNIST-1D, SGD; dashed: "
                 "the mean per-seed log-log slope,\ndrawn only where the shape is monotone under Holm's rule)", fontsize=9)
    return fig




SECTION = Section(
    "scaling",
    text=text,
    appendix=appendix,
    provides=(Provider("scaling", lambda ctx: scaling_facts(load.load_runs("scaling", hint="make sweep GRID=scaling"))),
              Provider("scaling_width", _read_relative),
              Provider("scaling_adam", lambda ctx: scaling_facts(
                  load.load_runs("scaling_adam", hint="make sweep GRID=scaling_adam"), "scaling_adam"))),
    figures=(FigureSpec("q9c_scaling", scaling_figure, ("scaling",),
                        ("Q9c. B_crit against the training-set size and against the MLP's width, "
                        "with the log-log fits.")),),
)
