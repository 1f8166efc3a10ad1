"""Every request limit against a live server with small limits: the offending request gets its status and a
message naming the setting, and the same client's next good request is answered. The checks run before
the allocation they guard; the last tests show it for the cases where a header alone claims gigabytes."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest

from shared.errors import InvalidTensor, LimitExceeded, MalformedRequest
from shared.protocol.codec import decode_request
from shared.protocol.limits import Limits
from tests.conftest import RunningServer
from tests.hardening.conftest import tiny_request
from tests.hardening.models import write_echo_artifact, write_nan_rejecting_artifact
from tests.helpers import write_tiny_artifact

LIMITS = {
    "SLIMSERVE_MAX_BODY_BYTES": "20000",
    "SLIMSERVE_MAX_ELEMENTS": "1000",
    "SLIMSERVE_MAX_REQUEST_BATCH": "16",
    "SLIMSERVE_MAX_STRING_BYTES": "64",
    "SLIMSERVE_MAX_JSON_DEPTH": "8",
    "SLIMSERVE_MAX_INPUTS": "4",
    "SLIMSERVE_WORKERS": "1",
}
INFER = "/v2/models/tiny/infer"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    artifacts = [
        write_tiny_artifact(folder / "tiny"),
        write_nan_rejecting_artifact(folder / "tinynan"),
        write_echo_artifact(folder / "echo"),
    ]
    server = RunningServer(artifacts, env=LIMITS)
    yield server
    server.stop()


def binary(header: dict, data: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(s)) + s for s in items)


def deep(levels: int) -> dict:
    data = [0.1, 0.2, 0.3, 0.4]
    for _ in range(levels - 1):
        data = [data]
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": data}]}


CASES = {
    "body bytes": ("POST", INFER, b"{" + b" " * 30000 + b"}", {}, 413, "over the limit of 20000 (SLIMSERVE_MAX_BODY_BYTES)"),
    "elements (binary header claims 2,000)": (
        "POST",
        INFER,
        *binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [500, 4], "parameters": {"binary_data_size": 8}}]}, b"\0" * 8),
        413,
        "tensor 'input' has a batch of 500, over SLIMSERVE_MAX_REQUEST_BATCH=16",
    ),
    "elements": (
        "POST",
        INFER,
        *binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1000], "parameters": {"binary_data_size": 8}}]}, b"\0" * 8),
        413,
        "tensor 'input' has 2,000 elements, over SLIMSERVE_MAX_ELEMENTS=1,000",
    ),
    "elements summed over inputs": (
        "POST",
        INFER,
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [16, 4], "data": [0] * 64},
                {"name": "other", "datatype": "FP32", "shape": [1, 999], "data": [0] * 999},
            ]
        },
        {},
        413,
        "tensor 'other' brings the request to 1,063 elements, over SLIMSERVE_MAX_ELEMENTS=1,000",
    ),
    "batch": ("POST", INFER, tiny_request(rows=17), {}, 413, "tensor 'input' has a batch of 17, over SLIMSERVE_MAX_REQUEST_BATCH=16"),
    "string length (JSON)": (
        "POST",
        "/v2/models/echo/infer",
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ok", "x" * 65]}]},
        {},
        413,
        "tensor 'text' has a BYTES element of 65 bytes, over SLIMSERVE_MAX_STRING_BYTES=64",
    ),
    "string length (binary)": (
        "POST",
        "/v2/models/echo/infer",
        *binary(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 104}}]}, strings(b"y" * 100)
        ),
        413,
        "BYTES element of 100 bytes, over SLIMSERVE_MAX_STRING_BYTES=64",
    ),
    "JSON depth": ("POST", INFER, deep(12), {}, 400, "nested too deeply: 15 levels, over SLIMSERVE_MAX_JSON_DEPTH=8"),
    "number of inputs": (
        "POST",
        INFER,
        {"inputs": [{"name": f"i{n}", "datatype": "FP32", "shape": [1], "data": [0]} for n in range(5)]},
        {},
        413,
        "request has 5 inputs, over SLIMSERVE_MAX_INPUTS=4",
    ),
    "number of outputs": (
        "POST",
        INFER,
        {**tiny_request(), "outputs": [{"name": "probs"}] * 5},
        {},
        413,
        "request has 5 outputs, over SLIMSERVE_MAX_INPUTS=4",
    ),
    "NaN (manifest nan_policy reject)": (
        "POST",
        "/v2/models/tinynan/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, float("nan"), 0, 0]}]},
        {},
        400,
        "input 'input' holds NaN or Inf, which model 'tinynan' rejects",
    ),
    "Inf in binary data": (
        "POST",
        "/v2/models/tinynan/infer",
        *binary(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]},
            np.array([[0, np.inf, 0, 0]], np.float32).tobytes(),
        ),
        400,
        "holds NaN or Inf",
    ),
    "model name in the URL": (
        "POST",
        "/v2/models/Tiny.Model/infer",
        tiny_request(),
        {},
        400,
        "model name 'Tiny.Model' must match ^[a-z0-9][a-z0-9_-]{0,62}$",
    ),
    "model name, encoded traversal": ("GET", "/v2/models/..%2e/ready", None, {}, 400, "model name '...' must match"),
    "model version in the URL": ("POST", "/v2/models/tiny/versions/1;rm/infer", tiny_request(), {}, 400, "model version '1;rm' must match"),
    "model name in the SageMaker header": (
        "POST",
        "/invocations",
        tiny_request(),
        {"X-Amzn-SageMaker-Target-Model": "../tiny"},
        400,
        "model name '..' must match",
    ),
}


@pytest.mark.parametrize("method,path,body,headers,status,message", CASES.values(), ids=CASES.keys())
def test_offending_request_then_a_good_one(served, client_for, method, path, body, headers, status, message):
    client = client_for(served)
    got, response_headers, answer = client.request(method, path, body, headers)
    assert (got, message in answer["error"]) == (status, True), answer
    assert response_headers["content-type"] == "application/json"
    client.good_inference()


def test_chunked_body_over_the_limit_is_refused_while_reading(served, client_for):
    """The server stops reading once the chunks pass the limit: it answers 413 and closes, which may cut the
    client off mid-send (then the connection reset is the answer the client sees)."""
    import socket

    host, port = served.url.split(":")
    chunk = b"{" + b" " * 8000
    raw = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    raw += (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 4 + b"0\r\n\r\n"
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(raw)
            while part := sock.recv(65536):
                answer += part
        except (ConnectionResetError, BrokenPipeError):
            pass
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and "SLIMSERVE_MAX_BODY_BYTES" in json.loads(body)["error"]
    client_for(served).good_inference()


def test_nan_is_allowed_where_the_policy_allows_it(served, client_for):
    client = client_for(served)
    status, _, body = client.request(
        "POST", INFER, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, float("nan"), 0, 0]}]}
    )
    assert status == 200 and body["outputs"][0]["name"] == "logits"


def test_brackets_inside_strings_do_not_count_as_nesting(served, client_for):
    status, _, body = client_for(served).request(
        "POST", "/v2/models/echo/infer", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["[[[[[[[[[[{{{{"]}]}
    )
    assert status == 200 and "[[[[[[[[[[{{{{" in body["outputs"][0]["data"][0]


# --- before allocation: a header that claims gigabytes costs nothing ---------------------------------


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except (LimitExceeded, InvalidTensor, MalformedRequest):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_bytes_shape_claiming_a_billion_elements_allocates_nothing():
    head = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1000, 10**6], "parameters": {"binary_data_size": 8}}]}
    ).encode()
    body = head + strings(b"ab", b"cd")[:8]
    with pytest.raises(LimitExceeded, match="1,000,000,000 elements"):
        decode_request(body, str(len(head)), lambda *a: None, Limits())
    # Even without the element limit, the length prefixes it would need are counted before the array exists.
    no_limit = Limits(max_elements=2**62, max_request_batch=2**62)
    assert _peak_bytes(lambda: decode_request(body, str(len(head)), lambda *a: None, no_limit)) < 1 << 20
    with pytest.raises(InvalidTensor, match="BYTES data ends after 2 of 1,000,000,000 elements at most"):
        decode_request(body, str(len(head)), lambda *a: None, no_limit)


def test_a_deep_body_is_refused_before_json_parses_it():
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _peak_bytes(lambda: decode_request(body, None, lambda *a: None, Limits())) < 4 * len(body)
    with pytest.raises(MalformedRequest, match="100,001 levels, over SLIMSERVE_MAX_JSON_DEPTH=32"):
        decode_request(body, None, lambda *a: None, Limits())


# --- object keys in events ---------------------------------------------------------------------------


def _sqs(*keys: str) -> dict:
    records = [
        {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in"}, "object": {"key": key}}}
        for key in keys
    ]
    return {"Records": [{"messageId": f"m{i}", "body": json.dumps({"Records": [r]})} for i, r in enumerate(records)]}


def test_object_keys_that_leave_their_prefix_or_name_no_model_fail_alone(tmp_path):
    """An encoded `..` in an S3 key, or a folder name no manifest could have, fails that record (400) before
    any read; the good record beside it is answered."""
    from shared.batch.core import BatchRunner
    from shared.batch.s3_sqs import unwrap_sqs
    from shared.boot.build import build_app
    from shared.config import Settings
    from shared.storage import Storage

    tiny, other = write_tiny_artifact(tmp_path / "tiny"), write_tiny_artifact(tmp_path / "other", name="other")
    (tmp_path / "in" / "incoming" / "tiny").mkdir(parents=True)
    np.save(tmp_path / "in" / "incoming" / "tiny" / "ok.npy", np.ones((1, 4), np.float32))
    settings = Settings.resolve(artifact=f"{tiny},{other}", output=f"file://{tmp_path}/out")
    runner = BatchRunner(build_app(tiny, settings).plane, settings, Storage())
    records = unwrap_sqs(_sqs("incoming/..%2F..%2Fetc%2Fpasswd.npy", "incoming/Evil%24Name/x.npy")).records
    records.append(type(records[0]).from_uri(f"file://{tmp_path}/in/incoming/tiny/ok.npy", id="good"))
    report = runner.run(records)
    outcomes = {o.record.id: o for o in report.outcomes}
    assert (outcomes["m0"].status, "'..' segment" in outcomes["m0"].error) == (400, True)
    assert (outcomes["m1"].status, "model name 'Evil$Name' must match" in outcomes["m1"].error) == (400, True)
    assert outcomes["good"].ok and not (tmp_path / "etc").exists()
