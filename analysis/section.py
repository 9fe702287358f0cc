"""What a section of the report is, and the context its facts, figures and text are computed in.

A **section** (:class:`Section`) is one question or experiment of the study: one module (or a small package)
under ``analysis/sections/`` that holds

- its **facts**: one or more :class:`Provider`, each a typed value (a frozen dataclass) computed from the store's
  runs with the pure reductions of :mod:`analysis.reduce`, under a name other sections may read
  (``ctx.<name>``); a provider raises :class:`analysis.load.MissingRuns` (naming the command that makes the
  runs) when the store lacks them, and the context records that instead of failing;
- its **figures**: :class:`FigureSpec`, each a function ``draw(ctx) -> matplotlib Figure`` built from
  ``plot(ax, table)`` functions, with the names of the facts it needs and its caption;
- its **text**: ``text(ctx) -> Markdown``, answer first, every number computed from the facts;
- its **limits** (what it did not measure) and its row of the README's findings table.

The report is the ordered table of sections in :mod:`analysis.sections`; ``make report``, ``make figures``,
``make report SWEEP=name`` and the README's findings table all read that table. Adding a section is one module
and one line there; adding a figure is one :class:`FigureSpec` in its section.

A :class:`Context` computes each provider's facts at most once, on first use, in any order (a provider may read
another's: ``ctx.workloads`` inside the ``nqm`` provider), and remembers which figures were drawn so that the
text can show them (:meth:`Context.figure`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from analysis.load import MissingRuns
from analysis.markdown import figure_markdown, not_measured


@dataclass(frozen=True)
class Provider:
    """Facts under ``name``: ``compute(ctx)`` returns them (a frozen dataclass with an ``experiment`` attribute,
    the MLflow experiment its runs come from) or None when there is nothing to say; it raises
    :class:`~analysis.load.MissingRuns` when the store lacks the runs."""

    name: str
    compute: Callable[[Context], Any]


@dataclass(frozen=True)
class FigureSpec:
    """One figure: ``draw(ctx)`` returns a matplotlib Figure (or raises :class:`analysis.plots.Skip` with the
    reason it cannot be drawn). It is drawn only when every provider in ``needs`` has facts; the first one names
    the experiment whose newest parent run gets it as an MLflow artifact (``log_artifact=False`` skips that).
    ``sweep``: it can be drawn from one sweep's runs alone (``make figures SWEEP=name``), with ``sweep_caption``
    (default: ``caption``) in that sweep's report."""

    name: str
    draw: Callable[[Context], Any]
    needs: tuple[str, ...]
    caption: str
    log_artifact: bool = True
    sweep: bool = False
    sweep_caption: str | None = None


@dataclass(frozen=True)
class Answer:
    """A question's row of the report's summary table (and of the README's findings): the answer in a sentence,
    the key number with its interval (or its bound), and the main caveat."""

    answer: str
    number: str = ""
    caveat: str = ""


@dataclass(frozen=True)
class Section:
    """A question or an experiment of the report (see the module docstring).

    ``key`` is its label in the report and the findings table (``Q4``); ``title`` its heading's question;
    ``text(ctx)`` its body, which opens with the answer; ``appendix(ctx)`` its long tables, printed in the report's
    appendix; ``parts`` the experiments it is made of (each a Section without a heading whose providers and
    figures it includes); ``finding`` (label, fn) its row of the summary table and the README's findings, ``fn(ctx)``
    returning an :class:`Answer` (or, briefly, a string: the answer alone) or None when not measured.
    """

    key: str
    title: str = ""
    text: Callable[[Context], str] | None = None
    provides: tuple[Provider, ...] = ()
    figures: tuple[FigureSpec, ...] = ()
    parts: tuple[Section, ...] = ()
    limits: str | None = None
    finding: tuple[str, Callable[[Context], Answer | str | None]] | None = None
    heading: str | None = None  # the report's heading; default "<key>. <title>"
    appendix: Callable[[Context], str] | None = None

    @property
    def header(self) -> str:
        """The section's heading in the report."""
        return self.heading or f"{self.key}. {self.title}"

    def walk(self) -> Iterable[Section]:
        """This section, then its parts (depth first)."""
        yield self
        for p in self.parts:
            yield from p.walk()


def providers_of(sections: Iterable[Section]) -> dict[str, Provider]:
    """Every provider of the sections and their parts, by name (a name given twice is an error)."""
    out: dict[str, Provider] = {}
    for top in sections:
        for s in top.walk():
            for p in s.provides:
                if p.name in out:
                    raise ValueError(f"facts {p.name!r} are provided twice (section {s.key!r}); give one a new name")
                out[p.name] = p
    return out


def figures_of(sections: Iterable[Section]) -> dict[str, FigureSpec]:
    """Every figure of the sections and their parts, in table order (a name given twice is an error)."""
    out: dict[str, FigureSpec] = {}
    for top in sections:
        for s in top.walk():
            for f in s.figures:
                if f.name in out:
                    raise ValueError(f"figure {f.name!r} is registered twice (section {s.key!r}); give one a new name")
                out[f.name] = f
    return out


class Context:
    """The facts of a set of sections, computed lazily and once, and the names of the figures drawn.

    ``ctx.<provider name>`` (or :meth:`get`) is that provider's facts, or None when the store lacks their runs
    (the reason, naming the command to run, is in :attr:`missing`). ``experiments`` renames the sweeps a provider
    reads by role (``{"default": "default", "science": "science"}``, the CLIs' ``--default``/``--science``).
    ``preset``: facts given instead of computed (one sweep's report); with ``only``, every provider not named
    there is None without a message.
    """

    def __init__(self, providers: Mapping[str, Provider], figures: Mapping[str, FigureSpec] | None = None, *,
                 experiments: Mapping[str, str] | None = None, progress: bool = True,
                 preset: Mapping[str, Any] | None = None, missing: Mapping[str, str] | None = None,
                 only: Iterable[str] | None = None):
        self._providers = dict(providers)
        self._figures = dict(figures or {})
        self.experiments = {"default": "default", "science": "science", **(experiments or {})}
        self.progress = progress
        self._values: dict[str, Any] = dict(preset or {})
        self.missing: dict[str, str] = dict(missing or {})
        self._only = None if only is None else set(only)
        self._busy: set[str] = set()
        self.drawn: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.__dict__.get("_providers", {}):
            raise AttributeError(name)
        return self.get(name)

    def get(self, name: str) -> Any:
        """The facts of provider ``name`` (computed on first use), or None when they are missing."""
        if name in self._values:
            return self._values[name]
        if name not in self._providers:
            raise KeyError(f"no provider of facts {name!r}; known: {sorted(self._providers)}")
        if self._only is not None and name not in self._only:
            return None
        if name in self._busy:
            raise RuntimeError(f"facts {name!r} depend on themselves: {sorted(self._busy)}")
        self._busy.add(name)
        try:
            value = self._providers[name].compute(self)
        except MissingRuns as e:
            value = None
            self.missing[name] = str(e)
        finally:
            self._busy.discard(name)
        self._values[name] = value
        return value

    def compute_all(self) -> None:
        """Compute every provider's facts (in registration order), so that :attr:`missing` is complete."""
        for name in self._providers:
            self.get(name)

    def not_measured(self, name: str, fallback: str) -> str:
        """The opener of a text whose facts ``name`` are missing: the recorded reason, else ``fallback``."""
        return not_measured(self.missing.get(name, fallback))

    def figure(self, name: str) -> str:
        """The Markdown that shows figure ``name`` with its caption, or "" when it was not drawn."""
        return figure_markdown(self.drawn, name, self._figures[name].caption)
