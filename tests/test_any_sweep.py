"""Figures of any sweep (``--sweep NAME``) and the overlapping-text check on every registered figure."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import facts as facts_mod
from analysis import figures, load, overlap, plots

# the study's grids (experiments/grids/default.toml, science.toml) and the benchmark's three networks
BATCHES = [1, 4, 16, 64, 256, 1024]
LRS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
NETS = {"128-64-10": 8_906, "40-100-100-10": 15_210, "784-512-512-10": 669_706}


def synthetic_runs(optimizers=("sgd", "momentum", "adam"), reductions=("mean", "sum"), batches=BATCHES,
                   lrs=LRS, seeds=(0, 1, 2), steps=2000, every=100, target=True, b_simple=True, time=True):
    """A runs table and a history table shaped like ``load.load_runs`` / ``load.load_history``'s."""
    rng = np.random.default_rng(0)
    runs, hist = [], []
    for opt in optimizers:
        for red in reductions:
            for b in batches:
                for lr in lrs:
                    for seed in seeds:
                        rid = f"{opt}-{red}-{b}-{lr:g}-{seed}"
                        best = min(0.01 * b, 0.3) / (b if red == "sum" and opt != "adam" else 1)
                        off = abs(math.log10(lr) - math.log10(best))
                        diverged = off > 2.5 and lr > best
                        rate = 1.0 / (1 + off) * (1 + 0.05 * rng.standard_normal())
                        s_target = 300 * (1 + 120 / b) * (1 + off)
                        row = {"run_id": rid, "end_time": 1, "parent_run_id": "p", "optimizer": opt, "reduction": red,
                               "batch_size": b, "learning_rate": lr, "seed": seed, "steps": steps,
                               "outcome": "diverged" if diverged else "completed", "git_commit": "abc",
                               "jax_version": "0", "optax_version": "0", "mlflow_version": "0", "device": "cpu:cpu",
                               "final/train/loss": 2.3 * math.exp(-rate * 3) if not diverged else np.nan}
                        if target and not diverged and s_target < steps:
                            row["steps_to_target"] = float(round(s_target))
                        runs.append(row)
                        for st in range(0, steps + 1, every):
                            loss = 2.3 * math.exp(-rate * 3 * st / steps)
                            hist.append((rid, "train/loss", st, loss))
                            if b_simple:
                                hist.append((rid, "grad/b_simple", st, 20 * (1 + st / 50)))
                            if time:
                                hist.append((rid, "time/train_s", st, st * 1e-3 * (1 + b / 64)))
    return pd.DataFrame(runs), pd.DataFrame(hist, columns=["run_id", "metric", "step", "value"])


def synthetic_side_experiments() -> dict:
    """``equivalence``, ``reduction`` and ``bench`` facts with the columns analysis/ reads."""
    red_runs, red_hist = [], []
    for comp in ("sgd", "momentum", "adam_eps_scaled", "adam_same_eps"):
        for b in (16, 100, 256):
            rid = f"{comp}-{b}"
            red_runs.append({"run_id": rid, "comparison": comp, "batch_size": str(b), "steps": "2000",
                             "final/dist_pair": 0.0 if b != 100 else 3e-7, "final/dist_control": 2e-6,
                             "git_commit": "abc"})
            for st in (0, 1, 10, 100, 1000, 2000):
                red_hist += [(rid, "dist/pair", st, 1e-12 * (1 + st) ** 2), (rid, "dist/control", st, 1e-6)]
    reduction = facts_mod.reduction_facts(pd.DataFrame(red_runs),
                                          pd.DataFrame(red_hist, columns=["run_id", "metric", "step", "value"]))
    rows = []
    for net, p in NETS.items():
        for b in (1, 8, 32, 128, 512):
            rows.append({"bench_session": "s", "end_time": 1, "kind": "per_example", "net": net, "P": str(p),
                         "B": str(b), "device": "cpu:cpu", "mode": "quick", "cpu": "x86", "git_commit": "abc",
                         "ratio/vmap_to_batch": 1 + b / 4, "ratio/fast_to_batch": 1 + b / 100,
                         "ratio/norms_to_batch": 0.8, "ratio/loop_to_batch": b / 2 + 1, "ratio/torch_vmap_to_batch": 10.0,
                         "ratio/floor_to_batch": 0.3 + b / 200, "ratio/fast_to_floor": 1.2,
                         "ratio/outer_to_floor": 1.1, "ratio/fused_mean_vmap_to_batch": 1.1})
    for k in range(3, 11):
        rows.append({"bench_session": "s", "end_time": 1, "kind": "pow2", "k": str(k), "device": "cpu:cpu",
                     "mode": "quick", "cpu": "x86", "git_commit": "abc", "us/pow2_minus_1": 98.0 + k,
                     "us/pow2": 100.0 + k, "us/pow2_plus_1": 104.0 + k})
    bench = facts_mod.bench_facts(pd.DataFrame(rows))
    eq = pd.DataFrame([{"setting": s, "dtype": d, "err/per_sample_mean_vs_batch": 1e-7, "git_commit": "abc",
                        "err/accumulated_equal_weights_mistake": 0.3, "err/single_output_vs_true": 0.9,
                        "err/true_vs_finite_difference": 1e-9, "err/b_simple_vs_direct": 1e-12}
                       for s in ("a", "b", "c") for d in ("float32", "float64")])
    return {"reduction": reduction, "bench": bench, "equivalence": facts_mod.EquivalenceFacts("equivalence", eq)}


