"""What a newcomer meets in a fresh clone (issue 26): the README's first screen, `make help`, `make sweep
GRID=path/to/mine.toml` with the project's environment, the experiments' kind and the UI's links, and the
store's side files kept out of `git status`.

The Makefile is checked with `make -n` (nothing is installed); the sweep it would run is run here with this
interpreter, from the project's directory, as the recipe runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.engine import store

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
GRID = """description = "a newcomer's own grid"
[base]
dataset = "teacher_5x3"
hidden = [8]
steps = 40
eval_every = 20
[grid]
learning_rate = [0.01, 0.05]
"""


def make(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------ the README and make help


def test_the_readmes_first_screen_goes_from_a_fresh_clone_to_the_ui_and_a_report():
    first = "\n".join((ROOT / "README.md").read_text().splitlines()[:50])
    for command in ("make sweep", "make ui", "make report SWEEP=default", "make sweep GRID=path/to/mine.toml",
                    "make figures SWEEP=mine", "make report SWEEP=mine", "make study"):
        assert command in first, command


def test_every_make_target_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]+)", readme))  # in the text's code spans
    named |= set(re.findall(r"^(?:[A-Z_]+=\S+ )*make ([a-z][a-z-]+)", readme, flags=re.M))  # in its code blocks
    assert named and named <= targets, named - targets
    text = readme.split("<!-- findings:start", 1)
    assert len(text) == 2 and text[1].count("<!-- findings:end -->") == 1, "the findings block stays where make report writes it"


def test_make_help_keeps_every_description_in_one_column():
    p = make("help", "HELP_COLUMNS=100")
    assert p.returncode == 0, p.stderr
    lines = [ANSI.sub("", line) for line in p.stdout.splitlines()[1:]]
    firsts = [line for line in lines if not line.startswith("    ")]
    width = max(len(line.split()[0]) for line in firsts)
    column = 2 + width + 2
    assert len(width * "x") >= len("measure-throughput")
    for line in firsts:
        name = line.split()[0]
        assert line[column - 2:column] == "  " and line[column] != " ", line  # every description starts there
        assert line.startswith(f"  {name}")
    for line in lines:
        if line.startswith("    "):
            assert line[:column].strip() == "" and line[column] != " ", line  # continuations under the description
        assert len(line) <= 100 or " " not in line[column:], line


def test_a_misspelt_extra_gets_a_did_you_mean():
    p = make("-n", "setup", "EXTRAS=rey")
    loop = next(line for line in p.stdout.splitlines() if line.startswith("for e in"))
    ran = subprocess.run(["bash", "-c", loop], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and "unknown extra 'rey' (did you mean 'ray'?)" in ran.stderr


# ------------------------------------------------------------------ your own grid


def test_make_sweep_runs_a_grid_file_from_any_directory_with_the_projects_python(tmp_path):
    grid = tmp_path / "elsewhere" / "mine.toml"
    grid.parent.mkdir()
    grid.write_text(GRID)
    relative = Path(*[".."] * len(ROOT.parts[1:]), *grid.parts[1:])  # the same file, relative to the project
    assert (ROOT / relative).resolve() == grid.resolve()
    for given in (str(grid), str(relative)):
        p = make("-n", "sweep", f"GRID={given}")
        assert p.returncode == 0, p.stderr
        assert f'.venv/bin/python -m experiments.sweep "{given}" --executor local' in p.stdout


def test_a_grid_file_given_by_a_relative_or_absolute_path_names_its_experiment_after_the_file(tmp_path):
    grid = tmp_path / "mine.toml"
    grid.write_text(GRID)
    relative = Path(*[".."] * len(ROOT.parts[1:]), *grid.parts[1:])
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}", "PATH": "/usr/bin:/bin"}
    for given in (str(grid), str(relative)):
        p = subprocess.run([sys.executable, "-m", "experiments.sweep", given, "--dry-run"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "2 configurations in sweep 'mine'" in p.stdout


@pytest.mark.slow
def test_your_own_grid_then_its_figures_and_report(tmp_path):
    """`make sweep GRID=path/to/mine.toml`, then `make figures SWEEP=mine` and `make report SWEEP=mine`, as the
    recipes run them (the report into tmp_path, not the project's report/sweeps/)."""
    from mlflow import MlflowClient

    grid = tmp_path / "grids" / "mine.toml"
    grid.parent.mkdir()
    grid.write_text(GRID)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", str(grid), "--workers", "1", "--no-progress"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    exp = MlflowClient(uri).get_experiment_by_name("mine")
    assert exp is not None and exp.tags[store.KIND_TAG] == store.MODEL_TRAINING
    assert store.ui_url("http://127.0.0.1:5000", exp.experiment_id) in p.stdout, "the summary links to its runs"
    for module in ("analysis.figures", "analysis.report"):
        p = subprocess.run([sys.executable, "-m", module, "--sweep", "mine", "--out", str(tmp_path / "report")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "report" / "REPORT.md").exists()
    assert list((tmp_path / "report" / "figures").glob("*.png"))


# ------------------------------------------------------------------ the MLflow UI


def test_every_experiment_is_tagged_model_training_and_a_chosen_kind_is_kept(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    c = MlflowClient(uri)
    new = store.get_or_create_experiment("made_now", "a new one")
    assert c.get_experiment(new).tags[store.KIND_TAG] == "custom_model_development"
    old = c.create_experiment("made_before")  # as a store from before this version holds it
    assert store.KIND_TAG not in c.get_experiment(old).tags
    assert store.get_or_create_experiment("made_before") == old
    assert c.get_experiment(old).tags[store.KIND_TAG] == "custom_model_development", "tagged when resumed"
    chosen = c.create_experiment("chosen", tags={store.KIND_TAG: "genai_development"})
    store.get_or_create_experiment("chosen")
    assert c.get_experiment(chosen).tags[store.KIND_TAG] == "genai_development", "a kind chosen in the UI is kept"


def test_make_ui_prints_each_experiments_runs_page_and_creates_no_store(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from experiments import ui

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    assert ui.main(["--port", "5001"]) == 0
    assert "holds no runs yet" in capsys.readouterr().out and not db.exists()
    exp = store.get_or_create_experiment("mine")
    MlflowClient(f"sqlite:///{db}").create_run(exp)
    store.get_or_create_experiment("empty")
    assert ui.main(["--port", "5001"]) == 0
    out = capsys.readouterr().out
    assert f"mine  http://127.0.0.1:5001/#/experiments/{exp}?workflowType=machine_learning" in out
    assert "empty" not in out and "Model training" in out


# ------------------------------------------------------------------ git status during a sweep


@pytest.mark.parametrize("name", ["mlflow.db", "mlflow.db-wal", "mlflow.db-shm", "mlflow.db-journal",
                                  "mlflow-v2.db-wal", "mlflow-v2.db-shm"])
def test_the_stores_sqlite_side_files_are_ignored(name):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    p = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=ROOT, timeout=30)
    assert p.returncode == 0, f"{name} would show in git status"


# ------------------------------------------------------------------ the study's other steps: --help computes nothing


@pytest.mark.parametrize("module", ["experiments.baselines", "experiments.equivalence", "experiments.reduction"])
def test_help_of_a_study_step_says_what_it_does_and_writes_no_store(module, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    p = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, )
    assert p.returncode == 0, p.stderr
    assert f"usage: python -m {module}" in p.stdout and "MLFLOW_TRACKING_URI" in p.stdout
    bad = subprocess.run([sys.executable, "-m", module, "--seed", "3"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "unrecognized arguments: --seed 3" in bad.stderr
    assert not list(tmp_path.iterdir()), "a store was created"
