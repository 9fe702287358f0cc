"""The surge (Li et al. 2024, arXiv:2405.14578): does Adam's best learning rate rise, then fall, as B grows?

The claim: for Adam-style optimizers the best learning rate first rises with B, then falls, the peak near the
gradient noise scale and moving to larger B as training goes on; SGD's rises and saturates instead. It is read
here from the science sweep's learning-rate search, with no runs of its own: per (workload, optimizer, B, seed)
the rate that reached each level in the fewest steps (searched to a quarter decade, bracketed on both sides).

Per seed and level: ``peak`` is the batch size where that seed's best rate is largest (the geometric mean of the
batch sizes where it ties), and ``drop`` how many decades the rate at the largest B measured sits below that
maximum (0: no fall). A fall is called when the mean drop's t-interval over seeds excludes 0 under Holm's rule
over the section's tests; the peak's move with training is the paired ratio of each seed's peak at the hardest
level to its peak at the easiest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import plots, stats
from analysis.markdown import md_table
from analysis.order import label as opt_label
from analysis.order import optimizers_in
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from mbstudy.metrics import TRAIN_TARGET

plt = plots.plt
ADAPTIVE = ("adam", "adamw")  # the optimizers the claim is about


@dataclass(frozen=True)
class SurgeFacts:
    experiment: str
    labels: dict[str, str]
    rates: pd.DataFrame  # workload, optimizer, level, batch_size, seed, learning_rate (the training-loss target)
    per_seed: pd.DataFrame  # workload, optimizer, level, seed: peak, drop (decades), b_crit (that seed's fit)
    tests: pd.DataFrame  # workload, optimizer: the fall (hardest level), the peak's move, B_crit; Holm


def _seed_peaks(t: pd.DataFrame) -> pd.DataFrame:
    """Per seed of a (B × seeds) table of best rates: the peak B and the drop at the largest B (decades)."""
    B = np.asarray(t.index, float)
    rows = []
    for seed in t.columns:
        lr = t[seed].to_numpy(float)
        ok = np.isfinite(lr) & (lr > 0)
        if ok.sum() < 3:
            continue
        lg = np.log10(lr[ok])
        top = lg.max()
        at = B[ok][np.isclose(lg, top, atol=1e-3)]
        rows.append({"seed": seed, "peak": float(np.exp(np.log(at).mean())), "drop": float(top - lg[-1]),
                     "b_max": float(B[ok][-1])})
    return pd.DataFrame(rows, columns=["seed", "peak", "drop", "b_max"])


def surge_facts(f) -> SurgeFacts:
    """From science facts ``f`` (:class:`analysis.science.ScienceFacts`): the training-loss target's levels."""
    b = f.best[(f.best["target"] == TRAIN_TARGET) & np.isfinite(f.best["steps"])]
    rates = b[["workload", "optimizer", "level", "batch_size", "seed", "learning_rate"]].reset_index(drop=True)
    per_seed, tests = [], []
    for w in f.workloads:
        if (w, TRAIN_TARGET) not in f.levels:
            continue
        levels = f.levels[(w, TRAIN_TARGET)]
        for opt in optimizers_in(rates.loc[rates["workload"] == w, "optimizer"]):
            by_level = {}
            for lev in levels:
                sub = rates[(rates["workload"] == w) & (rates["optimizer"] == opt) & np.isclose(rates["level"], lev)]
                t = sub.pivot_table(index="batch_size", columns="seed", values="learning_rate", aggfunc="first")
                p = _seed_peaks(t.sort_index())
                cell = f.cell(w, TRAIN_TARGET, opt, lev)
                fits = {} if cell is None else dict(zip(cell.table.columns, cell.fits["B_crit"]))
                cens = {} if cell is None else dict(zip(cell.table.columns, cell.fits["censored"]))
                p["b_crit"] = [fits.get(s, np.nan) if cens.get(s, 1) == 0 else np.nan for s in p["seed"]]
                p = p.assign(workload=w, optimizer=opt, level=lev)
                by_level[lev] = p
                per_seed.append(p)
            hard, easy = by_level[levels[-1]], by_level[levels[0]]
            if hard.empty:
                continue
            d_est, d_lo, d_hi, d_p = stats.mean_interval(hard["drop"].to_numpy(float))
            falls = int((hard["drop"] > 1e-9).sum())
            m = hard.merge(easy[["seed", "peak"]], on="seed", suffixes=("", "_easy"))
            mv = stats.paired_ratio(m["peak"].to_numpy(float), m["peak_easy"].to_numpy(float))
            pk = stats.summarise(hard["peak"].to_numpy(float))
            cell = f.cell(w, TRAIN_TARGET, opt, levels[-1])
            bc = cell.b_crit if cell is not None else stats.Summary(np.nan, np.nan, np.nan, 0)
            pb = (stats.paired_ratio(hard["peak"].to_numpy(float), hard["b_crit"].to_numpy(float)) if bc.measured
                  else (np.nan,) * 5)  # a bound enters no ratio
            tests.append({"workload": w, "optimizer": opt, "level": levels[-1], "easiest": levels[0],
                          "n": len(hard), "falls": falls, "drop": d_est, "drop_lo": d_lo, "drop_hi": d_hi,
                          "drop_p": d_p if falls else 1.0, "peak": pk.value, "peak_lo": pk.lo, "peak_hi": pk.hi,
                          "b_max": float(hard["b_max"].max()), "b_crit": bc.value, "b_crit_lo": bc.lo,
                          "b_crit_hi": bc.hi, "b_crit_text": bc.text(), "peak_over_b_crit": pb[0], "pb_lo": pb[1], "pb_hi": pb[2],
                          "move": mv[0], "move_lo": mv[1], "move_hi": mv[2], "move_p": mv[3]})
    tests = pd.DataFrame(tests)
    if not tests.empty:
        p = np.concatenate([tests["drop_p"].to_numpy(float), tests["move_p"].to_numpy(float)])
        adj = stats.holm(np.where(np.isfinite(p), p, 1.0))
        tests["drop_holm"], tests["move_holm"] = adj[:len(tests)], adj[len(tests):]
    per = pd.concat(per_seed, ignore_index=True) if per_seed else pd.DataFrame()
    return SurgeFacts(f.experiment, dict(f.labels), rates, per, tests)


