"""The Ray executor: ``python -m experiments.sweep GRID --executor ray`` (``make sweep EXECUTOR=ray``).

``RAY_ADDRESS`` selects an existing cluster (``ray start --head`` on one
machine, or a real one); without it, a local Ray instance with ``--workers``
CPUs starts for the sweep and stops with it.

The driver (:func:`experiments.engine.driver.run_sweep`) creates the experiment and
the parent run before any task starts; here it only hands out work and
collects the counts. Each **unit** of work is one Ray task: up to ``unit_size``
configurations that share one compiled program (the runs the local executor
trains one after another, :func:`units`). A task trains its configurations in
turn and logs each run itself to the tracking store the driver names, through
the same lifecycle as the local executor (``experiments/engine/lifecycle.py``).

A learning-rate search's runs are submitted as its cells propose them:
each unit's results go to the search (``chains.SearchWork``) as it comes
back, and the runs they call for become new units.

A task is idempotent, so Ray may retry it after its worker dies
(``max_retries``): before each configuration it skips one that already has a
FINISHED run (in this sweep or an earlier one, under either executor) and
marks KILLED a RUNNING run of the same configuration under the same parent
(left by the dead attempt). So every configuration ends with exactly one
FINISHED run, and the resume logic is the same under both executors.

The project's code travels to the workers as the task's ``working_dir``
(honouring ``.gitignore``), so the workers run the commit that the runs'
``git_commit`` tag records. Every node needs the same Python packages
(``requirements.lock`` plus the ``ray`` extra).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import sys
from pathlib import Path
from typing import Any

from experiments.engine import lifecycle, run_writer, store
from experiments.engine.dispatch import Dispatcher
from experiments.engine.interrupts import raise_if_stopped
from experiments.engine.executors.base import Executor, ExecutorUnavailable
from experiments.engine.lifecycle import RunRecord, SweepContext

# Paths that never go to the workers, on top of what .gitignore already leaves out.
# (Ray itself leaves out .git and .venv.)
_EXCLUDES = [".mlflow-server", "mlflow.db", "mlartifacts", "results", ".cache", "report"]
_MISSING = ("--executor ray needs Ray, an optional dependency: `make setup EXTRAS=ray` "
            "(or `make sweep EXECUTOR=ray`, which installs it)")


class RayUnavailable(ExecutorUnavailable):
    """Ray is not installed, or the cluster named by ``RAY_ADDRESS`` does not answer."""


class RayExecutor(Executor):
    """``--executor ray``: units of runs as Ray tasks (see the module's docstring)."""

    name = "ray"

    def __init__(self, *, workers: int, unit_size: int = 0, max_retries: int = 3):
        super().__init__(workers=workers)
        self.unit_size = unit_size  # runs per task (0: chosen from the sweep's size, default_unit_size)
        self.max_retries = max_retries  # how often Ray retries a task whose worker died

    @classmethod
    def add_options(cls, parser) -> None:
        parser.add_argument("--unit-size", type=int, default=0, metavar="N",
                            help="ray: runs per task, sharing one compiled program (default: 0, chosen from the "
                                 "sweep's size)")
        parser.add_argument("--max-retries", type=int, default=3, metavar="N",
                            help="ray: how often Ray retries a task whose worker died (default: 3)")

    @classmethod
    def option_problems(cls, args) -> list[str]:
        return [f"{flag}: expected {what}; received {value}" for flag, value, ok, what in (
            ("--unit-size", args.unit_size, args.unit_size >= 0, "a positive int, or 0 to choose one"),
            ("--max-retries", args.max_retries, args.max_retries >= 0, "an int >= 0"),
        ) if not ok]

    @classmethod
    def from_options(cls, args) -> RayExecutor:
        return cls(workers=args.workers, unit_size=args.unit_size, max_retries=args.max_retries)

    def preflight(self) -> None:
        check_store_for_cluster()
        if importlib.util.find_spec("ray") is None:
            raise RayUnavailable(_MISSING)

    def connect(self) -> None:
        self.ray = connect(self.workers)

    def run(self, todo, ctx, *, bar, counts, board=None) -> int:
        # pruning: each run reads its group's best steps-to-target from the store when it starts (run_one),
        # and each unit starts nearest its groups' likely best rates (the store's, else the grid's middle)
        if board is not None:
            todo = list(Dispatcher(todo, board))
        size = self.unit_size or default_unit_size(len(todo), self.workers)
        return run_units(self.ray, todo, ctx, unit_size=size, max_retries=self.max_retries, bar=bar, counts=counts)

    def run_search(self, work, ctx, *, bar, counts, board=None) -> int:
        # pruning as above: a run reads its group's best from the store when it starts, which holds every earlier
        # round of its cell (a cell's next round is proposed only once its last one has finished)
        def more(unit, records):
            for cfg, record in zip(unit, records):
                work.finished(cfg, record)
            return work.take_all()

        size = self.unit_size or default_unit_size(round(work.expected_left()), self.workers)
        return run_units(self.ray, work.take_all(), ctx, unit_size=size, max_retries=self.max_retries, bar=bar,
                         counts=counts, more=more)


def units(configs, unit_size: int) -> list[list]:
    """Split configurations into units of at most ``unit_size`` that share one compiled program.

    Within a program the configurations keep their given order (the sweep passes the local executor's order).

    >>> from mbstudy.config import TrainConfig
    >>> cs = [TrainConfig(batch_size=b, learning_rate=lr) for b in (4, 8) for lr in (0.1, 0.2, 0.3)]
    >>> [[(c.batch_size, c.learning_rate) for c in u] for u in units(cs, 2)]
    [[(4, 0.1), (4, 0.2)], [(4, 0.3)], [(8, 0.1), (8, 0.2)], [(8, 0.3)]]
    """
    if unit_size < 1:
        raise ValueError(f"unit_size: expected a positive int; received {unit_size!r}")

    out = []

    def key(cfg):
        return cfg.program_key()

    for _, group in itertools.groupby(sorted(configs, key=key), key=key):  # sorted() is stable
        group = list(group)
        out += [group[i : i + unit_size] for i in range(0, len(group), unit_size)]
    return out


def train_unit(configs, ctx: SweepContext) -> list[RunRecord]:
    """Train and log each configuration of a unit; one record per configuration.

    Runs in a Ray worker (or anywhere: it only needs the store).
    """
    os.environ["MLFLOW_TRACKING_URI"] = ctx.tracking_uri
    records = []
    for cfg in configs:
        h = cfg.hash()
        earlier = store.runs_of_config(ctx.experiment_id, h)
        done = [r for r in earlier if r.info.status == "FINISHED"]
        if done:
            records.append(lifecycle.stored_record(done[0]))
            continue
        # a RUNNING run of this sweep is a dead attempt of this task: Ray retried it
        _end_running(ctx, earlier, "KILLED", "the worker died during this run; Ray retried the task")
        records.append(lifecycle.run_one(ctx, cfg))
    return records


def connect(workers: int):
    """Connect to ``RAY_ADDRESS`` or start a local instance with ``workers`` CPUs; returns the ray module.

    Raises :class:`RayUnavailable` (with the fix) when Ray is not installed or the cluster does not answer.
    """
    import logging
    import warnings

    address = os.environ.get("RAY_ADDRESS") or None
    if address is None or is_loopback(address):
        # One machine: keep Ray on 127.0.0.1. Ray otherwise advertises the machine's network address even for a
        # local instance; this switch (meant for Windows and macOS) makes it use the loopback address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if address and "RAY_AUTH_MODE" not in os.environ and (token.exists() or os.environ.get("RAY_AUTH_TOKEN")):
        # `ray start` enables token authentication and saves the token; a driver uses it only in token mode
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
    except ImportError:
        raise RayUnavailable(_MISSING) from None
    runtime_env = {
        "working_dir": str(store.ROOT),
        "excludes": _EXCLUDES,
        # the workers log where the driver does, with its credentials (MLFLOW_TRACKING_USERNAME, ...)
        "env_vars": {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
                    | {"MLFLOW_TRACKING_URI": store.tracking_uri()}
                    # on this machine the workers share the project's compilation cache (lifecycle.use_compilation_cache)
                    | ({"JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR")
                        or str(store.ROOT / ".cache" / "jax")} if address is None or is_loopback(address) else {}),
    }
    kwargs = dict(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
                  logging_level=logging.WARNING, configure_logging=True)
    try:
        with warnings.catch_warnings():
            # Ray starts its processes with subprocess (fork + exec), which is safe after JAX's threads exist
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if address:
                ray.init(address=address, **kwargs)
            else:  # "local": always a new instance, never a cluster some other command left on this machine
                ray.init(address="local", num_cpus=workers, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError) as e:
        raise RayUnavailable(f"RAY_ADDRESS={address}: could not connect to a Ray cluster ({str(e).strip()[:300]}); "
                             "start one (`make ray-start` for one on this machine), or unset RAY_ADDRESS to start a "
                             "local instance") from None
    return ray


def is_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``ray://host:port``) is on this machine's loopback.

    >>> is_loopback("127.0.0.1:6379"), is_loopback("localhost:6379"), is_loopback("10.0.0.5:6379")
    (True, True, False)
    """
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def check_store_for_cluster() -> None:
    """A cluster's workers may run on other machines: they cannot share a local SQLite file."""
    uri = store.tracking_uri()
    if os.environ.get("RAY_ADDRESS") and (uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri):
        raise store.StoreUnreachable(
            f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} with MLFLOW_TRACKING_URI={uri}: workers of a cluster cannot all "
            "write to a file on this machine; run `make server` and export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 "
            "(or your team's server), or unset RAY_ADDRESS to use a local Ray instance")


