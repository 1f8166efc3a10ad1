"""What a review sent that a schema fuzzer never does, each answered with a clear 4xx in bounded time, and
the next good request still served: a quadratic JSON pre-scan, integers past CPython's digit limit,
outputs asked for sixty times, NaN/Inf in a JSON answer, a request id with a newline, a Content-Length
that `str.isdigit` takes, and the SageMaker stand-in where no one asked for it.

Through the live server where the server matters (tests/server covers its framing and slow clients),
in process otherwise. Time bounds are generous (a 6 MB body answered within 2 s): behaviour, not speed.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from werkzeug.test import Client

from shared.boot.build import build_app
from tests.conftest import RunningServer
from tests.hardening.conftest import tiny_request
from tests.helpers import write_tiny_artifact

INFER = "/v2/models/tiny/infer"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("attacks") / "tiny")


@pytest.fixture(scope="module")
def client(artifact):
    return Client(build_app(artifact))


@pytest.fixture(scope="module")
def served(artifact):
    server = RunningServer([artifact], env={"SLIMSERVE_WORKERS": "1"})
    yield server
    server.stop()


def good(client) -> None:
    response = client.post(INFER, data=json.dumps(tiny_request()), content_type="application/json")
    assert response.status_code == 200 and len(response.json["outputs"]) == 2


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


ESCAPES = b"[" * 40 + b'"' + b'\\"' * 3_000_000  # 6 MB: an unterminated string of escaped quotes
PRESCAN = {
    "escaped quotes in an unterminated string (600 KB)": b"[" * 40 + b'"' + b'\\"' * 300_000,
    "escaped quotes in an unterminated string (6 MB)": ESCAPES,
    "a string of quotes (6 MB)": b"[" * 40 + b'"' * 6_000_000,
    "brackets 3 million deep (6 MB)": b"[" * 3_000_000 + b"]" * 3_000_000,
    "backslashes (6 MB)": b"[" * 40 + b"\\" * 6_000_000,
}


@pytest.mark.parametrize("body", PRESCAN.values(), ids=PRESCAN.keys())
def test_the_json_prescan_is_linear(client, body):
    response, seconds = timed(lambda: client.post(INFER, data=body, content_type="application/json"))
    assert response.status_code == 400 and "error" in response.json and seconds < 2.0, (response.json, seconds)
    good(client)


def test_the_prescan_attack_through_the_server_leaves_it_answering(served):
    import http.client

    host, port = served.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    started = time.perf_counter()
    conn.request("POST", INFER, body=ESCAPES, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 400 and "nested too deeply" in json.loads(response.read())["error"]
    assert time.perf_counter() - started < 2.0
    conn.request("POST", INFER, body=json.dumps(tiny_request()), headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 200


@pytest.mark.parametrize("digits", [4301, 5000, 1_000_000])
def test_an_integer_past_the_digit_limit_is_a_400(client, digits):
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1' + b"0" * (digits - 1) + b",0,0,0]}]}"
    response, seconds = timed(lambda: client.post(INFER, data=body, content_type="application/json"))
    assert response.status_code == 400 and "number" in response.json["error"] and seconds < 2.0
    good(client)


def test_an_integer_numpy_cannot_hold_is_a_400(client):
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [10**4000, 0, 0, 0]}]})
    assert client.post(INFER, data=body, content_type="application/json").status_code == 400


def test_an_output_named_sixty_times_is_refused(client):
    body = {**tiny_request(), "outputs": [{"name": "probs"}] * 60}
    response = client.post(INFER, data=json.dumps(body), content_type="application/json")
    assert response.status_code in (400, 413) and "error" in response.json
    body["outputs"] = [{"name": "probs"}, {"name": "probs"}]
    response = client.post(INFER, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "requested more than once" in response.json["error"]


def test_nan_and_inf_in_an_answer_are_still_json(client):
    """JSON has no NaN: non-finite outputs travel as "NaN"/"Infinity" strings, which numpy reads back."""
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [math.nan, 0, 0, 0, 1e39, 0, 0, 0]}]})
    response = client.post(INFER, data=body, content_type="application/json")
    assert response.status_code == 200

    def refuse(constant):
        raise ValueError(f"non-JSON constant {constant}")

    doc = json.loads(response.get_data(), parse_constant=refuse)  # strict JSON, as a browser or Go would read it
    logits = np.array(doc["outputs"][0]["data"], dtype=np.float32)
    assert np.isnan(logits[:3]).all() and not np.isfinite(logits[3:]).all()


@pytest.mark.parametrize("given", ["abc\n", "abc\r\nX-Evil: 1", "a" * 129, "caf\u00e9"])
def test_a_request_id_that_is_no_short_token_is_replaced(artifact, given):
    """Built as an environ: a newline in a header is what a lenient front end could pass on."""
    app = build_app(artifact)
    captured = []
    app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/health/live", "HTTP_X_REQUEST_ID": given},
        lambda status, headers: captured.extend(headers),
    )
    rid = dict(captured)["x-request-id"]
    assert rid != given and len(rid) == 16 and rid.isalnum()


@pytest.mark.parametrize("length", ["\u00b2", "+5", " 5", "1_0", "0x10", "5" * 20])
def test_a_content_length_that_is_no_plain_integer_is_a_400(artifact, length):
    """The app's own check (serverless-wsgi and functions-framework hand their environs over as they are)."""
    app = build_app(artifact)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": INFER, "CONTENT_LENGTH": length, "wsgi.input": __import__("io").BytesIO(b"{}")}
    captured = []
    body = b"".join(app(environ, lambda status, headers: captured.append(status)))
    assert captured[0].startswith("400") and "Content-Length" in json.loads(body)["error"]


def test_the_sagemaker_runtime_stand_in_is_not_mounted_unless_asked(artifact):
    plain = Client(build_app(artifact))
    assert plain.post("/endpoints/tiny/invocations", data=json.dumps(tiny_request()), content_type="application/json").status_code == 404
    assert plain.post("/endpoints/tiny/async-invocations", headers={"X-Amzn-SageMaker-InputLocation": "s3://any/x"}).status_code == 404
    asked = Client(build_app(artifact, sagemaker_runtime=True))
    assert asked.post("/endpoints/tiny/invocations", data=json.dumps(tiny_request()), content_type="application/json").status_code == 200
