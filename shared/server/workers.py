"""`slimserve serve --workers N`: N processes accepting on one listening socket (pre-fork).

Processes, not threads, because the GIL serialises everything but `session.run`, and one session with
1 intra-op thread per process scales across cores better than one session with N threads on batch-1
work (small GEMMs parallelise poorly). Each worker loads the models itself after the fork: an
onnxruntime session's thread pool does not survive a fork, and a failed load is reported by the
worker that hit it.

    supervisor   binds, forks N workers, waits until each reports "ok" (or an error, which stops all),
                 restarts a worker that dies while serving (unless that happened 5 times in 30 s: a crash
                 loop), and on SIGTERM/SIGINT stops them all gracefully
    worker       builds the app, serves until SIGTERM, finishes the requests in progress

Connections are spread by `Balance`: a worker holding more connections than the least busy one lets
the others accept first. Keep-alive clients stay on the worker that accepted them, so without it one
quick worker could take every connection of a benchmark and leave the other core to itself.
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from typing import Callable

from shared.errors import ArtifactError
from shared.server.httpserver import HttpServer

log = logging.getLogger("slimserve")

class WorkersFailed(RuntimeError):
    """The workers cannot be kept running (a crash loop, or one that exited before it was ready)."""


_RESTARTS, _RESTART_WINDOW_S = 5, 30.0  # more restarts than this within the window: a crash loop, stop


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    sock = socket.create_server((host, port), backlog=backlog)
    sock.set_inheritable(True)
    return sock


class Balance:
    """Open connections per worker in shared memory; -1 marks a slot with no live worker."""

    def __init__(self, workers: int):
        self._buf = mmap.mmap(-1, 4 * workers)  # anonymous and MAP_SHARED: the children see one buffer
        self.counts = memoryview(self._buf).cast("i")
        for i in range(workers):
            self.counts[i] = -1
        self.index = -1

    def may_accept(self) -> bool:
        live = [c for c in self.counts if c >= 0]
        return not live or self.counts[self.index] <= min(live)

    def opened(self) -> None:
        self.counts[self.index] += 1  # only this worker writes its slot

    def closed(self) -> None:
        self.counts[self.index] -= 1


def serve_workers(make_app: Callable[[str | None], Callable], sock: socket.socket, workers: int, server_options: dict,
                  on_ready: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    """Run `workers` processes serving `make_app(metrics_folder)` on `sock` until SIGTERM/SIGINT."""
    folder = tempfile.mkdtemp(prefix="slimserve-metrics-")
    balance = Balance(workers)
    ready_r, ready_w = os.pipe()
    children: dict[int, int] = {}  # pid -> slot
    restarts: list[float] = []
    stopping = []

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            code = _worker(make_app, folder, sock, slot, balance, server_options, ready_w)
            os._exit(code)
        children[pid] = slot

    previous = {s: signal.signal(s, lambda signum, frame: stopping.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for slot in range(workers):
            spawn(slot)
        _await_ready(ready_r, workers, children)
        on_ready()
        while not stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.2)
                continue
            slot = children.pop(pid)
            balance.counts[slot] = -1
            if stopping:
                break
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < _RESTART_WINDOW_S] + [now]
            if len(restarts) > _RESTARTS:
                raise WorkersFailed(f"workers died {len(restarts)} times within {_RESTART_WINDOW_S:.0f} s; stopping")
            log.warning("worker %d (pid %d) exited with %d; starting another", slot, pid, os.waitstatus_to_exitcode(status))
            spawn(slot)
            _await_ready(ready_r, 1, children)
    finally:
        _stop(children)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(ready_r)
        os.close(ready_w)
        shutil.rmtree(folder, ignore_errors=True)


def _worker(make_app, folder: str, sock, slot: int, balance: Balance, options: dict, ready_w: int) -> int:
    stop: list[int] = []
    for s in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C reaches the whole process group
        signal.signal(s, lambda signum, frame: stop.append(signum))
    try:
        app = make_app(folder)
        balance.index = slot
        balance.counts[slot] = 0
        server = HttpServer(sock, app, multiprocess=True, balance=balance, **options)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda signum, frame: server.shutdown())
        if stop:  # asked to stop while loading
            return 0
        os.write(ready_w, b"ok\n")
        server.serve_forever()
        return 0
    except BaseException as exc:  # reported to the supervisor, which stops the rest
        message = exc.message if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"
        try:
            os.write(ready_w, ("error " + message.replace("\n", " ")[:3000] + "\n").encode("utf-8", "replace"))
        except OSError:
            pass
        return 3


def _await_ready(ready_r: int, count: int, children: dict, timeout_s: float = 600.0) -> None:
    buffered, deadline = b"", time.monotonic() + timeout_s
    while count:
        if time.monotonic() > deadline:
            raise WorkersFailed(f"workers did not report ready within {timeout_s:.0f} s")
        readable, _, _ = select.select([ready_r], [], [], 0.5)
        if not readable:
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    slot = children.pop(pid)
                    raise WorkersFailed(f"worker {slot} exited with {os.waitstatus_to_exitcode(status)} before it was ready")
            continue
        buffered += os.read(ready_r, 4096)
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            if line.startswith(b"error "):
                raise ArtifactError(line[6:].decode("utf-8", "replace"))
            count -= 1


def _stop(children: dict, timeout_s: float = 30.0) -> None:
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while children and time.monotonic() < deadline:
        for pid in list(children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                children.pop(pid)
        time.sleep(0.05)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
