"""Scaling out, end to end: Ray, an MLflow server on PostgreSQL, and the UI in a real browser.

These need PostgreSQL's server binaries and Chromium from Debian
(``apt-get install postgresql chromium``) and the ``ray``, ``server`` and
``browser`` extras (``make test`` installs those). Without them the tests are
skipped, with the fix; ``.ci/run`` sets MBSTUDY_REQUIRE_ALL_TESTS=1, which
turns a skip into a failure, so CI cannot pass by skipping them.

One PostgreSQL-backed server (``python -m experiments.engine.server``, what
``make server`` runs) and one one-machine Ray cluster (``ray start --head``,
what ``make ray-start`` runs) serve the whole module; both are stopped at the end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import processes

from experiments.engine import grid as grids
from experiments.engine import server as server_mod
from experiments.engine import store
from mbstudy.metrics import is_timing

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def need(ok: bool, what: str, fix: str) -> None:
    if ok:
        return
    msg = f"{what} is missing: {fix}"
    if os.environ.get("MBSTUDY_REQUIRE_ALL_TESTS"):
        pytest.fail(msg + " (MBSTUDY_REQUIRE_ALL_TESTS is set: this test may not be skipped)")
    pytest.skip(msg)


def need_module(name: str, extra: str) -> None:
    need(importlib.util.find_spec(name) is not None, f"the Python package {name}", f"make setup EXTRAS={extra}")


def need_postgres() -> None:
    need_module("psycopg", "server")
    try:
        server_mod.pg_binary("initdb")
        ok = True
    except server_mod.ServerError:
        ok = False
    need(ok, "PostgreSQL's server binaries", "apt-get install postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return {**env, "MLFLOW_TRACKING_URI": uri, **extra}


def sweep(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.sweep", *args, "--no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(uri: str, experiment: str) -> dict[str, tuple]:
    """What a run holds, by cfg_hash, less what differs by nature (timings, process ids, run ids)."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    out = {}
    for r in store.search_all(c, exp.experiment_id, "tags.`mbstudy.kind` = 'run'"):
        hist = {k: [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, k)]
                for k in r.data.metrics if not is_timing(k)}
        tags = {k: r.data.tags.get(k) for k in ("outcome", "data_digest", "model_params", "group_hash", "sweep")}
        out[r.data.tags["cfg_hash"]] = (r.info.status, r.data.params, tags, hist)
    return out


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server():
    """`make server` on free ports, with its own PostgreSQL cluster in a fresh directory."""
    need_postgres()
    # as root PostgreSQL runs as 'postgres', which must reach the directory: not under pytest's 0700 tmp
    base = Path(tempfile.mkdtemp(prefix="mbstudy-server-", dir="/tmp"))
    base.chmod(0o755)
    port, pg_port = free_port(), free_port()
    log = base / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.engine.server", "--port", str(port), "--pg-port", str(pg_port),
             "--pg-data", str(base / "pgdata"), "--artifacts-destination", str(base / "artifacts")],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while "MLflow tracking server ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"`make server` did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", pg_port=pg_port, base=base)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    stopped = not (base / "pgdata" / "postmaster.pid").exists()
    shutil.rmtree(base, ignore_errors=True)
    assert stopped, "stopping the server stops the PostgreSQL it started"


