"""The one run writer, and the schema of what every run holds (``analysis/`` reads exactly this).

Where runs go is ``store.py``; the schema:

- one experiment per sweep definition, named after it;
- a parent run per sweep invocation, tag ``mbstudy.kind=parent``, with the summary metrics ``runs/...``,
  ``time/...`` and, for a search grid, ``search/cells``, ``search/done``, ``search/rates``, ``search/edge``
  (edge optima), ``search/blocked`` and ``search/per_cell``;
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
    earlier, ``experiments/engine/pruning.py``), ``sweep``, ``git_commit``,
    ``git_dirty``, ``jax_version``, ``optax_version``, ``mlflow_version``,
    ``device``, ``model`` (the architecture: ``mlp`` or ``cnn``), ``model_params``, ``data_digest``;
  - a searched learning rate's runs, once their cell's search is done
    (``chains.py``): tags ``search/edge`` (``none``, ``low``, ``high``,
    ``unreached``, or several joined by commas), ``search/edge_detail``
    (``loss=none val=high``), ``search/rates`` (the rates the cell tried) and
    ``search/best_lr``; metrics ``search/rates`` and ``search/at_edge`` (0 or 1);
  - the data set as an MLflow input (name, digest, source).

A child run is written in order: created RUNNING when its configuration is
handed to a worker (local executor) or when a Ray task starts it, then params
and tags, metrics in batches, the data set, and only then set FINISHED. A run
that is not FINISHED is incomplete by definition: resuming marks such
leftovers KILLED and trains them again. Parent and child runs carry
``mbstudy.executor`` (``local`` or ``ray``) and the host and process id that
wrote them (``mbstudy.host``, ``mbstudy.pid``), which is how a later sweep
tells a dead sweep's leftovers from a live one's runs (``provenance.py``).

Every MLflow run of the project (a sweep's runs, the equivalence and
reduction experiments, the benchmark) is written through :func:`writing_run`
or :func:`write_run`, which log in batches within MLflow's limits and end the
run only when everything is logged.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from experiments.engine import sql_writer
from experiments.engine.provenance import writer_tags
from experiments.engine.store import client

BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAMS_BATCH = 100  # and of params, and of tags


def start_parent(experiment_id: str, sweep: str, source: str, n_configs: int, prov: dict[str, str],
                 executor: str = "local") -> str:
    """Create a sweep's parent run, RUNNING; returns its id."""
    tags = {"mbstudy.kind": "parent", "sweep": sweep, "grid_file": source, "n_configs": str(n_configs),
            **writer_tags(executor), **prov}
    run = client().create_run(experiment_id, tags=tags, run_name=f"{sweep}-{time.strftime('%Y%m%d-%H%M%S')}")
    return run.info.run_id


def start_child(experiment_id: str, parent_id: str, name: str, cfg_hash: str, group_hash: str, sweep: str,
                executor: str = "local", prune_group: str | None = None) -> str:
    """Create a configuration's child run under ``parent_id``, RUNNING; returns its id."""
    tags = {"mlflow.parentRunId": parent_id, "mbstudy.kind": "run", "cfg_hash": cfg_hash, "group_hash": group_hash,
            "sweep": sweep, **writer_tags(executor), **({"prune_group": prune_group} if prune_group else {})}
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
                       + (f", n_train={cfg.n_train}" if cfg.n_train else "")
                       + "".join(f", {k}={v!r}" for k, v in cfg.data_options().items()) + ")")
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