@functools.cache
def study_facts() -> facts_mod.Facts:
    """Every experiment of the study, synthetic, at the study's grid sizes."""
    runs, hist = synthetic_runs()
    default = facts_mod.default_facts(runs, hist, "default")
    science = facts_mod.science_facts(runs[runs["reduction"] == "mean"], "science")
    return facts_mod.Facts(default=default, science=science, noise=facts_mod.noise_facts(default),
                           **synthetic_side_experiments())


# ------------------------------------------------------------ the overlap check


def test_overlap_check_finds_overlapping_text_and_passes_a_clean_figure():
    plots.use_style()
    bad, axes = plots.plt.subplots(1, 2, figsize=(4, 2))
    axes[0].set_title("a long title that runs into the neighbouring panel's title")
    axes[1].set_title("the neighbour")
    axes[0].set_xticks([1, 1.01, 1.02], ["1.000", "1.010", "1.020"])  # tick labels of one axis that collide
    pairs = overlap.find(bad)
    wheres = {(a.where, b.where) for a, b in pairs}
    assert ("axes 1 title", "axes 2 title") in wheres, overlap.describe(pairs)
    assert ("axes 1 x tick label", "axes 1 x tick label") in wheres, overlap.describe(pairs)
    assert "overlaps" in overlap.describe(pairs)

    clean, ax = plots.plt.subplots(figsize=(4, 3))
    ax.plot([1, 2, 3], [1, 4, 9], label="squares")
    ax.set_title("short")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    ax.annotate("", (2, 4))  # empty: ignored
    hidden = ax.text(2, 4, "hidden text over the line's label", visible=False)
    assert hidden is not None and overlap.find(clean) == []
    plots.plt.close("all")


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_registered_figure_has_no_overlapping_text_at_its_saved_size(name):
    plots.use_style()
    fig = figures.draw(figures.FIGURES[name], study_facts())
    assert fig is not None, f"{name}: the synthetic study facts should draw it"
    pairs = overlap.find(fig)
    plots.plt.close(fig)
    assert not pairs, f"{name}:\n{overlap.describe(pairs)}"


def test_render_warns_about_overlapping_text(tmp_path, monkeypatch):
    def crowded(facts):
        fig, axes = plots.plt.subplots(1, 2, figsize=(3, 2))
        axes[0].set_title("a title far too long for its panel")
        axes[1].set_title("another one")
        return fig

    monkeypatch.setattr(figures, "FIGURES", {"z": figures.FigureSpec("z", crowded, ("bench",), False)})
    with pytest.warns(overlap.OverlappingText, match="z: overlapping text"):
        files = figures.render(facts_mod.Facts(**synthetic_side_experiments()), tmp_path)
    assert (tmp_path / "z.png").exists() and set(files) == {"z"}, "the figure is still saved"
