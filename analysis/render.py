"""Drawing the figures: every section's :class:`~analysis.section.FigureSpec`, drawn from a context's facts,
saved as PNG and PDF (:func:`formats`) and logged as MLflow artifacts (:func:`render`). ``make figures`` and ``make report``
(:mod:`analysis.figures`, :mod:`analysis.report`) and one sweep's report (:mod:`analysis.sweep_report`) call it.

A figure is a :class:`~analysis.section.FigureSpec` in its section's module (``analysis/sections/``):
``draw(ctx)`` returns a matplotlib Figure drawn with the ``plot_*(ax, table)`` functions of
:mod:`analysis.plots`, or raises :class:`analysis.plots.Skip` with the reason it cannot.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from matplotlib.figure import Figure

from analysis import load, overlap, plots
from analysis.section import Context, FigureSpec
from analysis.sections import FIGURES

plt = plots.plt
OUT = load.tracking.ROOT / "report" / "figures"
FORMATS_VAR = "MBSTUDY_FIGURE_FORMATS"
KNOWN_FORMATS = ("png", "pdf", "svg")


def formats() -> tuple[str, ...]:
    """The files each figure is saved as: ``MBSTUDY_FIGURE_FORMATS`` (comma-separated, default ``png,pdf``; the
    report links the PNG, so it is always among them). The test suite saves PNG only, but where it checks the PDF.

    >>> import os; before = os.environ.get(FORMATS_VAR)
    >>> os.environ[FORMATS_VAR] = "png, svg"; formats()
    ('png', 'svg')
    >>> os.environ[FORMATS_VAR] = "jpeg"; formats()
    Traceback (most recent call last):
    ...
    ValueError: MBSTUDY_FIGURE_FORMATS: 'jpeg' is not a format the figures are saved in; use png (always), pdf or svg, comma-separated (the default: png,pdf)
    >>> os.environ[FORMATS_VAR] = ""; formats()
    ('png', 'pdf')
    >>> _ = os.environ.pop(FORMATS_VAR) if before is None else os.environ.update({FORMATS_VAR: before})
    """
    import os

    given = os.environ.get(FORMATS_VAR, "").strip()
    chosen = [f.strip().lower().lstrip(".") for f in given.split(",") if f.strip()] if given else ["png", "pdf"]
    bad = [f for f in chosen if f not in KNOWN_FORMATS]
    if bad:
        raise ValueError(f"{FORMATS_VAR}: {bad[0]!r} is not a format the figures are saved in; use png (always), pdf "
                         "or svg, comma-separated (the default: png,pdf)")
    return tuple(dict.fromkeys(["png", *chosen]))


class IncompleteStore(RuntimeError):
    """The store lacks runs some section needs: the study's write-up is not replaced by a poorer one."""


def check_complete(ctx: Context, what: str) -> None:
    """Raise :class:`IncompleteStore` (naming every missing experiment and the command that makes it) unless every
    section's facts were found; ``what`` is the command that was refused (``make report``)."""
    if not ctx.missing:
        return
    lines = "\n".join(f"  - {name}: {msg}" for name, msg in ctx.missing.items())
    raise IncompleteStore(
        f"{what}: the store ({load.tracking.tracking_uri()}) lacks what {len(ctx.missing)} part(s) of the study "
        f"need, so nothing was written (the write-up in report/ stays as it is):\n{lines}\n"
        "Make them with `make study-extended` (it resumes: only what is missing is trained), or write what this "
        "store holds elsewhere with `PARTIAL=DIR` (`--partial DIR`), or one sweep's report with `SWEEP=name`.")


def attempt(spec: FigureSpec, ctx: Context) -> Figure | str:
    """The figure, or one line saying why it cannot be drawn from these facts. No files, no MLflow."""
    absent = [n for n in spec.needs if ctx.get(n) is None]
    if absent:
        return ctx.missing.get(absent[0], f"no {absent[0]} facts")
    try:
        fig = spec.draw(ctx)
    except plots.Skip as e:
        return str(e)
    return "nothing to draw" if fig is None else fig


def draw(spec: FigureSpec, ctx: Context) -> Figure | None:
    """The figure, or None when a fact it needs is missing or holds nothing to draw. No files, no MLflow."""
    fig = attempt(spec, ctx)
    return None if isinstance(fig, str) else fig


def skipped(ctx: Context) -> dict[str, str]:
    """Per missing experiment that some figure needs: the MissingRuns message (it names the command)."""
    needed = {n for spec in FIGURES.values() for n in spec.needs}
    return {name: msg for name, msg in ctx.missing.items() if name in needed}


def sweep_figures() -> list[str]:
    """The figures drawn from one sweep's runs alone (``--sweep``), in table order."""
    return [name for name, spec in FIGURES.items() if spec.sweep]


def render(ctx: Context, out: Path = OUT, *, only=None, parent: str | None = None,
           reasons: dict[str, str] | None = None, strict: bool = True) -> dict[str, list[Path]]:
    """Draw every figure of the table that its facts allow; save each as PNG and PDF (:func:`formats`) into ``out``
    and log those
    files on the newest parent run of the figure's experiment (artifact path ``figures``). Returns the files per
    figure drawn, in table order, and records their names in ``ctx.drawn``. A figure whose text overlaps at the
    saved dpi (``analysis.overlap.find``) is saved all the same, with an ``OverlappingText`` warning that names
    the colliding pairs.

    ``only`` limits the figures to those names; ``parent`` logs every figure on that run instead; ``reasons``,
    when given, receives one line per figure of ``only`` (or of the table) that was not drawn. With
    ``strict=False`` a figure that raises is reported in ``reasons`` (with its error) instead of stopping the
    others.
    """
    plots.use_style()
    saved = formats()  # a bad MBSTUDY_FIGURE_FORMATS stops before any figure is drawn
    files: dict[str, list[Path]] = {}
    parents: dict[str, str | None] = {}
    for spec in FIGURES.values():
        if only is not None and spec.name not in only:
            continue
        try:
            fig = attempt(spec, ctx)
        except Exception as e:  # noqa: BLE001 - only with strict=False
            if strict:
                raise
            plt.close("all")
            fig = f"failed: {type(e).__name__}: {e}".splitlines()[0]
        if isinstance(fig, str):
            if reasons is not None:
                reasons[spec.name] = fig
            continue
        pairs = overlap.find(fig)  # at the saved dpi; a warning, not an error: the figure is still saved
        if pairs:
            warnings.warn(f"{spec.name}: overlapping text at {plt.rcParams['savefig.dpi']} dpi:\n"
                          + overlap.describe(pairs), overlap.OverlappingText, stacklevel=2)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{spec.name}.{ext}" for ext in saved]
        for p in paths:
            fig.savefig(p)
        plt.close(fig)
        files[spec.name] = paths
        ctx.drawn.add(spec.name)
        if spec.log_artifact:
            experiment = ctx.get(spec.needs[0]).experiment
            if experiment not in parents:
                parents[experiment] = parent or load.latest_parent(experiment)
            if parents[experiment]:
                for p in paths:
                    load.tracking.client().log_artifact(parents[experiment], str(p), artifact_path="figures")
    return files
