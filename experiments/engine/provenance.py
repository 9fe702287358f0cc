"""Where a run comes from: the code, the libraries and the device that made it, and the process that wrote it.

Every run carries :func:`provenance` as tags (``git_commit``, ``git_dirty``,
``jax_version``, ``optax_version``, ``mlflow_version``, ``device``); a sweep's
parent and child runs also carry :func:`writer_tags` (``mbstudy.executor``,
``mbstudy.host``, ``mbstudy.pid``), which is how a later sweep tells a dead
sweep's leftovers from a live one's runs (:func:`mark_stale_runs_killed`).
"""

from __future__ import annotations

import os
import socket
import subprocess

from experiments.engine import store


def provenance() -> dict[str, str]:
    """git commit and dirty flag, library versions, and the device."""
    import jax
    import mlflow
    import optax

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=store.ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
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


def writer_tags(executor: str) -> dict[str, str]:
    """The process writing a run: this host and process id, under ``executor``."""
    return {"mbstudy.pid": str(os.getpid()), "mbstudy.host": socket.gethostname(), "mbstudy.executor": executor}


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
    c = store.client()
    host = socket.gethostname()
    running = {r.info.run_id: r for r in store.search_all(c, experiment_id, "attributes.status = 'RUNNING'")}
    stale = {i for i, r in running.items() if r.data.tags.get("mbstudy.kind") == "parent" and _dead_here(r.data.tags, host)}
    for i, r in running.items():
        parent = r.data.tags.get("mlflow.parentRunId")
        if _dead_here(r.data.tags, host) or (parent and (parent in stale or parent not in running)):
            stale.add(i)
    for i in stale:
        c.set_terminated(i, "KILLED")
    return len(stale)
