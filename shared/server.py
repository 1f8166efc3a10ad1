"""`slimserve serve`: the WSGI app on a real threaded HTTP server, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

from werkzeug.serving import make_server

from shared.runtime import app_from_folders

log = logging.getLogger("slimserve")


def serve(folders: list[str], host: str = "127.0.0.1", port: int = 8080, **overrides) -> None:
    app = app_from_folders(folders, **overrides)
    server = make_server(host, port, app, threaded=True)
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()
        # shutdown() waits for serve_forever to return, so it cannot run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    models = ", ".join(f"{m.name}/{m.version}" for m in app.plane.repository)
    log.info("serving %s on http://%s:%d/v2", models, host, server.server_port)
    print(f"slimserve: serving {models} on http://{host}:{server.server_port}/v2", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print("slimserve: stopped", flush=True)
