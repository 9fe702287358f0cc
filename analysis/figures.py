"""The figures of the write-up: every section's :class:`~analysis.section.FigureSpec`, drawn, saved and logged.

``python -m analysis.figures`` (``make figures``) computes the facts of every
experiment the store holds (:func:`analysis.sections.context`), draws every
figure whose facts exist into ``report/figures/`` as PNG and PDF, logs each as
an artifact on its sweep's newest parent run, and names the command to run for
each figure it could not draw. Titles state the measured takeaway; every
number in them is computed from the runs.

``python -m analysis.figures --sweep NAME`` (``make figures SWEEP=NAME``)
draws the figures of one sweep instead (:mod:`analysis.sweep_report`): NAME is
a sweep's experiment (its grid's name) or the run id of one of its parent runs
(then only that invocation's child runs). Every figure a section marks as
drawable from one sweep (loss curves, heatmaps, B_simple, loss against time,
steps to target and best lr when some run reached its target) is drawn from
that sweep's runs into ``report/sweeps/<NAME>/figures/``
(``<experiment>-<first 8 of the run id>`` for a parent run), never into
``report/figures/``; each figure the runs cannot support is skipped with its
reason.

The drawing itself is :func:`analysis.render.render`; a figure is a
:class:`~analysis.section.FigureSpec` in its section's module
(``analysis/sections/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import load, render, sweep_report
from analysis.sections import context


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", metavar="NAME",
                    help="draw the figures of this one sweep (experiment name, or a parent run id) into "
                         "report/sweeps/NAME/figures/ instead of the study's")
    ap.add_argument("--default", default="default", help="the main sweep (default: default)")
    ap.add_argument("--science", default="science", help="the science sweep (default: science)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"the folder for the files (default: {render.OUT}, or with --sweep report/sweeps/NAME/figures)")
    ap.add_argument("--partial", type=Path, metavar="DIR", default=None,
                    help="draw whatever the store holds into DIR/figures (without it, a store that lacks part of "
                         "the study is refused and nothing is drawn)")
    a = ap.parse_args(argv)
    if a.partial is not None and (a.out is not None or a.sweep is not None):
        ap.error("--partial DIR names the folder itself: give it without --out or --sweep")
    try:
        render.formats()  # a bad MBSTUDY_FIGURE_FORMATS is said before the store is read
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.sweep is not None:
        try:
            ctx, source = sweep_report.collect_sweep(a.sweep)
        except load.MissingRuns as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(sweep_report.describe_source(source), file=sys.stderr)
        reasons: dict[str, str] = {}
        drawn = render.render(ctx, sweep_report.sweep_out(source, a.out), only=render.sweep_figures(), parent=source.parent,
                       reasons=reasons, strict=False)
        for name, paths in drawn.items():
            print(f"drew {name}: {', '.join(str(p) for p in paths)}")
        for name, why in reasons.items():
            print(f"skipped {name}: {why}", file=sys.stderr)
        return 0
    ctx = context(experiments={"default": a.default, "science": a.science})
    ctx.compute_all()
    if a.partial is None:
        try:
            render.check_complete(ctx, "make figures")
        except render.IncompleteStore as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    for name, paths in render.render(ctx, a.partial / "figures" if a.partial else a.out or render.OUT).items():
        print(f"drew {name}: {', '.join(str(p) for p in paths)}")
    for name, msg in render.skipped(ctx).items():
        print(f"skipped {name}: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
