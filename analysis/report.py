"""The write-up: ``report/REPORT.md``, one section per question of the study (:data:`analysis.sections.SECTIONS`),
from the runs alone.

``python -m analysis.report`` (``make report``) computes the facts of every
section once (:func:`analysis.sections.context`), draws the figures from them
(:func:`analysis.render.render`) and writes the report with its figures linked
relative to ``report/``, the sections in the table's order. Every number in the
text is computed from those facts; a section whose runs are missing says which
command produces them. :func:`text` is pure: a context whose figures are drawn
in, Markdown out.

``python -m analysis.report --sweep NAME`` (``make report SWEEP=NAME``)
writes the report of one sweep instead (NAME: its experiment, or the run id
of one of its parent runs): what varied, the best learning rate per group,
the steps-to-target fit when some run reached its target, every figure the
runs support and why each other one was skipped, into
``report/sweeps/<NAME>/REPORT.md`` beside its ``figures/`` (never
``report/REPORT.md`` or ``report/figures/``).

The study's report (``report/REPORT.md``) also rewrites the table "What the
study found" in ``README.md`` from the same facts (:mod:`analysis.findings`,
each section's ``finding``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from analysis import findings, load, render
from analysis.section import Answer, Context
from analysis.sections import PROVIDERS, SECTIONS, context
from analysis.sweep_report import build_sweep

REPORT_DIR = load.tracking.ROOT / "report"


def _provenance(ctx: Context) -> str:
    """Which runs the report was drawn from (every experiment with facts, in the table's order), and which are
    missing."""
    lines, seen = [], set()
    for name in PROVIDERS:
        facts = ctx.get(name)
        runs = getattr(facts, "runs", None)
        experiment = getattr(facts, "experiment", None)
        if runs is None or experiment is None or experiment in seen or not len(runs):
            continue
        seen.add(experiment)
        commits = ", ".join(sorted(set(runs["git_commit"]))) if "git_commit" in runs else "unknown"
        versions = (f"; jax {runs['jax_version'].iloc[0]}, optax {runs['optax_version'].iloc[0]}, mlflow "
                    f"{runs['mlflow_version'].iloc[0]}; device {runs['device'].iloc[0]}"
                    if {"jax_version", "optax_version", "mlflow_version", "device"} <= set(runs) else "")
        lines.append(f"- `{experiment}`: {len(runs)} finished runs; git commit(s) {commits[:200]}{versions}")
    for name, msg in ctx.missing.items():
        lines.append(f"- missing ({name}): {msg}")
    lines.append(f"- store: `{load.tracking.tracking_uri()}`")
    return "\n".join(lines)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens.

    >>> slug("Q5b. Do small batches generalise better?")
    'q5b-do-small-batches-generalise-better'
    """
    kept = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def summary(ctx: Context) -> str:
    """The summary table: every section's question, answer, key number and main caveat."""
    rows = ["| question | answer | key number | main caveat |", "|---|---|---|---|"]
    for s in SECTIONS:
        if s.finding is None or s.text is None:
            continue
        ans = s.finding[1](ctx)
        if ans is None:
            ans = Answer("not measured in this store", "", "see the section")
        elif isinstance(ans, str):
            ans = Answer(ans)
        link = f"[{s.key}](#{slug(s.header)})"
        rows.append(f"| {link} {s.title} | {ans.answer} | {ans.number or '–'} | {ans.caveat or '–'} |")
    return "\n".join(rows)


ABSTRACT_KEYS = ("Q1", "Advice", "Q5", "Q5b", "Q8", "Q9", "LM", "Surge", "Seesaw", "Muon")  # the answers it quotes


def abstract(ctx: Context) -> str:
    """What the study is, then the answers of its main sections, as their findings give them (none typed here)."""
    said = []
    for key in ABSTRACT_KEYS:
        s = next((x for x in SECTIONS if x.key == key), None)
        if s is None or s.finding is None:
            continue
        ans = s.finding[1](ctx)
        if ans is None:
            continue
        a = ans.answer if isinstance(ans, Answer) else ans
        said.append(f"{s.title}{'' if s.title.endswith('?') else ':'} {a[0].upper() + a[1:]}"
                    f"{'' if a.endswith('.') else '.'}")
    head = ("mbstudy answers, by experiment, the questions people ask about mini-batch gradient descent: what the "
            "batch gradient is, what it costs, and how the batch size trades steps for examples. Every number is "
            "computed from logged runs (small MLPs and a CNN on MNIST-1D and a teacher network's data, two CPU cores), "
            "with 95% t-intervals over seeds and verdicts under Holm's rule (Methods).")
    return head + (" " + " ".join(said) if said else " No section has runs in this store yet.")


MAIN_WORDS = 40  # words of evidence a section keeps in the main text beyond its answers, headings and figures


def words(text: str) -> int:
    """Words of Markdown as the report's length test counts them (a figure's image link is not a word)."""
    import re

    return len(re.findall(r"[A-Za-z0-9][\w'’.,%×/−+-]*", re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)))


