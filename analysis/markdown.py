"""The report's Markdown helpers, shared by every section: tables, figures, intervals and the "not measured" opener.

Pure: values in, Markdown text out.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd


def md_table(df: pd.DataFrame, floatfmt: str = ".2e") -> str:
    """A Markdown table (no extra dependency); a non-finite float prints as ``–``."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def figure_markdown(drawn: Collection[str], name: str, caption: str) -> str:
    """The Markdown that shows figure ``name`` with its caption, or "" when it was not drawn. It links the PNG
    only: the PDF beside it is written by ``make report`` but not committed, so a link to it would be dead in a
    clone."""
    if name not in drawn:
        return ""
    return f"![{caption}](figures/{name}.png)\n\n*{caption}*\n"


def interval(est, lo, hi, fmt=".3g") -> str:
    """``174 [167, 184]``: an estimate and its interval; the estimate alone without one, ``–`` without either."""
    if not np.isfinite(est):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return format(est, fmt)
    return f"{format(est, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"


def finite(*values) -> bool:
    """Whether every value is a finite number (an interval that exists)."""
    return all(np.isfinite(x) for x in values)


def open_interval(est, lo, hi) -> str:
    """:func:`interval` (``.0f``), with an interval a fit leaves open above shown as ``[lo, ∞)``."""
    if np.isfinite(est) and np.isfinite(lo) and hi == np.inf:
        return f"{est:.0f} [{lo:.0f}, ∞)"
    return interval(est, lo, hi, fmt=".0f")


def with_interval(iv, estimate: float, fmt: str = ".0f") -> str:
    """``178 [150, 210]`` from ``(estimate, lo, hi)``; the estimate alone when there is no interval."""
    if iv is None or not np.all(np.isfinite(iv[1:])):
        return format(estimate, fmt)
    return f"{format(estimate, fmt)} [{format(iv[1], fmt)}, {format(iv[2], fmt)}]"


def not_measured(message: str) -> str:
    """The opener of a section whose runs are missing; ``message`` names the command that makes them."""
    return f"Not measured yet: {message}.\n"
