"""The AWS HTTP handler, driven in process with recorded API Gateway HTTP API (payload 2.0) events.

Nothing is mocked: serverless-wsgi turns the event into a WSGI call of the shared app, onnxruntime runs
a tiny real model, and binary requests/responses go through tritonclient's own codec.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from tests.eventlib import load_event
from tests.helpers import write_tiny_artifact

ROOT = Path(__file__).resolve().parents[3]
MAX_BODY = 4096
INFER = "/v2/models/tiny/infer"
RECORDED_INPUT = np.array([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.75, 3.0]], dtype=np.float32)  # in the binary event


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="module")
def handler(load_handler, artifact):
    return load_handler(SLIMSERVE_ARTIFACT=str(artifact), SLIMSERVE_MAX_BODY_BYTES=str(MAX_BODY))


@pytest.fixture(scope="module")
def reference(artifact):
    """onnxruntime's own answer on the same model file: what every response must equal."""
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: dict(zip(["logits", "probs"], session.run(["logits", "probs"], {"input": x})))


def call(handler, event: dict) -> dict:
    response = handler.http(event, None)
    assert response["statusCode"] != 500, response
    return response


def json_body(response: dict) -> dict:
    assert response["isBase64Encoded"] is False
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def triton_request(x: np.ndarray, binary_outputs: bool = True, name: str = "input", datatype: str = "FP32"):
    """(body, json_size) exactly as tritonclient.http sends an infer request with binary input data."""
    tensor = triton.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_outputs) for n in ("logits", "probs")]
    return triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)


def binary_event(body: bytes, json_size: int | None, path: str = INFER) -> dict:
    header = None if json_size is None else str(json_size)
    return load_event("apigw-v2-post-binary-base64", path=path, body=body, headers={"inference-header-content-length": header})


# --- metadata and health -------------------------------------------------------------------------


def test_server_metadata(handler):
    response = call(handler, load_event("apigw-v2-get"))
    assert response["statusCode"] == 200
    doc = json_body(response)
    assert doc["name"] == "slimserve"
    assert doc["extensions"] == ["binary_tensor_data"]
    assert doc["onnxruntime"] == ort.__version__


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
        ("/v2/models/tiny/ready", {"name": "tiny", "ready": True}),
        ("/v2/models/tiny/versions/1/ready", {"name": "tiny", "ready": True}),
    ],
)
def test_health_and_readiness(handler, path, expected):
    response = call(handler, load_event("apigw-v2-get", path=path))
    assert (response["statusCode"], json_body(response)) == (200, expected)


@pytest.mark.parametrize("path", ["/v2/models/tiny", "/v2/models/tiny/versions/1"])
def test_model_metadata(handler, path):
    doc = json_body(call(handler, load_event("apigw-v2-get", path=path)))
    assert doc["name"] == "tiny" and doc["versions"] == ["1"] and doc["platform"] == "onnxruntime_onnx"
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert doc["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "probs", "datatype": "FP32", "shape": [-1, 3]},
    ]


# --- inference -----------------------------------------------------------------------------------


def test_json_inference_equals_onnxruntime(handler, reference):
    event = load_event("apigw-v2-post-json")  # as recorded: one row, JSON in, JSON out
    x = np.array(json.loads(event["body"])["inputs"][0]["data"], dtype=np.float32).reshape(1, 4)
    response = call(handler, event)
    assert response["statusCode"] == 200
    doc = json_body(response)
    assert (doc["model_name"], doc["model_version"]) == ("tiny", "1")
    expected = reference(x)
    assert [o["name"] for o in doc["outputs"]] == ["logits", "probs"]
    for out in doc["outputs"]:
        assert (out["datatype"], out["shape"]) == ("FP32", [1, 3])
        # float32 -> JSON -> float32 is lossless, so the values are equal, not merely close
        np.testing.assert_array_equal(np.array(out["data"], dtype=np.float32).reshape(1, 3), expected[out["name"]])


