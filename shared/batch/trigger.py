"""Storage events of GCP and Azure -> the batch core's `Record`s, and its outcome -> the platform's verdict.

    GCS CloudEvent google.cloud.storage.object.v1.finalized   Record.from_uri("gs://<bucket>/<name>")
    Azure Blob trigger (name "container/blob", the bytes)     Record.inline("<blob>", bytes)
    Azure Queue message, one of:
      an object URI or a bare "container/blob"                Record.from_uri(...)  (azure:// when bare)
      an Event Grid / CloudEvents Microsoft.Storage.BlobCreated event
                                                              Record.from_uri(data.url)
      anything else: an inline OIP v2 infer request           Record.inline("queue/<id>.json", body)
                                                              (result: <output>/queue/<id>.json.json)

The result key is the object key without its bucket or container, under SLIMSERVE_OUTPUT, so the same
input always lands on the same result. A parser answers None for an event that is no input: a folder
placeholder, or an object under SLIMSERVE_OUTPUT (results written into a watched bucket would otherwise
trigger themselves, forever). Parsers never judge the payload; the batch core does, record by record.

`BatchTrigger.handle` runs one record and decides what the platform sees:

- success -> return;
- a failure that is ours or storage's (5xx) -> raise `RecordFailed`: the platform redelivers
  (Eventarc with retry enabled, Azure's queue visibility timeout) and, on Azure, dead-letters to the
  `<queue>-poison` / `webjobs-blobtrigger-poison` queue after host.json's `maxDequeueCount`;
- the input's own fault (4xx) -> with `redeliver_client_errors` (Azure: the poison queue is the dead-letter
  queue) raise as well; without it (GCP: Eventarc retries for up to 24 h and a GCS trigger has no
  dead-letter topic) write `<result>.error.json` and return, so a corrupt upload costs one invocation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Mapping

from shared import storage
from shared.batch.core import BatchRunner, Outcome, Record
from shared.config import Settings
from shared.serving.dataplane import DataPlane
from shared.errors import RecordError

log = logging.getLogger("slimserve")

GCS_FINALIZED = "google.cloud.storage.object.v1.finalized"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
ERROR_SUFFIX = ".error.json"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class RecordFailed(Exception):
    """Raised to the platform so it redelivers the event, then dead-letters it where it can."""

    def __init__(self, outcome: Outcome):
        super().__init__(f"{outcome.record.key}: {outcome.error} (status {outcome.status})")
        self.outcome = outcome


# --- parsers: one per event shape ------------------------------------------------------------------


def gcs_object(event_type: str, event_id: str, data: Mapping, output: str) -> Record | None:
    """A GCS CloudEvent (its `type`, `id` and `data`, the object resource) as a record."""
    if event_type != GCS_FINALIZED:
        log.info("ignoring CloudEvent %s of type %s: only %s starts a batch", event_id, event_type, GCS_FINALIZED)
        return None
    uri = f"gs://{data.get('bucket', '')}/{data.get('name', '')}"
    return None if _skip(uri, output) else Record.from_uri(uri, id=event_id)


def azure_blob(name: str, data: bytes, output: str) -> Record | None:
    """A Blob trigger's blob: the host has read it already, so it travels inline under its own key."""
    uri = f"azure://{name}"
    return None if _skip(uri, output) else Record.inline(name.partition("/")[2], data, id=uri)


def queue_message(body: bytes, message_id: str, output: str) -> Record | None:
    text = body.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        uri = text if "://" in text else f"azure://{text}"
        return None if _skip(uri, output) else Record.from_uri(uri, id=message_id)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and BLOB_CREATED in (doc.get("eventType"), doc.get("type")):
        uri = str((doc.get("data") or {}).get("url", ""))
        return None if _skip(uri, output) else Record.from_uri(uri, id=message_id)
    request_id = doc.get("id") if isinstance(doc, dict) else None
    if not (isinstance(request_id, str) and _SAFE_ID.fullmatch(request_id)):
        request_id = hashlib.sha256(body).hexdigest()  # same body, same result key, however often it is sent
    return Record.inline(f"queue/{request_id}.json", body, id=message_id)


def _skip(uri: str, output: str) -> bool:
    if uri.endswith("/"):
        log.info("ignoring %s: a folder placeholder, not an input", uri)
        return True
    if output and _under(uri, output):
        log.info("ignoring %s: it is under SLIMSERVE_OUTPUT, a result rather than an input", uri)
        return True
    return False


def _under(uri: str, prefix: str) -> bool:
    try:
        obj, out = storage.parse(uri), storage.parse(prefix.rstrip("/") + "/")
    except RecordError:
        return False  # not a URI we can place: let the batch core say what is wrong with it
    return (obj.scheme, obj.container) == (out.scheme, out.container) and obj.key.startswith(out.key)


# --- running one record and settling it ------------------------------------------------------------


class BatchTrigger:
    """One per process, beside the HTTP app. An HTTP-only deployment needs no SLIMSERVE_OUTPUT, so the
    runner is made at cold start only when the output is set (a bad prefix then fails the cold start)."""

    def __init__(self, plane: DataPlane, settings: Settings | None = None):
        self.plane = plane
        self.settings = settings or Settings.resolve()
        self._runner = BatchRunner(plane, self.settings) if self.settings.output else None

    @property
    def output(self) -> str:
        return self.settings.output

    def handle(self, record: Record | None, *, redeliver_client_errors: bool) -> Outcome | None:
        if record is None:
            return None
        runner = self._runner or BatchRunner(self.plane, self.settings)  # raises: SLIMSERVE_OUTPUT unset
        outcome = runner.run([record]).outcomes[0]
        if outcome.ok:
            log.info("batch record %s -> %s", record.key, outcome.output)
            return outcome
        if outcome.status >= 500 or redeliver_client_errors:
            raise RecordFailed(outcome)
        self._write_error(outcome)
        return outcome

    def _write_error(self, outcome: Outcome) -> None:
        record = outcome.record
        try:
            uri = storage.join(self.settings.output, record.relative_key + ERROR_SUFFIX)
        except RecordError:
            log.warning("batch record %r failed and has no key to file its error under: %s", record.key, outcome.error)
            return
        doc = {"input": record.key, "id": record.id, "status": outcome.status, "error": outcome.error}
        storage.write(uri, json.dumps(doc, separators=(",", ":")).encode(), "application/json")  # raises: redeliver
        log.warning("batch record %s failed for good (status %d); error filed at %s", record.key, outcome.status, uri)
