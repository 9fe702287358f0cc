"""The README's table "What the study found", generated from the same facts as the report (never typed).

:func:`table` turns a context's facts into a Markdown table, one row per section
that declares a ``finding`` (:data:`analysis.sections.SECTIONS`), each answer
short and with its numbers; :func:`update_readme`
replaces the block between :data:`START` and :data:`END` in ``README.md``.
``make report`` does both after writing the report, so the README states what
the report's runs show.
"""

from __future__ import annotations

from pathlib import Path

from analysis.section import Answer, Context
from analysis.sections import SECTIONS

START = "<!-- findings:start (written by `make report` from the runs; edits here are overwritten) -->"
END = "<!-- findings:end -->"


def table(ctx: Context) -> str:
    """The Markdown table; a question whose runs are missing says so."""
    lines = ["| question | answer, measured |", "|---|---|"]
    for s in SECTIONS:
        if s.finding is None:
            continue
        label, fn = s.finding
        ans = fn(ctx)
        if isinstance(ans, Answer):
            head = ans.answer if not ans.number or ans.answer.endswith((".", ":")) else ans.answer + ":"
            ans = " ".join(p for p in (head, ans.number + "." if ans.number else "") if p)
        lines.append(f"| {label} | {ans if ans else 'not measured in this store: see the report'} |")
    return "\n".join(lines)


def update_readme(readme: Path, text: str) -> bool:
    """Replace the block between START and END in ``readme`` with ``text``; False when the markers are absent."""
    body = readme.read_text()
    if START not in body or END not in body:
        return False
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{text}\n{END}{tail}"
    if new != body:
        tmp = readme.with_suffix(".tmp")
        tmp.write_text(new)
        tmp.replace(readme)
    return True
