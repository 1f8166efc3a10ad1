"""Azure Functions adapter (Python v2 programming model): one `app`, three triggers over the shared runtime.

    http      route v2/{*route}; host.json's routePrefix "" keeps the paths /v2/... (not /api/v2/...)
    on_blob   a new blob under %SLIMSERVE_INPUT_CONTAINER% -> the batch core, the blob's bytes inline
    on_queue  a message on %SLIMSERVE_INPUT_QUEUE% -> the batch core (what a message may be: shared/batch/trigger.py)

A failed record raises: the host retries it and after host.json's maxDequeueCount moves it to the
`<queue>-poison` queue (blobs: `webjobs-blobtrigger-poison`), our dead-letter queue.

The app root is the bundle root: host.json (from this folder), requirements.txt and a one-line
`function_app.py` (`from functions.azure.function_app import app`) beside functions/, shared/ and
artifact/, the default artifact (SLIMSERVE_ARTIFACT overrides). The model loads at import, once per worker.
"""

from __future__ import annotations

from pathlib import Path

import azure.functions as func

from shared.batch import trigger as events
from shared.boot.build import build_app

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
STORAGE = "AzureWebJobsStorage"


class _Wsgi(func.WsgiMiddleware):
    # The stock middleware raises on any 5xx, which the host answers with a bare 500: the app's own
    # {"error"} body and Retry-After (what clients back off on) would be lost. The app logs its 5xx itself.
    def _handle_errors(self, wsgi_response) -> None:
        return None


runtime = build_app(BUNDLE_ROOT / "artifact")
batch = events.BatchTrigger(runtime.plane)
wsgi = _Wsgi(runtime)
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="v2/{*route}", auth_level=func.AuthLevel.FUNCTION)
def http(req: func.HttpRequest) -> func.HttpResponse:
    return wsgi.handle(req)


@app.blob_trigger(arg_name="blob", path="%SLIMSERVE_INPUT_CONTAINER%/{name}", connection=STORAGE)
def on_blob(blob: func.InputStream) -> None:
    batch.handle(events.azure_blob(blob.name, blob.read(), batch.output), redeliver_client_errors=True)


@app.queue_trigger(arg_name="msg", queue_name="%SLIMSERVE_INPUT_QUEUE%", connection=STORAGE)
def on_queue(msg: func.QueueMessage) -> None:
    batch.handle(events.queue_message(msg.get_body(), msg.id, batch.output), redeliver_client_errors=True)
