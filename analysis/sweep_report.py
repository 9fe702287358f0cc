"""The report of any one sweep: ``make report SWEEP=name`` (``python -m analysis.report --sweep NAME``) and its
figures (``make figures SWEEP=name``).

NAME is a sweep's experiment (its grid's name) or the run id of one of its parent runs (then only that
invocation's child runs). Its runs give the facts the sections compute for the main sweep (``default``) and, when
some run reached a target, for the science sweep (``science``); the figures the sections mark as drawable from one
sweep are drawn from them. The report lists the runs, the best learning rate per group, steps to target with the
fit when the runs have a target, the figures the runs support and why any other was skipped, into
``report/sweeps/<label>/REPORT.md`` beside its figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import load, render
from analysis.markdown import figure_markdown, md_table
from analysis.section import Context
from analysis.sections import FIGURES, context
from analysis.sections.main_sweep import default_facts
from analysis.sections.noise import noise_facts
from analysis.sections.steps_to_target import science_facts

SWEEPS = load.tracking.ROOT / "report" / "sweeps"  # --sweep NAME: SWEEPS / label / "figures"


SWEEP_DIMENSIONS = ("optimizer", "reduction", "batch_size", "learning_rate", "seed")  # what the figures tell apart


@dataclass(frozen=True)
class SweepSource:
    """Which runs ``--sweep NAME`` reads, and what varies among them."""

    name: str  # as given: an experiment name or a parent run id
    experiment: str  # the sweep's MLflow experiment (named after its grid file)
    parent: str | None  # the parent run when NAME was one: only that invocation's child runs
    runs: int  # finished child runs read
    varies: dict[str, tuple]  # each of SWEEP_DIMENSIONS: its values in these runs
    pooled: tuple[str, ...]  # other TrainConfig fields that differ between runs: pooled like seeds

    @property
    def label(self) -> str:
        """The folder name of this sweep's figures and report (``report/sweeps/<label>/``)."""
        return self.experiment if self.parent is None else f"{self.experiment}-{self.parent[:8]}"


def resolve_sweep(name: str) -> tuple[str, str | None]:
    """``(experiment, parent run id or None)`` for NAME, an experiment name or a parent run's id."""
    c = load.tracking.client()
    if c.get_experiment_by_name(name) is not None:
        return name, None
    run = None
    if len(name) == 32 and all(ch in "0123456789abcdef" for ch in name):
        from mlflow.exceptions import MlflowException

        try:
            run = c.get_run(name)
        except MlflowException:
            run = None
    if run is None:
        known = sorted(e.name for e in c.search_experiments() if e.name != "Default")
        raise load.MissingRuns(f"no sweep experiment and no run {name!r} in {load.tracking.tracking_uri()} "
                               f"(experiments there: {', '.join(known) or 'none'}); run make sweep GRID={name} first")
    kind = run.data.tags.get("mbstudy.kind", "")
    if kind != "parent":
        raise load.MissingRuns(f"run {name} is not a sweep's parent run (its mbstudy.kind is {kind or 'unset'!r}); "
                               f"give a parent run's id (tag mbstudy.kind=parent) or the sweep's experiment name")
    return c.get_experiment(run.info.experiment_id).name, name


def _pooled(runs: pd.DataFrame) -> tuple[str, ...]:
    from mbstudy.config import TrainConfig

    fields = [f for f in TrainConfig.__dataclass_fields__ if f in runs and f not in SWEEP_DIMENSIONS]
    return tuple(f for f in fields if runs[f].astype(str).nunique() > 1)


def collect_sweep(name: str, progress: bool = True) -> tuple[Context, SweepSource]:
    """The facts of one sweep (``--sweep NAME``): its runs as ``default`` (loss curves, heatmaps,
    B_simple, time) and, when some run reached its target loss, as ``science`` (steps to target,
    at the reduction the loss curves show), in a context that has no other facts. Raises
    ``load.MissingRuns`` when NAME has no runs."""
    experiment, parent = resolve_sweep(name)
    runs = load.load_runs(experiment, hint=f"make sweep GRID={experiment}")
    if parent is not None:
        runs = runs[runs["parent_run_id"] == parent].reset_index(drop=True)
        if runs.empty:
            raise load.MissingRuns(f"parent run {parent} of sweep {experiment!r} has no finished child runs "
                                   f"(a resumed sweep trains only what its earlier invocations left undone); "
                                   f"give the experiment name {experiment!r} to read all of them")
    default = default_facts(runs, load.load_history(runs, experiment, progress=progress), experiment)
    missing: dict[str, str] = {}
    science = None
    if "steps_to_target" in runs and runs["steps_to_target"].notna().any():
        science = science_facts(runs[runs["reduction"] == default.curve_reduction], experiment)
    else:
        missing["science"] = ("no run reached a target loss (no steps_to_target): give the grid a target_loss "
                              "the runs can reach")
    source = SweepSource(name=name, experiment=experiment, parent=parent, runs=len(runs),
                         varies={d: tuple(sorted(set(runs[d]))) if d in runs else () for d in SWEEP_DIMENSIONS},
                         pooled=_pooled(runs))
    ctx = context(preset={"default": default, "science": science, "noise": noise_facts(default)}, missing=missing,
                  only=("default", "science", "noise"), progress=progress)
    return ctx, source


