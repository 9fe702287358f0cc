"""The MLflow store: where it is, a client for it, whether it answers, and searching it.

The store is ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``
with artifacts in ``<project>/mlartifacts`` (so ``make ui`` in the project
root sees them). What a run holds is ``run_writer.py``'s schema; this module
knows nothing of runs beyond finding them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]  # the project root


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
    The file is named as an SQLite URI whose path is percent-encoded (``file:%2Fwork%2Fmlflow.db``): MLflow makes
    the parent folder of what follows ``sqlite:///``, which for ``file:/work/mlflow.db`` was a folder ``file:/work``
    in the working directory, left behind by every dry run and ETA.
    """
    from urllib.parse import quote

    uri = tracking_uri()
    if uri.startswith("sqlite:") and ":///" in uri:
        from mlflow import MlflowClient

        path = os.path.abspath(uri.split(":///", 1)[1])
        return MlflowClient(f"sqlite:///file:{quote(path, safe='')}?mode=ro&uri=true")
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


# The experiment tag MLflow's UI reads for an experiment's kind, and its value for model training (MLflow 3.17.2's
# ExperimentKind.CUSTOM_MODEL_DEVELOPMENT, "Machine learning" in its kind selector; "genai_development" is the other).
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def ui_url(base: str, experiment_id: str) -> str:
    """The MLflow UI's page of an experiment's runs, in its model-training view.

    MLflow 3.17's UI opens every experiment in the view its GenAI / Model training
    switch last chose in that browser (GenAI at first), whatever the experiment's
    kind tag says; the ``workflowType`` parameter of the address chooses it.

    >>> ui_url("http://127.0.0.1:5000", "3")
    'http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning'
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def get_or_create_experiment(name: str, description: str = "") -> str:
    """Create the store (schema) and the experiment once, before any worker starts; tagged as model training
    (:data:`KIND_TAG`), as is an existing one that has no kind yet (one made before, resumed now)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        if KIND_TAG not in exp.tags:  # a kind chosen in the UI is left as it is
            c.set_experiment_tag(exp.experiment_id, KIND_TAG, MODEL_TRAINING)
        return exp.experiment_id
    tags = {KIND_TAG: MODEL_TRAINING, **({"mlflow.note.content": description} if description else {})}
    return c.create_experiment(name, artifact_location=artifact_root(), tags=tags)


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
