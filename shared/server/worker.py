"""The gunicorn worker class of `slimserve serve`: waitress's channels on the worker's inherited sockets.

gunicorn (the arbiter) gives N processes sharing the port, restarts of dead or hung workers, graceful
stop. waitress gives an I/O loop that reads a request's line, headers and body itself (spilling a large
body to a temporary file) and hands only a *complete* request to one of `threads` threads: a slow
client holds a socket and a buffer, never a thread. Measured with 96 connections trickling a header or
a body one byte every 0.5 s (bench/servers.py): gunicorn's own gthread workers answered no other
request; this answered each in a few milliseconds.

On top, a deadline no idle timer gives: a request whose line, headers and body have not all arrived
`request_timeout_s` after its first byte is dropped, however steadily it trickles, so connections
cannot be held forever one byte at a time.

APIs: gunicorn's documented extension point (`Worker.run`, `self.wsgi`, `self.sockets`, `self.cfg`,
`self.alive`, `self.notify`); waitress's public `create_server(app, map=, sockets=, ...)`; and, from
waitress's modules, `wasyncore.loop`, `BaseWSGIServer.active_channels`/`channel_class`, a channel's
`request` (the request being received) and the parser's `parse_header`, pinned to the waitress release
in pyproject.toml and exercised by tests/server.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import time

import waitress
from gunicorn.workers.base import Worker
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer

HEARTBEAT_S = 1.0


class JsonError:
    """A refusal of waitress's own (framing, sizes) in the runtime's one error shape, `{"error": ...}`."""

    def __init__(self, error):
        self.code, self.reason, self.body = error.code, error.reason, error.body
        if error.code == 413:
            self.body = f"request body is over the limit of {WaitressWorker.max_body_bytes} (SLIMSERVE_MAX_BODY_BYTES)"

    def to_response(self, ident=None):
        body = json.dumps({"error": f"{self.reason}: {self.body}" if self.code != 413 else self.body}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body


class StrictParser(HTTPRequestParser):
    """waitress's request parser, stricter in one place and speaking JSON when it refuses.

    waitress reads a request with both Content-Length and chunked as chunked (RFC 9112 6.3 allows it, but
    asks that the connection be closed after): refused outright instead, since a proxy in front that
    trusted the Content-Length would see a different request boundary (smuggling)."""

    def parse_header(self, header_plus) -> None:
        super().parse_header(header_plus)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length and Transfer-Encoding together are refused")

    def received(self, data) -> int:
        consumed = super().received(data)
        if self.error is not None and not isinstance(self.error, JsonError):
            self.error = JsonError(self.error)
        return consumed


class StrictChannel(HTTPChannel):
    parser_class = StrictParser


QUIT_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


def quit_early(arbiter, worker) -> None:
    """gunicorn's post_fork hook. Until the worker installs its own handlers (in init_process), a quit signal
    meets the handler inherited from the arbiter, which only queues it in the child's copy of the arbiter: the
    worker would boot and serve on until graceful_timeout (30 s) kills it. So: our handler now, and a quit
    already queued in that copy stops the worker as soon as it has booted."""

    def stop(sig, frame) -> None:
        worker.alive = False

    for sig in QUIT_SIGNALS:
        signal.signal(sig, stop)
    while True:  # the child's copy of the arbiter's queue (a SimpleQueue): no one else reads it here
        try:
            if arbiter.SIG_QUEUE.get_nowait() in QUIT_SIGNALS:
                worker.alive = False
        except queue.Empty:
            break


class WaitressWorker(Worker):
    # Set by shared/server/serve.py before the arbiter forks: how long a request may take to arrive.
    request_timeout_s = 30.0
    idle_timeout_s = 5.0
    max_body_bytes = 6 * 1024 * 1024

    def run(self) -> None:
        socket_map: dict = {}
        server = waitress.create_server(
            self.wsgi,
            map=socket_map,
            sockets=[s.sock for s in self.sockets],
            threads=self.cfg.threads,
            connection_limit=self.cfg.worker_connections,
            channel_timeout=self.idle_timeout_s,
            cleanup_interval=1,
            max_request_body_size=self.max_body_bytes,
            asyncore_use_poll=True,  # select() fails past file descriptor 1023
            ident="slimserve",
            # No proxy-header rewriting: the app reads no X-Forwarded-* header, and the middleware would
            # walk every environ of every request.
            clear_untrusted_proxy_headers=False,
        )
        for listener in socket_map.values():
            if isinstance(listener, BaseWSGIServer):
                listener.channel_class = StrictChannel
        # The loop runs here, in the main thread, and so does the heartbeat: a wedged loop stops the
        # heartbeat and the arbiter replaces the worker after --timeout. Signals interrupt poll().
        arrivals: dict[int, tuple[object, float]] = {}
        last = 0.0
        while self.alive and socket_map:
            now = time.monotonic()
            if now - last >= HEARTBEAT_S:
                self.notify()
                last = now
                if self.ppid != os.getppid():
                    self.log.info("parent changed, shutting down: %s", self)
                    break
                self._drop_slow_requests(socket_map, arrivals, now)
            wasyncore.loop(timeout=HEARTBEAT_S, use_poll=True, map=socket_map, count=1)
        self._stop(server, socket_map)
        # Leave without interpreter teardown: onnxruntime was imported before the fork, and its static
        # destructors abort the process (std::system_error) when they run in a forked child.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def handle_quit(self, sig, frame) -> None:
        # gunicorn's quick quit (SIGINT/SIGQUIT: Ctrl-C reaches every worker) would raise SystemExit through
        # the arbiter's frames it was forked from; stopping the loop ends the worker within a second instead.
        self.alive = False

    def _drop_slow_requests(self, socket_map: dict, arrivals: dict, now: float) -> None:
        """Close connections whose request has been arriving for longer than request_timeout_s."""
        seen = {}
        for listener in [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]:
            for channel in list(listener.active_channels.values()):
                incoming = channel.request  # the request being received; None between requests
                if incoming is None:
                    continue
                key = id(channel)
                first = arrivals.get(key)
                since = first[1] if first is not None and first[0] is incoming else now
                if now - since > self.request_timeout_s:
                    self.log.warning("closing a connection whose request took over %.0f s to arrive", self.request_timeout_s)
                    channel.close()
                    continue
                seen[key] = (incoming, since)
        arrivals.clear()
        arrivals.update(seen)

    def _stop(self, server, socket_map: dict) -> None:
        """Stop accepting, let the requests in progress finish (graceful_timeout), then quit."""
        for dispatcher in list(socket_map.values()):
            if isinstance(dispatcher, BaseWSGIServer):  # listeners only: the trigger still wakes tasks
                wasyncore.dispatcher.close(dispatcher)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while socket_map and time.monotonic() < deadline:
            if not any(getattr(c, "requests", None) or getattr(c, "total_outbufs_len", 0) for c in socket_map.values()):
                break
            self.notify()
            wasyncore.loop(timeout=0.2, use_poll=True, map=socket_map, count=1)
        server.task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(socket_map, ignore_all=True)
