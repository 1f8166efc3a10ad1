"""`slimserve serve`: the WSGI app on slimserve's own HTTP/1.1 server, in one process or `--workers N`.

Defaults follow the machine: one worker per CPU this process may run on (`os.sched_getaffinity`), and
onnxruntime intra-op threads = CPUs / workers (1 with a worker per CPU), so workers do not fight over
cores. Stopped cleanly by Ctrl-C or SIGTERM (what `docker stop` and SageMaker send): requests in
progress finish first.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import replace

from shared.serving import batcher
from shared.http.app import InferenceApp
from shared.http.auth import ApiKeys
from shared.config import Settings
from shared.server.httpserver import HttpServer
from shared.http.metrics import Metrics
from shared.boot.build import build_app
from shared.server.workers import bind, default_workers, serve_workers

log = logging.getLogger("slimserve")


def server_settings(folders: list[str], **overrides) -> Settings:
    """Settings with the machine-dependent defaults filled in (workers, onnxruntime threads)."""
    settings = Settings.resolve(artifact=",".join(folders), **overrides)
    workers = settings.workers if settings.workers > 0 else default_workers()
    threads = settings.ort_threads if settings.ort_threads > 0 else max(1, len(os.sched_getaffinity(0)) // workers)
    ApiKeys.from_settings(settings)  # a missing key file fails here, before any worker starts
    return replace(settings, workers=workers, ort_threads=threads)


def serve(folders: list[str], host: str = "127.0.0.1", port: int = 8080, **overrides) -> None:
    settings = server_settings(folders, **overrides)

    if settings.workers == 1:
        run(build_app(folders[0], settings), host, port)
        return

    def make_app(metrics_folder: str | None) -> InferenceApp:
        return prepare(build_app(folders[0], settings), metrics_folder)

    sock = bind(host, port)
    where = f"http://{host}:{sock.getsockname()[1]}/v2"
    options = _options(settings)
    try:
        serve_workers(make_app, sock, settings.workers, options,
                      on_ready=lambda: print(f"slimserve: serving {', '.join(folders)} on {where} with {settings.workers} workers", flush=True))  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        print("slimserve: stopped", flush=True)


def prepare(app: InferenceApp, metrics_folder: str | None = None) -> InferenceApp:
    """What only a server adds to the app: the dynamic batcher, metrics shared between workers."""
    app.metrics = Metrics(metrics_folder)
    if app.settings.log_format == "json":
        app.observer.direct_fd = sys.stderr.fileno()
    for name in batcher.install(app.plane.repository, app.settings, app.metrics.observe_batch):
        log.info("dynamic batching on for %s", name)
    return app


def run(app: InferenceApp, host: str, port: int) -> None:
    """Serve `app` in this process until Ctrl-C or SIGTERM."""
    prepare(app)
    sock = bind(host, port)
    server = HttpServer(sock, app, **_options(app.settings))
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda signum, frame: server.shutdown())
    models = ", ".join(f"{m.name}/{m.version}" for m in app.plane.repository)
    log.info("serving %s on http://%s:%d/v2 with %s", models, host, sock.getsockname()[1], ", ".join(app.plane.server_metadata()["providers"]))
    print(f"slimserve: serving {models} on http://{host}:{sock.getsockname()[1]}/v2", flush=True)
    try:
        server.serve_forever()
    finally:
        sock.close()
        print("slimserve: stopped", flush=True)


def _options(settings: Settings) -> dict:
    return {"threads": settings.threads, "keepalive_s": settings.keepalive_s, "max_body_bytes": settings.max_body_bytes}
