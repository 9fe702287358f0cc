"""Figures of any sweep (``--sweep NAME``) and the overlapping-text check on every registered figure."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import figures, load, overlap, plots, render, sweep_report
from analysis.section import Context, FigureSpec
from analysis.sections import FIGURES, context, cost, identity, main_sweep, noise, steps_to_target, sum_or_mean

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
    reduction = sum_or_mean.reduction_facts(pd.DataFrame(red_runs),
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
    bench = cost.bench_facts(pd.DataFrame(rows))
    eq = pd.DataFrame([{"setting": s, "dtype": d, "err/per_sample_mean_vs_batch": 1e-7, "git_commit": "abc",
                        "err/accumulated_equal_weights_mistake": 0.3, "err/single_output_vs_true": 0.9,
                        "err/true_vs_finite_difference": 1e-9, "err/b_simple_vs_direct": 1e-12}
                       for s in ("a", "b", "c") for d in ("float32", "float64")])
    return {"reduction": reduction, "bench": bench, "equivalence": identity.EquivalenceFacts("equivalence", eq)}


def facts_of(missing=None, **preset) -> Context:
    """A context holding these facts and no others (every other provider None)."""
    return context(preset=preset, only=preset, missing=missing)


@functools.cache
def study_facts() -> Context:
    """Every experiment of the study, synthetic, at the study's grid sizes."""
    runs, hist = synthetic_runs()
    default = main_sweep.default_facts(runs, hist, "default")
    science = steps_to_target.science_facts(runs[runs["reduction"] == "mean"], "science")
    from analysis.sections import generalisation, workloads
    from tests.test_q8_analysis import synthetic_q8
    from tests.test_q9_analysis import synthetic_q9
    from tests.test_workloads import synthetic_b_simple, synthetic_generalisation, synthetic_science

    from analysis import science as science_mod
    from tests.test_workloads import LEVELS

    sci_runs, sci_hist = synthetic_science(seeds=3)
    work = science_mod.science_facts(sci_runs, sci_hist, "science", {"mnist1d-mlp": "MNIST-1D",
                                                                     "teacher-mlp": "teacher"}, LEVELS)
    work = science_mod.ScienceFacts(**{**work.__dict__, "b_simple": workloads.b_simple_table(
        work, synthetic_b_simple(sci_runs))})
    gen_runs, gen_hist = synthetic_generalisation(("mnist1d", "digits", "teacher"))
    from tests.test_claims_2024 import synthetic_claims
    from tests.test_cnn_accuracy import _facts as synthetic_cnn_accuracy

    from tests.test_lm_claims import synthetic_lm_training
    from tests.test_teacher_momentum import synthetic_momentum

    return facts_of(default=default, science=science, noise=noise.noise_facts(default),
                    teacher_momentum=synthetic_momentum(), **synthetic_lm_training(),
                    workloads=work, generalisation=generalisation.generalisation_facts(gen_runs, gen_hist),
                    cnn_accuracy=synthetic_cnn_accuracy(), **synthetic_claims(work),
                    **synthetic_side_experiments(), **synthetic_q8(), **synthetic_q9())


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


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_registered_figure_has_no_overlapping_text_at_its_saved_size(name):
    plots.use_style()
    fig = render.draw(FIGURES[name], study_facts())
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

    monkeypatch.setattr(render, "FIGURES", {"z": FigureSpec("z", crowded, ("bench",), "crowded", log_artifact=False)})
    with pytest.warns(overlap.OverlappingText, match="z: overlapping text"):
        files = render.render(facts_of(**synthetic_side_experiments()), tmp_path)
    assert (tmp_path / "z.png").exists() and set(files) == {"z"}, "the figure is still saved"


# ------------------------------------------------------------ any sweep, synthetic


