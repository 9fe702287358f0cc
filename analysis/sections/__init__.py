"""The report's sections, in order: the one table that ``make report``, ``make figures``, ``make report SWEEP=``
and the README's findings table read.

Each entry is a :class:`analysis.section.Section` (a question or an experiment: its facts, figures and text,
:mod:`analysis.section`); a section made of experiments lists them as its ``parts``. Adding a section is one module
here and one line in :data:`SECTIONS`.
"""

from __future__ import annotations

from analysis.section import Context, figures_of, providers_of
from analysis.sections import (
    advice,
    accumulate_or_step,
    chain_rule,
    cnn_accuracy,
    cost,
    critical_batch,
    generalisation,
    identity,
    language_model,
    main_sweep,
    methods,
    muon,
    noise,
    powers_of_two,
    published,
    seesaw,
    steps_to_target,
    sum_or_mean,
    surge,
)

SECTIONS = (
    main_sweep.SECTION,  # the main sweep's facts (no text of its own): read by Q4, Q5 and Q7
    advice.SECTION,  # what batch size should I use? (computed from the sections below)
    identity.SECTION,  # Q1
    chain_rule.SECTION,  # Q2
    cost.SECTION,  # Q3
    sum_or_mean.SECTION,  # Q4
    steps_to_target.SECTION,  # Q5, with the workloads part
    generalisation.SECTION,  # Q5b
    powers_of_two.SECTION,  # Q6
    noise.SECTION,  # Q7
    accumulate_or_step.SECTION,  # Q8: accumulation, beta2, sde
    critical_batch.SECTION,  # Q9: branching, warmup, scaling, nqm
    language_model.SECTION,  # the transformer on text: Q5's steps against B
    surge.SECTION,  # the surge (Li et al. 2024): Adam's best rate against B, from the science sweep
    seesaw.SECTION,  # Seesaw (Meterez et al. 2025): a batch-size increase instead of a rate decay
    muon.SECTION,  # Muon (Essential AI 2025): its critical batch size against Adam's
    methods.SECTION,  # the methods: intervals and their coverage, targets against a linear model, seeds, grids
    published.SECTION,  # the sanity check
    cnn_accuracy.SECTION,  # the sanity check, part 2: what closes the CNN's gap to the paper's 94%
)

PROVIDERS = providers_of(SECTIONS)
FIGURES = figures_of(SECTIONS)


def context(**kwargs) -> Context:
    """A context over every section's facts and figures (keyword arguments: :class:`analysis.section.Context`'s)."""
    return Context(PROVIDERS, FIGURES, **kwargs)
