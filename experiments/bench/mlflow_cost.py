"""5: what logging one sweep run to MLflow costs, as a fraction of its training and evaluation time."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from experiments.engine import tracking
from mbstudy.config import TrainConfig


def bench_logging(data) -> dict:
    """Train one default-sweep run and log it into a scratch SQLite store; compare the times."""
    from mbstudy.train import train

    from experiments.engine import grid as grids

    cfg = TrainConfig(batch_size=64, optimizer="momentum", learning_rate=0.01, target_loss=0.7)
    train(cfg, data)  # compile
    result = train(cfg, data)
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d}/mlflow.db"
        try:
            exp = tracking.get_or_create_experiment("bench-logging")
            prov = tracking.provenance()
            times = []
            for i in range(5):
                t0 = time.perf_counter()
                rid = tracking.start_child(exp, "", f"r{i}", grids.config_hash(cfg), "g", "bench")
                tracking.log_result(rid, result, cfg.to_params(), prov)
                times.append(time.perf_counter() - t0)
        finally:
            if old is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old
    run_s = result.timings["train_s"] + result.timings["eval_s"]
    log_s = statistics.median(times)
    return {"kind": "logging", "s/log_per_run": log_s, "s/train_eval_per_run": run_s,
            "ratio/log_to_train_eval": log_s / run_s}