def _read(ctx: Context) -> SurgeFacts | None:
    f = ctx.workloads
    return None if f is None else surge_facts(f)


# ------------------------------------------------------------------ verdicts and text


def fall_verdict(r) -> str:
    if r.falls == 0:
        return f"no fall: every seed's best rate is at its maximum at the largest B ({r.b_max:g})"
    if r.drop_holm < 0.05 and r.drop_lo > 0:
        return f"falls after its peak ({r.falls} of {r.n} seeds; {stats.span_text(r.drop, r.drop_lo, r.drop_hi, '.2f')} decades)"
    return (f"not resolved ({r.falls} of {r.n} seeds fall, by {stats.span_text(r.drop, r.drop_lo, r.drop_hi, '.2f')} "
            "decades)")


def move_verdict(r) -> str:
    if not np.isfinite(r.move_holm):
        return "not measured"
    iv = stats.span_text(r.move, r.move_lo, r.move_hi, ".2f")
    if r.move_holm < 0.05:
        return f"moves to {'larger' if r.move > 1 else 'smaller'} B as the loss falls (×{iv})"
    return f"no move resolved (×{iv})"


def _b(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _peak_text(r) -> str:
    if np.isclose(r.peak, r.b_max):
        return f"≥ {_b(r.b_max)} (the top of the range)"
    return f"{_b(r.peak)} [{_b(r.peak_lo)}, {_b(r.peak_hi)}]" if np.isfinite(r.peak_lo) else _b(r.peak)


def _rows(s: SurgeFacts) -> list[dict]:
    t = s.tests
    rows = []
    for r in t.itertuples():
        rows.append({"workload": s.labels.get(r.workload, r.workload), "optimizer": opt_label(r.optimizer),
                     "best rate at the largest B": fall_verdict(r),
                     "B of the largest rate (95%)": _peak_text(r),
                     "its ratio to B_crit": (f"{r.peak_over_b_crit:.2f} [{r.pb_lo:.2f}, {r.pb_hi:.2f}]"
                                             if np.isfinite(r.pb_lo) and not np.isclose(r.peak, r.b_max) else "–"),
                     "B_crit (95%)": r.b_crit_text,
                     "peak, hardest vs easiest level": move_verdict(r)})
    return rows


def text(ctx: Context) -> str:
    s = ctx.surge
    if s is None or s.tests.empty:
        return ctx.not_measured("workloads", "run make sweep GRID=science")
    t = s.tests
    adaptive = t[t["optimizer"].isin(ADAPTIVE)]
    fell = adaptive[(adaptive["drop_holm"] < 0.05) & (adaptive["drop_lo"] > 0)]
    head = ((f"**Adam's best learning rate falls after a peak in {len(fell)} of {len(adaptive)} workloads**"
             if len(fell) else f"**No fall of Adam's best learning rate at large B is resolved in any of the "
                               f"{len(adaptive)} workloads**: it rises, then stays flat up to the largest B measured "
                               f"in each workload, so the surge is not seen here (its mean fall at the largest B: "
                               + ", ".join(f"{r.drop:.2f} decades on the {s.labels.get(r.workload, r.workload)}"
                                           for r in adaptive.itertuples()) + ")")
            + ". The claim (Li et al. 2024): for Adam-style optimizers the best rate rises with B, then falls, its "
              "peak near the noise scale and moving to larger B as training goes on; SGD's rises and saturates. "
              "Read from the science sweep's searched rates (the training-loss target; the rate that reached each "
              "level in the fewest steps, a quarter decade apart).")
    fell_any = t[(t["drop_holm"] < 0.05) & (t["drop_lo"] > 0)]
    others = ("; elsewhere a fall is resolved for " + ", ".join(
        f"{opt_label(r.optimizer)} on the {s.labels.get(r.workload, r.workload)}" for r in fell_any.itertuples())
              if len(fell_any) else "")
    moved = t[t["move_holm"] < 0.05]
    body = (f"Per workload and optimizer, the table in the appendix gives the B of the largest rate, its ratio to "
            f"B_crit and its move between the easiest and the hardest level{others}; the peak's move with training "
            f"is resolved in {len(moved)} of {len(t)} cells.")
    return "\n\n".join([
        head, body,
        "The B of the largest rate is each seed's batch size where its best rate is largest (the geometric mean of "
        "the batch sizes where it ties: the middle of a plateau), summarised by its "
        "geometric mean and t-interval; a peak at the largest B measured is a bound, not a peak. Verdicts: Holm's "
        f"rule over the section's {2 * len(t)} tests.",
        ctx.figure("s1_surge"),
    ]) + "\n"


def appendix(ctx: Context) -> str:
    s = ctx.surge
    if s is None or s.tests.empty:
        return ""
    return "### The surge: the best rate per workload and optimizer\n\n" + md_table(pd.DataFrame(_rows(s)))


def finding(ctx: Context) -> Answer | None:
    s = ctx.surge
    if s is None or s.tests.empty:
        return None
    a = s.tests[s.tests["optimizer"].isin(ADAPTIVE)]
    fell = a[(a["drop_holm"] < 0.05) & (a["drop_lo"] > 0)]
    if a.empty:
        return None
    r = a.iloc[0]
    return Answer(f"Adam's best rate falls after a peak in {len(fell)} of {len(a)} workloads",
                  f"{s.labels.get(r.workload, r.workload)}: peak B {_peak_text(r)}, B_crit {r.b_crit:.3g}",
                  "the fastest-to-target rate on a quarter-decade lattice; small models only")


# ------------------------------------------------------------------ figure


def plot_rates(ax, rates: pd.DataFrame, colors: dict) -> None:
    """Best rate against B per optimizer: the geometric mean over seeds, the band the seeds' range."""
    for opt, g in rates.groupby("optimizer", sort=False):
        s = g.groupby("batch_size")["learning_rate"]
        mid = np.exp(np.log(g["learning_rate"]).groupby(g["batch_size"]).mean())
        ax.plot(mid.index, mid.values, "o-", ms=3, color=colors.get(opt), label=opt_label(opt))
        ax.fill_between(mid.index, s.min().values, s.max().values, color=colors.get(opt), alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("best learning rate")


def _draw(ctx: Context):
    s = ctx.surge
    if s is None or s.rates.empty:
        raise Skip("no science sweep")
    ws = [w for w in s.labels if w in set(s.rates["workload"])] or sorted(set(s.rates["workload"]))
    fig, axes = plt.subplots(1, len(ws), figsize=(4.2 * len(ws), 3.6), constrained_layout=True, squeeze=False)
    colors = plots.optimizer_colors(s.rates["optimizer"].unique())
    for ax, w in zip(axes[0], ws):
        sub = s.rates[s.rates["workload"] == w]
        sub = sub[np.isclose(sub["level"], sub["level"].min())]  # the hardest level
        plot_rates(ax, sub, colors)
        for r in (s.tests[s.tests["workload"] == w] if not s.tests.empty else s.tests).itertuples():
            if np.isfinite(r.b_crit_lo):
                ax.axvline(r.b_crit, color=colors.get(r.optimizer), ls=":", lw=1)
        ax.set_title(s.labels.get(w, w), fontsize=9)
    axes[0][0].legend(fontsize=8)
    plots.suptitle(fig, "Best learning rate against B (hardest training-loss level; dotted: B_crit)")
    return fig


SECTION = Section(
    "Surge", "Does Adam's best learning rate fall at large batch sizes?",
    heading="The surge: does Adam's best learning rate rise, then fall, as B grows?",
    text=text,
    provides=(Provider("surge", _read),),
    figures=(FigureSpec("s1_surge", _draw, ("surge",), "The best learning rate (the fastest to the hardest "
                        "training-loss level) against B per workload and optimizer: the geometric mean over seeds, "
                        "the band the seeds' range; dotted lines mark each optimizer's B_crit."),),
    limits="The best rate is the fastest to a target at a constant rate, searched on a quarter-decade lattice, so "
           "a fall of less than a quarter decade is not seen; the paper's models (CNNs, ResNets, DistilGPT2) are "
           "larger than these.",
    appendix=appendix,
    finding=("Surge: does Adam's best rate fall at large B?", finding),
)