def test_json_inference_versioned_with_requested_output_and_base64_body(handler, reference):
    """API Gateway base64-encodes bodies it does not know as text; JSON bodies can arrive that way too."""
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    request = {
        "id": "req-7",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 4], "data": x.ravel().tolist()}],
        "outputs": [{"name": "probs"}],
    }
    event = load_event("apigw-v2-post-json", path="/v2/models/tiny/versions/1/infer", body=json.dumps(request).encode())
    assert event["isBase64Encoded"] is True
    doc = json_body(call(handler, event))
    assert doc["id"] == "req-7" and [o["name"] for o in doc["outputs"]] == ["probs"]
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], dtype=np.float32).reshape(5, 3), reference(x)["probs"])


def test_recorded_binary_event_is_what_tritonclient_sends():
    event = load_event("apigw-v2-post-binary-base64")
    body, json_size = triton_request(RECORDED_INPUT)
    assert base64.b64decode(event["body"]) == body
    assert event["headers"]["inference-header-content-length"] == str(json_size)


def test_binary_inference_roundtrip_through_tritonclient_codec(handler, reference):
    response = call(handler, load_event("apigw-v2-post-binary-base64"))
    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is True
    assert response["headers"]["Content-Type"] == "application/octet-stream"
    raw = base64.b64decode(response["body"])
    header_length = int(response["headers"]["Inference-Header-Content-Length"])
    assert int(response["headers"]["Content-Length"]) == len(raw)
    result = triton.InferenceServerClient.parse_response_body(raw, header_length=header_length)
    expected = reference(RECORDED_INPUT)
    for name in ("logits", "probs"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    # byte-exact: the binary section is onnxruntime's output buffers, back to back
    assert raw[header_length:] == expected["logits"].tobytes() + expected["probs"].tobytes()
    assert result.get_response()["model_name"] == "tiny"


def test_binary_input_json_output(handler, reference):
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    body, json_size = triton_request(x, binary_outputs=False)
    response = call(handler, binary_event(body, json_size, path="/v2/models/tiny/versions/1/infer"))
    assert response["statusCode"] == 200
    assert "Inference-Header-Content-Length" not in response["headers"]
    result = triton.InferenceServerClient.parse_response_body(response["body"].encode())
    np.testing.assert_array_equal(result.as_numpy("logits"), reference(x)["logits"])


# --- every error status, through the handler ---------------------------------------------------


def infer_json(inputs: list[dict]) -> dict:
    return load_event("apigw-v2-post-json", body={"inputs": inputs})


def tensor(name="input", datatype="FP32", shape=(1, 4), data=(0.1, 0.2, 0.3, 0.4)) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": list(data)}


X = np.ones((1, 4), dtype=np.float32)

ERRORS = {
    "wrong input name": (lambda: infer_json([tensor(name="pixels")]), 400, "'pixels' is not an input"),
    "wrong datatype": (lambda: infer_json([tensor(datatype="FP64")]), 400, "datatype FP64"),
    "unknown datatype": (lambda: infer_json([tensor(datatype="FLOAT")]), 400, "unknown datatype 'FLOAT'"),
    "wrong shape": (lambda: infer_json([tensor(shape=(1, 5), data=[0.0] * 5)]), 400, "has shape [1, 5]"),
    "wrong element count": (lambda: infer_json([tensor(data=(1.0, 2.0, 3.0))]), 400, "needs 4 elements, got 3"),
    "empty tensor": (lambda: infer_json([tensor(shape=(0, 4), data=[])]), 400, "empty tensor"),
    "missing inputs": (lambda: load_event("apigw-v2-post-json", body={"outputs": []}), 400, "'inputs'"),
    "malformed JSON": (lambda: load_event("apigw-v2-post-json", body='{"inputs": [SECRET'), 400, "not valid JSON"),
    "binary wrong datatype": (lambda: binary_event(*triton_request(X.astype(np.float64), datatype="FP64")), 400, "datatype FP64"),
    "binary size past the data": (
        lambda: binary_event(triton_request(X)[0][:-4], triton_request(X)[1]),
        400,
        "binary_data_size 16 runs past the 12 bytes",
    ),
    "binary bytes unclaimed": (
        lambda: binary_event(triton_request(X)[0] + b"\0" * 8, triton_request(X)[1]),
        400,
        "8 bytes of binary data are not claimed",
    ),
    "header length past the body": (
        lambda: binary_event(triton_request(X)[0], 10_000),
        400,
        "Inference-Header-Content-Length is 10000",
    ),
    "header length not an integer": (
        lambda: load_event("apigw-v2-post-binary-base64", headers={"inference-header-content-length": "12a"}),
        400,
        "must be an integer",
    ),
    "binary body without its header length": (
        lambda: binary_event(*triton_request(X)[:1], None),
        400,
        "not valid JSON",
    ),
    "compressed body": (
        lambda: load_event("apigw-v2-post-binary-base64", headers={"content-encoding": "gzip"}),
        400,
        "Content-Encoding",
    ),
    "unknown output": (
        lambda: load_event("apigw-v2-post-json", body={"inputs": [tensor()], "outputs": [{"name": "embedding"}]}),
        400,
        "unknown output(s) embedding",
    ),
    "unknown model": (lambda: load_event("apigw-v2-post-json", path="/v2/models/resnet/infer"), 404, "unknown model 'resnet'"),
    "unknown version": (
        lambda: load_event("apigw-v2-post-json", path="/v2/models/tiny/versions/9/infer"),
        404,
        "has no version '9'",
    ),
    "unknown model metadata": (lambda: load_event("apigw-v2-get", path="/v2/models/resnet"), 404, "unknown model 'resnet'"),
    "unknown route": (lambda: load_event("apigw-v2-get", path="/v2/repository/index"), 404, "no route /v2/repository/index"),
    "GET on infer": (lambda: load_event("apigw-v2-get", path=INFER), 405, f"method GET is not allowed on {INFER}"),
    "POST on metadata": (lambda: load_event("apigw-v2-post-json", path="/v2/models/tiny"), 405, "method POST"),
    "JSON body over the limit": (
        lambda: load_event("apigw-v2-post-json", body={"inputs": [tensor(data=[0.0] * 4)], "pad": "x" * MAX_BODY}),
        413,
        f"over the limit of {MAX_BODY}",
    ),
    "binary body over the limit": (
        lambda: binary_event(*triton_request(np.zeros((MAX_BODY // 16, 4), dtype=np.float32))),
        413,
        "SLIMSERVE_MAX_BODY_BYTES",
    ),
}


@pytest.mark.parametrize("make_event, status, message", ERRORS.values(), ids=ERRORS.keys())
def test_error_statuses(handler, make_event, status, message):
    response = call(handler, make_event())
    assert response["statusCode"] == status
    doc = json_body(response)
    assert list(doc) == ["error"]
    assert message in doc["error"]
    assert "SECRET" not in doc["error"]  # the request body is never echoed back


# --- cold start ----------------------------------------------------------------------------------


def test_default_artifact_is_beside_the_code_in_the_bundle(handler):
    assert handler.DEFAULT_ARTIFACT == ROOT / "artifact"
    assert (handler.DEFAULT_ARTIFACT.parent / "functions" / "aws" / "handler.py").is_file()


def test_models_load_once_at_import_not_per_request(handler):
    app = handler.app
    call(handler, load_event("apigw-v2-post-json"))
    call(handler, load_event("apigw-v2-post-binary-base64"))
    assert handler.app is app and len(app.plane.repository) == 1


@pytest.mark.parametrize("breakage", ["missing", "tampered"])
def test_a_bad_artifact_fails_the_init_loudly(tmp_path, artifact, breakage):
    """A fresh interpreter is a fresh Lambda init: importing the handler must raise, not serve 500s."""
    folder = tmp_path / "artifact"
    if breakage == "tampered":
        write_tiny_artifact(folder)
        with open(folder / "model.onnx", "r+b") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
            fh.seek(-1, os.SEEK_END)
            fh.write(bytes([last[0] ^ 0xFF]))
    env = {**os.environ, "SLIMSERVE_ARTIFACT": str(folder)}
    proc = subprocess.run(
        [sys.executable, "-c", "import functions.aws.handler"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "shared.errors.ArtifactError" in proc.stderr
    expected = f"no artifact at {folder}" if breakage == "missing" else "sha256 of model.onnx"
    assert expected in proc.stderr
    log_lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    failure = next(line for line in log_lines if line["message"].startswith("cold start failed"))
    assert failure["level"] == "ERROR" and failure["service"] == "slimserve" and expected in failure["exception"]
