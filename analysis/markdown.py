"""The report's Markdown helpers, shared by every section: tables, figures, intervals and the "not measured" opener.

Pure: values in, Markdown text out.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from analysis.stats import span_text


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
    return span_text(est, lo, hi, fmt)


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
    return span_text(estimate, iv[1], iv[2], fmt)


def not_measured(message: str) -> str:
    """The opener of a section whose runs are missing; ``message`` names the command that makes them."""
    return f"Not measured yet: {message}.\n"


MIN_INTERVAL_SEEDS = 3  # fewer seeds than this: the values are printed, no interval


def seed_summary(summary, fmt: str = ".3g") -> str:
    """A :class:`analysis.stats.Summary` as the report prints it: ``174 [167, 184]`` (a 95% t-interval over seeds),
    a bound (``≥ 1024``), or with fewer than :data:`MIN_INTERVAL_SEEDS` seeds the value alone and "too few seeds"."""
    if summary.bound or not np.isfinite(summary.value):
        return summary.text(fmt)
    if summary.n < MIN_INTERVAL_SEEDS:
        return f"{format(summary.value, fmt)} (too few seeds for an interval)"
    return summary.text(fmt)


def t_text(est, lo, hi, n: int, fmt: str = ".2f") -> str:
    """An estimate with its 95% t-interval over ``n`` seeds; with fewer than :data:`MIN_INTERVAL_SEEDS` the estimate
    alone and "too few seeds"."""
    if not np.isfinite(est):
        return "–"
    if n < MIN_INTERVAL_SEEDS or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{format(est, fmt)} (too few seeds for an interval)" if n < MIN_INTERVAL_SEEDS else format(est, fmt)
    return span_text(est, lo, hi, fmt)


def verdict_of(estimate: float, p_holm: float, above: str, below: str, neutral: float = 1.0) -> str:
    """A comparison's verdict under Holm's rule: ``above``/``below`` (the estimate's side of ``neutral``) when the
    adjusted p-value is below 0.05, else "not resolved"."""
    if not (np.isfinite(p_holm) and p_holm < 0.05 and np.isfinite(estimate)):
        return "not resolved"
    return above if estimate > neutral else below