def describe_source(source) -> str:
    """One line per fact about the runs a ``--sweep`` read (for the CLI and the sweep's report)."""
    varied = ", ".join(f"{d} ({len(v)})" for d, v in source.varies.items() if len(v) > 1) or "nothing"
    fixed = ", ".join(f"{d}={v[0]}" for d, v in source.varies.items() if len(v) == 1)
    lines = [f"sweep {source.experiment!r}" + (f", parent run {source.parent}" if source.parent else "")
             + f": {source.runs} finished runs; varies {varied}" + (f"; fixed {fixed}" if fixed else "")]
    if source.pooled:
        lines.append(f"note: the runs also differ in {', '.join(source.pooled)}, which the figures do not tell "
                     "apart: runs that differ only there are pooled like seeds")
    return "\n".join(lines)


def sweep_out(source: SweepSource, out: Path | None = None) -> Path:
    """Where ``--sweep`` writes figures: ``out``, else ``SWEEPS / label / figures``."""
    return out if out is not None else SWEEPS / source.label / "figures"




def sweep_text(ctx: Context, source: SweepSource, drawn: Collection[str], reasons: dict[str, str],
               generated: str) -> str:
    """The Markdown of one sweep's report: its runs, best learning rates, fit, figures and skipped figures."""
    d = ctx.default
    name = source.experiment + (f", parent run {source.parent}" if source.parent else "")
    commits = ", ".join(sorted(set(d.runs["git_commit"]))) if "git_commit" in d.runs else "unknown"
    lines = [f"# Sweep {name}", "",
             f"Generated by `make report SWEEP={source.name}` from the MLflow runs; every number below is "
             f"computed from them ({generated}).", "",
             *[f"- {line}" for line in describe_source(source).splitlines()],
             f"- git commit(s): {commits[:200]}",
             f"- store: `{load.tracking.tracking_uri()}`", ""]
    best = d.best_lr.rename(columns={"score": "final train loss (median)", "n_seeds": "seeds"})
    lines += ["## Best learning rate per group", "",
              "Lowest median final training loss over seeds (a diverged, failed or pruned run counts as +inf); "
              "`stable` is false where every learning rate diverged.",
              "", md_table(best, ".3g"), ""]
    if ctx.science is not None:
        s = ctx.science
        fits = pd.DataFrame([{"optimizer": o, **f} for o, f in s.fits.items()])
        steps = pd.concat([st for st in s.steps_to_target.values() if len(st)], ignore_index=True) \
            if any(len(st) for st in s.steps_to_target.values()) else pd.DataFrame()
        lines += ["## Steps to target", "",
                  f"Reduction `{d.curve_reduction}`; per optimizer and B, each seed's fewest steps over learning "
                  "rates, then the median over seeds (more than half of them must reach the target); the rate is "
                  "the one fastest for the most seeds:", ""]
        lines += [md_table(steps, ".3g") if len(steps) else "No learning rate reached the target.", ""]
        bounds = steps[steps["n_bound"] > 0] if len(steps) and "n_bound" in steps else steps.iloc[:0]
        if len(bounds):
            lines += [f"{len(bounds)} of these (optimizer, B) reached the target at the first evaluation in some seed "
                      "(`n_bound`): their steps are upper bounds, not measurements; they are marked ▽ in the figure "
                      "and left out of the fit. Evaluate more often (`eval_every`) at those batch sizes to measure "
                      "them.", ""]
        if len(fits):
            lines += ["S(B) = S_min (1 + B_crit / B) fitted per optimizer (NaN: fewer than 3 batch sizes):", "",
                      md_table(fits[["optimizer", "S_min", "E_min", "B_crit", "r2", "n"]], ".3g"), ""]
    lines += ["## Figures", ""]
    for fig_name in render.sweep_figures():
        if fig_name in drawn:
            spec = FIGURES[fig_name]
            lines.append(figure_markdown(drawn, fig_name, spec.sweep_caption or spec.caption))
    if reasons:
        lines += ["Not drawn:", ""] + [f"- `{n}`: {why}" for n, why in reasons.items()] + [""]
    return "\n".join(lines)


def build_sweep(name: str, out: Path | None = None, progress: bool = True) -> Path:
    """One sweep's report: its figures into ``out/figures`` and ``out/REPORT.md``
    (``out`` defaults to ``report/sweeps/<label>/``)."""
    t0 = time.perf_counter()
    ctx, source = collect_sweep(name, progress)
    out = out if out is not None else SWEEPS / source.label
    reasons: dict[str, str] = {}
    drawn = render.render(ctx, out / "figures", only=render.sweep_figures(), parent=source.parent,
                           reasons=reasons, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "REPORT.md"
    path.write_text(sweep_text(ctx, source, drawn, reasons, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


