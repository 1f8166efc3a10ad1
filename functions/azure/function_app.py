"""Azure Functions adapter (Python v2 programming model): one `app`, four functions over the shared runtime.

    http      route v2/{*route}; host.json's routePrefix "" keeps the paths /v2/... (not /api/v2/...)
    openai    route v1/{*route}: the same app's OpenAI-compatible embeddings (/v1/embeddings, /v1/models)
    on_blob   a new blob under %SLIMSERVE_INPUT_CONTAINER% -> the batch core, the blob's bytes inline
    on_queue  a message on %SLIMSERVE_INPUT_QUEUE% -> the batch core (what a message may be: shared/batch/azure.py)

A failed record raises: the host retries it and after host.json's maxDequeueCount moves it to the
`<queue>-poison` queue (blobs: `webjobs-blobtrigger-poison`), our dead-letter queue.

The app root is the bundle root: host.json (from this folder), requirements.txt and a one-line
`function_app.py` (`from functions.azure.function_app import app`) beside functions/, shared/ and
artifact/, the default artifact (SLIMSERVE_ARTIFACT overrides). The model loads at import, once per worker.
"""

from __future__ import annotations

from pathlib import Path

import azure.functions as func

from shared.batch import azure as events
from shared.batch.trigger import BatchTrigger
from shared.boot.build import start
from shared.http import bridge

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
STORAGE = "AzureWebJobsStorage"

runtime = start(BUNDLE_ROOT / "artifact")
batch = BatchTrigger(runtime.plane, runtime.settings, runtime.storage)
inputs = events.input_prefixes(runtime.settings)
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _answer(req: func.HttpRequest) -> func.HttpResponse:
    # Not func.WsgiMiddleware: it turns every 5xx into a bare host 500, losing our {"error"} and Retry-After.
    answer = bridge.call(runtime.app, req.method, req.url, req.headers, req.get_body())
    return func.HttpResponse(answer.get_data(), status_code=answer.status_code, headers=dict(answer.headers), mimetype=answer.mimetype)


@app.route(route="v2/{*route}", auth_level=func.AuthLevel.FUNCTION)
def http(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req)


@app.route(route="v1/{*route}", auth_level=func.AuthLevel.FUNCTION)
def openai(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req)


@app.blob_trigger(arg_name="blob", path="%SLIMSERVE_INPUT_CONTAINER%/{name}", connection=STORAGE)
def on_blob(blob: func.InputStream) -> None:
    record = events.azure_blob(blob, batch.output, runtime.settings.batch_max_object_bytes)
    batch.handle(record, redeliver_client_errors=True)


@app.queue_trigger(arg_name="msg", queue_name="%SLIMSERVE_INPUT_QUEUE%", connection=STORAGE)
def on_queue(msg: func.QueueMessage) -> None:
    record = events.queue_message(msg.get_body(), msg.id, batch.output, inputs, runtime.storage.azure_account)
    batch.handle(record, redeliver_client_errors=True)
