"""MLflow: where runs go, what each holds, and how a sweep resumes.

The store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``
with artifacts in ``<project>/mlartifacts`` (so ``make ui`` in the project
root sees them).

The schema (``analysis/`` reads exactly this):

- one experiment per sweep definition, named after it;
- a parent run per sweep invocation, tag ``mbstudy.kind=parent``;
- a child run per configuration, tag ``mbstudy.kind=run`` and ``mlflow.parentRunId``:
  - params: every ``TrainConfig`` field (``hidden`` as ``100,100``);
  - metric histories at evaluation steps: ``train/loss`` (full training set),
    ``train/batch_loss`` (mean batch loss since the last evaluation),
    ``test/loss``, ``test/acc`` (classification), ``grad/g_norm_sq``
    (``||G||^2``), ``grad/trace_cov`` (``tr Sigma``), ``grad/b_simple``,
    ``param/norm``, ``time/train_s`` (cumulative training seconds);
  - summary metrics: ``final/<metric>``, ``best/<metric>`` (losses: min,
    accuracy: max), ``steps_to_target`` and ``examples_to_target`` when
    reached, ``time/compile_s``, ``time/train_s``, ``time/eval_s``, ``time/log_s``;
  - tags: ``cfg_hash``, ``group_hash`` (the hash without the seed), ``outcome``
    (``completed``/``diverged``/``failed``), ``sweep``, ``git_commit``,
    ``git_dirty``, ``jax_version``, ``optax_version``, ``mlflow_version``,
    ``device``, ``model_params``, ``data_digest``;
  - the data set as an MLflow input (name, digest, source).

A child run is written in order: created RUNNING when its configuration is
handed to a worker, then params and tags, metrics in batches, the data set,
and only then set FINISHED. A run that is not FINISHED is incomplete by
definition: resuming marks such leftovers KILLED and trains them again.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Where new experiments keep artifacts: beside the default SQLite store, else the server's choice."""
    return None if os.environ.get("MLFLOW_TRACKING_URI") else (ROOT / "mlartifacts").as_uri()


def client():
    """One MlflowClient per tracking URI, reused across calls (several per logged run)."""
    return _client(tracking_uri())


@functools.cache
def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def get_or_create_experiment(name: str, description: str = "") -> str:
    """Create the store (schema) and the experiment once, before any worker starts."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    tags = {"mlflow.note.content": description} if description else None
    return c.create_experiment(name, artifact_location=artifact_root(), tags=tags)


def provenance() -> dict[str, str]:
    """git commit and dirty flag, library versions, and the device."""
    import jax
    import mlflow
    import optax

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dev = jax.devices()[0]
    return {
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "jax_version": jax.__version__,
        "optax_version": optax.__version__,
        "mlflow_version": mlflow.__version__,
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
    }


def _search_all(c, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_hashes(experiment_id: str) -> set[str]:
    """cfg_hash of every FINISHED child run."""
    runs = _search_all(client(), experiment_id, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")
    return {r.data.tags.get("cfg_hash") for r in runs}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_stale_runs_killed(experiment_id: str) -> int:
    """Runs left RUNNING by a process of this host that is gone: set them KILLED.

    A RUNNING run whose process is alive (another sweep) or on another host is left alone.
    """
    c = client()
    host = socket.gethostname()
    n = 0
    for r in _search_all(c, experiment_id, "attributes.status = 'RUNNING'"):
        tags = r.data.tags
        pid = int(tags.get("mbstudy.pid", "0") or 0)
        if tags.get("mbstudy.host") == host and (pid == 0 or not _alive(pid)):
            c.set_terminated(r.info.run_id, "KILLED")
            n += 1
    return n


def start_parent(experiment_id: str, sweep: str, source: str, n_configs: int, prov: dict[str, str]) -> str:
    tags = {
        "mbstudy.kind": "parent", "sweep": sweep, "grid_file": source, "n_configs": str(n_configs),
        "mbstudy.pid": str(os.getpid()), "mbstudy.host": socket.gethostname(), **prov,
    }
    run = client().create_run(experiment_id, tags=tags, run_name=f"{sweep}-{time.strftime('%Y%m%d-%H%M%S')}")
    return run.info.run_id


def start_child(experiment_id: str, parent_id: str, name: str, cfg_hash: str, group_hash: str, sweep: str) -> str:
    tags = {
        "mlflow.parentRunId": parent_id, "mbstudy.kind": "run", "cfg_hash": cfg_hash, "group_hash": group_hash,
        "sweep": sweep, "mbstudy.pid": str(os.getpid()), "mbstudy.host": socket.gethostname(),
    }
    return client().create_run(experiment_id, tags=tags, run_name=name).info.run_id


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def log_result(run_id: str, result, params: dict[str, Any], prov: dict[str, str]) -> float:
    """Log one finished training result into its RUNNING child run, then mark it FINISHED.

    Returns the seconds spent logging (also logged, as ``time/log_s``).
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    t0 = time.perf_counter()
    c = client()
    now = int(time.time() * 1000)
    tags = {
        **prov,
        "outcome": result.outcome,
        "model_params": str(result.model_params),
        "data_digest": result.data_digest,
    }
    c.log_batch(
        run_id,
        params=[Param(k, _param_value(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    metrics = []
    steps = result.history["step"]
    for key, values in result.history.items():
        if key == "step":
            continue
        metrics += [Metric(key, float(v), now, int(s)) for s, v in zip(steps, values) if math.isfinite(v)]
    last = int(steps[-1]) if len(steps) else 0
    metrics += [Metric(k, v, now, last) for k, v in result.summary().items() if math.isfinite(v)]
    for i in range(0, len(metrics), BATCH):
        c.log_batch(run_id, metrics=metrics[i : i + BATCH])
    cfg = result.config
    ds = Dataset(
        name=cfg.dataset, digest=result.data_digest[:32], source_type="code",
        source=f"mbstudy.load_dataset({cfg.dataset!r}, seed={cfg.data_seed})",
    )
    c.log_inputs(run_id, [DatasetInput(ds, tags=[InputTag("mlflow.data.context", "train")])])
    log_s = time.perf_counter() - t0
    c.log_batch(run_id, metrics=[Metric("time/log_s", log_s, now, last)])
    c.set_terminated(run_id, "FINISHED")
    return log_s


def fail_child(run_id: str, error: str, status: str = "FAILED") -> None:
    from mlflow.entities import RunTag

    c = client()
    c.log_batch(run_id, tags=[RunTag("outcome", "failed"), RunTag("error", error[:4000])])
    c.set_terminated(run_id, status)


def end_run(run_id: str, status: str) -> None:
    client().set_terminated(run_id, status)
