"""Load an experiment's runs from MLflow into tidy DataFrames, cached to Parquet.

Two tables, one schema (the metric and param names are those of
``experiments/engine/tracking.py``):

``runs``: one row per FINISHED child run (``mbstudy.kind = run``):
    ``run_id``, ``end_time`` (ms), ``parent_run_id``, ``outcome``, ``cfg_hash``,
    ``group_hash``, every ``TrainConfig`` field typed back (``batch_size`` int,
    ``learning_rate`` float, ``hidden`` str ...), and every summary metric
    under its own name (``final/train/loss``, ``steps_to_target`` ...).

``history``: one row per logged point: ``run_id``, ``metric``, ``step``, ``value``.

The cache lives in ``.cache/analysis/<experiment>-<kind>.parquet``; a run is
fetched again only when its ``end_time`` changed or it is new, so a second
load of an unchanged store reads no history from MLflow. This module never
trains anything.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
from pathlib import Path

import pandas as pd

from experiments.engine import store as tracking
from mbstudy.config import SEQUENCE_FIELDS, TrainConfig
from mbstudy.metrics import history_metrics

CACHE = tracking.ROOT / ".cache" / "analysis"
HISTORY_KEYS = tuple(history_metrics())  # every metric a run records (mbstudy/metrics.py)


class MissingRuns(LookupError):
    """The store has no finished runs for an experiment; the message names the command to run."""


def _typed(name: str, value: str):
    """A param typed back by :meth:`TrainConfig.parse_param`; None as NaN, sequences (``hidden``) kept as text."""
    if name in SEQUENCE_FIELDS:
        return value
    typed = TrainConfig.parse_param(name, value)
    return float("nan") if typed is None else typed


def experiment_id(name: str, hint: str | None = None) -> str:
    exp = tracking.client().get_experiment_by_name(name)
    if exp is None:
        raise MissingRuns(
            f"no experiment {name!r} in {tracking.tracking_uri()}; run "
            f"{hint or f'make sweep GRID={name}'} first"
        )
    return exp.experiment_id


def search(name: str, kind: str = "run", hint: str | None = None) -> list:
    exp = experiment_id(name, hint)
    runs = tracking.search_all(
        tracking.client(), exp, f"tags.`mbstudy.kind` = '{kind}' and attributes.status = 'FINISHED'"
    )
    if not runs:
        raise MissingRuns(f"experiment {name!r} has no finished runs in {tracking.tracking_uri()}; "
                          f"run {hint or f'make sweep GRID={name}'} first")
    return runs


def _run_row(r) -> dict:
    row = {
        "run_id": r.info.run_id,
        "end_time": int(r.info.end_time or 0),
        "parent_run_id": r.data.tags.get("mlflow.parentRunId", ""),
        "outcome": r.data.tags.get("outcome", ""),
        "cfg_hash": r.data.tags.get("cfg_hash", ""),
        "group_hash": r.data.tags.get("group_hash", ""),
        "prune_group": r.data.tags.get("prune_group", ""),
        **{k: r.data.tags.get(k, "") for k in ("git_commit", "git_dirty", "jax_version", "optax_version",
                                               "mlflow_version", "device")},
    }
    row.update({k: _typed(k, v) for k, v in r.data.params.items()})
    row.update(r.data.metrics)
    return row


def _cache_path(name: str, kind: str, keys=()) -> Path:
    tag = hashlib.sha256("\0".join(sorted(keys)).encode()).hexdigest()[:8] if keys else ""
    return CACHE / f"{name}-{kind}{'-' + tag if tag else ''}.parquet"


def _history_sql(runs: pd.DataFrame, keys) -> list | None:
    """The histories of ``runs`` read straight from a database store's ``metrics`` table (SQLite or PostgreSQL),
    in one query per 500 runs instead of one request per run and key; None for a tracking server, which has no
    database to read. The rows are what ``MlflowClient.get_metric_history`` returns (NaN where MLflow stored one)."""
    uri = tracking.tracking_uri()
    if not uri.startswith(("sqlite:", "postgresql:", "postgresql+")):
        return None
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(uri)
    ends = dict(zip(runs["run_id"], runs["end_time"]))
    ids = list(ends)
    query = text("SELECT run_uuid, key, step, value, is_nan FROM metrics WHERE key IN :keys AND run_uuid IN :ids "
                 "ORDER BY run_uuid, key, timestamp, step").bindparams(bindparam("keys", expanding=True),
                                                                    bindparam("ids", expanding=True))
    rows = []
    try:
        with engine.connect() as con:
            for i in range(0, len(ids), 500):
                for run_id, key, step, value, is_nan in con.execute(query, {"keys": list(keys), "ids": ids[i:i + 500]}):
                    rows.append((run_id, ends[run_id], key, int(step), float("nan") if is_nan else float(value)))
    finally:
        engine.dispose()
    return rows


def load_runs(name: str, *, hint: str | None = None) -> pd.DataFrame:
    """The runs table of a sweep's experiment (see the module docstring)."""
    df = pd.DataFrame([_run_row(r) for r in search(name, hint=hint)])
    return df.sort_values(["run_id"]).reset_index(drop=True)


