"""Overlapping text in a figure: which pairs of text elements collide at the size and dpi it is saved at.

``find(fig)`` draws the figure at ``savefig.dpi`` (the house style's 160) and
returns every pair of visible, non-empty text elements whose bounding boxes
(``get_window_extent``) intersect by more than ``tol`` pixels in both
directions: the suptitle and figure texts, each axes' titles (left, centre,
right), axis labels, major and minor tick labels inside the view (tick
labels of the same axis count too), legend texts (of axes and of the
figure) and texts and annotations drawn on the axes. ``describe`` renders
the pairs as one line each. ``analysis.figures.render`` runs ``find`` on
every figure it saves and warns (``OverlappingText``) about any pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.text import Text


class OverlappingText(UserWarning):
    """A saved figure has text elements that overlap (``analysis.overlap.find``)."""


@dataclass(frozen=True)
class Element:
    where: str  # e.g. "axes 2 title", "axes 1 x tick label", "legend"
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels at the check's dpi


def _shown(t: Text | None) -> bool:
    return t is not None and t.get_visible() and bool(t.get_text().strip())


def _tick_labels(axis) -> list[Text]:
    """The tick labels matplotlib draws: ticks inside the view interval, both sides, major and minor."""
    try:
        ticks = axis._update_ticks()  # the ticks that are drawn (inside the view); private but long-lived
    except AttributeError:  # pragma: no cover - a future matplotlib
        ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return [lab for tick in ticks for lab in (tick.label1, tick.label2)]


def elements(fig: Figure) -> list[Element]:
    """Every visible, non-empty text element of ``fig`` with its box (the figure must have been drawn)."""
    renderer = fig.canvas.get_renderer()
    found: list[tuple[str, Text]] = []
    if fig._suptitle is not None:
        found.append(("suptitle", fig._suptitle))
    for lab in (fig._supxlabel, fig._supylabel):
        if lab is not None:
            found.append(("figure label", lab))
    found += [("figure text", t) for t in fig.texts]
    for leg in fig.legends:
        found += [("figure legend", t) for t in leg.get_texts()]
        found.append(("figure legend title", leg.get_title()))
    for i, ax in enumerate(fig.axes, start=1):
        if not ax.get_visible():
            continue
        name = f"axes {i}"
        found += [(f"{name} title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        found += [(f"{name} x label", ax.xaxis.label), (f"{name} y label", ax.yaxis.label)]
        if ax.xaxis.get_visible():
            found += [(f"{name} x tick label", t) for t in _tick_labels(ax.xaxis)]
        if ax.yaxis.get_visible():
            found += [(f"{name} y tick label", t) for t in _tick_labels(ax.yaxis)]
        found += [(f"{name} text", t) for t in ax.texts]
        leg = ax.get_legend()
        if leg is not None and leg.get_visible():
            found += [(f"{name} legend", t) for t in leg.get_texts()]
            found.append((f"{name} legend title", leg.get_title()))
    out, seen = [], set()
    for where, t in found:
        if not _shown(t) or id(t) in seen:  # the suptitle is also one of fig.texts
            continue
        seen.add(id(t))
        bb = t.get_window_extent(renderer)
        out.append(Element(where, t.get_text().replace("\n", " / "), (bb.x0, bb.y0, bb.x1, bb.y1)))
    return out


def find(fig: Figure, dpi: float | None = None, tol: float = 1.0) -> list[tuple[Element, Element]]:
    """Pairs of text elements whose boxes overlap by more than ``tol`` pixels both ways, drawn at ``dpi``
    (default: ``savefig.dpi``, the resolution the PNGs are written at). The figure is left as it was."""
    dpi = dpi or mpl.rcParams["savefig.dpi"]
    if dpi == "figure":
        dpi = fig.dpi
    old = fig.dpi
    fig.set_dpi(float(dpi))
    try:
        fig.canvas.draw()
        els = elements(fig)
    finally:
        fig.set_dpi(old)
    if len(els) < 2:
        return []
    b = np.array([e.box for e in els])
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    hit = np.triu((w > tol) & (h > tol), k=1)
    return [(els[i], els[j]) for i, j in zip(*np.nonzero(hit))]


def describe(pairs: list[tuple[Element, Element]], limit: int = 8) -> str:
    """One line per overlapping pair (at most ``limit``, then a count)."""
    lines = [f"{a.where} {a.text[:60]!r} overlaps {b.where} {b.text[:60]!r}" for a, b in pairs[:limit]]
    if len(pairs) > limit:
        lines.append(f"... and {len(pairs) - limit} more")
    return "\n".join(lines)
