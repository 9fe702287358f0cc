"""Stop exactly the processes a test started, never by a name pattern (a user's own Ray or server may run)."""

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
