"""A fault-injecting WSGI middleware in front of the real endpoint app, and a loopback server to host it.

Only tests use it: the endpoint answers for real unless a mode says otherwise, and every request it sees
is counted, so a test can prove that an open breaker keeps calls off the endpoint.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from werkzeug.serving import make_server

from shared.http.sagemaker_runtime import aws_error, model_error

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request drowns the test log

# mode -> what the endpoint answers instead of the truth (SageMaker runtime API shape / OIP v2 shape)
_RUNTIME = {
    "5xx": lambda: aws_error("ServiceUnavailable", 503, "The service is unavailable."),
    "throttle": lambda: aws_error("ThrottlingException", 400, "Rate exceeded"),  # AWS sends throttling as 400
    "model-500": lambda: model_error(500, json.dumps({"error": "CUDA out of memory"})),
    "reject": lambda: model_error(400, json.dumps({"error": "input 'input' is out of the model's range"})),
}


def _plain(status: int, message: str):
    from werkzeug.wrappers import Response

    return lambda: Response(json.dumps({"error": message}), status=status, mimetype="application/json")


_OIP = {
    "5xx": _plain(503, "upstream unavailable"),
    "throttle": _plain(429, "too many requests"),
    "model-500": _plain(500, "CUDA out of memory"),
    "reject": _plain(400, "input 'input' is out of the model's range"),
}


class FaultInjector:
    def __init__(self, app):
        self.app = app
        self.mode = "ok"  # ok | slow | 5xx | throttle | model-500 | reject
        self.delay_s = 0.0
        self.seen = 0
        self.last_headers: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.seen += 1
            self.last_headers = {
                k.removeprefix("HTTP_").replace("_", "-").lower(): v
                for k, v in environ.items()
                if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
            }
        mode = self.mode
        if mode == "slow":
            time.sleep(self.delay_s)
        elif mode != "ok":
            table = _RUNTIME if environ["PATH_INFO"].startswith("/endpoints/") else _OIP
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            return table[mode]()(environ, start_response)
        return self.app(environ, start_response)


class LoopbackServer:
    """A WSGI app on 127.0.0.1:<free port>, threaded like `slimserve serve`; always stopped by the fixture."""

    def __init__(self, app):
        self.faults = FaultInjector(app)
        self._server = make_server("127.0.0.1", 0, self.faults, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
