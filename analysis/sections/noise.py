"""Q7, per-example losses 2 and −2 "average to zero": do per-example gradients cancel? The simple noise scale
B_simple = tr(Σ)/‖G‖² over training, logged by the main sweep's runs at their best learning rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import plots
from analysis.order import optimizers_in
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.main_sweep import DefaultFacts

plt = plots.plt


@dataclass(frozen=True)
class NoiseFacts:
    """The simple noise scale B_simple = tr(Σ)/‖G‖² over training, from the main sweep's best-lr runs."""

    experiment: str  # the main sweep, where these curves were logged
    curves: pd.DataFrame  # ``DefaultFacts.b_simple_curves``, never empty here
    at_init: float  # median over groups at step 0
    end_median: float  # median over groups of the last logged value


def noise_facts(default: DefaultFacts) -> NoiseFacts | None:
    """None when the main sweep logged no B_simple."""
    curves = default.b_simple_curves
    if curves.empty:
        return None
    end = curves.sort_values("step").groupby(["optimizer", "reduction", "batch_size"]).tail(1)["mean"]
    return NoiseFacts(experiment=default.experiment, curves=curves,
                      at_init=curves[curves["step"] == 0]["mean"].median(), end_median=end.median())


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


def text(ctx: Context) -> str:
    noise = ctx.noise
    if noise is None:
        return "Not measured yet: run `make sweep`.\n"
    init, end = noise.at_init, noise.end_median
    fits = ctx.science.fits if ctx.science else {}
    eq = ctx.equivalence.runs if ctx.equivalence else None
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
        + ctx.figure("d_b_simple")
    )


def b_simple(ctx: Context):
    """B_simple over training per B, against science's fitted B_crit when that sweep exists."""
    n = ctx.noise
    if n is None:
        raise Skip("the runs logged no grad/b_simple history")
    fits = ctx.science.fits if ctx.science else {}
    opts = optimizers_in(n.curves["optimizer"])
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.9), squeeze=False)
    for j, opt in enumerate(opts):
        g = n.curves[(n.curves["optimizer"] == opt) & (n.curves["reduction"] == ctx.default.curve_reduction)]
        plots.plot_b_simple(axes[0, j], g, fits.get(opt, {}).get("B_crit"))
        axes[0, j].set_title(opt)
        if axes[0, j].get_legend() is not None:
            axes[0, j].get_legend().remove()
    plots.legend_right(fig, axes[0, 0])
    trend = "shrinks" if n.end_median < n.at_init else "grows"
    plots.suptitle(fig, f"B_simple {trend} during training: {n.at_init:.0f} at initialisation, "
                 f"median {n.end_median:.0f} at the end ({n.end_median / n.at_init:.0f}×)")
    return fig


def finding(ctx: Context) -> str | None:
    if ctx.noise is None:
        return None
    n = ctx.noise
    return (f"Partly. B_simple = tr(Σ)/‖G‖² ≈ {n.at_init:.0f} at initialisation, median {n.end_median:.0f} at the "
            f"end of training ({n.end_median / n.at_init:.0f}×), MNIST-1D MLP.")




def _read(ctx: Context) -> NoiseFacts | None:
    return None if ctx.default is None else noise_facts(ctx.default)


SECTION = Section(
    "Q7", "Per-example losses 2 and −2 \"average to zero\": do per-example gradients cancel?",
    text=text,
    provides=(Provider("noise", _read),),
    figures=(FigureSpec("d_b_simple", b_simple, ("default",), "B_simple over training per batch size (best learning "
                        "rate), against the fitted B_crit.", sweep=True,
                        sweep_caption="B_simple over training per batch size (best learning rate)."),),
    limits="B_simple on the default sweep's MNIST-1D MLP runs at their best learning rate; it estimates the noise "
           "scale under the assumption of a well-conditioned Hessian (McCandlish et al.), which is not checked here.",
    finding=("Q7 do gradients cancel?", finding),
)
