"""How each quantity is drawn: pure "draw on the given axes" functions, one per kind of plot.

Each ``plot_*(ax, table, ...)`` draws a table produced by ``analysis.reduce``
(or held in ``analysis.facts``) onto a matplotlib ``Axes`` and sets its
scales and labels; it neither creates figures nor saves them (that is
``analysis.figures``). ``use_style()`` sets the house style once per process.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker
from matplotlib.cm import ScalarMappable  # noqa: F401 - the heatmaps' colour bar (analysis.sections.sum_or_mean)
from matplotlib.ticker import FormatStrFormatter

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

STYLE = Path(__file__).with_name("mbstudy.mplstyle")
HEATMAP_CMAP = "mako_r"  # the heatmaps' colour map (and their colour bar's)


class Skip(Exception):
    """Raised by a figure function when the facts hold nothing it can draw; the message says why, in one line."""


def use_style() -> None:
    """The seaborn paper theme with ``mbstudy.mplstyle`` on top (changes matplotlib's global rcParams)."""
    sns.set_theme(context="paper", style="whitegrid")
    plt.style.use(STYLE)


def optimizer_colors(seen=()) -> dict:
    """One colour of seaborn's "deep" palette per optimizer, in registry order (then any others in ``seen``):
    the same optimizer has the same colour in every figure."""
    from analysis.order import optimizers_in
    from mbstudy.optimizers import OPTIMIZERS

    names = optimizers_in({*OPTIMIZERS, *map(str, seen)})
    return dict(zip(names, sns.color_palette("deep", len(names))))


def b_palette(batch_sizes) -> dict:
    """One viridis colour per batch size, small B dark."""
    bs = sorted(set(int(b) for b in batch_sizes))
    colors = sns.color_palette("viridis", len(bs))
    return dict(zip(bs, colors))


def legend_right(fig, ax) -> None:
    """The legend of ``ax``, once, outside the figure on the right (at most 8 rows a column); inside ``ax`` when it
    is the figure's only panel and the legend is short (a legend outside one small panel leaves most of the figure
    empty, a long one inside covers the curves)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(fig.axes) == 1 and len(labels) <= 7:
        ax.legend(handles, labels, fontsize=6.5, loc="best")
        return
    fig.legend(handles, labels, loc="outside right center", ncol=1 + (len(labels) - 1) // 8)  # at most 8 rows


def suptitle(fig, text: str, **kw) -> None:
    """``fig.suptitle(text, **kw)``, each line wrapped to the figure's width (a title wider than a narrow figure
    would widen the saved image around it and leave the panels small in it)."""
    import textwrap

    size = kw.get("fontsize", plt.rcParams["figure.titlesize"])
    size = size if isinstance(size, (int, float)) else 11.0
    width = max(30, int(fig.get_figwidth() * 72 / (0.62 * size)))  # characters per line at that size, bold
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")), **kw)


def covered(fig) -> float:
    """The share of the saved (tight) image that the axes cover: a figure whose panels fill less than about a
    third of it is mostly empty space (a legend or title far from a lone small panel)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.get_tightbbox(renderer)
    dpi = fig.dpi
    area = box.width * box.height * dpi * dpi
    panels = sum(ax.get_window_extent(renderer).width * ax.get_window_extent(renderer).height
                 for ax in fig.axes if ax.get_visible() and ax.axison)
    return float(panels / area) if area else 0.0


# ------------------------------------------------------ loss curves (a, e)