def run_units(ray, todo, ctx: SweepContext, *, unit_size: int, max_retries: int, bar, counts, more=None) -> int:
    """Train ``todo`` as Ray tasks on a connected ``ray``; updates ``counts`` and the bar; returns the exit status.

    ``more(unit, records)``: called as each unit comes back, returns configurations to train next (a search's).
    Ray is shut down at the end (for a cluster: this driver disconnects).
    """
    status = 0
    refs: dict[Any, list] = {}
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(train_unit)
        for unit in units(todo, unit_size):
            refs[task.remote(unit, ctx)] = unit
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            ref = done[0]
            unit = refs.pop(ref)
            try:
                records = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the task raised, or its worker died more than max_retries times
                lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
                cause = f"{type(e).__name__}: {lines[-1] if lines else ''}"[:500]  # the error itself is the last line
                print(f"\na Ray task failed ({cause}); its {len(unit)} run(s) are marked FAILED; rerun the command "
                      "to retry them", file=sys.stderr)
                _end_unfinished(ctx, unit, "FAILED", f"the Ray task failed: {cause}")
                records = [RunRecord(cfg.hash(), "failed") for cfg in unit]
            for rec in records:
                counts.add(rec)
                status = max(status, int(rec.status == "failed"))
            for new in units(more(unit, records), unit_size) if more is not None else ():
                refs[task.remote(new, ctx)] = new
            bar.update(len(unit))
            bar.set_postfix(diverged=counts.diverged, failed=counts.failed, refresh=False)
            raise_if_stopped()
    except KeyboardInterrupt:
        if os.environ.get("RAY_ADDRESS"):  # a cluster outlives this driver: its tasks in flight must be cancelled
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - the cluster may be gone already
                    pass
        else:
            # A local instance dies with ray.shutdown(), and its workers with it. Cancelling first is not only
            # unneeded but unsafe: in Ray 2.x a force-cancel that races with a task's reply aborts the driver
            # (RAY_CHECK "Tried to complete task that was not pending", ray-project/ray#54846), which left this
            # sweep's runs RUNNING and exited 1 instead of 143 in CI. Shut down first, then end the runs.
            ray.shutdown()
        for unit in refs.values():
            _end_unfinished(ctx, unit, "KILLED", "interrupted")
        raise
    finally:
        ray.shutdown()
    return status


def _end_running(ctx: SweepContext, runs, status: str, error: str) -> None:
    """End, with ``status`` and ``error``, those of ``runs`` that this sweep left RUNNING."""
    for r in runs:
        if r.info.status == "RUNNING" and r.data.tags.get("mlflow.parentRunId") == ctx.parent_id:
            run_writer.fail_child(r.info.run_id, error, status)


def _end_unfinished(ctx: SweepContext, unit, status: str, error: str) -> None:
    """End the unit's runs of this sweep that are still RUNNING (a task can no longer end them)."""
    for cfg in unit:
        _end_running(ctx, store.runs_of_config(ctx.experiment_id, cfg.hash()), status, error)


def default_unit_size(n_runs: int, workers: int) -> int:
    """Small enough that every worker gets several units, at most 8 runs.

    >>> default_unit_size(13, 2), default_unit_size(756, 2), default_unit_size(5000, 64)
    (2, 8, 8)
    """
    return max(1, min(8, math.ceil(n_runs / (4 * max(1, workers)))))
