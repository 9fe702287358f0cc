"""Ctrl-C and SIGTERM: a sweep stops between store writes, never in the middle of one.

Inside :func:`sigterm_as_interrupt` SIGTERM (what ``timeout``, Slurm and
Kubernetes send) raises :class:`Terminated` in the main thread, as Ctrl-C
raises KeyboardInterrupt, and sets :data:`STOP`, which the executors check
between runs (:func:`raise_if_stopped`). Either arriving inside
:func:`store_write` is raised when the write ends. The exit status is
:func:`interrupted_status`: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, Slurm and Kubernetes send): handled exactly like Ctrl-C, exit status 143."""


STOP = threading.Event()  # set by the SIGTERM handler


class _StoreWrites(threading.local):
    depth = 0  # how many store_write blocks this thread is in
    pending: type[BaseException] | None = None  # an interrupt that arrived inside one


_WRITES = _StoreWrites()


@contextlib.contextmanager
def store_write():
    """A block of store writes that Ctrl-C and SIGTERM do not cut in half.

    An exception raised in the middle of a SQLite transaction leaves the store
    locked for the cleanup that follows; the signal handlers therefore only
    note an interrupt that arrives in here (:func:`defer_interrupt`), and it
    is raised when the block ends.
    """
    _WRITES.depth += 1
    try:
        yield
    finally:
        _WRITES.depth -= 1
    if _WRITES.depth == 0 and _WRITES.pending is not None:
        pending, _WRITES.pending = _WRITES.pending, None
        raise pending()


def defer_interrupt(exc: type[BaseException]) -> bool:
    """Called by a signal handler: True (and ``exc`` kept for later) when inside :func:`store_write`."""
    if _WRITES.depth > 0:
        _WRITES.pending = _WRITES.pending or exc
        return True
    return False


def raise_if_stopped() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived. Executors call this between runs: the handler raises too,
    but an exception raised inside a finalizer or a library callback is swallowed, and this one must not be."""
    if STOP.is_set():
        raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt,
    and sets :data:`STOP`. Either arriving inside a store write (:func:`store_write`) is raised when the write
    ends, not in the middle of a SQLite transaction."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame):
        if STOP.is_set():  # a repeated SIGTERM (Slurm, Kubernetes) must not interrupt the cleanup of the first
            return
        STOP.set()
        if not defer_interrupt(Terminated):  # inside a store write it is raised when the write ends
            raise Terminated()

    def on_sigint(signum, frame):
        if not defer_interrupt(KeyboardInterrupt):
            raise KeyboardInterrupt()

    STOP.clear()
    previous = signal.signal(signal.SIGTERM, on_sigterm), signal.signal(signal.SIGINT, on_sigint)
    _SIGTERM_HANDLER[:] = [on_sigterm]
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        _SIGTERM_HANDLER.clear()
        STOP.clear()


_SIGTERM_HANDLER: list = []  # the handler of the active sigterm_as_interrupt, if any


def reclaim_sigterm() -> None:
    """Install our SIGTERM handler again: Ray's ``init`` replaces it with one that aborts the driver."""
    if _SIGTERM_HANDLER and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _SIGTERM_HANDLER[0])


def interrupted_status(e: BaseException) -> int:
    """128 + the signal's number: 143 for SIGTERM, 130 for Ctrl-C (SIGINT)."""
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
