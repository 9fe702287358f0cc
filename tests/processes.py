"""Tests that start processes: stop exactly what a test started, never by a name pattern (a user's own Ray or
server may run), and watch a sweep's progress without racing it."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path


def new_mark() -> tuple[str, str]:
    """An environment variable to give a process tree: every descendant inherits it, whatever it is called."""
    return "MBSTUDY_TEST_MARK", uuid.uuid4().hex


def marked_pids(mark: tuple[str, str]) -> list[int]:
    """The processes whose environment carries ``mark`` (this one excluded)."""
    needle = f"{mark[0]}={mark[1]}".encode()
    out = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        if pid == os.getpid():
            continue
        try:
            if needle in environ.read_bytes().split(b"\0"):
                out.append(pid)
        except OSError:  # gone, or not ours to read
            continue
    return out


def stop_marked(mark: tuple[str, str], grace: float = 5.0) -> None:
    """SIGTERM to every process carrying ``mark``, then SIGKILL to those still there after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = marked_pids(mark)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline and marked_pids(mark):
            time.sleep(0.2)


def finished_in(db: Path, status: str = "FINISHED") -> int:
    """Child runs with this status (FINISHED, RUNNING), read straight from the SQLite file (read-only: no client,
    no schema migration racing the sweep that is creating the store)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                               "WHERE r.status = ? AND t.key = 'mbstudy.kind' AND t.value = 'run'",
                               (status,)).fetchone()[0]
    except sqlite3.Error:  # not created yet, or mid-migration
        return 0
