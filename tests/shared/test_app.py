"""The WSGI app in-process (werkzeug's test client): every route, every error status, never a 500."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.test import Client

from shared.boot.build import app_from_folders
from tests.helpers import write_tiny_artifact


@pytest.fixture
def client(tmp_path):
    write_tiny_artifact(tmp_path / "v1", version="1")
    write_tiny_artifact(tmp_path / "v2", version="2", in_features=4, classes=3)
    return Client(app_from_folders([str(tmp_path / "v1"), str(tmp_path / "v2")], max_body_bytes=4096))


def infer_body(data, shape=(1, 4), name="input", datatype="FP32"):
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": data}]})


def test_health_and_metadata_routes(client):
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").json == {"ready": True}
    assert client.get("/v2").json["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/models/tiny").json["versions"] == ["2"]  # highest version answers unversioned routes
    assert client.get("/v2/models/tiny/versions/1").json["versions"] == ["1"]
    assert client.get("/v2/models/tiny/versions/1/ready").json == {"name": "tiny", "ready": True}
    config = client.get("/v2/models/tiny/config").json
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]


def test_infer_matches_onnxruntime(client, tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    response = client.post("/v2/models/tiny/versions/1/infer", data=infer_body(x.tolist(), x.shape), content_type="application/json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in response.json["outputs"]}
    expected = ort.InferenceSession(str(tmp_path / "v1" / "model.onnx")).run(["probs"], {"input": x})[0]
    np.testing.assert_array_equal(outputs["probs"], expected)


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("POST", "/v2/models/tiny/infer", infer_body([1, 2, 3, 4], name="x"), 400, "'x' is not an input"),
        ("POST", "/v2/models/tiny/infer", infer_body([1, 2, 3, 4], datatype="FP64"), 400, "datatype FP64"),
        ("POST", "/v2/models/tiny/infer", infer_body([1, 2, 3], shape=(1, 3)), 400, "shape [1, 3]"),
        ("POST", "/v2/models/tiny/infer", infer_body([1, 2, 3]), 400, "needs 4 elements, got 3"),
        ("POST", "/v2/models/tiny/infer", infer_body([], shape=(0, 4)), 400, "empty tensor"),
        ("POST", "/v2/models/tiny/infer", "{not json", 400, "not valid JSON"),
        ("POST", "/v2/models/tiny/infer", b"\xff\xfe", 400, "not valid JSON"),
        ("POST", "/v2/models/tiny/infer", "[" * 100000 + "]" * 100000, 413, "over the limit"),
        ("POST", "/v2/models/tiny/infer", "[" * 1500 + "]" * 1500, 400, "nested too deeply"),
        (
            "POST",
            "/v2/models/tiny/infer",
            json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}
            ),
            400,
            "unknown output(s) nope",
        ),
        ("POST", "/v2/models/nope/infer", infer_body([1, 2, 3, 4]), 404, "unknown model 'nope'"),
        ("POST", "/v2/models/tiny/versions/9/infer", infer_body([1, 2, 3, 4]), 404, "no version '9'"),
        ("GET", "/v2/models/nope", None, 404, "unknown model"),
        ("GET", "/v2/nothing/here", None, 404, "no route"),
        ("GET", "/v2/models/tiny/infer", None, 405, "method GET is not allowed"),
        ("DELETE", "/v2/models/tiny", None, 405, "not allowed"),
        ("POST", "/v2/models/tiny/infer", infer_body([0.5] * 2000, shape=(500, 4)), 413, "SLIMSERVE_MAX_BODY_BYTES"),
    ],
)
def test_client_errors_are_json_4xx(client, method, path, body, status, message):
    response = client.open(path, method=method, data=body)
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    assert message in response.json["error"]
    assert "Traceback" not in response.get_data(as_text=True)
    # The app still answers the next good request.
    assert client.post("/v2/models/tiny/infer", data=infer_body([1, 2, 3, 4])).status_code == 200


def test_body_without_content_length_is_capped(client):
    import io

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path="/v2/models/tiny/infer", method="POST").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = io.BytesIO(b"x" * 6000)
    body, status, headers = run_wsgi_app(client.application, environ, buffered=True)
    assert status.startswith("413") and b"over the limit of 4096" in b"".join(body)


def test_compressed_bodies_are_refused_clearly(client):
    response = client.post("/v2/models/tiny/infer", data=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "Content-Encoding" in response.json["error"]


def test_string_inputs_reach_the_graph_as_text(tmp_path):
    """A model with a native ONNX string input gets UTF-8 text, not the repr of Python bytes."""
    from tests.hardening.models import write_echo_artifact

    folder = write_echo_artifact(tmp_path / "echo")
    client = Client(app_from_folders([str(folder)]))
    body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hi", "héllo"]}]})
    response = client.post("/v2/models/echo/infer", data=body)
    assert response.status_code == 200, response.json
    assert response.json["outputs"][0]["data"] == ["hi", "héllo"]
    bad = b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}'
    response = client.post(
        "/v2/models/echo/infer", data=bad + b"\x01\0\0\0\xff", headers={"Inference-Header-Content-Length": str(len(bad))}
    )
    assert response.status_code == 400 and "UTF-8" in response.json["error"]


def test_405_names_the_methods_a_path_takes_and_the_openapi_document_says_so(client):
    response = client.get("/v2/models/tiny/infer")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json == {"error": "method GET is not allowed on /v2/models/tiny/infer"}
    assert "GET" in client.delete("/v2/models/tiny").headers["Allow"].split(", ")
    assert client.put("/v2/models/tiny/versions/1/infer", data="{}").headers["Allow"] == "POST"
    doc = client.get("/v2/openapi.json").json
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            documented = operation["responses"]["405"]
            assert "Allow" in documented["headers"] and documented["content"]["application/json"], (path, method)
    assert "405" in doc["info"]["description"]


def test_an_unknown_model_lists_the_served_ones(client):
    response = client.get("/v2/models/nope")
    assert response.status_code == 404 and response.json == {"error": "unknown model 'nope'; this server serves tiny"}


def test_metrics_name_their_charset_once(client):
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
