"""`slimserve serve` and the endpoint container: the WSGI app under gunicorn's arbiter, each worker running
waitress's channels (shared/server/worker.py), N processes sharing one port.

Defaults follow the machine: one worker per CPU this process may run on (`os.sched_getaffinity`), and
onnxruntime intra-op threads = CPUs / workers (1 with a worker per CPU), so workers do not fight over
cores. Each worker loads the models itself after the fork (an onnxruntime session's thread pool and the
tokenizer's do not survive a fork); the arbiter checks every artifact first, so a bad one ends the
command with one line before any worker starts. Ctrl-C or SIGTERM (what `docker stop` and SageMaker send)
stops it; requests in progress finish first.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import replace

from gunicorn.app.base import BaseApplication

from shared.artifact.fetch import PIN, is_remote, localize, locations, manifest_digest
from shared.artifact.loading import load_artifact, read_manifest
from shared.boot.build import configure_logging, start
from shared.config import Settings
from shared.http.app import InferenceApp
from shared.http.auth import ApiKeys
from shared.http.metrics import Metrics
from shared.serving import batcher
from shared.storage import Storage

log = logging.getLogger("slimserve")

WORKER_CONNECTIONS = 1000  # open connections per worker; an idle or trickling one costs a socket, not a thread


class ServeError(RuntimeError):
    """What ends `serve` with one line: a port in use, a worker that cannot start."""


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def server_settings(folders: list[str], **overrides) -> Settings:
    """Settings with the machine-dependent defaults filled in (workers, onnxruntime threads)."""
    settings = Settings.resolve(artifact=",".join(folders), **overrides)
    workers = settings.workers if settings.workers > 0 else default_workers()
    threads = settings.ort_threads if settings.ort_threads > 0 else max(1, len(os.sched_getaffinity(0)) // workers)
    ApiKeys.from_settings(settings)  # a missing key file fails here, before any worker starts
    configure_logging(settings.log_level, settings.log_format)  # so does an unknown log format
    return replace(settings, workers=workers, ort_threads=threads)


def bind(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), backlog=2048)
    except OSError as exc:  # socket.create_server appends "(while attempting to bind ...)" to strerror: the plain one
        reason = os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def prepare(app: InferenceApp, metrics_folder: str | None = None) -> InferenceApp:
    """What only a server adds to the app: the dynamic batcher, metrics shared between workers."""
    app.metrics = Metrics(metrics_folder)
    if app.settings.log_format == "json":
        app.observer.direct_fd = sys.stderr.fileno()
    for name in batcher.install(app.plane.repository, app.settings, app.metrics.observe_batch):
        log.info("dynamic batching on for %s", name)
    return app


def check_artifacts(settings: Settings) -> list[str]:
    """Every artifact verified once in the arbiter (remote ones fetched into the cache): the local folders the
    workers load, each still pinned where it was pinned, so a worker started later checks it again."""
    storage = Storage.from_settings(settings)
    checked = []
    for location in locations(settings):
        folder = localize(location, settings.cache_dir, storage, settings.allow_unpinned)
        manifest = read_manifest(folder)
        absent_ok = frozenset(manifest.weight_files) if (settings.placement or manifest.placement) == "endpoint" else frozenset()
        load_artifact(folder, absent_ok)
        pinned = PIN in location or is_remote(location) or folder != location.strip()  # fetched (fetch.json too)
        checked.append(f"{folder}{PIN}{manifest_digest(folder)}" if pinned else folder)
    return checked


def serve(folders: list[str], host: str = "127.0.0.1", port: int = 8080, *, sagemaker_runtime: bool = False, **overrides) -> None:
    """Serve `folders` until Ctrl-C or SIGTERM. Raises ArtifactError, ValueError or ServeError."""
    settings = server_settings(folders, **overrides)
    local = check_artifacts(settings)
    # Workers load the verified local copies: the cache is theirs too, no second fetch.
    settings = replace(settings, artifact=",".join(local), artifact_sha256="")
    sock = bind(host, port)
    where = f"http://{host}:{sock.getsockname()[1]}/v2"
    metrics_folder = tempfile.mkdtemp(prefix="slimserve-metrics-")

    def make_app() -> InferenceApp:
        return prepare(start(local[0].partition(PIN)[0], settings, sagemaker_runtime=sagemaker_runtime).app, metrics_folder)

    from shared.server.worker import WaitressWorker, quit_early

    WaitressWorker.request_timeout_s = settings.request_timeout_s
    WaitressWorker.idle_timeout_s = settings.keepalive_s
    WaitressWorker.max_body_bytes = settings.max_body_bytes
    options = {
        "bind": [f"fd://{sock.fileno()}"],
        "workers": settings.workers,
        "worker_class": "shared.server.worker.WaitressWorker",
        "post_fork": quit_early,
        "threads": settings.threads,
        "worker_connections": WORKER_CONNECTIONS,
        "timeout": 30,  # heartbeats come from the I/O loop, so a long inference never trips this
        "graceful_timeout": 30,
        "loglevel": "warning",
        "accesslog": None,  # the app writes one access line per request itself (shared/http/observe.py)
        "control_socket_disable": True,  # gunicorn's control socket is one path shared by every gunicorn of a user
        "proc_name": "slimserve",
        "when_ready": lambda arbiter: print(
            f"slimserve: serving {', '.join(folders)} on {where} with {settings.workers} workers", flush=True
        ),
    }
    try:
        _Arbiter(make_app, options).run()
    finally:
        try:
            sock.close()
        except OSError:  # the arbiter closed its listeners already
            pass
        shutil.rmtree(metrics_folder, ignore_errors=True)
        print("slimserve: stopped", flush=True)


class _Arbiter(BaseApplication):
    def __init__(self, make_app, options: dict):
        self._make_app, self._options = make_app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._make_app()

    def run(self) -> None:
        try:
            super().run()
        except SystemExit as exc:  # the arbiter halts with 3 or 4 when workers cannot boot or load the app
            if exc.code not in (0, None):
                raise ServeError(f"the server's workers could not start (exit {exc.code}); see the log above") from None
