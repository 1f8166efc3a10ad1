"""Storage-event parsers and the verdict of `BatchTrigger.handle`, on the file:// backend with a tiny real
model (the platforms' own servers and storage emulators are in tests/functions/gcp and tests/functions/azure)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from shared.batch import trigger as events
from shared.batch.core import Record
from shared.config import Settings
from shared.boot.build import build_app
from tests.eventlib import EVENTS
from tests.helpers import write_tiny_artifact

FINALIZED = events.GCS_FINALIZED


def test_gcs_object_is_a_uri_record_unless_it_is_a_folder_a_result_or_another_event_type():
    data = {"bucket": "in", "name": "incoming/a.npy"}
    assert events.gcs_object(FINALIZED, "e1", data, "gs://out/results") == Record.from_uri("gs://in/incoming/a.npy", id="e1")
    assert events.gcs_object(FINALIZED, "e2", {"bucket": "in", "name": "incoming/"}, "gs://out/results") is None
    assert events.gcs_object(FINALIZED, "e3", {"bucket": "out", "name": "results/x.npy.json"}, "gs://out/results/") is None
    assert events.gcs_object(FINALIZED, "e4", {"bucket": "out", "name": "resultsX/a.npy"}, "gs://out/results") is not None
    assert events.gcs_object("google.cloud.storage.object.v1.deleted", "e5", data, "gs://out/results") is None


def test_azure_blob_travels_inline_under_its_key_without_the_container():
    record = events.azure_blob("incoming/batch/a.npy", b"bytes", "azure://results/out")
    assert (record.key, record.data, record.id) == ("batch/a.npy", b"bytes", "azure://incoming/batch/a.npy")
    assert events.azure_blob("results/out/batch/a.npy.json", b"{}", "azure://results/out") is None
    # The https:// form of the output names the same place.
    assert events.azure_blob("results/out/x.npy.json", b"{}", "https://acct.blob.core.windows.net/results/out") is None


def test_queue_message_forms():
    out = "azure://results/out"
    assert events.queue_message(b"incoming/a.npy", "m1", out) == Record.from_uri("azure://incoming/a.npy", id="m1")
    assert events.queue_message(b" s3://b/k.npy\n", "m2", out) == Record.from_uri("s3://b/k.npy", id="m2")
    grid = (EVENTS / "eventgrid-blob-created.json").read_bytes()
    assert events.queue_message(grid, "m3", out).key == "https://slimservein.blob.core.windows.net/incoming/batch/b.npy"
    cloudevent = json.dumps({"type": events.BLOB_CREATED, "data": {"url": "https://a.blob.core.windows.net/c/x.npz"}}).encode()
    assert events.queue_message(cloudevent, "m4", out).key == "https://a.blob.core.windows.net/c/x.npz"

    inline = json.dumps({"id": "req-1", "inputs": []}).encode()
    assert events.queue_message(inline, "m5", out) == Record.inline("queue/req-1.json", inline, id="m5")
    # An id that is no safe key (or none, or no JSON at all) gives way to the body's sha256: same body, same key.
    for body in (json.dumps({"id": "../../etc", "inputs": []}).encode(), b'{"inputs": []}', b"{not json"):
        assert events.queue_message(body, "m6", out).key == f"queue/{hashlib.sha256(body).hexdigest()}.json"


@pytest.fixture
def trigger(tmp_path) -> events.BatchTrigger:
    app = build_app(write_tiny_artifact(tmp_path / "tiny"))
    return events.BatchTrigger(app.plane, Settings.resolve(output=(tmp_path / "out").as_uri()))


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def test_success_writes_the_result(trigger, tmp_path):
    outcome = trigger.handle(Record.inline("in/a.npy", npy(np.ones((2, 4), np.float32)), id="a"), redeliver_client_errors=False)
    assert outcome.ok and Path(tmp_path / "out/in/a.npy.json").exists()
    assert trigger.handle(None, redeliver_client_errors=True) is None


def test_client_error_is_filed_or_raised_as_the_platform_wants(trigger, tmp_path):
    bad = Record.inline("in/bad.npy", npy(np.ones((2, 5), np.float32)), id="b")
    outcome = trigger.handle(bad, redeliver_client_errors=False)
    assert outcome.status == 400
    filed = json.loads((tmp_path / "out/in/bad.npy.error.json").read_text())
    assert filed == {"input": "in/bad.npy", "id": "b", "status": 400, "error": outcome.error}
    with pytest.raises(events.RecordFailed) as failure:
        trigger.handle(bad, redeliver_client_errors=True)
    assert failure.value.outcome.status == 400


def test_a_record_without_a_safe_key_is_acknowledged_without_an_error_object(trigger, tmp_path):
    outcome = trigger.handle(Record.inline("../escape.npy", b"x", id="c"), redeliver_client_errors=False)
    assert outcome.status == 400 and not list((tmp_path).glob("**/*.error.json"))


def test_failure_that_is_not_the_inputs_fault_raises(trigger, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "in").write_text("a file where the result folder must go")  # the write fails: 502
    with pytest.raises(events.RecordFailed) as failure:
        trigger.handle(Record.inline("in/a.npy", npy(np.ones((1, 4), np.float32))), redeliver_client_errors=False)
    assert failure.value.outcome.status >= 500


def test_output_is_required_only_when_an_event_arrives(tmp_path):
    app = build_app(write_tiny_artifact(tmp_path / "tiny"))
    trigger = events.BatchTrigger(app.plane, Settings.resolve(environ={}))  # an HTTP-only deployment starts
    with pytest.raises(ValueError, match="SLIMSERVE_OUTPUT"):
        trigger.handle(Record.from_uri("gs://b/a.npy"), redeliver_client_errors=False)