def plot_curves(ax, cur: pd.DataFrame, x: str = "step", logx: bool = True) -> None:
    """Loss against ``x`` (step, examples or time_s) per batch size: mean line, seed range band.
    ``x`` is drawn on a log scale when ``logx`` and its positive values span at least a decade."""
    pal = b_palette(cur["batch_size"])
    pos = cur.loc[cur[x] > 0, x]
    if logx and len(pos) and pos.max() < 10 * pos.min():
        logx = False  # less than a decade: log ticks would be crowded minor labels (a short sweep's time axis)
    for b, g in cur.groupby("batch_size"):
        g = g[g[x] > 0] if logx else g
        g = g.dropna(subset=[x])
        ax.plot(g[x], g["mean"], color=pal[int(b)], label=f"B={int(b)}")
        ax.fill_between(g[x], g["lo"], g["hi"], color=pal[int(b)], alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log")
        # minor labels (2×10^1, 3×10^1 ...) appear when the view spans about a decade, and collide
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yscale("log")
    ax.set_xlabel({"step": "steps", "examples": "examples seen", "time_s": "training time (s)"}[x])
    ax.set_ylabel("training loss (full set)")


# ------------------------------------------------------------ heatmaps (b)


def plot_heatmap(ax, table: pd.DataFrame, norm=None) -> None:
    """Final training loss over (lr x B) for one optimizer and reduction; diverged cells marked x."""
    p = table.pivot_table(index="learning_rate", columns="batch_size", values="value").sort_index(ascending=False)
    d = table.pivot_table(index="learning_rate", columns="batch_size", values="diverged").reindex_like(p)
    masked = p.where(d < 0.5)
    sns.heatmap(masked, ax=ax, norm=norm, cmap=HEATMAP_CMAP, cbar=False, linewidths=0.3, linecolor="white",
                annot=masked.map(lambda v: f"{v:.2g}" if np.isfinite(v) else ""), fmt="", annot_kws={"fontsize": 5.5})
    for i, lr in enumerate(p.index):
        for j, b in enumerate(p.columns):
            if d.loc[lr, b] >= 0.5:
                ax.text(j + 0.5, i + 0.5, "×", ha="center", va="center", color="#c0392b", fontsize=9)
    ax.set_yticklabels([f"{v:g}" for v in p.index], rotation=0)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")


# ----------------------------------------------- steps to target (c, c2)


def plot_steps_to_target(ax, st: pd.DataFrame, fit: dict, y: str = "steps") -> None:
    """Steps (or examples) to target against B, log-log, with the fitted hyperbola and B_crit."""
    B = st["batch_size"].to_numpy(float)
    bound = (st["n_bound"] > 0).to_numpy() if "n_bound" in st else np.zeros(len(st), bool)
    ax.plot(B[~bound], st[y][~bound], "o", ms=4, label="measured (best lr)")
    if bound.any():
        ax.plot(B[bound], st[y][bound], "v", ms=5, mfc="none", color="C3",
                label="reached at the first evaluation:\nat most this (not fitted)")
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


# ---------------------------------------------------------- noise scale (d)


def plot_b_simple(ax, h: pd.DataFrame, b_crit: float | None) -> None:
    """B_simple over training per batch size (best-lr runs), against the fitted B_crit."""
    pal = b_palette(h["batch_size"])
    for b, g in h.groupby("batch_size"):
        g = g[g["mean"] > 0]
        ax.plot(g["step"], g["mean"], color=pal[int(b)], label=f"B={int(b)}")
    if b_crit is not None and np.isfinite(b_crit):
        ax.axhline(b_crit, ls="--", color="gray", lw=1, label=f"B_crit (fit) ≈ {b_crit:.0f}")
    ax.set_yscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel("B_simple = tr(Σ) / ‖G‖²")
    ax.legend()


# ------------------------------------------------ reduction distances (f)


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


# ------------------------------------------------------- benchmarks (q3, q6)


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


# ------------------------------------------------------- arms of an ablation (the CNN's accuracy)


def plot_arm_curves(ax, curves: pd.DataFrame, colors: dict, reference: float | None = None) -> None:
    """A metric against steps per arm (``curves``: arm, step, mean, low, high): mean line, seed-range band; the
    first evaluation is left out (at chance it squeezes the rest), ``reference`` dashed."""
    for arm, g in curves.groupby("arm", sort=False):
        g = g[g["step"] > 0]
        ax.plot(g["step"], g["mean"], color=colors[arm], lw=1.2, label=arm)
        ax.fill_between(g["step"], g["low"], g["high"], color=colors[arm], alpha=0.15, linewidth=0)
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="k", ls="--", lw=1)
    ax.set_xlabel("steps")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.legend(fontsize=6.5, loc="lower right")


def plot_arm_values(ax, per_seed: pd.DataFrame, summary: pd.DataFrame, colors: dict,
                    reference: float | None = None) -> None:
    """One column per arm in ``summary``'s order (arm, mean, lo, hi): the seeds' values (``per_seed``: arm, value)
    as dots, the mean and its interval as a bar; ``reference`` dashed."""
    arms = list(summary["arm"])
    for i, arm in enumerate(arms):
        v = per_seed.loc[per_seed["arm"] == arm, "value"].to_numpy(float)
        ax.plot(i + np.linspace(-0.12, 0.12, len(v)), v, "o", ms=3, color=colors[arm], alpha=0.6)
        row = summary[summary["arm"] == arm].iloc[0]
        errorbar(ax, [i + 0.25], [row["mean"]], [row["lo"]], [row["hi"]], fmt="s", color=colors[arm])
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="k", ls="--", lw=1)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([textwrap.fill(a, 14) for a in arms], fontsize=6.5)
    ax.set_xlim(-0.5, len(arms) - 0.4)


# ------------------------------------------------------- shared helpers


def log2_axis(ax, axis: str = "x") -> None:
    getattr(ax, f"set_{axis}scale")("log", base=2)
    fmt = FormatStrFormatter("%g")
    getattr(ax, f"{axis}axis").set_major_formatter(fmt)


def plot_seed_band(ax, table: pd.DataFrame, color, label: str) -> None:
    """A (B × seeds) table of steps: its geometric mean over seeds as a line, the seeds' range as a band (a seed that
    never reached the target, inf, is left out of both)."""
    t = table.replace(np.inf, np.nan)
    ax.plot(t.index, np.exp(np.log(t).mean(axis=1)).values, "o-", color=color, label=label)
    ax.fill_between(t.index, t.min(axis=1).values, t.max(axis=1).values, color=color, alpha=0.2, lw=0)


def errorbar(ax, x, y, lo, hi, **kw) -> None:
    """Error bars from an interval; an interval open above (hi = inf) gets an arrow up instead of a bar."""
    x, y, lo, hi = (np.asarray(v, float) for v in (x, y, lo, hi))
    open_above = np.isinf(hi)
    err = [np.nan_to_num(np.clip(y - lo, 0, None)), np.where(open_above, 0.0, np.nan_to_num(np.clip(hi - y, 0, None)))]
    bars = ax.errorbar(x, y, yerr=err, capsize=2, ms=4, lw=1, **kw)
    if open_above.any():
        ax.plot(x[open_above], y[open_above] * 1.6, "^", ms=4, color=bars[0].get_color())
        ax.vlines(x[open_above], y[open_above], y[open_above] * 1.6, color=bars[0].get_color(), lw=1)
