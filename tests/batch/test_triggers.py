"""Storage-event parsers and the verdict of `BatchTrigger.handle`, on the file:// backend with a tiny real
model (the platforms' own servers and storage emulators are in tests/functions/gcp and tests/functions/azure)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from shared.batch.azure import BLOB_CREATED, azure_blob, input_prefixes, queue_message
from shared.batch.core import Record
from shared.batch.gcs import GCS_FINALIZED as FINALIZED
from shared.batch.gcs import gcs_object
from shared.batch.trigger import BatchTrigger, RecordFailed
from shared.boot.build import start
from shared.config import Settings
from shared.storage import Storage
from tests.eventlib import EVENTS
from tests.helpers import write_tiny_artifact

INPUTS = ("azure://incoming/",)


class Blob:
    """What the Functions host hands a blob trigger: name, length, read()."""

    def __init__(self, name: str, data: bytes, length: int | None = None):
        self.name, self.data, self.length, self.reads = name, data, len(data) if length is None else length, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return self.data if size < 0 else self.data[:size]


def test_gcs_object_is_a_uri_record_unless_it_is_a_folder_a_result_or_another_event_type():
    data = {"bucket": "in", "name": "incoming/a.npy"}
    assert gcs_object(FINALIZED, "e1", data, "gs://out/results") == Record.from_uri("gs://in/incoming/a.npy", id="e1")
    assert gcs_object(FINALIZED, "e2", {"bucket": "in", "name": "incoming/"}, "gs://out/results") is None
    assert gcs_object(FINALIZED, "e3", {"bucket": "out", "name": "results/x.npy.json"}, "gs://out/results/") is None
    assert gcs_object(FINALIZED, "e4", {"bucket": "out", "name": "resultsX/a.npy"}, "gs://out/results") is not None
    assert gcs_object("google.cloud.storage.object.v1.deleted", "e5", data, "gs://out/results") is None


def test_azure_blob_travels_inline_under_its_key_without_the_container():
    record = azure_blob(Blob("incoming/batch/a.npy", b"bytes"), "azure://results/out", 1000)
    assert (record.key, record.data, record.id) == ("batch/a.npy", b"bytes", "azure://incoming/batch/a.npy")
    assert azure_blob(Blob("results/out/batch/a.npy.json", b"{}"), "azure://results/out", 1000) is None
    # The https:// form of the output names the same place.
    assert azure_blob(Blob("results/out/x.npy.json", b"{}"), "https://acct.blob.core.windows.net/results/out", 1000) is None


def test_an_azure_blob_over_the_limit_is_refused_from_its_length_without_reading_it():
    blob = Blob("incoming/big.npy", b"", length=10**9)
    record = azure_blob(blob, "azure://results/out", 1000)
    assert blob.reads == 0 and "over SLIMSERVE_BATCH_MAX_OBJECT_BYTES=1,000" in record.refusal


def test_queue_message_forms():
    out = "azure://results/out"
    assert queue_message(b"incoming/a.npy", "m1", out, INPUTS) == Record.from_uri("azure://incoming/a.npy", id="m1")
    grid = (EVENTS / "eventgrid-blob-created.json").read_bytes()
    assert queue_message(grid, "m3", out, INPUTS).key == "https://slimservein.blob.core.windows.net/incoming/batch/b.npy"
    cloudevent = json.dumps({"type": BLOB_CREATED, "data": {"url": "https://a.blob.core.windows.net/incoming/x.npz"}}).encode()
    assert queue_message(cloudevent, "m4", out, INPUTS).key == "https://a.blob.core.windows.net/incoming/x.npz"

    inline = json.dumps({"id": "req-1", "inputs": []}).encode()
    assert queue_message(inline, "m5", out, INPUTS) == Record.inline("queue/req-1.json", inline, id="m5")
    # An id that is no safe key (or none, or no JSON at all) gives way to the body's sha256: same body, same key.
    for body in (json.dumps({"id": "../../etc", "inputs": []}).encode(), b'{"inputs": []}', b"{not json", b'{"id": 1' + b"1" * 5000 + b"}"):
        assert queue_message(body, "m6", out, INPUTS).key == f"queue/{hashlib.sha256(body).hexdigest()}.json"


@pytest.mark.parametrize(
    "body, why",
    [
        (b"file:///etc/passwd", "Azure Blob objects only"),
        (b" s3://b/k.npy\n", "Azure Blob objects only"),
        (b"secrets/key.npy", "under azure://incoming/"),
        (b"azure://incoming/../secrets/k.npy", "'..' segment"),
        (b"https://other.blob.core.windows.net/incoming/a.npy", "not this app's"),
        (
            json.dumps({"eventType": BLOB_CREATED, "data": {"url": "https://acct.blob.core.windows.net/secrets/a.npy"}}).encode(),
            "under azure://incoming/",
        ),
    ],
)
def test_a_queue_message_may_name_only_inputs_of_this_account(body, why):
    record = queue_message(body, "m", "azure://results/out", INPUTS, account="acct")
    assert record.id == "m" and why in record.refusal


def test_input_prefixes_default_to_the_blob_trigger_container():
    assert input_prefixes(Settings.resolve(environ={"SLIMSERVE_INPUT_CONTAINER": "incoming"})) == ("azure://incoming/",)
    assert input_prefixes(Settings.resolve(environ={"SLIMSERVE_INPUT": "azure://a/x/, azure://b/"})) == ("azure://a/x/", "azure://b/")
    assert input_prefixes(Settings.resolve(environ={})) == ()


@pytest.fixture
def trigger(tmp_path) -> BatchTrigger:
    runtime = start(write_tiny_artifact(tmp_path / "tiny"), output=(tmp_path / "out").as_uri())
    return BatchTrigger(runtime.plane, runtime.settings, runtime.storage)


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
    with pytest.raises(RecordFailed) as failure:
        trigger.handle(bad, redeliver_client_errors=True)
    assert failure.value.outcome.status == 400


def test_a_record_without_a_safe_key_is_acknowledged_without_an_error_object(trigger, tmp_path):
    outcome = trigger.handle(Record.inline("../escape.npy", b"x", id="c"), redeliver_client_errors=False)
    assert outcome.status == 400 and not list((tmp_path).glob("**/*.error.json"))


def test_failure_that_is_not_the_inputs_fault_raises(trigger, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "in").write_text("a file where the result folder must go")  # the write fails: 502
    with pytest.raises(RecordFailed) as failure:
        trigger.handle(Record.inline("in/a.npy", npy(np.ones((1, 4), np.float32))), redeliver_client_errors=False)
    assert failure.value.outcome.status >= 500


def test_a_refused_record_fails_alone_without_a_read(trigger, tmp_path):
    with pytest.raises(RecordFailed) as failure:
        trigger.handle(Record.refused("file:///etc/passwd", "no", id="r"), redeliver_client_errors=True)
    assert failure.value.outcome.status == 400 and failure.value.outcome.error == "no"


def test_output_is_required_only_when_an_event_arrives(tmp_path):
    runtime = start(write_tiny_artifact(tmp_path / "tiny"), Settings.resolve(environ={}))
    trigger = BatchTrigger(runtime.plane, runtime.settings, Storage())  # an HTTP-only deployment starts
    with pytest.raises(ValueError, match="SLIMSERVE_OUTPUT"):
        trigger.handle(Record.from_uri("gs://b/a.npy"), redeliver_client_errors=False)