def sweep_facts(**kw) -> Context:
    """Facts as ``collect_sweep`` builds them, from a synthetic sweep (``synthetic_runs`` options)."""
    runs, hist = synthetic_runs(**kw)
    default = main_sweep.default_facts(runs, hist, "mine")
    science = None
    if "steps_to_target" in runs and runs["steps_to_target"].notna().any():
        science = steps_to_target.science_facts(runs[runs["reduction"] == default.curve_reduction], "mine")
    missing = {} if science else {"science": "no run reached a target loss (no steps_to_target)"}
    from tests.test_lm_claims import synthetic_lm_training
    from tests.test_teacher_momentum import synthetic_momentum

    return facts_of(default=default, science=science, noise=noise.noise_facts(default),
                    teacher_momentum=synthetic_momentum(), **synthetic_lm_training(), missing=missing)


def draw_all(facts) -> tuple[dict, dict]:
    """Every sweep figure: (name -> overlapping pairs) for those drawn, (name -> reason) for the others."""
    plots.use_style()
    drawn, reasons = {}, {}
    for name in render.sweep_figures():
        fig = render.attempt(FIGURES[name], facts)
        if isinstance(fig, str):
            reasons[name] = fig
        else:
            drawn[name] = overlap.find(fig)
            plots.plt.close(fig)
    return drawn, reasons


def test_sweep_figures_are_the_sweep_ones():
    assert set(render.sweep_figures()) == {"a_loss_curves", "b_heatmaps", "e_loss_vs_time", "c_steps_to_target",
                                            "c2_best_lr", "d_b_simple"}


def test_a_sweep_that_lacks_what_a_figure_needs_skips_it_with_its_reason():
    facts = sweep_facts(optimizers=("sgd",), reductions=("sum",), batches=[8], lrs=[0.1], seeds=(0, 1),
                        steps=200, every=20, target=False, b_simple=False, time=False)
    drawn, reasons = draw_all(facts)
    assert set(drawn) == {"a_loss_curves"} and not drawn["a_loss_curves"], overlap.describe(drawn["a_loss_curves"])
    assert "one batch size and one learning rate" in reasons["b_heatmaps"]
    assert "no time/train_s" in reasons["e_loss_vs_time"]
    assert "no grad/b_simple" in reasons["d_b_simple"]
    assert "steps_to_target" in reasons["c_steps_to_target"] and "steps_to_target" in reasons["c2_best_lr"]
    assert all("\n" not in why for why in reasons.values()), "one line each"


@pytest.mark.parametrize("kw", [
    dict(optimizers=("sgd",), reductions=("mean",), batches=[16], lrs=[0.01]),  # seeds only
    dict(optimizers=("adam",), reductions=("sum",), batches=[16], lrs=LRS, seeds=(0,)),  # lr only, sum only
    dict(optimizers=("momentum",), reductions=("mean",), batches=BATCHES, lrs=[0.01], seeds=(0,)),  # B only
    dict(optimizers=("sgd", "adam", "lion"), reductions=("mean",), batches=[4, 64], lrs=[0.01, 0.1], seeds=(0,)),
    dict(optimizers=("sgd",), reductions=("mean", "sum"), batches=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
         lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0], seeds=(0,)),  # a wider grid than the study's
], ids=["seeds", "lr-sum", "batch", "optimizers-unknown", "wide"])
def test_figures_of_any_subset_of_the_sweep_dimensions(kw):
    drawn, reasons = draw_all(sweep_facts(steps=400, every=40, **kw))
    assert "a_loss_curves" in drawn, reasons
    for name, pairs in drawn.items():
        assert not pairs, f"{name}:\n{overlap.describe(pairs)}"
    assert not any(why.startswith("failed") for why in reasons.values()), reasons
    if len(kw["batches"]) > 1 or len(kw["lrs"]) > 1:
        assert "b_heatmaps" in drawn, reasons


# ------------------------------------------------------------ any sweep, on a smoke store


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    from experiments import sweep as sweep_mod

    root = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setattr(load, "CACHE", root / "cache")
        assert sweep_mod.main(["smoke", "--workers", "1", "--no-progress"]) == 0
        yield root


