"""`slimserve backfill azure://CONTAINER/PREFIX --queue NAME` against Azurite, drained through the queue
function as the Functions host runs it: messages base64-decoded, deleted on success, delivered again after
the visibility timeout on failure, and moved to `<queue>-poison` after maxDequeueCount (3) deliveries."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
from azure.functions.queue import QueueMessage
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.batch.trigger import RecordFailed
from slimserve.cli import main
from tests.helpers import write_tiny_artifact

INPUTS, RESULTS, QUEUE = "bfin", "bfresults", "backfill-requests"
OUTPUT = f"azure://{RESULTS}/out"
MAX_DEQUEUE = 3  # host.json's maxDequeueCount


@pytest.fixture(scope="module")
def blobs(azurite) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(azurite)
    for name in (INPUTS, RESULTS):
        service.create_container(name)
    return service


@pytest.fixture(scope="module")
def functions(load_function_app, tmp_path_factory, azurite, blobs):
    artifact = write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")
    return load_function_app(
        SLIMSERVE_ARTIFACT=str(artifact), SLIMSERVE_OUTPUT=OUTPUT, SLIMSERVE_INPUT_CONTAINER=INPUTS, AzureWebJobsStorage=azurite
    )[1]


@pytest.fixture
def env(azurite, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", azurite)  # an app setting there; the backfill finds the account by it too
    monkeypatch.setenv("SLIMSERVE_INPUT_CONTAINER", INPUTS)
    monkeypatch.setenv("SLIMSERVE_OUTPUT", OUTPUT)
    monkeypatch.delenv("SLIMSERVE_INPUT", raising=False)
    return azurite


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def run_host(functions, connection: str, deadline_s: float = 30.0) -> tuple[int, int]:
    """The host's queue loop: (messages that succeeded, messages moved to the poison queue)."""
    queue = QueueClient.from_connection_string(connection, QUEUE, message_decode_policy=TextBase64DecodePolicy())
    poison = QueueClient.from_connection_string(connection, f"{QUEUE}-poison")
    poison.create_queue() if not _exists(poison) else None
    ok = poisoned = 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        received = list(queue.receive_messages(max_messages=16, visibility_timeout=1))
        for message in received:
            delivered = QueueMessage(
                id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt
            )
            try:
                functions["on_queue"](delivered)
            except RecordFailed:
                if message.dequeue_count >= MAX_DEQUEUE:
                    poison.send_message(message.content)
                    queue.delete_message(message.id, message.pop_receipt)
                    poisoned += 1
                continue
            queue.delete_message(message.id, message.pop_receipt)
            ok += 1
        if not received:
            if queue.get_queue_properties().approximate_message_count == 0:
                break
            time.sleep(0.2)  # polling: failed messages are invisible for the visibility timeout
    return ok, poisoned


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
        return True
    except Exception:
        return False


def backfill(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["backfill", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_backfill_a_container_prefix_through_the_queue_function(functions, blobs, env, capsys):
    QueueClient.from_connection_string(env, QUEUE).create_queue()
    rng = np.random.default_rng(5)
    good = {f"batch/x {i:02d}.npy": rng.normal(size=(2, 4)).astype(np.float32) for i in range(12)}
    corrupt = {"batch/bad-1.npy": b"junk", "batch/bad-2.npy": npy(np.zeros((2, 5), np.float32))}
    elsewhere = {"batch2/y.npy": npy(np.zeros((1, 4), np.float32)), "other/z.npy": npy(np.zeros((1, 4), np.float32))}
    for name, data in {**{k: npy(v) for k, v in good.items()}, **corrupt, **elsewhere}.items():
        blobs.get_blob_client(INPUTS, name).upload_blob(data, overwrite=True)

    code, out, err = backfill(capsys, f"azure://{INPUTS}/batch/", "--queue", QUEUE, "--quiet")
    assert code == 0, err
    assert re.search(r"listed 14, skipped 0, enqueued 14, failed 0", out), out

    ok, poisoned = run_host(functions, env)
    assert (ok, poisoned) == (12, 2)
    results = {b.name for b in blobs.get_container_client(RESULTS).list_blobs(name_starts_with="out/")}
    assert results == {f"out/{k}.json" for k in good}
    doc = json.loads(blobs.get_blob_client(RESULTS, "out/batch/x 03.npy.json").download_blob().readall())
    assert doc["parameters"]["source"] == f"azure://{INPUTS}/batch/x 03.npy"

    code, out, _ = backfill(capsys, f"azure://{INPUTS}/batch/", "--queue", QUEUE, "--quiet")
    assert code == 0 and "listed 14, skipped 12 (12 with a result), enqueued 2, failed 0" in out, out


def test_a_prefix_the_queue_function_would_refuse_is_refused_here(env, capsys, monkeypatch):
    monkeypatch.setenv("SLIMSERVE_INPUT", f"azure://{INPUTS}/batch/")
    code, out, err = backfill(capsys, f"azure://{INPUTS}/other/", "--queue", QUEUE)
    assert code == 2 and not out and "takes objects under azure://bfin/batch/ only" in err


def test_a_missing_queue_is_one_line_and_exit_1(env, capsys):
    code, out, err = backfill(capsys, f"azure://{INPUTS}/batch/", "--queue", "no-such-queue")
    assert code == 1 and not out and err.startswith("slimserve: error: cannot send to queue 'no-such-queue': QueueNotFound"), err
