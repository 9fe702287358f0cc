"""Analysis on stores built in the test: known curves in, known answers out."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load, reduce
from experiments import sweep as sweep_mod
from experiments.engine import store

B_CRIT, S_MIN = 120.0, 300.0
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
LRS = [0.01, 0.03, 0.1, 0.3, 1.0]


def best_lr_of(b):  # the synthetic optimum moves with B, then saturates
    return min(0.01 * b, 0.3) if b >= 1 else 0.01


@pytest.fixture
def fixture_store(tmp_path, monkeypatch):
    """A store with a synthetic 'fake' sweep: steps_to_target = S_min (1 + B_crit / B) at the best lr."""
    from mlflow.entities import Metric, Param, RunTag

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(load, "CACHE", tmp_path / "cache")
    c = store.client()
    exp = c.create_experiment("fake")
    rng = np.random.default_rng(0)
    for b in BATCHES:
        for lr in LRS:
            for seed in range(3):
                penalty = 1 + 3 * abs(math.log10(lr) - math.log10(nearest(best_lr_of(b))))
                steps = S_MIN * (1 + B_CRIT / b) * penalty * (1 + 0.01 * rng.standard_normal())
                loss = 0.1 * penalty
                diverged = lr == 1.0 and b < 64  # unstable: must never be picked
                if diverged:
                    loss = 0.001  # a tempting, wrong value
                run = c.create_run(exp, tags={"mbstudy.kind": "run", "outcome": "diverged" if diverged else "completed"})
                rid = run.info.run_id
                params = {"optimizer": "sgd", "reduction": "mean", "batch_size": b, "learning_rate": lr, "seed": seed,
                          "target_loss": 0.7, "stop_at_target": True}
                metrics = [Metric("final/train/loss", loss, 0, 0)]
                every = max(1, int(steps / 20))
                if not diverged:
                    metrics.append(Metric("steps_to_target", round(steps), 0, 0))
                    # the training loss falls log-linearly from 2.0 to the target 0.7 at ``steps``
                    metrics += [Metric("train/loss", 2.0 * 0.35 ** min(st / steps, 1.2), 0, st)
                                for st in range(0, int(steps) + every, every)]
                else:
                    metrics += [Metric("train/loss", 2.0 * (1 + st), 0, st) for st in range(0, 3 * every, every)]
                c.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                            tags=[RunTag("cfg_hash", f"{b}-{lr}-{seed}")])
                c.set_terminated(rid, "FINISHED")
    return tmp_path


def nearest(lr):
    return min(LRS, key=lambda v: abs(math.log10(v) - math.log10(lr)))


def test_runs_table_is_typed(fixture_store):
    runs = load.load_runs("fake")
    assert len(runs) == len(BATCHES) * len(LRS) * 3
    assert runs["batch_size"].dtype.kind == "i" and runs["learning_rate"].dtype.kind == "f"
    assert set(runs["outcome"]) == {"completed", "diverged"}


def test_steps_to_target_and_fit_recover_b_crit(fixture_store):
    runs = load.load_runs("fake")
    st = reduce.steps_to_target(runs)
    assert list(st["batch_size"]) == BATCHES
    assert all(np.isclose(lr, nearest(best_lr_of(b))) for b, lr in zip(st["batch_size"], st["learning_rate"]))
    fit = reduce.fit_hyperbola(st["batch_size"], st["steps"])
    assert abs(fit["B_crit"] / B_CRIT - 1) < 0.05
    assert abs(fit["S_min"] / S_MIN - 1) < 0.05
    assert fit["r2"] > 0.99
    assert np.isclose(fit["E_min"], fit["S_min"] * fit["B_crit"])


def test_best_lr_selection_skips_diverged_runs(fixture_store):
    runs = load.load_runs("fake")
    best = reduce.best_lr(runs)
    for row in best.itertuples():
        assert np.isclose(row.learning_rate, nearest(best_lr_of(row.batch_size))), row
        assert row.stable and row.n_seeds == 3


def test_best_lr_all_diverged_is_flagged():
    runs = pd.DataFrame({"optimizer": "sgd", "reduction": "sum", "batch_size": 8, "learning_rate": [1.0, 10.0],
                         "outcome": "diverged", "final/train/loss": [5.0, 1.0]})
    assert not reduce.best_lr(runs)["stable"].iloc[0]


def test_fit_needs_three_points():
    assert math.isnan(reduce.fit_hyperbola([1, 2], [10, 5])["B_crit"])


def test_history_is_cached(fixture_store, monkeypatch):
    runs = load.load_runs("fake").head(5)
    first = load.load_history(runs, "fake", keys=("train/loss",), progress=False)
    assert len(first) == sum(len(store.client().get_metric_history(r, "train/loss")) for r in runs["run_id"])

    def boom(*a, **k):
        raise AssertionError("a cached run must not be fetched again")

    monkeypatch.setattr(store.client().__class__, "get_metric_history", boom)
    monkeypatch.setattr(load, "_history_sql", boom)
    again = load.load_history(runs, "fake", keys=("train/loss",), progress=False)
    pd.testing.assert_frame_equal(first.sort_values(["run_id", "step"]).reset_index(drop=True),
                                  again.sort_values(["run_id", "step"]).reset_index(drop=True))


def test_missing_experiment_names_the_command(fixture_store):
    with pytest.raises(load.MissingRuns, match=r"no experiment 'science' .*make sweep GRID=science"):
        load.load_runs("science")


def test_curves_and_first_crossing():
    hist = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "metric": "train/loss", "step": [0, 10, 20] * 2,
                         "value": [2.0, 1.0, 0.5, 2.0, 1.5, 0.7]})
    runs = pd.DataFrame({"run_id": ["a", "b"], "optimizer": "sgd", "reduction": "mean", "batch_size": [4, 4]})
    cur = reduce.curves(hist, runs)
    assert list(cur["mean"]) == [2.0, 1.25, 0.6] and list(cur["examples"]) == [0, 40, 80]
    assert reduce.first_crossing(cur, "examples", 1.3)["examples"].iloc[0] == 40


@pytest.mark.slow
def test_figures_and_report_from_the_smoke_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MBSTUDY_FIGURE_FORMATS", "png,pdf")  # what `make report` saves (conftest: PNG only)
    monkeypatch.setattr(load, "CACHE", tmp_path / "cache")
    assert sweep_mod.main(["smoke", "--workers", "2", "--no-progress"]) == 0
    from analysis import report

    path = report.build("smoke", "smoke", tmp_path / "report", progress=False, partial=True)
    text = path.read_text()
    from analysis.sections import SECTIONS

    for s in SECTIONS:
        assert s.text is None or f"## {s.header}" in text, s.key
    figs = tmp_path / "report" / "figures"
    for name in ("a_loss_curves", "b_heatmaps", "c_steps_to_target", "d_b_simple", "e_loss_vs_time"):
        for ext in ("png", "pdf"):
            f = figs / f"{name}.{ext}"
            assert f.exists() and f.stat().st_size > 5000, f
        assert f"](figures/{name}.png)" in text, "figures are linked relative to report/"
    assert "make reduction" in text and "make bench" in text, "missing side experiments name their command"
    parent = load.latest_parent("smoke")
    arts = {a.path for a in store.client().list_artifacts(parent, "figures")}
    assert "figures/b_heatmaps.png" in arts, "figures are logged on the sweep's parent run"


# ------------------------------------------------- facts, figures and report


def test_every_registered_figure_declares_the_facts_it_needs():
    from analysis.section import FigureSpec, Section, figures_of
    from analysis.sections import FIGURES, PROVIDERS, SECTIONS, context

    assert FIGURES, "no figure registered"
    for name, spec in FIGURES.items():
        assert spec.name == name and spec.needs and spec.caption, name
        assert set(spec.needs) <= set(PROVIDERS), (name, spec.needs)
    twice = Section("x", figures=(FigureSpec("a_loss_curves", lambda ctx: None, ("default",), "again"),))
    with pytest.raises(ValueError, match="registered twice"):
        figures_of((*SECTIONS, twice))
    with pytest.raises(KeyError, match="no provider of facts 'no_such_experiment'"):
        context().get("no_such_experiment")


def test_collect_on_an_empty_store_records_every_experiment_as_missing(tmp_path, monkeypatch):
    from analysis import render, report
    from analysis.sections import PROVIDERS, SECTIONS, context

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(load, "CACHE", tmp_path / "cache")
    facts = context(progress=False)
    facts.compute_all()
    assert all(facts.get(name) is None for name in PROVIDERS)
    commands = {"default": "make sweep GRID=default", "science": "make sweep GRID=science",
                "workloads": "make sweep GRID=science", "generalisation": "make sweep GRID=generalisation",
                "equivalence": "make equivalence", "reduction": "make reduction", "bench": "make bench",
                "published": "make sweep GRID=published", "accumulation": "make sweep GRID=accumulation",
                "beta2": "make sweep GRID=beta2", "sde": "make sweep GRID=sde",
                "branching": "make sweep GRID=branching",
                "branching_adam": "make sweep GRID=branching_adam",
                "teacher_momentum": "make sweep GRID=teacher_momentum",
                "warmup_adam": "make sweep GRID=warmup_adam", "warmup": "make sweep GRID=warmup",
                "warmup_placed": "make sweep GRID=warmup_placed",
                "scaling_width": "make sweep GRID=scaling_width", "scaling_adam": "make sweep GRID=scaling_adam",
                "scaling": "make sweep GRID=scaling", "cnn_accuracy": "make sweep GRID=cnn_ablation",
                "seesaw": "make sweep GRID=seesaw", "language_model": "make sweep GRID=lm",
                "lm_beta2": "make sweep GRID=lm_beta2", "lm_accumulation": "make sweep GRID=lm_accumulation",
                "lm_warmup": "make sweep GRID=lm_warmup", "lm_branching": "make sweep GRID=lm_branching",
                "lm_layernorm": "make sweep GRID=lm_branching", "lm_tests": "make study-extended",
                "lm_warmup_placed": "make sweep GRID=lm_warmup_placed",
                "baselines": "make baselines"}
    assert set(facts.missing) == set(commands)  # noise and nqm are derived: None without a message of their own
    for name, command in commands.items():
        assert command in facts.missing[name], (name, facts.missing[name])
    assert render.render(facts, tmp_path / "figures") == {} and not (tmp_path / "figures").exists()
    assert set(render.skipped(facts)) == {"default", "science", "workloads", "generalisation", "reduction", "bench",
                                            "accumulation", "beta2", "sde", "branching", "warmup", "scaling",
                                            "cnn_accuracy", "seesaw", "language_model", "lm_tests",
                                            "teacher_momentum"}
    text = report.text(facts, "now")
    for s in SECTIONS:
        assert s.text is None or f"## {s.header}" in text, s.key
    for command in commands.values():
        assert command in text, command


def test_a_side_experiment_run_twice_counts_each_case_once(tmp_path, monkeypatch):
    """make study-extended after make study runs equivalence and reduction again: the report read 6 networks
    for 3 (and 12 of 18 pairs for 6 of 9) from the doubled runs. Each case (its params) counts once, the newest."""
    import time

    from analysis.sections import identity
    from experiments.engine import run_writer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = store.get_or_create_experiment("equivalence", "test")
    for err in (1e-15, 2e-16):  # the same two cases logged twice, the second time with smaller errors
        for setting in ("mlp", "cnn"):
            for dtype in ("float32", "float64"):
                run_writer.write_run(exp, name=f"{setting}-{dtype}", params={"setting": setting, "dtype": dtype},
                                     tags={"mbstudy.kind": "equivalence", "git_commit": f"c{err}"},
                                     metrics={"err/per_sample_mean_vs_batch": err,
                                              "err/accumulated_equal_weights_mistake": 1.5})
                time.sleep(0.01)  # distinct end times
    assert len(load.load_simple("equivalence", "equivalence", "make equivalence")) == 8  # what the store holds
    runs = identity.equivalence_facts(None).runs
    assert len(runs) == 4 and set(zip(runs["setting"], runs["dtype"])) == {
        (s, d) for s in ("mlp", "cnn") for d in ("float32", "float64")}
    assert set(runs["err/per_sample_mean_vs_batch"]) == {2e-16} and set(runs["git_commit"]) == {"c2e-16"}
    ctx = type("Ctx", (), {"equivalence": identity.EquivalenceFacts("equivalence", runs)})()
    assert "Over 2 networks" in identity.text(ctx) and "2.0e-16" in identity.text(ctx)


def test_a_store_without_the_whole_study_is_refused_and_nothing_is_written(fixture_store, tmp_path, monkeypatch,
                                                                           capsys):
    from analysis import figures, render, report

    readme = tmp_path / "README.md"
    readme.write_text("untouched")
    monkeypatch.setattr(report, "REPORT_DIR", tmp_path / "report")
    monkeypatch.setattr(render, "OUT", tmp_path / "report" / "figures")
    monkeypatch.setattr(load.tracking, "ROOT", tmp_path)
    assert report.main(["--default", "fake", "--science", "fake"]) == 2
    err = capsys.readouterr().err
    assert "nothing was written" in err and "make study-extended" in err and "PARTIAL=DIR" in err
    assert "beta2: " in err and "make sweep GRID=beta2" in err, "each missing experiment with its command"
    assert "default:" not in err and "science:" not in err, "what the store has is not listed"
    assert not (tmp_path / "report").exists() and readme.read_text() == "untouched"
    assert figures.main(["--default", "fake", "--science", "fake"]) == 2
    assert "make figures" in capsys.readouterr().err and not (tmp_path / "report").exists()
    assert report.main(["--default", "fake", "--science", "fake", "--partial", str(tmp_path / "partial")]) == 0
    text = (tmp_path / "partial" / "REPORT.md").read_text()
    assert "Not measured yet" in text and (tmp_path / "partial" / "figures" / "a_loss_curves.png").exists()
    assert readme.read_text() == "untouched", "a partial report never rewrites the README's findings"


def test_figures_and_report_are_built_from_one_collect(fixture_store, monkeypatch):
    import re

    from analysis import report

    calls = {"collect": 0, "history": 0}
    collect, load_history = report.context, load.load_history

    def counted_collect(*a, **k):
        calls["collect"] += 1
        return collect(*a, **k)

    def counted_history(runs, name, keys=("train/loss",), **k):  # the fake sweep logs train/loss only
        calls["history"] += 1
        return load_history(runs, name, keys=keys, **k)

    monkeypatch.setattr(report, "context", counted_collect)
    monkeypatch.setattr(load, "load_history", counted_history)
    path = report.build("fake", "fake", fixture_store / "report", progress=False, partial=True)
    # one collect; histories: the default sweep's, and the science sweep's B_simple of its fastest runs
    assert calls == {"collect": 1, "history": 2}
    text = path.read_text()
    figs = fixture_store / "report" / "figures"
    for name in ("a_loss_curves", "b_heatmaps", "c_steps_to_target", "c2_best_lr"):
        assert (figs / f"{name}.png").exists() and f"](figures/{name}.png)" in text, name
    for name in ("d_b_simple", "e_loss_vs_time"):  # no B_simple and no time logged: nothing to draw
        assert not (figs / f"{name}.png").exists() and f"figures/{name}" not in text, name
    b_crit, lo, hi = map(float, re.search(r"B_crit = SGD (\d+) \[(\d+), (\d+)\]", text).groups())
    assert lo <= B_CRIT <= hi and lo <= b_crit <= hi, "the per-seed fits' interval holds the true B_crit"
    assert "make equivalence" in text and "make reduction" in text and "make bench" in text


# ------------------------------------------------------------- uncertainty


def _synthetic_runs(rng, n_seeds: int, b_crit: float = 100.0, s_min: float = 200.0, sigma: float = 0.15):
    """A runs table as ``load.load_runs`` gives it: per (B, lr, seed), steps to target following
    S(B) = S_min (1 + B_crit / B) at the best rate (lognormal noise per seed and B), slower at the others,
    and a diverged rate whose tempting steps must never count."""
    rows = []
    for b in 2 ** np.arange(13):
        for seed in range(n_seeds):
            best = s_min * (1 + b_crit / b) * np.exp(rng.normal(0, sigma))
            for lr, factor in ((0.01, 3.0), (0.1, 1.0), (1.0, 1.7), (10.0, 0.1)):
                diverged = lr == 10.0
                rows.append({"optimizer": "sgd", "reduction": "mean", "batch_size": int(b), "learning_rate": lr,
                             "seed": seed, "outcome": "diverged" if diverged else "completed",
                             "steps_to_target": np.nan if diverged else round(best * factor)})
    return pd.DataFrame(rows)


def test_the_bootstrap_interval_covers_b_crit_and_shrinks_with_more_seeds():
    """50 synthetic sweeps with known curves and noise: the 95% interval holds the true B_crit in at least 90%
    of them, and 10 seeds give narrower intervals than 5."""
    widths = {}
    for n_seeds in (5, 10):
        hits, w = 0, []
        for k in range(50):
            table = reduce.per_seed_steps(_synthetic_runs(np.random.default_rng(k), n_seeds))
            assert table.shape == (13, n_seeds)
            est, lo, hi = reduce.bootstrap_fit(table.loc["sgd"], n_boot=300, seed=k)["B_crit"]
            assert lo <= est <= hi
            hits += lo <= 100.0 <= hi
            w.append(hi - lo)
        assert hits >= 45, f"{n_seeds} seeds: the interval held B_crit in {hits} of 50"
        widths[n_seeds] = np.median(w)
    assert widths[10] < 0.8 * widths[5], widths


def test_bootstrap_intervals_from_a_store_and_none_from_one_seed(fixture_store):
    runs = load.load_runs("fake")
    fit = reduce.bootstrap_fit(reduce.per_seed_steps(runs).loc["sgd"], n_boot=200, small_b=16)
    for name in ("B_crit", "S_min", "E_min", "slope"):
        est, lo, hi = fit[name]
        assert np.isfinite([est, lo, hi]).all() and lo <= est <= hi, name
    assert abs(fit["B_crit"][0] / B_CRIT - 1) < 0.05
    one = reduce.bootstrap_fit(reduce.per_seed_steps(runs[runs["seed"] == 0]).loc["sgd"])
    assert np.isfinite(one["B_crit"][0]) and np.isnan(one["B_crit"][1:]).all()


def test_a_seed_that_never_reaches_the_target_votes_for_no_rate():
    """Five seeds, two never reach the target: the best rate is one that reached it, not the smallest rate."""
    rows = []
    for seed, winner in enumerate([0.1, 0.3, 1.0, None, None]):
        for lr in (0.01, 0.1, 0.3, 1.0):
            rows.append({"optimizer": "sgd", "reduction": "mean", "batch_size": 8, "learning_rate": lr, "seed": seed,
                         "outcome": "completed", "steps_to_target": 100.0 if lr == winner else np.nan})
    runs = pd.DataFrame(rows)
    st = reduce.steps_to_target(runs)
    assert st["learning_rate"].iloc[0] == 0.1 and st["steps"].iloc[0] == 100.0 and st["n_seeds"].iloc[0] == 5
    best = reduce.best_lr_to_target(runs)
    assert best["learning_rate"].iloc[0] == 0.1 and bool(best["stable"].iloc[0])


def test_pruned_runs_have_no_final_value_in_the_heatmap():
    runs = pd.DataFrame({"optimizer": "sgd", "reduction": "mean", "batch_size": 8, "learning_rate": 0.1,
                         "seed": [0, 1, 2], "outcome": ["completed", "pruned", "diverged"],
                         "final/train/loss": [0.5, 0.9, 9.0]})
    row = reduce.heatmap_table(runs).iloc[0]
    assert row["value"] == np.median([0.5, 9.0]) and np.isclose(row["diverged"], 1 / 3)


def test_the_committed_report_links_only_files_a_clone_has():
    """Every relative link of report/REPORT.md and README.md points at a file git tracks (a link to an ignored PDF
    would be dead in a fresh clone)."""
    import re
    import subprocess

    root = Path(__file__).resolve().parent.parent
    tracked = set(subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
                  .stdout.split())
    for doc in ("report/REPORT.md", "README.md"):
        text = (root / doc).read_text()
        base = Path(doc).parent
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if "://" in target:
                continue
            path = (base / target).as_posix()
            path = str(Path(path)).replace("\\", "/")
            assert path in tracked or any(t.startswith(path.rstrip("/") + "/") for t in tracked), f"{doc} -> {target}"


def test_the_committed_report_answers_first_in_at_most_6000_words():
    """The committed report opens with an abstract, a summary table and contents, and its main text (before the
    appendix's long tables) is at most 6,000 words (issue 23: a report a referee and a practitioner read)."""
    import re

    text = (Path(__file__).resolve().parent.parent / "report" / "REPORT.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[:3] == ["Abstract", "Summary", "Contents"], headings[:4]
    assert "Appendix: long tables and provenance" in headings
    main = text.split("## Appendix: long tables and provenance")[0]
    prose = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", main)  # figures are not words
    words = len(re.findall(r"[A-Za-z0-9][\w'’.,%×/−+-]*", prose))
    assert words <= 6000, f"the main text has {words} words"


def test_a_figure_format_that_is_not_known_is_refused_before_the_store_is_read(monkeypatch, capsys, tmp_path):
    from analysis import figures, report

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MBSTUDY_FIGURE_FORMATS", "png,jpeg")
    for main in (report.main, figures.main):
        assert main([]) == 2
        err = capsys.readouterr().err
        assert "MBSTUDY_FIGURE_FORMATS: 'jpeg' is not a format" in err and "pdf or svg" in err
    assert not list(tmp_path.iterdir()), "the store was not opened"