@pytest.fixture(scope="module")
def smoke_local(tmp_path_factory):
    """The smoke sweep with the local executor, into SQLite."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('local') / 'mlflow.db'}"
    p = sweep(["smoke", "--executor", "local", "--workers", "2"], env_for(uri))
    assert p.returncode == 0, p.stderr
    return uri


@pytest.fixture(scope="module")
def smoke_on_server(server):
    """The smoke sweep through a local Ray instance into the PostgreSQL-backed server."""
    need_module("ray", "ray")
    p = sweep(["smoke", "--executor", "ray", "--workers", "2"], env_for(server.url))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "trained 13 · skipped 0" in p.stdout
    return server.url


@pytest.fixture(scope="module")
def ray_cluster():
    """`make ray-start`: a one-machine Ray cluster on 127.0.0.1; stopped at the end."""
    need_module("ray", "ray")
    port = free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    mark = processes.new_mark()  # `ray stop` would stop every Ray on the machine; stop only this cluster's processes
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", mark[0]: mark[1]}
    p = subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    yield f"127.0.0.1:{port}"
    processes.stop_marked(mark)
    assert not processes.marked_pids(mark), "the cluster's processes are gone"
    current = Path("/tmp/ray/ray_current_cluster")  # `ray stop` would remove it; ours names our cluster only
    if current.exists() and current.read_text().strip() == f"127.0.0.1:{port}":
        current.unlink()


# --------------------------------------------------------------------- tests


def test_ray_into_postgres_server_gives_the_same_runs_as_local_on_sqlite(smoke_local, smoke_on_server):
    local, ray = snapshot(smoke_local, "smoke"), snapshot(smoke_on_server, "smoke")
    assert len(local) == len(ray) == 13
    assert set(local) == {c.hash() for c in grids.load("smoke").configs} == set(ray)
    for h in local:
        status, params, tags, hist = ray[h]
        assert status == "FINISHED"
        assert (params, tags) == local[h][1:3], h
        assert set(hist) == set(local[h][3]), h
        for key, points in local[h][3].items():
            assert hist[key] == points, f"{h} {key}: the metric history differs between executors"
    from mlflow import MlflowClient

    c = MlflowClient(smoke_on_server)
    exp = c.get_experiment_by_name("smoke").experiment_id
    assert {r.data.tags["mbstudy.executor"] for r in store.search_all(c, exp, "tags.`mbstudy.kind` = 'run'")} == {"ray"}
    parents = store.search_all(c, exp, "tags.`mbstudy.kind` = 'parent'")
    assert [(p.data.tags["mbstudy.executor"], p.info.status) for p in parents] == [("ray", "FINISHED")]


def test_resume_holds_across_executors(smoke_local, tmp_path):
    """Runs finished by the local executor are skipped by Ray; only the unfinished are trained, once each."""
    from mlflow import MlflowClient

    need_module("ray", "ray")
    db = tmp_path / "mlflow.db"
    shutil.copy(smoke_local.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("smoke").experiment_id
    runs = store.search_all(c, exp, "tags.`mbstudy.kind` = 'run'")
    for r in runs[:3]:  # as if the local sweep had been killed during these three
        c.set_terminated(r.info.run_id, "KILLED")
    p = sweep(["smoke", "--executor", "ray", "--workers", "2"], env_for(uri))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "trained 3 · skipped 10" in p.stdout
    after = store.search_all(c, exp, "tags.`mbstudy.kind` = 'run'")
    finished = sorted(r.data.tags["cfg_hash"] for r in after if r.info.status == "FINISHED")
    assert finished == sorted(cfg.hash() for cfg in grids.load("smoke").configs)
    assert len(after) == 16


def test_ui_in_a_real_browser_shows_the_experiment_a_run_and_its_train_loss_chart(smoke_on_server):
    need_module("playwright", "browser")
    need(Path(CHROMIUM).exists(), "Chromium", "apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    run = next(c for c in grids.load("smoke").configs if c.optimizer == "sgd" and c.learning_rate < 1)
    name = run.run_name()
    shot = ROOT / "results" / "browser" / "mlflow-ui-train-loss.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{smoke_on_server}/#/experiments")
            page.get_by_text("Model training", exact=True).click()  # the UI's training (not GenAI) view
            page.get_by_role("link", name="smoke", exact=True).click()
            parent = page.get_by_role("link", name="smoke-", exact=False).first  # the sweep's parent run
            expect(parent).to_be_visible()
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand its runs
            page.get_by_role("link", name=name, exact=True).click()
            expect(page.get_by_role("heading", name=name)).to_be_visible()
            page.get_by_role("tab", name="Model metrics").click()
            page.get_by_placeholder("Search metric charts").fill("train/loss")
            page.get_by_text("train", exact=True).scroll_into_view_if_needed()  # charts render when in view
            legend = page.get_by_text(f"{name} (train/loss)", exact=True)
            legend.scroll_into_view_if_needed()
            expect(legend).to_be_visible()
            card = page.locator("div").filter(has=legend).filter(has_text="Step").last
            assert "Step" in card.inner_text()
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_ui_opens_the_sweeps_experiment_on_its_runs_in_the_model_training_view(smoke_on_server):
    """What `make ui` and a sweep's summary link to (``store.ui_url``), in a browser that never chose a view.

    MLflow 3.17 opens an experiment in the view its GenAI / Model training switch last chose in that
    browser (GenAI at first), whatever the experiment's ``mlflow.experimentKind`` tag says; the link's
    ``workflowType`` parameter chooses model training. The screenshot shows the sweep's parent run and its runs.
    """
    need_module("playwright", "browser")
    need(Path(CHROMIUM).exists(), "Chromium", "apt-get install chromium")
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    exp = MlflowClient(smoke_on_server).get_experiment_by_name("smoke")
    assert exp.tags.get(store.KIND_TAG) == store.MODEL_TRAINING, "every experiment the project creates is tagged"
    names = sorted(c.run_name() for c in grids.load("smoke").configs)
    shot = ROOT / "results" / "browser" / "mlflow-ui-experiment-runs.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})  # a fresh browser profile
            context.add_init_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                                    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{smoke_on_server}/#/experiments/{exp.experiment_id}")  # the plain address: MLflow's choice
            page.wait_for_url("**workflowType=genai**")
            page.goto(store.ui_url(smoke_on_server, exp.experiment_id))  # the address make ui prints
            page.wait_for_url("**/runs?**workflowType=machine_learning**")
            parent = page.get_by_role("link", name="smoke-", exact=False).first  # the sweep's parent run
            expect(parent).to_be_visible()
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand its runs
            for name in names:
                expect(page.get_by_role("link", name=name, exact=True)).to_be_attached()
            expect(page.get_by_text(f"{len(names) + 1} matching runs")).to_be_visible()
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


KILL_GRID = """
description = "runs long enough to kill a Ray worker in the middle of one"
[base]
dataset = "teacher_5x3"
hidden = [8]
optimizer = "sgd"
batch_size = 4
steps = 600000
eval_every = 200000
[grid]
learning_rate = [0.05, 0.02, 0.01, 0.005]
"""


def test_a_worker_killed_mid_task_is_retried_and_leaves_one_finished_run_per_config(server, ray_cluster, tmp_path):
    from mlflow import MlflowClient

    grid = tmp_path / "killed_worker.toml"
    grid.write_text(KILL_GRID)
    configs = grids.load(str(grid)).configs
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", str(grid), "--executor", "ray", "--unit-size", "2", "--no-progress"],
        cwd=ROOT, env=env_for(server.url, RAY_ADDRESS=ray_cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    c = MlflowClient(server.url)
    killed, deadline = None, time.monotonic() + 180
    try:
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            exp = c.get_experiment_by_name("killed_worker")
            training = [] if exp is None else [
                r for r in c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and tags.`mbstudy.kind` = 'run'")
                if not r.data.params]  # params are logged when training is done: this one is mid-training
            for r in training:
                pid = int(r.data.tags["mbstudy.pid"])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}/cmdline").exists() else b""
                if b"ray::" in cmdline or b"default_worker" in cmdline:  # a Ray worker, never the driver
                    os.kill(pid, signal.SIGKILL)
                    killed = r.info.run_id
                    break
            time.sleep(0.2)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "no run was caught in the middle of training"
    assert proc.returncode == 0, out + err
    exp = c.get_experiment_by_name("killed_worker").experiment_id
    runs = store.search_all(c, exp, "tags.`mbstudy.kind` = 'run'")
    finished = sorted(r.data.tags["cfg_hash"] for r in runs if r.info.status == "FINISHED")
    assert finished == sorted(cfg.hash() for cfg in configs), "exactly one FINISHED run per configuration"
    dead = c.get_run(killed)
    assert dead.info.status == "KILLED" and "Ray retried" in dead.data.tags["error"]
    assert len(runs) == len(configs) + 1, "the retry trained the killed configuration again, and nothing else"


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_an_unreachable_tracking_server_fails_fast_and_writes_nothing(executor, tmp_path):
    if executor == "ray":
        need_module("ray", "ray")
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    p = sweep(["smoke", "--executor", executor], {**env_for(uri), "HOME": str(tmp_path)}, timeout=60)
    elapsed = time.monotonic() - t0
    assert p.returncode == 3, p.stdout + p.stderr
    assert elapsed < 30
    assert f"MLFLOW_TRACKING_URI={uri}" in p.stderr and "make server" in p.stderr
    assert "trained" not in p.stdout
    assert not list(tmp_path.iterdir()), "nothing written, not even Ray's session files"


def test_an_unreachable_database_uri_fails_fast(tmp_path):
    need_postgres()
    uri = f"postgresql://mbstudy@127.0.0.1:{free_port()}/mbstudy"
    t0 = time.monotonic()
    p = sweep(["smoke"], env_for(uri), timeout=60)
    assert p.returncode == 3 and time.monotonic() - t0 < 30, p.stderr
    assert "the database did not accept a connection" in p.stderr


def test_a_sweep_straight_into_postgresql_gives_the_same_runs_as_sqlite(server, smoke_local):
    """A database URI (no server): each run's data goes in one PostgreSQL transaction (run_writer.log_result)."""
    uri = f"postgresql://mbstudy@127.0.0.1:{server.pg_port}/direct_sweep"
    server_mod.ensure_database(uri)
    p = sweep(["smoke", "--executor", "local", "--workers", "2"], env_for(uri))
    assert p.returncode == 0, p.stdout + p.stderr
    assert snapshot(uri, "smoke") == snapshot(smoke_local, "smoke")


def test_server_creates_a_missing_database_on_an_existing_postgresql(server):
    uri = f"postgresql://mbstudy@127.0.0.1:{server.pg_port}/created_by_test"
    assert server_mod.ensure_database(uri) is True
    assert server_mod.ensure_database(uri) is False
    with pytest.raises(server_mod.ServerError, match="cannot connect"):
        server_mod.ensure_database(f"postgresql://mbstudy@127.0.0.1:{free_port()}/x")