def split_main(body: str, budget: int = MAIN_WORDS) -> tuple[str, str]:
    """A section's text as (main text, the rest for the appendix): the main text keeps, in order, every answer (the
    first paragraph of the section and of each subsection), heading and figure, and the other paragraphs while they fit in ``budget`` words;
    a paragraph that does not fit, and every one after it in that subsection, goes to the appendix (so no later
    paragraph jumps ahead of an earlier one).

    >>> main, rest = split_main(chr(10).join(["**Yes.**", "", "one two three", "", "four five"]), budget=3)
    >>> main.split(chr(10)), rest
    (['**Yes.**', '', 'one two three', ''], 'four five')
    """
    keep, rest, used, full, first = [], [], 0, False, True
    paras = []
    for para in body.split("\n\n"):  # a figure written at the end of a paragraph is a paragraph of its own
        at = para.find("![")
        paras += [para[:at].rstrip(), para[at:]] if at > 0 else [para]
    for para in paras:
        p = para.strip()
        answer = first and bool(p) and not p.startswith("![")  # a section's or subsection's first paragraph
        always = answer or p.startswith(("#", "![")) or (p.startswith("*") and p.endswith("*")
                                                          and not p.startswith("**"))
        if p and not p.startswith("!["):
            first = p.startswith("#")  # after a heading, the next paragraph is that subsection's answer
        if p.startswith("#"):
            full = False  # a new subsection: its own evidence may follow its answer
        if always or not p:
            keep.append(para)
        elif not full and used + words(p) <= budget:
            keep.append(para)
            used += words(p)
        else:
            full = True
            rest.append(para)
    return "\n\n".join(keep).strip() + "\n", "\n\n".join(rest).strip()


def contents() -> str:
    """The table of contents: the sections, then the appendix."""
    lines = [f"- [{s.header}](#{slug(s.header)})" for s in SECTIONS if s.text is not None]
    return "\n".join([*lines, "- [Appendix: long tables and provenance](#appendix-long-tables-and-provenance)"])


def text(ctx: Context, generated: str) -> str:
    """The report's Markdown from a context whose figures were drawn (``ctx.drawn``) and the generation time: the
    summary first, then the sections (each opening with its answer), then the appendix's long tables."""
    lines = [
        "# What mini-batch backpropagation computes, and what it costs",
        "",
        "Generated by `make report` from the MLflow runs; every number below is computed from them "
        f"({generated}).",
        "",
        "## Abstract",
        "",
        abstract(ctx),
        "",
        "## Summary",
        "",
        summary(ctx),
        "",
        "## Contents",
        "",
        contents(),
        "",
    ]
    further = []
    for s in SECTIONS:
        if s.text is None:
            continue
        main, rest = split_main(s.text(ctx))
        lines += [f"## {s.header}", "", main, ""]
        if rest:
            lines += [f"*Further evidence: [the appendix](#{slug(s.header + ' further evidence')}).*", ""]
            further.append((s.header, rest))
        if limits := (s.limits(ctx) if callable(s.limits) else s.limits):
            lines += [f"**Limits.** {limits}", ""]
    lines += ["## Appendix: long tables and provenance", ""]
    for header, rest in further:
        lines += [f"### {header}: further evidence", "", rest, ""]
    for top in SECTIONS:
        for s in top.walk():
            if s.appendix is not None and (body := s.appendix(ctx)):
                lines += [body, ""]
    lines += ["### Drawn from", "", _provenance(ctx), ""]
    return "\n".join(lines)


def build(default: str = "default", science: str = "science", out: Path = REPORT_DIR, progress: bool = True,
          partial: bool = False) -> Path:
    """Compute the facts once, draw the figures into ``out/figures`` and write ``out/REPORT.md``.

    Raises :class:`analysis.render.IncompleteStore`, before writing anything, when the store lacks what a section
    needs, unless ``partial`` (then the sections say what is missing). The README's findings table is rewritten
    only from a complete study written to ``report/``."""
    t0 = time.perf_counter()
    ctx = context(experiments={"default": default, "science": science}, progress=progress)
    ctx.compute_all()
    if not partial:
        render.check_complete(ctx, "make report")
    render.render(ctx, out / "figures")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "REPORT.md"
    path.write_text(text(ctx, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    readme = load.tracking.ROOT / "README.md"
    if not ctx.missing and out == REPORT_DIR and readme.exists() and findings.update_readme(readme, findings.table(ctx)):
        print(f"updated the findings table of {readme} from the same runs", file=sys.stderr)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", metavar="NAME",
                    help="the report of this one sweep (experiment name, or a parent run id), written to "
                         "report/sweeps/NAME/REPORT.md beside its figures")
    ap.add_argument("--default", default="default")
    ap.add_argument("--science", default="science")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"the report folder (default: {REPORT_DIR}, or with --sweep report/sweeps/NAME)")
    ap.add_argument("--partial", type=Path, metavar="DIR", default=None,
                    help="write the report of whatever the store holds into DIR, saying what is missing (without it, "
                         "a store that lacks part of the study is refused and nothing is written)")
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
            print(build_sweep(a.sweep, a.out))
        except load.MissingRuns as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        print(build(a.default, a.science, a.partial or a.out or REPORT_DIR, partial=a.partial is not None))
    except render.IncompleteStore as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
