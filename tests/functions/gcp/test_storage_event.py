"""The `on_storage_event` target under the real functions-framework server, fed binary-mode CloudEvents
as Eventarc posts them for `google.cloud.storage.object.v1.finalized`, with gcp-storage-emulator as GCS:
the function reads a real gs:// object and writes a real result object.

What the function answers is what Eventarc acts on: 2xx acknowledges, anything else is redelivered (when
the trigger has retry enabled). So a corrupt input must answer 2xx (and leave an error object behind),
while a failure that is not the input's fault must answer 5xx.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.conftest import free_port
from tests.functions.gcp.conftest import storage_cloudevent

IN, OUT = "slimserve-in", "slimserve-out"
OUTPUT = f"gs://{OUT}/results"


@pytest.fixture(scope="module")
def gcs(gcs_emulator):
    client = storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_emulator})
    for name in (IN, OUT):
        client.create_bucket(name)
    return client


@pytest.fixture(scope="module")
def server(start_function, gcs_emulator, gcs):
    return start_function("on_storage_event", "cloudevent", STORAGE_EMULATOR_HOST=gcs_emulator, SLIMSERVE_OUTPUT=OUTPUT)


@pytest.fixture(scope="module")
def session(bundle):
    return ort.InferenceSession(str(bundle / "artifact" / "model.onnx"), providers=["CPUExecutionProvider"])


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def post_event(server, bucket: str, name: str, event_id: str, event_type: str | None = None) -> int:
    headers, body = storage_cloudevent(bucket, name, event_id, event_type)
    request = urllib.request.Request(f"http://{server.url}/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def results(gcs) -> dict[str, bytes]:
    return {b.name: b.download_as_bytes() for b in gcs.list_blobs(OUT, prefix="results/")}


def test_new_object_gets_one_result_equal_to_onnxruntime_and_redelivery_overwrites(server, gcs, session):
    x = np.random.default_rng(7).normal(size=(6, 4)).astype(np.float32)
    gcs.bucket(IN).blob("incoming/a.npy").upload_from_string(npy(x))

    assert post_event(server, IN, "incoming/a.npy", "evt-1") == 200, server.output()
    written = results(gcs)
    doc = json.loads(written["results/incoming/a.npy.json"])
    outputs = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in doc["outputs"]}
    logits, probs = session.run(["logits", "probs"], {"input": x})
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-6)
    np.testing.assert_allclose(outputs["probs"], probs, rtol=1e-6)

    # Eventarc delivers at least once: the same event again rewrites the same bytes under the same key.
    assert post_event(server, IN, "incoming/a.npy", "evt-1") == 200
    assert results(gcs) == written


def test_corrupt_input_is_acknowledged_with_an_error_object(server, gcs):
    gcs.bucket(IN).blob("incoming/broken.npy").upload_from_string(b"\x93NUMPY not really")
    wrong_shape = npy(np.zeros((2, 5), np.float32))
    gcs.bucket(IN).blob("incoming/wide.npy").upload_from_string(wrong_shape)

    for name in ("incoming/broken.npy", "incoming/wide.npy"):
        assert post_event(server, IN, name, f"evt-{name}") == 200, server.output()  # no retry: it would fail again
    written = results(gcs)
    assert "results/incoming/broken.npy.json" not in written and "results/incoming/wide.npy.json" not in written
    error = json.loads(written["results/incoming/wide.npy.error.json"])
    assert error["input"] == f"gs://{IN}/incoming/wide.npy" and error["status"] == 400
    assert "shape [2, 5]" in error["error"]
    assert json.loads(written["results/incoming/broken.npy.error.json"])["status"] == 400


def test_results_folders_and_other_event_types_start_nothing(server, gcs):
    before = results(gcs)
    gcs.bucket(OUT).blob("results/incoming/loop.npy").upload_from_string(npy(np.zeros((1, 4), np.float32)))
    assert post_event(server, OUT, "results/incoming/loop.npy", "evt-loop") == 200  # our own output: a loop
    assert post_event(server, IN, "incoming/", "evt-folder") == 200  # a console "folder"
    gcs.bucket(IN).blob("incoming/c.npy").upload_from_string(npy(np.zeros((1, 4), np.float32)))
    assert post_event(server, IN, "incoming/c.npy", "evt-del", "google.cloud.storage.object.v1.deleted") == 200
    after = results(gcs)
    after.pop("results/incoming/loop.npy")
    assert after == before


def test_failure_that_is_not_the_inputs_fault_is_a_function_error(start_function, gcs_emulator, gcs):
    """The endpoint behind an endpoint-placed model is down: 503 inside, so the function fails (5xx) and
    Eventarc redelivers instead of the input being written off."""
    down = f"http://127.0.0.1:{free_port()}"
    server = start_function(
        "on_storage_event",
        "cloudevent",
        STORAGE_EMULATOR_HOST=gcs_emulator,
        SLIMSERVE_OUTPUT=OUTPUT,
        SLIMSERVE_PLACEMENT="endpoint",
        SLIMSERVE_FALLBACK="off",
        SLIMSERVE_ENDPOINT_TRANSPORT="http",
        SLIMSERVE_ENDPOINT_URL=down,
        SLIMSERVE_ENDPOINT_RETRIES="0",
    )
    gcs.bucket(IN).blob("incoming/later.npy").upload_from_string(npy(np.ones((2, 4), np.float32)))
    assert post_event(server, IN, "incoming/later.npy", "evt-later") == 500
    assert not any(name.startswith("results/incoming/later.npy") for name in results(gcs))
