"""Google Cloud Functions (gen2) adapter: two targets over the shared runtime.

    http              the shared WSGI app behind the Flask request functions-framework hands over
    on_storage_event  google.cloud.storage.object.v1.finalized -> the batch core on gs://<bucket>/<name>

The model loads at import, once per instance. `artifact/` at the bundle root (beside `functions/`) is the
default; SLIMSERVE_ARTIFACT overrides. Retry semantics of the event target: `shared/batch/trigger.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
# functions-framework loads this file by path and puts only its folder on sys.path; `shared` lives above.
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))

import functions_framework  # noqa: E402
from werkzeug.wrappers import Response  # noqa: E402

from shared.batch.gcs import gcs_object  # noqa: E402
from shared.batch.trigger import BatchTrigger  # noqa: E402
from shared.boot.build import start  # noqa: E402

runtime = start(BUNDLE_ROOT / "artifact")
app = runtime.app
batch = BatchTrigger(runtime.plane, runtime.settings, runtime.storage)


@functions_framework.http
def http(request):
    # The untouched WSGI environ, so bodies and headers pass byte for byte; buffered, so errors raise here.
    return Response.from_app(app, request.environ, buffered=True)


@functions_framework.cloud_event
def on_storage_event(event) -> None:
    record = gcs_object(event["type"], event["id"], event.data or {}, batch.output)
    batch.handle(record, redeliver_client_errors=False)
