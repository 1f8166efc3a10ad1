"""Google Cloud Storage events -> batch records.

    CloudEvent google.cloud.storage.object.v1.finalized   Record.from_uri("gs://<bucket>/<name>")

Eventarc delivers only objects of the bucket the trigger watches, so the URI is the event's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.batch.core import Record
from shared.batch.trigger import skip

log = logging.getLogger("slimserve")

GCS_FINALIZED = "google.cloud.storage.object.v1.finalized"


def gcs_object(event_type: str, event_id: str, data: Mapping, output: str) -> Record | None:
    """A GCS CloudEvent (its `type`, `id` and `data`, the object resource) as a record."""
    if event_type != GCS_FINALIZED:
        log.info("ignoring CloudEvent %s of type %s: only %s starts a batch", str(event_id)[:100], str(event_type)[:100], GCS_FINALIZED)
        return None
    uri = f"gs://{data.get('bucket', '')}/{data.get('name', '')}"
    return None if skip(uri, output) else Record.from_uri(uri, id=event_id)
