"""The Azure HTTP function, called with `func.HttpRequest`s as the Functions host builds them.

Nothing is mocked: func.WsgiMiddleware turns the request into a WSGI call of the shared app and
onnxruntime runs a tiny real model; binary bodies go through tritonclient's own codec. Responses must
equal, byte for byte, what the shared app answers in process.
"""

from __future__ import annotations

import json

import azure.functions as func
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from werkzeug.test import Client

from shared.boot.build import build_app
from tests.conftest import ROOT, free_port
from tests.helpers import write_tiny_artifact

HOST = "https://slimserve.azurewebsites.net"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="module")
def http(load_function_app, artifact):
    _, functions = load_function_app(SLIMSERVE_ARTIFACT=str(artifact))
    return functions["http"]


@pytest.fixture(scope="module")
def in_process(artifact):
    return Client(build_app(artifact))


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> func.HttpRequest:
    """What the host hands the function for `path` with routePrefix "" and route v2/{*route}; the
    function key arrives in the query string and must not disturb routing."""
    return func.HttpRequest(
        method,
        f"{HOST}{path}?code=function-key",
        headers=headers or {},
        params={"code": "function-key"},
        route_params={"route": path.removeprefix("/v2").lstrip("/")},
        body=body,
    )


def json_of(response: func.HttpResponse) -> dict:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


def test_host_json_serves_v2_at_the_root_and_poisons_after_three_deliveries():
    host = json.loads((ROOT / "functions" / "azure" / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""  # /v2/..., not /api/v2/...
    assert host["extensions"]["queues"]["maxDequeueCount"] == 3  # README: after 3 deliveries, the poison queue
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"


def test_metadata_and_health(http):
    assert json_of(http(request("GET", "/v2/health/ready"))) == {"ready": True}
    meta = json_of(http(request("GET", "/v2/models/tiny")))
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert "binary_tensor_data" in json_of(http(request("GET", "/v2")))["extensions"]


def test_binary_infer_is_byte_exact_and_equals_onnxruntime(http, in_process, artifact):
    x = np.random.default_rng(5).normal(size=(4, 4)).astype(np.float32)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("logits", "probs")]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}

    response = http(request("POST", "/v2/models/tiny/infer", body, headers))
    expected = in_process.post("/v2/models/tiny/infer", data=body, headers=headers)
    assert response.status_code == expected.status_code == 200
    assert response.get_body() == expected.get_data()
    length = response.headers["Inference-Header-Content-Length"]
    assert length == expected.headers["Inference-Header-Content-Length"]
    result = triton.InferenceServerClient.parse_response_body(response.get_body(), header_length=int(length))
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probs"], {"input": x})
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    np.testing.assert_array_equal(result.as_numpy("probs"), probs)


def test_json_infer_and_client_errors(http, artifact):
    x = [[0.5, -1.0, 2.0, 0.25]]
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": x}]}).encode()
    doc = json_of(http(request("POST", "/v2/models/tiny/versions/1/infer", body, {"Content-Type": "application/json"})))
    assert doc["model_name"] == "tiny" and [o["name"] for o in doc["outputs"]] == ["logits", "probs"]

    bad = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]}).encode()
    response = http(request("POST", "/v2/models/tiny/infer", bad, {"Content-Type": "application/json"}))
    assert response.status_code == 400 and "shape [1, 5]" in json_of(response)["error"]
    for path in ("/v2/models/nope", "/v2/nowhere"):
        response = http(request("GET", path))
        assert response.status_code == 404 and set(json_of(response)) == {"error"}
    assert http(request("PUT", "/v2/models/tiny/infer")).status_code == 405


def test_unavailable_endpoint_answers_503_with_retry_after_not_a_bare_500(load_function_app, artifact):
    """func.WsgiMiddleware raises on every 5xx, which the host turns into an empty 500; the adapter keeps
    the app's answer, so clients see {"error"} and the Retry-After they back off on."""
    _, functions = load_function_app(
        SLIMSERVE_ARTIFACT=str(artifact),
        SLIMSERVE_PLACEMENT="endpoint",
        SLIMSERVE_FALLBACK="off",
        SLIMSERVE_ENDPOINT_TRANSPORT="http",
        SLIMSERVE_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        SLIMSERVE_ENDPOINT_RETRIES="0",
    )
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}).encode()
    response = functions["http"](request("POST", "/v2/models/tiny/infer", body, {"Content-Type": "application/json"}))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert "unavailable" in json_of(response)["error"]


def test_the_http_function_needs_a_function_key(load_function_app, artifact):
    """Read off the FunctionApp the host indexes: every HTTP trigger asks for a function key."""
    module, _ = load_function_app(SLIMSERVE_ARTIFACT=str(artifact))
    http = {name: t for name, t in module.indexed_triggers.items() if type(t).__name__ == "HttpTrigger"}
    assert sorted(http) == ["http", "openai"] and all(t.auth_level == func.AuthLevel.FUNCTION for t in http.values())


def test_openai_embeddings_through_the_openai_function(load_function_app, tmp_path):
    """OpenAI's client, its requests handed to the `openai` function (route v1/{*route}) as the host builds them."""
    import httpx2
    import openai

    from tests.bundle.builds import write_text_artifact

    _, functions = load_function_app(SLIMSERVE_ARTIFACT=str(write_text_artifact(tmp_path / "words", task="embedding")))

    def send(req: httpx2.Request) -> httpx2.Response:
        path = req.url.path
        call = func.HttpRequest(
            req.method,
            f"{HOST}{path}",
            headers=dict(req.headers),
            params={},
            route_params={"route": path.removeprefix("/v1/")},
            body=req.content,
        )
        response = functions["openai"](call)
        return httpx2.Response(response.status_code, headers=dict(response.headers), content=response.get_body())

    client = openai.OpenAI(
        base_url=f"{HOST}/v1",
        api_key="unused",
        default_headers={"x-functions-key": "function-key"},
        http_client=httpx2.Client(transport=httpx2.MockTransport(send)),
        max_retries=0,
    )
    assert [m.id for m in client.models.list()] == ["words"]
    answer = client.embeddings.create(model="words", input=["hello world", "world"], encoding_format="float")
    assert [d.embedding for d in answer.data] == [[2.5], [1.5]] and answer.usage.prompt_tokens == 3
    with pytest.raises(openai.NotFoundError, match="unknown model 'nope'; the embedding models served are words"):
        client.embeddings.create(model="nope", input="hello")
