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
    ``param/norm``, ``time/train_s`` (cumulative training seconds), and per
    parametrised layer i ``grad/layer{i}/g_norm_sq|trace_cov|b_simple``
    (every name and its summaries: ``mbstudy/metrics.py``; with ``stats_every``
    the statistics are logged at fewer steps than ``train/loss``);
  - summary metrics: ``final/<metric>``, ``best/<metric>`` (losses: min,
    accuracy: max), ``steps_to_target`` and ``examples_to_target`` when
    reached, ``pruned_at`` (the step a pruned run stopped at),
    ``time/compile_s``, ``time/train_s``, ``time/eval_s``, ``time/log_s``;
  - tags: ``cfg_hash``, ``group_hash`` (the hash without the seed),
    ``prune_group`` (the hash without the learning rate, for runs that stop
    at a target), ``outcome`` (``completed``/``diverged``/``pruned``/``failed``;
    ``pruned``: given up once another rate of its group had reached the target
    earlier, ``experiments/engine/lifecycle.py``), ``sweep``, ``git_commit``,
    ``git_dirty``, ``jax_version``, ``optax_version``, ``mlflow_version``,
    ``device``, ``model`` (the architecture: ``mlp`` or ``cnn``), ``model_params``, ``data_digest``;
  - the data set as an MLflow input (name, digest, source).

A child run is written in order: created RUNNING when its configuration is
handed to a worker (local executor) or when a Ray task starts it, then params
and tags, metrics in batches, the data set, and only then set FINISHED. A run
that is not FINISHED is incomplete by definition: resuming marks such
leftovers KILLED and trains them again. Parent and child runs carry
``mbstudy.executor`` (``local`` or ``ray``) and the host and process id that
wrote them (``mbstudy.host``, ``mbstudy.pid``), which is how a later sweep
tells a dead sweep's leftovers from a live one's runs.

Every MLflow run of the project (a sweep's runs, the equivalence and
reduction experiments, the benchmark) is written through :func:`writing_run`
or :func:`write_run`, which log in batches within MLflow's limits and end the
run only when everything is logged.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from experiments.engine import sql_writer
from mbstudy.metrics import TARGETS

ROOT = Path(__file__).resolve().parents[2]  # the project root
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAMS_BATCH = 100  # and of params, and of tags


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"


def store_exists(uri: str | None = None) -> bool:
    """Whether the store is there already: a SQLite or file store's path exists; a server or database is assumed to.

    Reading a SQLite store creates it, so a command that must write nothing (``--dry-run``) asks this first.
    """
    uri = uri or tracking_uri()
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":  # sqlite:///relative/path or sqlite:////absolute/path
        return ":///" in uri and Path(uri.split(":///", 1)[1]).exists()
    if parts.scheme in ("", "file"):
        return Path(parts.path or uri).exists()
    return True


def artifact_root() -> str | None:
    """Where new experiments keep artifacts: beside the default SQLite store, else the server's choice."""
    return None if os.environ.get("MLFLOW_TRACKING_URI") else (ROOT / "mlartifacts").as_uri()


class StoreUnreachable(RuntimeError):
    """The tracking store named by ``MLFLOW_TRACKING_URI`` cannot be reached; the message says how to fix it."""


