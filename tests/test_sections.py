"""The report as a table of sections: a section, and a figure in it, added from a test alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from analysis import findings, plots, render, report
from analysis import sections as sections_mod
from analysis.section import Context, FigureSpec, Provider, Section, figures_of, providers_of


@dataclass(frozen=True)
class CountFacts:
    experiment: str
    n: int


def _count_figure(ctx: Context):
    fig, ax = plots.plt.subplots(figsize=(3, 2))
    ax.bar(["runs"], [ctx.count.n])
    ax.set_title(f"{ctx.count.n} runs")
    return fig


COUNT = Section(
    "Q10", "How many runs does the toy experiment hold?",
    text=lambda ctx: (ctx.not_measured("count", "make toy") if ctx.count is None
                      else f"**{ctx.count.n} runs.**\n\n{ctx.figure('z_count')}"),
    provides=(Provider("count", lambda ctx: CountFacts("toy", 7)),),
    figures=(FigureSpec("z_count", _count_figure, ("count",), "The toy's runs.", log_artifact=False),),
    limits="A toy.",
    finding=("Q10 how many runs?", lambda ctx: None if ctx.count is None else f"{ctx.count.n} runs."),
)


@pytest.fixture
def with_count(monkeypatch):
    """The table with the toy section appended, as one line in analysis/sections/__init__.py would add it."""
    table = (*sections_mod.SECTIONS, COUNT)
    monkeypatch.setattr(sections_mod, "SECTIONS", table)
    monkeypatch.setattr(sections_mod, "PROVIDERS", providers_of(table))
    monkeypatch.setattr(sections_mod, "FIGURES", figures_of(table))
    for module in (report, findings):
        monkeypatch.setattr(module, "SECTIONS", table)
    monkeypatch.setattr(render, "FIGURES", figures_of(table))
    return table


def test_a_section_added_to_the_table_is_drawn_written_and_in_the_findings(with_count, tmp_path):
    ctx = sections_mod.context(only=("count",))
    files = render.render(ctx, tmp_path)
    assert set(files) == {"z_count"} and (tmp_path / "z_count.png").exists()
    text = report.text(ctx, "now")
    assert "## Q10. How many runs does the toy experiment hold?" in text
    assert "**7 runs.**" in text and "](figures/z_count.png)" in text and "**Limits.** A toy." in text
    assert "| Q10 how many runs? | 7 runs. |" in findings.table(ctx)


def test_a_section_whose_facts_are_missing_says_which_command_makes_them(with_count):
    from analysis.load import MissingRuns

    def missing(ctx):
        raise MissingRuns("no experiment 'toy'; run make toy first")

    ctx = Context({"count": Provider("count", missing)}, figures_of((COUNT,)))
    assert ctx.count is None and "make toy" in ctx.missing["count"]
    assert COUNT.text(ctx) == "Not measured yet: no experiment 'toy'; run make toy first.\n"


def test_a_provider_that_reads_itself_is_an_error_not_a_hang():
    loop = Provider("loop", lambda ctx: ctx.loop)
    with pytest.raises(RuntimeError, match="depend on themselves"):
        Context({"loop": loop}).get("loop")


def test_names_are_given_once():
    twice = Section("x", provides=(Provider("default", lambda ctx: None),))
    with pytest.raises(ValueError, match="provided twice"):
        providers_of((*sections_mod.SECTIONS, twice))
