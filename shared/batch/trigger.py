"""One storage or queue event -> one batch record -> the platform's verdict (GCP, Azure).

Parsers (shared/batch/gcs.py, shared/batch/azure.py) turn an event into a `Record`, or None for an event
that is no input: a folder placeholder, or an object under SLIMSERVE_OUTPUT (results written into a
watched bucket would otherwise trigger themselves, forever). They never judge the payload; the batch core
does, record by record. `BatchTrigger.handle` runs one record and decides what the platform sees:

- success -> return;
- a failure that is ours or storage's (5xx) -> raise `RecordFailed`: the platform redelivers
  (Eventarc with retry enabled, Azure's queue visibility timeout) and, on Azure, dead-letters to the
  `<queue>-poison` / `webjobs-blobtrigger-poison` queue after host.json's `maxDequeueCount`;
- the input's own fault (4xx) -> with `redeliver_client_errors` (Azure: the poison queue is the dead-letter
  queue) raise as well; without it (GCP: Eventarc retries for up to 24 h and a GCS trigger has no
  dead-letter topic) write `<result>.error.json` and return, so a corrupt upload costs one invocation.
"""

from __future__ import annotations

import json
import logging

from shared.batch.core import BatchRunner, Outcome, Record
from shared.batch.keys import under
from shared.config import Settings
from shared.errors import RecordError
from shared.serving.dataplane import DataPlane
from shared.storage import Storage, join

log = logging.getLogger("slimserve")

ERROR_SUFFIX = ".error.json"


class RecordFailed(Exception):
    """Raised to the platform so it redelivers the event, then dead-letters it where it can."""

    def __init__(self, outcome: Outcome):
        super().__init__(f"{outcome.record.key[:300]}: {outcome.error} (status {outcome.status})")
        self.outcome = outcome


def skip(uri: str, output: str) -> bool:
    """True for an event that names no input: a folder placeholder, or one of our own results."""
    if uri.endswith("/"):
        log.info("ignoring %s: a folder placeholder, not an input", uri[:300])
        return True
    if output and under(uri, output):
        log.info("ignoring %s: it is under SLIMSERVE_OUTPUT, a result rather than an input", uri[:300])
        return True
    return False


class BatchTrigger:
    """One per process, beside the HTTP app. An HTTP-only deployment needs no SLIMSERVE_OUTPUT, so the
    runner is made at cold start only when the output is set (a bad prefix then fails the cold start)."""

    def __init__(self, plane: DataPlane, settings: Settings, storage: Storage):
        self.plane = plane
        self.settings = settings
        self.storage = storage
        self._runner = BatchRunner(plane, settings, storage) if settings.output else None

    @property
    def output(self) -> str:
        return self.settings.output

    def handle(self, record: Record | None, *, redeliver_client_errors: bool) -> Outcome | None:
        if record is None:
            return None
        runner = self._runner or BatchRunner(self.plane, self.settings, self.storage)  # raises: SLIMSERVE_OUTPUT unset
        outcome = runner.run([record]).outcomes[0]
        if outcome.ok:
            log.info("batch record %s -> %s", record.key[:300], outcome.output)
            return outcome
        if outcome.status >= 500 or redeliver_client_errors:
            raise RecordFailed(outcome)
        self._write_error(outcome)
        return outcome

    def _write_error(self, outcome: Outcome) -> None:
        record = outcome.record
        try:
            uri = join(self.settings.output, record.relative_key + ERROR_SUFFIX)
        except RecordError:
            log.warning("batch record %r failed and has no key to file its error under: %s", record.key[:300], outcome.error)
            return
        doc = {"input": record.key, "id": record.id, "status": outcome.status, "error": outcome.error}
        self.storage.write(uri, json.dumps(doc, separators=(",", ":")).encode(), "application/json")  # raises: redeliver
        log.warning("batch record %s failed for good (status %d); error filed at %s", record.key[:300], outcome.status, uri)
