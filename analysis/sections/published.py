"""Sanity check: the MNIST-1D paper's recipe (Greydanus 2020) reproduced on mbstudy's offline MNIST-1D (the
``published`` sweep), test accuracy per model against the paper's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, order
from analysis.markdown import md_table
from analysis.section import Context, Provider, Section


@dataclass(frozen=True)
class PublishedFacts:
    """The ``published`` sweep: the MNIST-1D paper's recipe, test accuracy per model against the paper's."""

    experiment: str
    runs: pd.DataFrame
    accuracy: pd.DataFrame  # per model: mean, min and max over seeds of the final test accuracy, seeds, the paper's


def published_facts(runs: pd.DataFrame, experiment: str = "published", paper: dict[str, float] | None = None
                    ) -> PublishedFacts:
    """Per arm of the grid ``<experiment>`` (its label, under ``model``; else the run's model): the final test
    accuracy over seeds against ``paper`` (arm -> the paper's accuracy; default: the grid's
    ``[meta.paper_accuracy]``, Greydanus 2020's table)."""
    arm = order.labels_of(runs, experiment)["arm"]
    model = runs["model"] if "model" in runs else pd.Series("", index=runs.index)
    r = runs.assign(model=arm.where(arm != "", model))
    paper = order.meta(experiment).get("paper_accuracy", {}) if paper is None else paper
    acc = (r.groupby("model")["final/test/acc"].agg(mean="mean", low="min", high="max", seeds="size")
           .reset_index())
    best = r.groupby("model")["best/test/acc"].mean() if "best/test/acc" in r else None
    acc["best_mean"] = acc["model"].map(best) if best is not None else float("nan")
    acc["paper"] = acc["model"].map(paper).astype(float)
    return PublishedFacts(experiment=experiment, runs=runs, accuracy=acc)


def text(ctx: Context) -> str:
    """The sanity check: the MNIST-1D paper's recipe reproduced on mbstudy's offline MNIST-1D."""
    if ctx.published is None:
        return ctx.not_measured("published", "make sweep GRID=published")
    a = ctx.published.accuracy
    t = pd.DataFrame({"model": a["model"], "final test accuracy (mean)": a["mean"], "lowest": a["low"],
                      "highest": a["high"], "best during training (mean)": a["best_mean"],
                      "seeds": a["seeds"].astype(int), "paper": a["paper"]})
    verdicts = []
    for r in a.itertuples():
        if np.isfinite(r.paper):
            gap = 100 * (r.mean - r.paper)
            verdicts.append(f"{r.model} {r.mean:.1%} (seeds {r.low:.1%}–{r.high:.1%}) against the paper's "
                            f"{r.paper:.0%}, {gap:+.1f} points"
                            + (", within the seed range" if r.low <= r.paper <= r.high
                               else ", a shortfall to investigate" if gap < -2 else ""))
    return ("The MNIST-1D paper's recipe (Adam, learning rate 1e-2, batch 100, 8000 steps; Greydanus 2020), trained "
            "by mbstudy on its offline MNIST-1D (sweep `published`). Final test accuracy over "
            f"{int(a['seeds'].max())} seeds: " + "; ".join(verdicts) + ". mbstudy's MLP is the plain 40-100-100-10 "
            "with ReLU (the paper's adds a residual connection around its second layer), batches are drawn by "
            "shuffling each epoch (the paper's loop walks the data in order), and weights start from He-normal "
            "draws where PyTorch's layers start from a scaled uniform. For the CNN the next section measures what "
            "the last two do" + _ablation(ctx) + ".\n\n" + md_table(t, ".3f") + "\n")


def _ablation(ctx: Context) -> str:
    """The next section's answer in a clause (its facts, when the store holds them)."""
    c = ctx.cnn_accuracy
    if c is None or c.paper_arm not in set(c.arms["arm"]):
        return ""
    row = c.arms.set_index("arm").loc[c.paper_arm]
    return f": trained as the paper's code trains («{c.paper_arm}»), the CNN reaches {row['final_mean']:.1%}"


def finding(ctx: Context) -> str | None:
    if ctx.published is None:
        return None
    a = ctx.published.accuracy
    return "; ".join(f"{r.model} {r.mean:.1%} (paper {r.paper:.0%})" for r in a.itertuples()) + \
        f", the paper's recipe, {int(a['seeds'].max())} seed(s)."



SECTION = Section(
    "sanity", "Sanity check: the MNIST-1D paper's accuracies", heading="Sanity check: the MNIST-1D paper's accuracies",
    text=text,
    provides=(Provider("published", lambda ctx: published_facts(
        load.load_runs("published", hint="make sweep GRID=published"))),),
    finding=("sanity: the MNIST-1D paper's accuracies", finding),
)