def load_history(runs: pd.DataFrame, name: str, keys=HISTORY_KEYS, *, progress: bool = True) -> pd.DataFrame:
    """Metric histories of ``runs`` (a runs table), fetched once and cached to Parquet."""
    from tqdm.auto import tqdm

    path = _cache_path(name, "history", keys)
    cached = pd.read_parquet(path) if path.exists() else pd.DataFrame(
        columns=["run_id", "end_time", "metric", "step", "value"])
    fresh = cached.merge(runs[["run_id", "end_time"]], on=["run_id", "end_time"])
    have = set(fresh["run_id"])
    todo = runs[~runs["run_id"].isin(have)]
    if len(todo):
        rows = _history_sql(todo, keys)
        if rows is None:  # a tracking server: one request per run and key
            client = tracking.client()

            def fetch(row):
                out = []
                for key in keys:
                    for m in client.get_metric_history(row.run_id, key):
                        out.append((row.run_id, row.end_time, key, int(m.step), float(m.value)))
                return out

            rows = []
            with cf.ThreadPoolExecutor(4) as pool:
                for part in tqdm(pool.map(fetch, todo.itertuples()), total=len(todo), disable=not progress,
                                 desc=f"history {name}", unit="run"):
                    rows.extend(part)
        new = pd.DataFrame(rows, columns=["run_id", "end_time", "metric", "step", "value"])
        fresh = pd.concat([fresh, new], ignore_index=True) if len(fresh) else new
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fresh.to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: a crash never leaves a half-written cache
    return fresh[fresh["run_id"].isin(runs["run_id"])].drop(columns="end_time").reset_index(drop=True)


def load_simple(name: str, kind: str, hint: str, *, newest_per_case: bool = False) -> pd.DataFrame:
    """Runs of the side experiments (``equivalence``, ``reduction``): params and final metrics.

    ``newest_per_case``: keep only the newest run (by end time) of each set of params, in the order the store
    gave them. A side experiment run again (``make study-extended`` after ``make study`` runs ``equivalence``
    and ``reduction`` a second time; so does ``make equivalence`` by hand) logs the same cases again, and each
    case must count once."""
    runs = search(name, kind, hint)
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "end_time": int(r.info.end_time or 0), **r.data.params, **r.data.metrics,
               **{k: r.data.tags.get(k, "") for k in ("git_commit", "jax_version", "device", "bench_session",
                                                      "mode", "cpu", "cores", "torch_version")}}
        rows.append(row)
    df = pd.DataFrame(rows)
    if newest_per_case and not df.empty:
        keys = sorted({k for r in runs for k in r.data.params})
        older = df.sort_values("end_time", kind="stable").duplicated(keys, keep="last")
        df = df[~older.reindex(df.index)].reset_index(drop=True)
    return df


def latest_parent(name: str) -> str | None:
    """The newest FINISHED parent run of a sweep: figures are logged there as artifacts."""
    try:
        parents = search(name, "parent")
    except MissingRuns:
        return None
    return max(parents, key=lambda r: r.info.end_time or 0).info.run_id