_FIX = ("start one with `make server` (then export MLFLOW_TRACKING_URI=http://127.0.0.1:5000), "
        "or set MLFLOW_TRACKING_URI to a reachable store; unset it to use the local SQLite file ./mlflow.db")


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***``, for error messages."""
    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@", 1)
    return uri


def check_reachable(uri: str | None = None, timeout: float = 10.0) -> None:
    """Raise :class:`StoreUnreachable` unless the store answers within ``timeout`` seconds.

    A sweep calls this before it creates anything, so an unreachable server
    costs seconds, not MLflow's minutes of retries, and leaves nothing behind.
    HTTP(S): the server's ``/health`` and one experiments search must answer.
    A database URI (``postgresql://``, ``mysql://``, ...): one connection must
    open. SQLite and file stores are local and need no check.
    """
    uri = uri or tracking_uri()
    scheme = urlsplit(uri).scheme
    shown = f"MLFLOW_TRACKING_URI={redact(uri)}"
    if scheme in ("http", "https"):
        import requests

        base = uri.rstrip("/")
        try:
            health = requests.get(f"{base}/health", timeout=timeout)
            api = requests.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=timeout)
        except requests.RequestException as e:
            reason = ("connection refused: nothing listens there" if "refused" in str(e).lower()
                      else f"no answer within {timeout:.0f} s" if isinstance(e, requests.Timeout) else type(e).__name__)
            raise StoreUnreachable(f"{shown}: no tracking server answered ({reason}); {_FIX}") from None
        if health.status_code != 200:
            raise StoreUnreachable(f"{shown}: {base}/health answered HTTP {health.status_code}, not 200: "
                                   f"is this an MLflow tracking server? {_FIX}")
        if api.status_code in (401, 403):
            raise StoreUnreachable(f"{shown}: the server refused the request (HTTP {api.status_code}); "
                                   "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
        if api.status_code != 200:
            raise StoreUnreachable(f"{shown}: the server is up but its store failed (HTTP {api.status_code}: "
                                   f"{api.text[:300].strip()}); check the server's backend store (its log says why)")
    elif scheme and scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        import sqlalchemy

        connect_args = {"connect_timeout": max(1, int(timeout))} if scheme.startswith("postgres") else {}
        try:
            engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as e:  # noqa: BLE001 - any driver error means unreachable
            reason = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreUnreachable(f"{shown}: the database did not accept a connection within {timeout:.0f} s "
                                   f"({reason}); {_FIX}") from None


def client():
    """One MlflowClient per tracking URI, reused across calls (several per logged run)."""
    return _client(tracking_uri())


def reader():
    """A client that cannot write: for a SQLite store, a read-only connection (``mode=ro``) with no WAL switch.

    ``--dry-run`` reads through this, so that it leaves the store's file exactly as it was.
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:") and ":///" in uri:
        from mlflow import MlflowClient

        return MlflowClient(f"sqlite:///file:{uri.split(':///', 1)[1]}?mode=ro&uri=true")
    return client()


@functools.cache
def _client(uri: str):
    from mlflow import MlflowClient

    if uri.startswith("sqlite:"):
        _sqlite_write_ahead_log()
    return MlflowClient(uri)


@functools.cache
def _sqlite_write_ahead_log() -> None:
    """SQLite stores in write-ahead-log mode with ``synchronous=NORMAL``: a commit appends to the log instead of
    rewriting pages and syncing twice. Logging a default-sweep run took 74 ms before and 50 ms after (median of
    6, measured here). A process killed at any moment still leaves the store consistent (SQLite's WAL is atomic
    against application crashes; only a power loss can drop the last commits, never corrupt the file)."""
    import sqlite3

    import sqlalchemy
    from sqlalchemy import event

    @event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _pragmas(dbapi_connection, connection_record):  # every SQLAlchemy connection of this process
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


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


def search_all(c, experiment_id: str, filter_string: str) -> list:
    """Every run of an experiment that matches ``filter_string``, across result pages."""
    runs, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs




def runs_of_config(experiment_id: str, cfg_hash: str) -> list:
    """Every child run of one configuration, whatever its status."""
    return search_all(client(), experiment_id, f"tags.`mbstudy.kind` = 'run' and tags.cfg_hash = '{cfg_hash}'")


def finished_runs(experiment_id: str) -> list:
    """Every FINISHED child run."""
    return search_all(client(), experiment_id, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")


def finished_hashes(experiment_id: str) -> set[str]:
    """cfg_hash of every FINISHED child run."""
    return {r.data.tags.get("cfg_hash") for r in finished_runs(experiment_id)}


def best_steps_to_target(experiment_id: str, prune_group: str) -> dict[str, int]:
    """The fewest steps to each target (``{"loss": steps, "val": steps}``, the targets some run reached) of the
    completed or pruned runs of ``prune_group`` in the store."""
    runs = search_all(client(), experiment_id, f"tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED' "
                                               f"and tags.prune_group = '{prune_group}'")  # no IN for tags
    runs = [r for r in runs if r.data.tags.get("outcome") in ("completed", "pruned")]
    out = {}
    for target, metric in TARGETS.items():
        steps = [r.data.metrics[metric] for r in runs if metric in r.data.metrics]
        if steps:
            out[target] = int(min(steps))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_here(tags: dict[str, str], host: str) -> bool:
    """Whether the run's writer was a process of this host that is gone."""
    pid = int(tags.get("mbstudy.pid", "0") or 0)
    return tags.get("mbstudy.host") == host and (pid == 0 or not _alive(pid))


def mark_stale_runs_killed(experiment_id: str) -> int:
    """Set KILLED the runs left RUNNING by a sweep that is gone; returns how many.

    A RUNNING run is stale when the process that wrote it ran on this host and
    is gone, or when its parent (the sweep's driver) is stale or no longer
    RUNNING. The second rule covers Ray workers on other hosts, whose sweep
    died with its driver. Runs of a live sweep, here or elsewhere, are left alone.
    """
    c = client()
    host = socket.gethostname()
    running = {r.info.run_id: r for r in search_all(c, experiment_id, "attributes.status = 'RUNNING'")}
    stale = {i for i, r in running.items() if r.data.tags.get("mbstudy.kind") == "parent" and _dead_here(r.data.tags, host)}
    for i, r in running.items():
        parent = r.data.tags.get("mlflow.parentRunId")
        if _dead_here(r.data.tags, host) or (parent and (parent in stale or parent not in running)):
            stale.add(i)
    for i in stale:
        c.set_terminated(i, "KILLED")
    return len(stale)


def start_parent(experiment_id: str, sweep: str, source: str, n_configs: int, prov: dict[str, str],
                 executor: str = "local") -> str:
    tags = {
        "mbstudy.kind": "parent", "sweep": sweep, "grid_file": source, "n_configs": str(n_configs),
        "mbstudy.pid": str(os.getpid()), "mbstudy.host": socket.gethostname(), "mbstudy.executor": executor, **prov,
    }
    run = client().create_run(experiment_id, tags=tags, run_name=f"{sweep}-{time.strftime('%Y%m%d-%H%M%S')}")
    return run.info.run_id


def start_child(experiment_id: str, parent_id: str, name: str, cfg_hash: str, group_hash: str, sweep: str,
                executor: str = "local", prune_group: str | None = None) -> str:
    tags = {
        "mlflow.parentRunId": parent_id, "mbstudy.kind": "run", "cfg_hash": cfg_hash, "group_hash": group_hash,
        "sweep": sweep, "mbstudy.pid": str(os.getpid()), "mbstudy.host": socket.gethostname(),
        "mbstudy.executor": executor, **({"prune_group": prune_group} if prune_group else {}),
    }
    return client().create_run(experiment_id, tags=tags, run_name=name).info.run_id


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


# ------------------------------------------------------------ writing runs


class RunWriter:
    """Writes one run: params, tags and metrics in ``log_batch`` calls within MLflow's limits.

    Use :func:`writing_run` (or :func:`write_run` for a run written in one go):
    the run is set FINISHED (or ``status``) only after everything is logged. An
    exception leaves it RUNNING, which resuming treats as incomplete.
    """

    def __init__(self, run_id: str, timestamp: int | None = None):
        self.run_id = run_id
        self.timestamp = int(time.time() * 1000) if timestamp is None else timestamp

    def log(self, *, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
            metrics: dict[str, float] | None = None, step: int = 0,
            histories: dict[str, tuple[Any, Any]] | None = None) -> None:
        """Log ``params`` (lists joined by commas), ``tags``, ``metrics`` (one value each, at ``step``)
        and ``histories`` (metric -> (steps, values); non-finite values are left out)."""
        from mlflow.entities import Param, RunTag

        c = client()
        p = [Param(k, _param_value(v)) for k, v in (params or {}).items()]
        t = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(p), len(t)), PARAMS_BATCH):
            c.log_batch(self.run_id, params=p[i : i + PARAMS_BATCH], tags=t[i : i + PARAMS_BATCH])
        ms = metric_entities(histories or {}, metrics or {}, step, self.timestamp)
        for i in range(0, len(ms), BATCH):
            c.log_batch(self.run_id, metrics=ms[i : i + BATCH])

    def log_dataset(self, name: str, digest: str, source: str, context: str = "train") -> None:
        """The data set as an MLflow input (``source_type`` code: ``source`` is the call that loads it)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        import sqlalchemy
        from mlflow.exceptions import MlflowException

        ds = Dataset(name=name, digest=digest, source_type="code", source=source)
        for attempt in range(3):
            try:
                client().log_inputs(self.run_id, [DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])])
                return
            except MlflowException as e:
                # MLflow checks whether the experiment has the data set, then inserts it: two writers logging it
                # for the first time at once (Ray workers) collide on its key. The retry finds it and links it.
                # On a database store the cause is SQLAlchemy's IntegrityError; through a tracking server it is a
                # RestException whose message carries the server's (SQLAlchemy's code for it is gkpj).
                text = str(e)
                collided = isinstance(e.__cause__, sqlalchemy.exc.IntegrityError) or any(
                    m in text for m in ("IntegrityError", "sqlalche.me/e/21/gkpj", "sqlalche.me/e/20/gkpj",
                                        "UniqueViolation", "duplicate key"))
                if attempt == 2 or not collided:
                    raise
                time.sleep(0.05 * (attempt + 1))


@contextlib.contextmanager
def writing_run(experiment_id: str | None = None, *, run_id: str | None = None, name: str | None = None,
                tags: dict[str, str] | None = None, status: str = "FINISHED", timestamp: int | None = None):
    """Write a run (a new one in ``experiment_id``, or the existing ``run_id``), then end it with ``status``.

    ``with writing_run(exp, name=..., tags=...) as run: run.log(params=..., histories=...)``
    """
    if run_id is None:
        run_id = client().create_run(experiment_id, tags=tags, run_name=name).info.run_id
    elif tags:
        RunWriter(run_id).log(tags=tags)
    writer = RunWriter(run_id, timestamp)
    yield writer
    client().set_terminated(run_id, status)


def write_run(experiment_id: str, *, name: str | None = None, params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None, step: int = 0,
              histories: dict[str, tuple[Any, Any]] | None = None, status: str = "FINISHED",
              timestamp: int | None = None) -> str:
    """Create a run, log everything in batches (see :meth:`RunWriter.log`), end it with ``status``; its id."""
    with writing_run(experiment_id, name=name, tags=tags, status=status, timestamp=timestamp) as run:
        run.log(params=params, metrics=metrics, step=step, histories=histories)
    return run.run_id


def log_result(run_id: str, result, params: dict[str, Any], prov: dict[str, str]) -> float:
    """Log one finished training result into its RUNNING child run, then mark it FINISHED.

    Returns the seconds spent logging (also logged, as ``time/log_s``). On a
    database store (SQLite, PostgreSQL, MySQL) the params, tags and every
    metric point go in ONE transaction (``sql_writer.insert_run_data``), so a run
    is never half-logged, and it is a third of the time of MLflow's
    ``log_batch`` calls; a tracking server gets ``log_batch`` calls.
    """
    t0 = time.perf_counter()
    tags = {
        **prov,
        "outcome": result.outcome,
        "model": result.config.model,
        "model_params": str(result.model_params),
        "data_digest": result.data_digest,
    }
    steps = result.history["step"]
    last = int(steps[-1]) if len(steps) else 0
    histories = {k: (steps, v) for k, v in result.history.items() if k != "step"}
    summary = {k: v for k, v in result.summary().items() if math.isfinite(v)}
    cfg = result.config
    writer = RunWriter(run_id)
    writer.log_dataset(cfg.dataset, result.data_digest[:32], f"mbstudy.load_dataset({cfg.dataset!r}, seed={cfg.data_seed}"
                       + (f", n_train={cfg.n_train})" if cfg.n_train else ")"))
    store = sql_writer.sql_store(client())
    if store is not None and sql_writer.insert_or_leave(
            store, run_id, {k: _param_value(v) for k, v in params.items()}, tags,
            metric_entities(histories, summary, last, writer.timestamp)):
        log_s = time.perf_counter() - t0
        if not sql_writer.insert_or_leave(store, run_id, {}, {},
                                          metric_entities({}, {"time/log_s": log_s}, last, writer.timestamp),
                                          status="FINISHED"):
            with writing_run(run_id=run_id) as run:
                run.log(metrics={"time/log_s": log_s}, step=last)
        return log_s
    with writing_run(run_id=run_id) as run:
        run.log(params=params, tags=tags)
        run.log(histories=histories, metrics=summary, step=last)
        log_s = time.perf_counter() - t0
        run.log(metrics={"time/log_s": log_s}, step=last)
    return log_s


def metric_entities(histories: dict[str, tuple[Any, Any]], metrics: dict[str, float], step: int,
                    timestamp: int) -> list:
    """MLflow ``Metric`` entities: each history's finite points, and ``metrics`` at ``step``."""
    from mlflow.entities import Metric

    ms = []
    for key, (steps, values) in histories.items():
        ms += [Metric(key, float(v), timestamp, int(s)) for s, v in zip(steps, values) if math.isfinite(v)]
    return ms + [Metric(k, float(v), timestamp, int(step)) for k, v in metrics.items()]


def fail_child(run_id: str, error: str, status: str = "FAILED") -> None:
    from mlflow.entities import RunTag

    c = client()
    c.log_batch(run_id, tags=[RunTag("outcome", "failed"), RunTag("error", error[:4000])])
    c.set_terminated(run_id, status)


def end_run(run_id: str, status: str) -> None:
    client().set_terminated(run_id, status)
