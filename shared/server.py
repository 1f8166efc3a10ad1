"""`slimserve serve`: the WSGI app on a real threaded HTTP server, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

from werkzeug.serving import make_server

from shared.app import InferenceApp
from shared.runtime import app_from_folders

log = logging.getLogger("slimserve")


def serve(folders: list[str], host: str = "127.0.0.1", port: int = 8080, **overrides) -> None:
    run(app_from_folders(folders, **overrides), host, port)


def run(app: InferenceApp, host: str, port: int) -> None:
    """Serve `app` until Ctrl-C or SIGTERM (what `docker stop` and SageMaker send)."""
    server = make_server(host, port, app, threaded=True)
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()
        # shutdown() waits for serve_forever to return, so it cannot run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    models = ", ".join(f"{m.name}/{m.version}" for m in app.plane.repository)
    log.info("serving %s on http://%s:%d/v2 with %s", models, host, server.server_port, ", ".join(app.plane.server_metadata()["providers"]))
    print(f"slimserve: serving {models} on http://{host}:{server.server_port}/v2", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print("slimserve: stopped", flush=True)
