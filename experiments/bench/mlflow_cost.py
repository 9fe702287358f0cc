"""5: what logging a sweep's runs to MLflow costs, as a fraction of their training and evaluation time."""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time

from experiments.engine import provenance, run_writer, store


def bench_logging(data) -> dict:
    """One run of the default sweep per batch size (momentum, lr 0.01, the grid's budget and cadences), each
    created and logged as the sweep does it into a scratch SQLite store; logging against training plus
    evaluation, both summed over the batch sizes (the sweep trains every batch size equally often)."""
    from mbstudy.train import train

    from experiments.engine import grid as grids

    sweep = grids.load("default")
    base = next(c for c in sweep.configs if c.optimizer == "momentum" and c.reduction == "mean" and c.seed == 0
                and c.learning_rate == 0.01)
    sizes = sorted({c.batch_size for c in sweep.configs})
    results = []
    for b in sizes:
        cfg = dataclasses.replace(base, batch_size=b)
        train(cfg, data)  # compile
        results.append(train(cfg, data))
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d}/mlflow.db"
        try:
            exp = store.get_or_create_experiment("bench-logging")
            prov = provenance.provenance()
            per_size = []
            for result in results:
                times = []
                for i in range(3):
                    t0 = time.perf_counter()
                    cfg = result.config
                    rid = run_writer.start_child(exp, "", f"{cfg.run_name()}-{i}", cfg.hash(), "g", "bench")
                    run_writer.log_result(rid, result, cfg.to_params(), prov)
                    times.append(time.perf_counter() - t0)
                per_size.append(statistics.median(times))
        finally:
            if old is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old
    run_s = sum(r.timings["train_s"] + r.timings["eval_s"] for r in results)
    log_s = sum(per_size)
    return {"kind": "logging", "batch_sizes": ",".join(map(str, sizes)), "s/log_per_run": log_s / len(sizes),
            "s/train_eval_per_run": run_s / len(sizes), "ratio/log_to_train_eval": log_s / run_s}
