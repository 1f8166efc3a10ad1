"""End to end: the AWS HTTP handler, its model placed on the endpoint, answers through boto3 and a real
local endpoint server exactly as local inference does; the HTTP transport does the same for Vertex/Azure."""

from __future__ import annotations

import base64
import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from werkzeug.test import Client

from tests.endpoint.conftest import ENDPOINT_NAME, function_app, write_endpoint_artifact
from tests.eventlib import load_event

X = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)


def reference(model_path, x=X) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return dict(zip(["logits", "probs"], session.run(["logits", "probs"], {"input": x})))


def json_request(x=X) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}


def outputs_of(doc: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in doc["outputs"]}


def test_aws_handler_answers_from_the_endpoint_as_local_inference_does(tmp_path, endpoint, load_handler):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir)
    handler = load_handler(
        SLIMSERVE_ARTIFACT=str(function_dir),
        SLIMSERVE_ENDPOINT_NAME=ENDPOINT_NAME,
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=server.url,
    )
    assert not (function_dir / "model.onnx").exists()  # the weights live on the endpoint only

    response = handler.http(load_event("apigw-v2-post-json", path="/v2/models/tiny/infer", body=json_request()), None)

    assert response["statusCode"] == 200, response
    doc = json.loads(response["body"])
    assert "parameters" not in doc  # a full answer: no degraded marker
    expected = reference(endpoint_dir / "model.onnx")
    for name, value in outputs_of(doc).items():
        np.testing.assert_array_equal(value, expected[name])
    assert server.faults.seen == 1
    assert server.faults.last_headers["content-type"].startswith("application/vnd.sagemaker-triton.binary+json;json-header-size=")

    meta = json.loads(handler.http(load_event("apigw-v2-get", path="/v2/models/tiny"), None)["body"])
    assert meta["parameters"]["placement"] == "endpoint"
    model = handler.app.plane.repository.get("tiny")
    assert (model.stats.requests, model.stats.attempts, model.stats.answered) == (1, 1, 1)


def test_binary_request_through_the_handler_is_forwarded_and_answered_binary(tmp_path, endpoint, load_handler):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir)
    handler = load_handler(
        SLIMSERVE_ARTIFACT=str(function_dir), SLIMSERVE_ENDPOINT_NAME=ENDPOINT_NAME, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=server.url
    )
    tensor = triton.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=True)
    wanted = [triton.InferRequestedOutput("probs", binary_data=True)]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=wanted)
    event = load_event(
        "apigw-v2-post-binary-base64", path="/v2/models/tiny/infer", body=body, headers={"inference-header-content-length": str(json_size)}
    )

    response = handler.http(event, None)

    assert response["statusCode"] == 200 and response["isBase64Encoded"], response
    raw = base64.b64decode(response["body"])
    result = triton.InferenceServerClient.parse_response_body(
        raw, header_length=int(response["headers"]["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(result.as_numpy("probs"), reference(endpoint_dir / "model.onnx")["probs"])
    assert result.as_numpy("logits") is None  # only what was asked for, as locally


def test_http_transport_speaks_oip_v2_with_a_bearer_token(tmp_path, endpoint, monkeypatch):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir)
    monkeypatch.setenv("VERTEX_TOKEN", "ya29.test-token")
    app = Client(
        function_app(function_dir, "http://unused", endpoint_transport="http", endpoint_url=server.url, endpoint_token_env="VERTEX_TOKEN")
    )

    response = app.post("/v2/models/tiny/infer", json=json_request())

    assert response.status_code == 200, response.json
    expected = reference(endpoint_dir / "model.onnx")
    for name, value in outputs_of(response.json).items():
        np.testing.assert_array_equal(value, expected[name])
    assert server.faults.last_headers["authorization"] == "Bearer ya29.test-token"
    assert server.faults.last_headers["inference-header-content-length"].isdigit()


def test_forced_placement_uses_the_artifacts_own_model_as_fallback(tmp_path, endpoint):
    """A function-placed artifact sent to the endpoint by SLIMSERVE_PLACEMENT keeps its model as fallback."""
    from tests.helpers import write_tiny_artifact

    folder = write_tiny_artifact(tmp_path / "tiny")
    server = endpoint(folder)
    app = function_app(folder, server.url, placement="endpoint")
    model = app.plane.repository.get("tiny")
    assert model.manifest.placement == "endpoint" and model.fallback.manifest.model_file == "model.onnx"
    server.faults.mode = "5xx"

    response = Client(app).post("/v2/models/tiny/infer", json=json_request())

    assert response.status_code == 200
    assert response.json["parameters"] == {"degraded": True, "served_by": "function"}
    np.testing.assert_array_equal(outputs_of(response.json)["probs"], reference(folder / "model.onnx")["probs"])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"endpoint_name": ""}, "SLIMSERVE_ENDPOINT_NAME is empty"),
        ({"endpoint_deadline_s": 0.5}, "cannot hold one attempt"),
        ({"fallback": "sometimes"}, "must be auto or off"),
        ({"endpoint_transport": "carrier-pigeon"}, "must be sagemaker or http"),
    ],
)
def test_bad_router_settings_fail_the_cold_start(tmp_path, settings, message):
    from shared.errors import ArtifactError

    _, function_dir = write_endpoint_artifact(tmp_path)
    with pytest.raises(ArtifactError, match=message):
        function_app(function_dir, "http://127.0.0.1:9", **settings)
