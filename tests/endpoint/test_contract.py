"""The SageMaker container contract (`/ping`, `/invocations`) in process, and the runtime API shape
through a real boto3 `sagemaker-runtime` client against the endpoint on a loopback port."""

from __future__ import annotations

import io
import json

import boto3
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from botocore.config import Config
from botocore.exceptions import ClientError
from werkzeug.test import Client

from shared.boot.build import app_from_folders, build_app
from shared.config import Settings
from shared.http.app import InferenceApp
from shared.serving.dataplane import DataPlane
from shared.serving.repository import ModelRepository
from tests.helpers import write_tiny_artifact

X = np.random.default_rng(11).normal(size=(3, 4)).astype(np.float32)
BINARY = "application/vnd.sagemaker-triton.binary+json"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("contract") / "tiny")


@pytest.fixture(scope="module")
def client(artifact):
    return Client(build_app(artifact, artifact=str(artifact), placement="function", max_body_bytes=4096))


@pytest.fixture(scope="module")
def expected(artifact):
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(["logits", "probs"], session.run(["logits", "probs"], {"input": X})))


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def oip_json(x=X) -> str:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})


def test_ping_is_200_when_models_are_loaded_503_when_not(client):
    response = client.get("/ping")
    assert response.status_code == 200 and response.mimetype == "application/json"
    empty = Client(InferenceApp(DataPlane(ModelRepository([])), Settings()))
    assert empty.get("/ping").status_code == 503


def test_json_in_json_out(client, expected):
    response = client.post("/invocations", data=oip_json(), content_type="application/json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in response.json["outputs"]}
    np.testing.assert_array_equal(outputs["probs"], expected["probs"])


def test_binary_tensors_ride_in_the_content_type(client, expected):
    tensor = triton.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=True)
    body, size = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=True)]
    )
    response = client.post("/invocations", data=body, content_type=f"{BINARY};json-header-size={size}")
    assert response.status_code == 200 and response.mimetype == BINARY
    header_length = int(response.mimetype_params["json-header-size"])
    result = triton.InferenceServerClient.parse_response_body(response.data, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("logits"), expected["logits"])


@pytest.mark.parametrize("accept, output", [(None, "logits"), ("application/x-npy", "logits"), ("*/*", "logits")])
def test_npy_in_npy_out(client, expected, accept, output):
    headers = {"Accept": accept} if accept else {}
    response = client.post("/invocations", data=npy(X), content_type="application/x-npy", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(response.data)), expected[output])


def test_npy_output_is_chosen_by_custom_attribute(client, expected):
    headers = {"Accept": "application/x-npy", "X-Amzn-SageMaker-Custom-Attributes": "output=probs"}
    response = client.post("/invocations", data=npy(X), content_type="application/x-npy", headers=headers)
    np.testing.assert_array_equal(np.load(io.BytesIO(response.data)), expected["probs"])


def test_npy_in_json_out_and_json_in_npy_out(client, expected):
    as_json = client.post("/invocations", data=npy(X), content_type="application/x-npy", headers={"Accept": "application/json"})
    assert as_json.mimetype == "application/json"
    assert [o["name"] for o in as_json.json["outputs"]] == ["logits", "probs"]
    as_npy = client.post("/invocations", data=oip_json(), content_type="application/json", headers={"Accept": "application/x-npy"})
    assert as_npy.mimetype == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(as_npy.data)), expected["logits"])


@pytest.mark.parametrize(
    "body, content_type, headers, status, message",
    [
        (b"a,b,c\n1,2,3", "text/csv", {}, 415, "text/csv"),
        (oip_json(), "application/json", {"Accept": "text/csv"}, 406, "Accept"),
        (b"not an npy file", "application/x-npy", {}, 400, "not a readable .npy array"),
        (npy(X.astype(np.float64)), "application/x-npy", {}, 400, "datatype FP64"),
        (npy(X[:, :3]), "application/x-npy", {}, 400, "shape [3, 3]"),
        (npy(np.array([{"a": 1}], dtype=object)), "application/x-npy", {}, 400, "holds no tensor (object arrays would need pickle)"),
        (b"{not json", "application/json", {}, 400, "not valid JSON"),
        (b"{}", f"{BINARY}", {}, 400, "json-header-size"),
        (b"x" * 5000, "application/json", {}, 413, "over the limit"),
        (npy(X), "application/x-npy", {"Accept": "application/x-npy", "X-Amzn-SageMaker-Custom-Attributes": "output=nope"}, 400, "'nope'"),
        (oip_json(), "application/json", {"X-Amzn-SageMaker-Target-Model": "other"}, 404, "unknown model 'other'"),
    ],
)
def test_bad_input_is_a_json_4xx(client, body, content_type, headers, status, message):
    response = client.post("/invocations", data=body, content_type=content_type, headers=headers)
    assert response.status_code == status and response.mimetype == "application/json"
    assert message in response.json["error"]


def test_wrong_method_is_405(client):
    assert client.get("/invocations").status_code == 405
    assert client.post("/ping").status_code == 405


def test_several_models_need_a_target_model(tmp_path, expected):
    a = write_tiny_artifact(tmp_path / "a", name="tiny")
    b = write_tiny_artifact(tmp_path / "b", name="wide", in_features=6, classes=5)
    client = Client(app_from_folders([str(a), str(b)], placement="function"))
    untargeted = client.post("/invocations", data=oip_json(), content_type="application/json")
    assert untargeted.status_code == 400 and "X-Amzn-SageMaker-Target-Model" in untargeted.json["error"]
    targeted = client.post(
        "/invocations", data=oip_json(), content_type="application/json", headers={"X-Amzn-SageMaker-Target-Model": "tiny/1"}
    )
    assert targeted.status_code == 200


# --- the runtime API, through boto3 itself --------------------------------------------------------


@pytest.fixture
def runtime(artifact, endpoint):
    server = endpoint(artifact, endpoint_name="tiny-ep")
    client = boto3.client("sagemaker-runtime", endpoint_url=server.url, config=Config(retries={"total_max_attempts": 1}))
    return client, server


def test_boto3_invoke_endpoint_round_trip(runtime, expected):
    client, _ = runtime
    response = client.invoke_endpoint(EndpointName="tiny-ep", Body=npy(X), ContentType="application/x-npy", Accept="application/x-npy")
    assert response["ContentType"] == "application/x-npy" and response["InvokedProductionVariant"] == "AllTraffic"
    np.testing.assert_array_equal(np.load(io.BytesIO(response["Body"].read())), expected["logits"])


def test_boto3_sees_a_container_4xx_as_model_error_with_the_original_status(runtime):
    client, _ = runtime
    with pytest.raises(client.exceptions.ModelError) as info:
        client.invoke_endpoint(EndpointName="tiny-ep", Body=b"a,b", ContentType="text/csv")
    assert info.value.response["OriginalStatusCode"] == 415
    assert "text/csv" in json.loads(info.value.response["OriginalMessage"])["error"]


def test_boto3_sees_an_unknown_endpoint_as_validation_error(runtime):
    client, _ = runtime
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="elsewhere", Body=oip_json(), ContentType="application/json")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("mode, code, status", [("throttle", "ThrottlingException", 400), ("5xx", "ServiceUnavailable", 503)])
def test_boto3_parses_throttling_and_unavailable(runtime, mode, code, status):
    client, server = runtime
    server.faults.mode = mode
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="tiny-ep", Body=oip_json(), ContentType="application/json")
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if mode == "5xx":
        assert isinstance(info.value, client.exceptions.ServiceUnavailable)
