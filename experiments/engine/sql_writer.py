"""A finished run's params, tags and metric points in ONE database transaction (SQLite, PostgreSQL, MySQL).

``run_writer.log_result`` writes through here when the store is a database:
the rows MLflow's ``log_batch`` writes (checked by ``tests/test_engine.py``),
through MLflow's own tables and validation, without an ORM object per metric
point, and never half a run. Anything this cannot write as a fresh insert
(a key the run already has, or one another writer adds meanwhile) is left,
unwritten, to ``log_batch``, which merges.
"""

from __future__ import annotations

import time

def insert_or_leave(store, run_id: str, params, tags, metrics, status: str | None = None) -> bool:
    """:func:`insert_run_data`, or False (nothing written) when another writer added one of the keys between
    its check and its insert (the transaction is rolled back; ``log_batch`` then merges as it always does)."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    try:
        return insert_run_data(store, run_id, params, tags, metrics, status)
    except MlflowException as e:
        if isinstance(e.__cause__, sqlalchemy.exc.IntegrityError):
            return False
        raise


def sql_store(client):
    """``client``'s SQLAlchemy store (a database URI), or None (a tracking server, a file store)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def insert_run_data(store, run_id: str, params: dict[str, str], tags: dict[str, str], metrics: list,
                     status: str | None = None) -> bool:
    """Write params, tags and metrics (with their latest values) into a run that has no metrics yet, and
    optionally its end status, in one database transaction through MLflow's own tables and validation.

    This is what MLflow's ``log_batch`` writes for metrics, params and tags the run does not have yet (the
    same rows, checked by ``tests/test_engine.py``), without building an ORM object per metric point (see
    ``make bench`` for the time it saves). Returns False, writing nothing, when the run already has one of these
    metrics, params or tags: ``log_batch`` then merges them as it always does.
    """
    from mlflow.entities import Param, RunTag
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique
    from sqlalchemy import insert, update

    p = [Param(k, str(v)) for k, v in params.items()]
    t = [RunTag(k, str(v)) for k, v in tags.items()]
    metrics, p, t = _validate_batch_log_data(metrics, p, t)
    _validate_param_keys_unique(p)
    rows, latest = {}, {}
    for m in metrics:  # MLflow keeps one row per (key, timestamp, step, value) and the latest by (step, time, value)
        is_nan, value = store.sanitize_metric_value(m.value)
        rows[(m.key, m.timestamp, m.step, value, is_nan)] = None
        if m.key not in latest or (m.step, m.timestamp, value) > latest[m.key][:3]:
            latest[m.key] = (m.step, m.timestamp, value, is_nan)
    with store.ManagedSessionMaker(read_only=False) as session:
        run = session.query(SqlRun).filter(SqlRun.run_uuid == run_id).one()
        store._check_run_is_active(run)
        for model, keys in ((SqlLatestMetric, latest), (SqlParam, {x.key for x in p}), (SqlTag, {x.key for x in t})):
            if keys and session.query(model.key).filter(model.run_uuid == run_id,
                                                        model.key.in_(sorted(keys))).first() is not None:
                return False  # written before (a tag the driver set while ending the run, say): log_batch merges
        if p:
            session.execute(insert(SqlParam.__table__), [{"key": x.key, "value": x.value, "run_uuid": run_id} for x in p])
        if t:
            session.execute(insert(SqlTag.__table__), [{"key": x.key, "value": x.value, "run_uuid": run_id} for x in t])
        if rows:
            session.execute(insert(SqlMetric.__table__), [
                {"key": k, "timestamp": ts, "step": st, "value": v, "is_nan": nan, "run_uuid": run_id}
                for k, ts, st, v, nan in rows])
            session.execute(insert(SqlLatestMetric.__table__), [
                {"key": k, "step": st, "timestamp": ts, "value": v, "is_nan": nan, "run_uuid": run_id}
                for k, (st, ts, v, nan) in latest.items()])
        if status is not None:
            session.execute(update(SqlRun.__table__).where(SqlRun.run_uuid == run_id)
                            .values(status=status, end_time=int(time.time() * 1000)))
    return True
