"""The `http` target under the real functions-framework server, driven by tritonclient and raw HTTP.

The server runs on a bundle-shaped folder with no SLIMSERVE_ARTIFACT: the model comes from `artifact/`
at the bundle root, as on GCF. Responses must equal, byte for byte, what the shared WSGI app answers
in process: functions-framework and Flask may not touch bodies or headers on the way.
"""

from __future__ import annotations

import http.client
import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException
from werkzeug.test import Client

from shared.boot.build import build_app

PASSED_HEADERS = ("Content-Type", "Content-Length", "Inference-Header-Content-Length")


@pytest.fixture(scope="module")
def server(start_function):
    return start_function("http")


@pytest.fixture(scope="module")
def client(server):
    # GCF serves a function at the root of its URL, so tritonclient's default paths (/v2/...) apply as is.
    return triton.InferenceServerClient(server.url)


@pytest.fixture(scope="module")
def in_process(bundle):
    return Client(build_app(bundle / "artifact"))


@pytest.fixture(scope="module")
def session(bundle):
    return ort.InferenceSession(str(bundle / "artifact" / "model.onnx"), providers=["CPUExecutionProvider"])


def raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_metadata_and_health(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probs"]


def test_infer_binary_and_json_equal_onnxruntime(client, session):
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    logits, probs = session.run(["logits", "probs"], {"input": x})
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary_data=True: the binary tensor extension both ways
    result = client.infer("tiny", [tensor])
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    np.testing.assert_array_equal(result.as_numpy("probs"), probs)

    tensor.set_data_from_numpy(x, binary_data=False)
    wanted = [triton.InferRequestedOutput("probs", binary_data=False)]
    result = client.infer("tiny", [tensor], model_version="1", outputs=wanted)
    np.testing.assert_allclose(result.as_numpy("probs"), probs, rtol=1e-6)
    assert result.as_numpy("logits") is None


def test_binary_request_and_response_pass_through_byte_exact(server, in_process):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("logits", "probs")]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}

    status, got_headers, got = raw(server, "POST", "/v2/models/tiny/infer", body, headers)
    expected = in_process.post("/v2/models/tiny/infer", data=body, headers=headers)
    assert status == expected.status_code == 200
    assert got == expected.get_data()
    for name in PASSED_HEADERS:
        assert got_headers.get(name) == expected.headers.get(name), name
    decoded = triton.InferenceServerClient.parse_response_body(got, header_length=int(got_headers["Inference-Header-Content-Length"]))
    assert decoded.as_numpy("probs").shape == (3, 3)


def test_client_errors_are_json_with_their_status(server, client):
    bad = triton.InferInput("input", [2, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[2, 5\].*expects \[-1, 4\]"):
        client.infer("tiny", [bad])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [bad])

    status, headers, body = raw(server, "POST", "/v2/models/tiny/infer", b"{not json", {"Content-Type": "application/json"})
    assert (status, headers["Content-Type"]) == (400, "application/json")
    assert set(json.loads(body)) == {"error"} and b"{not json" not in body  # never echoes the request
    for path in ("/v2/models/nope", "/nowhere"):
        status, headers, body = raw(server, "GET", path)
        assert (status, headers["Content-Type"]) == (404, "application/json")
        assert set(json.loads(body)) == {"error"}
    status, _, body = raw(server, "DELETE", "/v2/models/tiny/infer")
    assert status == 405 and set(json.loads(body)) == {"error"}


def test_openai_embeddings_at_the_functions_root(start_function, tmp_path_factory):
    """OpenAI's client by base URL `<function URL>/v1`; on GCF its api_key is the identity token IAM checks."""
    import openai

    from tests.bundle.builds import write_text_artifact

    words = write_text_artifact(tmp_path_factory.mktemp("words") / "words", task="embedding")
    server = start_function("http", SLIMSERVE_ARTIFACT=str(words))
    client = openai.OpenAI(base_url=f"http://{server.url}/v1", api_key="an-identity-token", max_retries=0)
    assert [m.id for m in client.models.list()] == ["words"]
    answer = client.embeddings.create(model="words", input=["hello world", "world"])
    assert [d.embedding for d in answer.data] == [[2.5], [1.5]] and answer.usage.total_tokens == 3
    with pytest.raises(openai.BadRequestError, match="'input' is an empty list"):
        client.embeddings.create(model="words", input=[])
