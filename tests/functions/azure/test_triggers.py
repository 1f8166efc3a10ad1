"""The Azure Blob and Queue triggers against Azurite: inputs put in real blob containers and queues, the
decorated functions called with what the host would hand them, results read back from Azurite.

A record that fails must raise: the host then redelivers the message and, after host.json's
maxDequeueCount, moves it to `<queue>-poison`. Azurite counts the deliveries as Azure does.
"""

from __future__ import annotations

import io
import json
import time

import azure.functions as func
import numpy as np
import onnxruntime as ort
import pytest
from azure.functions.queue import QueueMessage  # the func.QueueMessage the worker builds: it carries dequeue_count
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.batch.trigger import RecordFailed
from tests.eventlib import EVENTS
from tests.helpers import write_tiny_artifact

INPUTS, RESULTS, QUEUE = "incoming", "results", "slimserve-requests"
OUTPUT = f"azure://{RESULTS}/out"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="module")
def blobs(azurite) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(azurite)
    for name in (INPUTS, RESULTS):
        service.create_container(name)
    return service


@pytest.fixture(scope="module")
def queue(azurite) -> QueueClient:
    # host.json's messageEncoding is base64, as the host expects by default: encode as the portal does.
    client = QueueClient.from_connection_string(
        azurite, QUEUE, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
    )
    client.create_queue()
    return client


@pytest.fixture(scope="module")
def functions(load_function_app, artifact, azurite, blobs):
    return load_function_app(
        SLIMSERVE_ARTIFACT=str(artifact), SLIMSERVE_OUTPUT=OUTPUT, SLIMSERVE_INPUT_CONTAINER=INPUTS, AzureWebJobsStorage=azurite
    )[1]


@pytest.fixture(autouse=True)
def _storage_setting(azurite, monkeypatch):
    # An app setting, so it is in the environment for every invocation, not only at import.
    monkeypatch.setenv("AzureWebJobsStorage", azurite)


@pytest.fixture(scope="module")
def reference(artifact):
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: dict(zip(["logits", "probs"], session.run(["logits", "probs"], {"input": x})))


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def put(blobs: BlobServiceClient, name: str, data: bytes) -> None:
    blobs.get_blob_client(INPUTS, name).upload_blob(data, overwrite=True)


def result(blobs: BlobServiceClient, key: str) -> dict[str, np.ndarray]:
    doc = json.loads(blobs.get_blob_client(RESULTS, f"out/{key}").download_blob().readall())
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in doc["outputs"]}


def result_keys(blobs: BlobServiceClient) -> set[str]:
    return {b.name for b in blobs.get_container_client(RESULTS).list_blobs()}


def blob_stream(blobs: BlobServiceClient, name: str) -> func.blob.InputStream:
    """What the host hands a blob trigger: the bytes, the name with its container, the blob URL."""
    client = blobs.get_blob_client(INPUTS, name)
    data = client.download_blob().readall()
    return func.blob.InputStream(data=data, name=f"{INPUTS}/{name}", uri=client.url, length=len(data))


def delivered(queue: QueueClient, visibility_timeout: int = 30) -> QueueMessage:
    """The next message, received from Azurite and handed over as the host does (body base64-decoded)."""
    message = next(iter(queue.receive_messages(max_messages=1, visibility_timeout=visibility_timeout)))
    return QueueMessage(
        id=message.id,
        body=message.content.encode(),
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
        insertion_time=message.inserted_on,
    )


def test_blob_trigger_writes_the_result_to_blob_storage(functions, blobs, reference):
    x = np.random.default_rng(11).normal(size=(3, 4)).astype(np.float32)
    put(blobs, "batch/a.npy", npy(x))
    functions["on_blob"](blob_stream(blobs, "batch/a.npy"))
    got, want = result(blobs, "batch/a.npy.json"), reference(x)
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-6)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)


def test_blob_trigger_raises_on_a_bad_blob_so_the_host_retries_then_poisons(functions, blobs):
    put(blobs, "batch/wide.npy", npy(np.zeros((2, 5), np.float32)))
    with pytest.raises(RecordFailed, match=r"shape \[2, 5\]") as failure:
        functions["on_blob"](blob_stream(blobs, "batch/wide.npy"))
    assert failure.value.outcome.status == 400
    assert not any("wide" in key for key in result_keys(blobs))


def test_queue_messages_name_a_blob_carry_a_blob_created_event_or_an_inline_request(functions, blobs, queue, reference):
    x, y = (np.random.default_rng(s).normal(size=(2, 4)).astype(np.float32) for s in (1, 2))
    put(blobs, "batch/q.npy", npy(x))
    put(blobs, "batch/b.npy", npy(y))
    event = json.loads((EVENTS / "eventgrid-blob-created.json").read_text())  # data.url names batch/b.npy
    event["data"]["url"] = event["data"]["url"].replace("slimservein", "devstoreaccount1")  # Azurite's account
    inline = {"id": "req-42", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": y.ravel().tolist()}]}
    for body in (f"{INPUTS}/batch/q.npy", json.dumps(event), json.dumps(inline)):
        queue.send_message(body)

    for _ in range(3):
        message = delivered(queue)
        functions["on_queue"](message)
        queue.delete_message(message.id, message.pop_receipt)  # the host deletes what succeeded

    np.testing.assert_allclose(result(blobs, "batch/q.npy.json")["probs"], reference(x)["probs"], rtol=1e-6)
    np.testing.assert_allclose(result(blobs, "batch/b.npy.json")["probs"], reference(y)["probs"], rtol=1e-6)
    np.testing.assert_allclose(result(blobs, "queue/req-42.json.json")["logits"], reference(y)["logits"], rtol=1e-6)


def test_bad_queue_message_raises_and_is_delivered_again(functions, blobs, queue):
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 5], "data": [0, 1, 2, 3, 4]}]}
    queue.send_message(json.dumps(bad))
    before = result_keys(blobs)

    first = delivered(queue, visibility_timeout=1)
    with pytest.raises(RecordFailed, match=r"shape \[1, 5\]"):
        functions["on_queue"](first)
    time.sleep(1.2)  # the visibility timeout lapses; the host would now deliver it again
    again = delivered(queue)
    assert (again.id, first.dequeue_count, again.dequeue_count) == (first.id, 1, 2)
    with pytest.raises(RecordFailed):
        functions["on_queue"](again)
    assert result_keys(blobs) == before


@pytest.mark.parametrize("body", ["secrets/key.npy", "file:///etc/passwd", "https://other.blob.core.windows.net/incoming/x.npy"])
def test_a_queue_message_naming_what_it_may_not_read_fails_alone(functions, queue, body):
    queue.send_message(body)
    message = delivered(queue)
    with pytest.raises(RecordFailed) as failure:
        functions["on_queue"](message)
    queue.delete_message(message.id, message.pop_receipt)
    assert failure.value.outcome.status == 400 and (
        "may name" in failure.value.outcome.error or "not this app's" in failure.value.outcome.error
    )