@pytest.fixture
def report_dirs(smoke_store, tmp_path, monkeypatch):
    """The store, and render.OUT / sweep_report.SWEEPS moved under tmp_path/report; the real report/figures watched."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{smoke_store / 'mlflow.db'}")
    monkeypatch.setattr(load, "CACHE", smoke_store / "cache")
    monkeypatch.setattr(render, "OUT", tmp_path / "report" / "figures")
    monkeypatch.setattr(sweep_report, "SWEEPS", tmp_path / "report" / "sweeps")
    real = load.tracking.ROOT / "report" / "figures"
    before = {p.name: p.stat().st_mtime_ns for p in real.glob("*")}
    yield tmp_path / "report"
    assert {p.name: p.stat().st_mtime_ns for p in real.glob("*")} == before, "report/figures/ was touched"


SMOKE_DRAWN = {"a_loss_curves", "b_heatmaps", "e_loss_vs_time", "c_steps_to_target", "d_b_simple"}


def check_sweep_folder(report, label, out, err, exts=("png",)):
    figs = report / "sweeps" / label / "figures"
    for name in SMOKE_DRAWN:
        for ext in exts:
            assert (figs / f"{name}.{ext}").stat().st_size > 5000, (name, ext)
        assert f"drew {name}:" in out
    assert not (figs / "c2_best_lr.png").exists()
    assert "skipped c2_best_lr: one learning rate per (optimizer, reduction, B)" in err, err
    assert not (report / "figures").exists(), "nothing goes into report/figures/"


@pytest.mark.slow
def test_figures_of_the_smoke_sweep_by_name_go_to_its_own_folder(report_dirs, capsys, monkeypatch):
    import warnings

    monkeypatch.setenv("MBSTUDY_FIGURE_FORMATS", "png,pdf")  # what `make figures` saves (conftest: PNG only)
    with warnings.catch_warnings():
        warnings.simplefilter("error", overlap.OverlappingText)
        assert figures.main(["--sweep", "smoke"]) == 0
    out, err = capsys.readouterr()
    check_sweep_folder(report_dirs, "smoke", out, err, exts=("png", "pdf"))
    assert "sweep 'smoke': 13 finished runs; varies optimizer (3), reduction (2), batch_size (2)" in err


@pytest.mark.slow
def test_figures_and_report_of_one_parent_run(report_dirs, capsys):
    from analysis import report

    parent = load.latest_parent("smoke")
    assert figures.main(["--sweep", parent]) == 0
    out, err = capsys.readouterr()
    check_sweep_folder(report_dirs, f"smoke-{parent[:8]}", out, err)
    assert f"parent run {parent}: 13 finished runs" in err
    assert report.main(["--sweep", parent]) == 0
    md = (report_dirs / "sweeps" / f"smoke-{parent[:8]}" / "REPORT.md").read_text()
    for name in SMOKE_DRAWN:
        assert f"](figures/{name}.png)" in md, name
    assert "`c2_best_lr`: one learning rate per" in md and "## Steps to target" in md
    assert not (report_dirs / "REPORT.md").exists() and not (report_dirs / "figures").exists()
    arts = {a.path for a in load.tracking.client().list_artifacts(parent, "figures")}
    assert "figures/a_loss_curves.png" in arts, "logged on that parent run"


@pytest.mark.slow
def test_a_name_that_is_no_sweep_is_refused_with_what_the_store_holds(report_dirs, capsys):
    assert figures.main(["--sweep", "mine"]) == 2
    assert "experiments there: smoke" in capsys.readouterr().err
    child = load.load_runs("smoke")["run_id"].iloc[0]
    assert figures.main(["--sweep", child]) == 2
    assert "is not a sweep's parent run" in capsys.readouterr().err
    assert not (report_dirs / "sweeps").exists()


@pytest.mark.slow
@pytest.mark.parametrize("varied", range(32), ids=lambda m: "+".join(
    d for i, d in enumerate(sweep_report.SWEEP_DIMENSIONS) if m >> i & 1) or "nothing")
def test_every_subset_of_the_sweep_dimensions_draws_or_skips_cleanly(varied):
    """Each of the 32 subsets of (optimizer, reduction, B, lr, seed) varied (two values), the rest fixed."""
    two = {"optimizer": ("sgd", "adam"), "reduction": ("mean", "sum"), "batch_size": [4, 64],
           "learning_rate": [0.01, 0.1], "seed": (0, 1)}
    kw = {d: (v if varied >> i & 1 else v[:1]) for i, (d, v) in enumerate(two.items())}
    facts = sweep_facts(optimizers=kw["optimizer"], reductions=kw["reduction"], batches=kw["batch_size"],
                        lrs=kw["learning_rate"], seeds=kw["seed"], steps=200, every=20)
    drawn, reasons = draw_all(facts)
    assert "a_loss_curves" in drawn and "e_loss_vs_time" in drawn and "d_b_simple" in drawn, reasons
    assert not any(why.startswith("failed") for why in reasons.values()), reasons
    for name, pairs in drawn.items():
        assert not pairs, f"{name}:\n{overlap.describe(pairs)}"


def test_runs_that_differ_beyond_the_sweep_dimensions_are_named():
    runs, _ = synthetic_runs(optimizers=("sgd",), reductions=("mean",), batches=[4], lrs=[0.1], seeds=(0,),
                             steps=40, every=20)
    assert sweep_report._pooled(runs) == ()
    runs = pd.concat([runs.assign(hidden="8"), runs.assign(hidden="16,16")], ignore_index=True)
    assert sweep_report._pooled(runs) == ("hidden",)
    source = sweep_report.SweepSource("mine", "mine", None, len(runs), {"optimizer": ("sgd",), "seed": (0, 1)},
                                   ("hidden",))
    text = sweep_report.describe_source(source)
    assert "varies seed (2); fixed optimizer=sgd" in text and "differ in hidden" in text
    assert source.label == "mine"
    assert sweep_report.SweepSource("p" * 32, "mine", "p" * 32, 1, {}, ()).label == "mine-pppppppp"


@pytest.mark.parametrize("kw", [dict(optimizers=("sgd",), reductions=("mean",), seeds=(0,)),
                                dict(optimizers=("adam",), reductions=("mean",), seeds=(0,), target=False),
                                dict()], ids=["one-optimizer-one-seed", "one-optimizer-no-target", "three"])
def test_no_figure_of_a_sweep_is_mostly_empty(kw):
    """The panels cover at least a third of every saved image: a lone panel keeps its legend inside, two panels
    sit side by side, and a title is wrapped to the figure instead of widening it."""
    plots.use_style()
    facts = sweep_facts(steps=400, every=40, **kw)
    for name in render.sweep_figures():
        fig = render.attempt(FIGURES[name], facts)
        if isinstance(fig, str):
            continue
        share = plots.covered(fig)
        plots.plt.close(fig)
        assert share >= 1 / 3, f"{name}: the panels cover {share:.0%} of the image"


def test_a_point_reached_at_the_first_evaluation_is_marked_and_left_out_of_the_fit():
    runs, hist = synthetic_runs(optimizers=("sgd",), reductions=("mean",), seeds=(0, 1), steps=2000, every=100)
    runs["eval_every"] = 100
    big = runs["batch_size"] == runs["batch_size"].max()
    runs.loc[big & runs["steps_to_target"].notna(), "steps_to_target"] = 100.0  # at the first evaluation
    facts = steps_to_target.science_facts(runs, "mine")
    st = facts.steps_to_target["sgd"]
    assert st.set_index("batch_size").loc[runs["batch_size"].max(), "n_bound"] == 2
    assert facts.fits["sgd"]["n"] == len(st) - 1, "the bound is not fitted"
    fig = render.attempt(FIGURES["c_steps_to_target"], facts_of(science=facts))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    plots.plt.close(fig)
    assert any("first evaluation" in lab for lab in labels), labels
