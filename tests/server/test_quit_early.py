"""A quit signal that reaches a worker between its fork and gunicorn's own handlers (Ctrl-C right after the
server is up, while the second worker boots) once left that worker serving until graceful_timeout killed it:
`slimserve serve` took 30 s to stop. gunicorn's post_fork hook (shared/server/worker.py quit_early) closes it."""

from __future__ import annotations

import os
import queue
import signal

import pytest
from gunicorn.arbiter import Arbiter

from shared.server.worker import QUIT_SIGNALS, WaitressWorker, quit_early


@pytest.fixture
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in QUIT_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def queued(*signals: int) -> Arbiter:
    """An arbiter's signal queue as gunicorn makes and fills it (its own handler, `Arbiter.signal`)."""
    arbiter = Arbiter.__new__(Arbiter)
    arbiter.SIG_QUEUE = queue.SimpleQueue()
    for sig in signals:
        arbiter.signal(sig, None)
    return arbiter


def worker() -> WaitressWorker:
    w = WaitressWorker.__new__(WaitressWorker)  # what post_fork receives: not yet through init_process
    w.alive = True
    return w


def test_a_quit_queued_before_the_hook_stops_the_worker_once_booted(handlers):
    arbiter = queued(signal.SIGCHLD, signal.SIGINT)  # the inherited handler queued it in the child's copy
    w = worker()
    quit_early(arbiter, w)
    assert w.alive is False


@pytest.mark.parametrize("sig", QUIT_SIGNALS)
def test_a_quit_after_the_hook_stops_the_worker(handlers, sig):
    arbiter = queued(signal.SIGCHLD)
    w = worker()
    quit_early(arbiter, w)
    assert w.alive is True
    os.kill(os.getpid(), sig)  # delivered to the main thread before kill returns
    assert w.alive is False
