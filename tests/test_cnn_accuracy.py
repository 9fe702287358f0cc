"""The CNN's gap to the MNIST-1D paper's 94% (analysis/sections/cnn_accuracy.py): its facts from synthetic runs of
the shipped cnn_ablation grid's arms, its verdict rule, and its text, answer first and naming arms by their labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import order, stats
from analysis.sections import SECTIONS, context
from analysis.sections import cnn_accuracy as sec

GRID = order.grid(sec.EXPERIMENT)
ARMS = list(dict.fromkeys(lab[1] for lab in GRID.labels.values()))
SETTING = {GRID.label_of(c)[1]: (c.init, c.data_order) for c in GRID.configs}
STEPS = (0, 3000, 6000, 8000)


def _store(means: dict[str, float], seeds: int = 5, spread: float = 0.004):
    """Runs of every arm in ``means`` (final accuracy = the mean + a fixed pattern over seeds), and their test/acc
    histories rising to it."""
    offsets = np.linspace(-spread, spread, seeds) if seeds > 1 else np.zeros(1)
    runs, hist = [], []
    for arm, m in means.items():
        init, data_order = SETTING[arm]
        for s, off in enumerate(offsets):
            rid = f"{arm}-{s}"
            runs.append({"run_id": rid, "arm": arm, "seed": s, "init": init, "data_order": data_order,
                         "final/test/acc": m + off, "best/test/acc": m + off + 0.002, "optimizer": "adam",
                         "learning_rate": 0.01, "batch_size": 100, "steps": 8000, "dataset": "mnist1d",
                         "cfg_hash": rid})
            hist += [{"run_id": rid, "metric": "test/acc", "step": t, "value": (m + off) * t / 8000} for t in STEPS]
    return pd.DataFrame(runs), pd.DataFrame(hist)


MEANS = dict(zip(ARMS, (0.920, 0.935, 0.934, 0.942)))  # the grid's order: study's, sequential, PyTorch's, paper's


def _facts(means=MEANS, seeds=5):
    runs, hist = _store(means, seeds)
    return sec.cnn_accuracy_facts(runs, hist, meta=dict(GRID.meta))


def test_the_grid_names_the_two_arms_the_text_leads_with():
    assert GRID.meta["paper_code_arm"] in ARMS and GRID.meta["study_arm"] in ARMS
    assert SETTING[GRID.meta["study_arm"]] == ("he_normal", "shuffle"), "the study's run: every default"
    assert SETTING[GRID.meta["paper_code_arm"]] == ("torch_default", "sequential"), "the paper's code"
    assert len(GRID.configs) == 20 and {c.seed for c in GRID.configs} == set(range(5))


def test_facts_per_arm_and_contrasts_between_arms_that_differ_in_one_thing():
    f = _facts()
    assert list(f.arms["arm"]) == ARMS and f.factors == ("init", "data_order")
    assert (f.study_arm, f.paper_arm) == (GRID.meta["study_arm"], GRID.meta["paper_code_arm"])
    row = f.arms.set_index("arm").loc[f.paper_arm]
    m, lo, hi, _ = stats.mean_interval(f.runs.loc[f.runs["arm"] == f.paper_arm, "final/test/acc"])
    assert (row["final_mean"], row["final_lo"], row["final_hi"]) == pytest.approx((m, lo, hi))
    assert row["at_code_steps"] == pytest.approx(0.942 * 6000 / 8000), "the arm's accuracy where the notebooks stopped"
    k = f.contrasts
    assert len(k) == 5 and set(k["factor"]) == {"init", "data_order", "all"}
    assert all(b in (f.study_arm,) or SETTING[b][0] == "he_normal" or SETTING[b][1] == "shuffle" for b in k["baseline"])
    both = k[k["factor"] == "all"].iloc[0]
    assert (both["arm"], both["baseline"]) == (f.paper_arm, f.study_arm)
    assert both["diff"] == pytest.approx(0.022)
    np.testing.assert_allclose(k["p_holm"], stats.holm(k["p"]))
    assert k["resolved"].all(), "a 1.5-point gap against a ±0.4-point spread"
    assert sec.reached(f) is True


@pytest.mark.parametrize("paper_mean, expected", [(0.942, True), (0.9345, True), (0.925, False), (0.96, False)])
def test_the_papers_number_is_reached_within_its_rounding(paper_mean, expected):
    """94% rounded to a whole percent: reached when the arm's 95% interval meets [93.5%, 94.5%]."""
    assert sec.reached(_facts({**MEANS, GRID.meta["paper_code_arm"]: paper_mean})) is expected


def test_the_text_answers_first_names_arms_by_label_and_counts_from_the_facts():
    f = _facts()
    ctx = context(preset={"cnn_accuracy": f, "published": None})
    text = sec.text(ctx)
    first = text.split("\n")[0]
    assert first.startswith("**With the paper's code's settings") and "reaches the paper's 94%" in first
    assert f"«{f.paper_arm}»" in first and f"«{f.study_arm}»" in first and "94.2%" in first
    assert "the initialisation and the order of the batches" in first
    table = sec.appendix(ctx)  # the arms and contrasts: the appendix's long tables
    for arm in ARMS:
        assert f"| {arm} |" in table
    assert "Holm's rule over the 5 contrasts" in table and "the 5 contrasts between arms" in text
    assert "92.5%" in text and "92.3%" in text
    assert "The study keeps He-normal as its default" in text
    assert sec.finding(ctx).startswith(f"«{f.paper_arm}» 0.942 [")


def test_one_seed_of_two_arms_says_so_instead_of_a_verdict():
    """The quick study's version: one seed of the two PyTorch-initialised arms."""
    quick = {a: MEANS[a] for a in ARMS if SETTING[a][0] == "torch_default"}
    f = _facts(quick, seeds=1)
    assert sec.reached(f) is None and f.factors == ("init", "data_order"), "the grid's factors, not the runs'"
    assert len(f.contrasts) == 1 and not f.contrasts["resolved"].any()
    ctx = context(preset={"cnn_accuracy": f, "published": None})
    text = sec.text(ctx)
    assert "too few for a verdict" in text.split("\n")[0] and "nan" not in text
    assert "one seed against the paper's 94%" in sec.finding(ctx)


def test_the_section_follows_the_sanity_check_in_the_table():
    keys = [s.key for s in SECTIONS]
    assert keys.index("cnn_accuracy") == keys.index("sanity") + 1
