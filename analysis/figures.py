"""The figures of the write-up: one function per figure, each drawing on the axes it is given.

``python -m analysis.figures`` (``make figures``) loads whatever runs the store
holds, draws every figure whose runs exist into ``report/figures/`` as PNG and
PDF, logs each as an artifact on its sweep's newest parent run, and names the
command to run for each figure it could not draw. Titles state the measured
takeaway; every number in them is computed from the runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from analysis import load, reduce  # noqa: E402

STYLE = Path(__file__).with_name("mbstudy.mplstyle")
OUT = load.tracking.ROOT / "report" / "figures"
OPTIMIZERS = ["sgd", "momentum", "adam"]


def use_style() -> None:
    sns.set_theme(context="paper", style="whitegrid")
    plt.style.use(STYLE)


def _b_palette(batch_sizes) -> dict:
    bs = sorted(set(int(b) for b in batch_sizes))
    colors = sns.color_palette("viridis", len(bs))
    return dict(zip(bs, colors))


# ------------------------------------------------------------------ a, e: curves


def plot_curves(ax, cur: pd.DataFrame, x: str = "step", logx: bool = True) -> None:
    """Loss against ``x`` (step, examples or time_s) per batch size: mean line, seed range band."""
    pal = _b_palette(cur["batch_size"])
    for b, g in cur.groupby("batch_size"):
        g = g[g[x] > 0] if logx else g
        g = g.dropna(subset=[x])
        ax.plot(g[x], g["mean"], color=pal[int(b)], label=f"B={int(b)}")
        ax.fill_between(g[x], g["lo"], g["hi"], color=pal[int(b)], alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel({"step": "steps", "examples": "examples seen", "time_s": "training time (s)"}[x])
    ax.set_ylabel("training loss (full set)")


# ---------------------------------------------------------------- b: heatmaps


def plot_heatmap(ax, table: pd.DataFrame, norm=None) -> None:
    """Final training loss over (lr x B) for one optimizer and reduction; diverged cells marked x."""
    p = table.pivot_table(index="learning_rate", columns="batch_size", values="value").sort_index(ascending=False)
    d = table.pivot_table(index="learning_rate", columns="batch_size", values="diverged").reindex_like(p)
    masked = p.where(d < 0.5)
    sns.heatmap(masked, ax=ax, norm=norm, cmap="mako_r", cbar=False, linewidths=0.3, linecolor="white",
                annot=masked.map(lambda v: f"{v:.2g}" if np.isfinite(v) else ""), fmt="", annot_kws={"fontsize": 5.5})
    for i, lr in enumerate(p.index):
        for j, b in enumerate(p.columns):
            if d.loc[lr, b] >= 0.5:
                ax.text(j + 0.5, i + 0.5, "×", ha="center", va="center", color="#c0392b", fontsize=9)
    ax.set_yticklabels([f"{v:g}" for v in p.index], rotation=0)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")


# -------------------------------------------------------- c: steps to target


def plot_steps_to_target(ax, st: pd.DataFrame, fit: dict, y: str = "steps") -> None:
    """Steps (or examples) to target against B, log-log, with the fitted hyperbola and B_crit."""
    B = st["batch_size"].to_numpy(float)
    ax.plot(B, st[y], "o", ms=4, label="measured (best lr)")
    if y == "steps" and st["steps_max"].notna().any():
        ax.vlines(B, st["steps_min"], st["steps_max"], alpha=0.4)
    if np.isfinite(fit.get("B_crit", np.nan)):
        grid = np.geomspace(B.min(), B.max(), 100)
        s_fit = fit["S_min"] * (1 + fit["B_crit"] / grid)
        ax.plot(grid, s_fit if y == "steps" else s_fit * grid, "-", alpha=0.7,
                label=f"S_min(1+B_crit/B), R²={fit['r2']:.3f}")
        ax.axvline(fit["B_crit"], ls="--", color="gray", lw=1)
        ax.annotate(f" B_crit≈{fit['B_crit']:.0f}", (fit["B_crit"], 0.02), xycoords=("data", "axes fraction"),
                    va="bottom", fontsize=7, color="gray")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("steps to target" if y == "steps" else "examples to target")
    ax.legend(loc="upper right" if y == "steps" else "upper left")


def plot_best_lr(ax, best: pd.DataFrame) -> None:
    """Best learning rate against B, one line per optimizer (and reduction)."""
    for (opt, red), g in best[best["stable"]].groupby(["optimizer", "reduction"]):
        g = g.sort_values("batch_size")
        ax.plot(g["batch_size"], g["learning_rate"], "o-" if red == "mean" else "s--", ms=3.5, label=f"{opt}, {red}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("best learning rate")
    ax.legend(ncol=2)


# ----------------------------------------------------------- d: noise scale


def plot_b_simple(ax, h: pd.DataFrame, b_crit: float | None) -> None:
    """B_simple over training per batch size (best-lr runs), against the fitted B_crit."""
    pal = _b_palette(h["batch_size"])
    for b, g in h.groupby("batch_size"):
        g = g[g["mean"] > 0]
        ax.plot(g["step"], g["mean"], color=pal[int(b)], label=f"B={int(b)}")
    if b_crit is not None and np.isfinite(b_crit):
        ax.axhline(b_crit, ls="--", color="gray", lw=1, label=f"B_crit (fit) ≈ {b_crit:.0f}")
    ax.set_yscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel("B_simple = tr(Σ) / ‖G‖²")
    ax.legend()


# --------------------------------------------------- f: reduction distances


def plot_distance(ax, h: pd.DataFrame) -> None:
    """Relative parameter distance of a sum/mean pair against its 1e-7 perturbation control."""
    for (name, b), g in h.groupby(["comparison", "batch_size"]):
        pair = g[g["metric"] == "dist/pair"].sort_values("step")
        ax.plot(pair["step"].clip(lower=1), pair["value"].clip(lower=1e-12), label=f"{name}, B={b}")
    ctrl = h[h["metric"] == "dist/control"].groupby("step")["value"].median().reset_index()
    ax.plot(ctrl["step"].clip(lower=1), ctrl["value"], "k--", lw=2, label="control (median)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel("‖θ_a − θ_b‖ / ‖θ_a‖  (0 drawn at 1e-12)")
    ax.legend(ncol=2, fontsize=6)


# ---------------------------------------------------------------- the driver


@dataclass
class Drawn:
    files: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)


def _legend_right(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")


def _save(fig, name: str, out: Path, drawn: Drawn, experiment: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    drawn.files[name] = paths
    if experiment:
        parent = load.latest_parent(experiment)
        if parent:
            for p in paths:
                load.tracking.client().log_artifact(parent, str(p), artifact_path="figures")


def draw_default(exp: str, out: Path, drawn: Drawn, progress: bool = True) -> None:
    runs = load.load_runs(exp, hint=f"make sweep GRID={exp}")
    hist = load.load_history(runs, exp, progress=progress)
    best = reduce.best_lr(runs)
    sel = reduce.select(runs, best)
    cur = reduce.curves(hist, sel)
    opts = [o for o in OPTIMIZERS if o in set(runs["optimizer"])]
    drawn.facts["default_runs"] = runs
    drawn.facts["default_best"] = best

    # a: loss against steps and examples, mean reduction, best lr per B
    fig, axes = plt.subplots(2, len(opts), figsize=(3.2 * len(opts), 5.4), squeeze=False)
    mean_cur = cur[cur["reduction"] == "mean"]
    final = mean_cur.sort_values("step").groupby(["optimizer", "batch_size"]).tail(1)
    for j, opt in enumerate(opts):
        for i, x in enumerate(["step", "examples"]):
            plot_curves(axes[i, j], mean_cur[mean_cur["optimizer"] == opt], x=x)
            axes[i, j].set_title(opt if i == 0 else "")
    _legend_right(fig, axes[0, -1])
    f = final.groupby("batch_size")["mean"].min()
    level = 1.0
    ex = reduce.first_crossing(mean_cur, "examples", level).groupby("batch_size")["examples"].min().dropna()
    per_example = (f"; examples to reach loss {level:g}: {ex.iloc[0]:.2g} at B={ex.index[0]} vs "
                   f"{ex.iloc[-1]:.2g} at B={ex.index[-1]}") if len(ex) >= 2 else ""
    drawn.facts["examples_to_1"] = ex
    fig.suptitle(f"Best lr per B, mean reduction. Final loss: {f.iloc[0]:.2g} at B={f.index[0]} vs "
                 f"{f.iloc[-1]:.2g} at B={f.index[-1]}{per_example.replace('; ', chr(10))}")
    _save(fig, "a_loss_curves", out, drawn, exp)

    # b: heatmaps reduction x optimizer
    table = reduce.heatmap_table(runs)
    vals = table.loc[table["diverged"] < 0.5, "value"]
    norm = LogNorm(vals[vals > 0].min(), vals.max()) if len(vals) else None
    reds = [r for r in ("mean", "sum") if r in set(runs["reduction"])]
    fig, axes = plt.subplots(len(reds), len(opts), figsize=(3.3 * len(opts), 2.9 * len(reds)), squeeze=False)
    for i, red in enumerate(reds):
        for j, opt in enumerate(opts):
            t = table[(table["reduction"] == red) & (table["optimizer"] == opt)]
            plot_heatmap(axes[i, j], t, norm)
            axes[i, j].set_title(f"{opt}, {red}")
    slopes = reduce.sum_mean_best_lr_slopes(best)
    drawn.facts["slopes"] = slopes
    sl = {r.optimizer: r.slope for r in slopes.itertuples()}
    fig.suptitle("Final training loss (× = diverged)\nbest lr of sum / best lr of mean scales as B^s: "
                 + ", ".join(f"{o} s={sl[o]:.2f}" for o in opts if o in sl))
    _save(fig, "b_heatmaps", out, drawn, exp)

    # e: loss against wall-clock time
    if "time_s" in mean_cur:
        fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.8), squeeze=False)
        for j, opt in enumerate(opts):
            plot_curves(axes[0, j], mean_cur[mean_cur["optimizer"] == opt], x="time_s")
            axes[0, j].set_title(opt)
        _legend_right(fig, axes[0, -1])
        tt = mean_cur.sort_values("step").groupby("batch_size")["time_s"].last()
        fig.suptitle(f"Against training time (2000 steps: {tt.min():.2g} s at B={tt.idxmin()} "
                     f"to {tt.max():.2g} s at B={tt.idxmax()})")
        _save(fig, "e_loss_vs_time", out, drawn, exp)

    # d (part): B_simple over training, needs the fit from science when there is one
    bs = reduce.curves(hist, sel, metric="grad/b_simple")
    drawn.facts["b_simple_curves"] = bs


def draw_science(exp: str, out: Path, drawn: Drawn) -> None:
    runs = load.load_runs(exp, hint=f"make sweep GRID={exp}")
    drawn.facts["science_runs"] = runs
    opts = [o for o in OPTIMIZERS if o in set(runs["optimizer"])]
    fits, sts = {}, {}
    fig, axes = plt.subplots(2, len(opts), figsize=(3.3 * len(opts), 5.6), squeeze=False)
    for j, opt in enumerate(opts):
        st = reduce.steps_to_target(runs[runs["optimizer"] == opt])
        fit = reduce.fit_hyperbola(st["batch_size"], st["steps"]) if len(st) else reduce.fit_hyperbola([], [])
        fits[opt], sts[opt] = fit, st
        if len(st):
            plot_steps_to_target(axes[0, j], st, fit, "steps")
            plot_steps_to_target(axes[1, j], st, fit, "examples")
        axes[0, j].set_title(opt)
    drawn.facts["fits"], drawn.facts["steps_to_target"] = fits, sts
    fig.suptitle("Steps to target: perfect scaling, then diminishing returns\nfitted B_crit: "
                 + ", ".join(f"{o} {fits[o]['B_crit']:.0f}" for o in opts if np.isfinite(fits[o]["B_crit"])))
    _save(fig, "c_steps_to_target", out, drawn, exp)

    best = reduce.best_lr(runs, metric="steps_to_target" if "steps_to_target" in runs else "final/train/loss")
    drawn.facts["science_best"] = best
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plot_best_lr(ax, best)
    sgd = best[(best["optimizer"] == "sgd") & best["stable"]].sort_values("batch_size")
    small = sgd[sgd["batch_size"] <= 64]
    s = reduce.loglog_slope(small["batch_size"], small["learning_rate"])
    ax.set_title(f"Best lr per B (fewest steps to target); SGD slope {s:.2f} for B ≤ 64")
    drawn.facts["sgd_lr_slope"] = s
    _save(fig, "c2_best_lr", out, drawn, exp)


def draw_noise(drawn: Drawn, out: Path, exp: str) -> None:
    bs = drawn.facts.get("b_simple_curves")
    if bs is None or bs.empty:
        return
    fits = drawn.facts.get("fits", {})
    opts = [o for o in OPTIMIZERS if o in set(bs["optimizer"])]
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.9), squeeze=False)
    for j, opt in enumerate(opts):
        g = bs[(bs["optimizer"] == opt) & (bs["reduction"] == "mean")]
        plot_b_simple(axes[0, j], g, fits.get(opt, {}).get("B_crit"))
        axes[0, j].set_title(opt)
        axes[0, j].get_legend().remove()
    _legend_right(fig, axes[0, 0])
    init = bs[bs["step"] == 0]["mean"].median()
    end = bs.sort_values("step").groupby(["optimizer", "reduction", "batch_size"]).tail(1)["mean"]
    drawn.facts["b_simple_init"], drawn.facts["b_simple_end_median"] = init, end.median()
    fig.suptitle(f"B_simple grows during training: {init:.0f} at initialisation, "
                 f"median {end.median():.0f} at the end ({end.median() / init:.0f}×)")
    _save(fig, "d_b_simple", out, drawn, exp)


def draw_reduction(drawn: Drawn, out: Path) -> None:
    runs = load.load_simple("reduction", "reduction", "make reduction")
    runs["end_time"] = runs["end_time"].astype(int)
    hist = load.load_history(runs, "reduction", keys=("dist/pair", "dist/control"), progress=False)
    hist = hist.merge(runs[["run_id", "comparison", "batch_size"]], on="run_id")
    drawn.facts["reduction"] = runs
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    algebra = hist[hist["comparison"] != "adam_same_eps"]
    plot_distance(axes[0], algebra)
    axes[0].set_title("equal by algebra: sum at lr/B (SGD) or eps·B (Adam)")
    plot_distance(axes[1], hist[hist["comparison"] == "adam_same_eps"].assign(metric=lambda d: d["metric"]))
    axes[1].set_title("Adam, sum vs mean at the same eps")
    fin = runs.assign(r=runs["final/dist_pair"] / runs["final/dist_control"])
    worst = fin[fin["comparison"] != "adam_same_eps"]["r"].max()
    fig.suptitle(f"Sum vs mean: the algebraic pairs end within {worst:.2g}× of the perturbation control")
    _save(fig, "f_reduction_distance", out, drawn, "reduction")


def latest_bench() -> pd.DataFrame:
    """The rows of the newest ``make bench`` session, numbers typed."""
    b = load.load_simple("benchmarks", "bench", "make bench")
    newest = b.groupby("bench_session")["end_time"].max().idxmax()
    b = b[b["bench_session"] == newest].copy()
    for col in ("B", "P", "k"):
        if col in b:
            b[col] = pd.to_numeric(b[col], errors="coerce")
    return b


def plot_cost(ax, pe: pd.DataFrame) -> None:
    """Per-example cost relative to the batch gradient against B, with the memory-write floor."""
    pe = pe.sort_values("B")
    styles = {"vmap": ("vmap(grad), B×P kept", "o-"), "fast": ("one backward + outer products", "s-"),
              "norms": ("per-example norms only", "^-"), "loop": ("Python loop of B grads", "v:"),
              "torch_vmap": ("torch.func vmap(grad)", "d--")}
    for key, (label, st) in styles.items():
        col = f"ratio/{key}_to_batch"
        if col in pe and pe[col].notna().any():
            ax.plot(pe["B"], pe[col], st, ms=4, label=label)
    ax.plot(pe["B"], pe["ratio/floor_to_batch"], "k--", lw=2, label="floor: write B×P floats")
    ax.axhline(1, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("time / batch-mean gradient")


def plot_pow2(ax, p2: pd.DataFrame) -> None:
    """Step time at 2^k - 1 and 2^k + 1 relative to 2^k."""
    p2 = p2.sort_values("k")
    for col, label, st in (("us/pow2_minus_1", "B = 2^k − 1", "v-"), ("us/pow2_plus_1", "B = 2^k + 1", "^-")):
        ax.plot(2 ** p2["k"], p2[col] / p2["us/pow2"], st, label=label)
    ax.axhline(1, color="gray", lw=1, label="B = 2^k")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("2^k")
    ax.set_ylabel("step time / step time at 2^k")
    ax.legend()


def draw_bench(drawn: Drawn, out: Path) -> None:
    b = latest_bench()
    drawn.facts["bench"] = b
    pe = b[b["kind"] == "per_example"]
    if len(pe):
        nets = sorted(set(pe["net"]), key=lambda n: int(pe[pe["net"] == n]["P"].iloc[0]))
        fig, axes = plt.subplots(1, len(nets), figsize=(3.3 * len(nets), 3.0), squeeze=False, sharey=True)
        for j, net in enumerate(nets):
            plot_cost(axes[0, j], pe[pe["net"] == net])
            axes[0, j].set_title(f"MLP {net} (P = {int(pe[pe['net'] == net]['P'].iloc[0]):,})")
        _legend_right(fig, axes[0, 0])
        big = pe[pe["P"] == pe["P"].max()]
        fig.suptitle(f"Per-example gradients on {b['device'].iloc[0]}: vmap(grad) costs "
                     f"{big['ratio/vmap_to_batch'].min():.0f}–{big['ratio/vmap_to_batch'].max():.0f}× the batch gradient "
                     f"at P = {int(big['P'].iloc[0]):,};\nthe one-pass recipe runs at "
                     f"{big[big['B'] >= 32]['ratio/fast_to_floor'].min():.1f}–{big[big['B'] >= 32]['ratio/fast_to_floor'].max():.1f}× the write floor (B ≥ 32)")
        _save(fig, "q3_cost", out, drawn, None)
    p2 = b[b["kind"] == "pow2"]
    if len(p2):
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
        plot_pow2(ax, p2)
        r = pd.concat([p2["us/pow2_minus_1"] / p2["us/pow2"], p2["us/pow2_plus_1"] / p2["us/pow2"]])
        ax.set_title(f"Training step at 2^k ± 1 ({b['device'].iloc[0]}): {r.min():.2f}–{r.max():.2f}× of 2^k")
        _save(fig, "q6_powers_of_two", out, drawn, None)


def draw_all(out: Path = OUT, default: str = "default", science: str = "science", progress: bool = True) -> Drawn:
    use_style()
    drawn = Drawn()
    steps = [  # a missing experiment raises MissingRuns, whose message names the command to run
        ("default", lambda: draw_default(default, out, drawn, progress)),
        ("science", lambda: draw_science(science, out, drawn)),
        ("noise", lambda: draw_noise(drawn, out, default)),
        ("reduction", lambda: draw_reduction(drawn, out)),
        ("bench", lambda: draw_bench(drawn, out)),
    ]
    for name, fn in steps:
        try:
            fn()
        except load.MissingRuns as e:
            drawn.missing[name] = str(e)
    return drawn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--default", default="default", help="the sweep for figures a, b, d, e (default: default)")
    ap.add_argument("--science", default="science", help="the sweep for figure c (default: science)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    drawn = draw_all(a.out, a.default, a.science)
    for name, paths in drawn.files.items():
        print(f"drew {name}: {', '.join(str(p) for p in paths)}")
    for name, msg in drawn.missing.items():
        print(f"skipped {name}: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
