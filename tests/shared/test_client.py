"""`slimserve invoke` and shared.client over real HTTP: against `slimserve serve`, and against a tiny local
WSGI server that throttles (503/429 + Retry-After) before it answers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shared.client import InferenceClient, InvokeError, cast_to
from tests.batch.models import write_word_count_artifact
from tests.conftest import ROOT


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimserve", "invoke", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`slimserve serve` with the tiny classifier and a text model, started once for this module."""
    from tests.conftest import RunningServer
    from tests.helpers import write_tiny_artifact

    root = tmp_path_factory.mktemp("served")
    tiny, words = write_tiny_artifact(root / "tiny"), write_word_count_artifact(root / "words")
    server = RunningServer([tiny, words])
    yield f"http://{server.url}", tiny
    server.stop()


def test_invoke_npy_against_slimserve_serve(served, tmp_path):
    url, tiny = served
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)

    proc = invoke(url, "tiny", "--npy", str(tmp_path / "x.npy"))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model tiny version 1\n") and "probs float32 [2, 3]" in proc.stdout
    want = ort.InferenceSession(str(tiny / "model.onnx"), providers=["CPUExecutionProvider"]).run(["probs"], {"input": x})[0]
    got = InferenceClient(url).infer("tiny", {"input": x}).outputs["probs"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_invoke_text_and_json(served, tmp_path):
    url, _ = served
    proc = invoke(url, "words", "--text", "hello big world", "--text", "one")
    assert proc.returncode == 0, proc.stderr
    assert "count int64 [2]\n[3, 1]" in proc.stdout

    (tmp_path / "req.json").write_text(
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    )
    proc = invoke(url, "tiny", "--json", str(tmp_path / "req.json"), "--version", "1")
    assert proc.returncode == 0, proc.stderr
    assert "logits float32 [1, 3]" in proc.stdout


def test_invoke_reports_a_client_error_once_with_the_server_message(served, tmp_path):
    url, _ = served
    np.save(tmp_path / "bad.npy", np.zeros((1, 5), np.float32))
    proc = invoke(url, "tiny", "--npy", str(tmp_path / "bad.npy"))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == "slimserve: error: 400 Bad Request: input 'input' has shape [1, 5], model 'tiny' expects [-1, 4] (-1 = any)"
    )
    proc = invoke(url, "nope", "--text", "x")
    assert proc.returncode == 1 and "404 Not Found: unknown model 'nope'; this server serves tiny, words" in proc.stderr


def test_invoke_json_reads_a_binary_extension_response(served, tmp_path):
    """A request body asking for binary outputs gets the binary tensor extension back (JSON head + raw bytes)."""
    url, tiny = served
    x = [[1.0, -2.0, 0.5, 3.0]]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": x}], "parameters": {"binary_data_output": True}}
    (tmp_path / "req.json").write_text(json.dumps(body))

    proc = invoke(url, "tiny", "--json", str(tmp_path / "req.json"))

    assert proc.returncode == 0, proc.stderr
    assert "logits float32 [1, 3]" in proc.stdout and "probs float32 [1, 3]" in proc.stdout
    response = InferenceClient(url).infer_json("tiny", body)
    assert all("binary_data_size" in o["parameters"] for o in response.doc["outputs"])  # it did come back binary
    want = ort.InferenceSession(str(tiny / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": np.float32(x)})
    np.testing.assert_array_equal(response.outputs["logits"], want[0])
    np.testing.assert_array_equal(response.outputs["probs"], want[1])


def test_invoke_npy_casts_numpys_float64_to_the_models_fp32(served, tmp_path):
    url, tiny = served
    x = np.random.default_rng(1).normal(size=(3, 4))  # float64, numpy's default
    np.save(tmp_path / "x.npy", x)

    proc = invoke(url, "tiny", "--npy", str(tmp_path / "x.npy"))

    assert proc.returncode == 0, proc.stderr
    assert "probs float32 [3, 3]" in proc.stdout
    inputs = InferenceClient(url).inputs_for("tiny", array=x)  # the metadata says FP32
    assert inputs["input"].dtype == np.float32
    np.save(tmp_path / "ints.npy", np.array([[1, 2, 3, 4]]))  # int64 -> FP32: exact for such integers
    assert invoke(url, "tiny", "--npy", str(tmp_path / "ints.npy")).returncode == 0


def test_a_cast_that_would_lose_values_is_refused():
    assert cast_to(np.array([[1, 2]], np.int64), "INT32", "ids").dtype == np.int32
    assert cast_to(np.array([True]), "BOOL", "flag").dtype == np.bool_
    for array, datatype in [(np.array([1.5]), "INT64"), (np.array([2**40]), "INT32"), (np.array([-1]), "UINT8")]:
        with pytest.raises(InvokeError, match=f"input 'x' is {datatype}; the array is .* cannot be cast to it without loss"):
            cast_to(array, datatype, "x")


def test_a_url_without_a_scheme(served, tmp_path):
    """Loopback is plain HTTP, as tritonclient takes `127.0.0.1:8000`; elsewhere the user is told what to write."""
    url, _ = served
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    bare = url.removeprefix("http://")
    assert invoke(bare, "tiny", "--npy", str(tmp_path / "x.npy")).returncode == 0
    assert InferenceClient("localhost:8080").url == "http://localhost:8080"
    proc = invoke("api.example.com/prod", "tiny", "--npy", str(tmp_path / "x.npy"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "slimserve: error: URL 'api.example.com/prod' has no scheme: write https://api.example.com/prod "
        "(or http://api.example.com/prod for a plain-HTTP server)"
    )
    with pytest.raises(InvokeError, match="only http:// and https://"):
        InferenceClient("ftp://example.com")


# --- throttling ------------------------------------------------------------------------------------

ANSWER = {"model_name": "m", "model_version": "1", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [0.5]}]}


class Throttling:
    """Answers `refusals` throttled responses (status, Retry-After) first, then the answer; records requests."""

    def __init__(self, refusals: list[tuple[int, str | None]]):
        self.refusals = list(refusals)
        self.seen: list[tuple[float, dict]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def app(self, environ, start_response):
        request = Request(environ)
        self.seen.append((time.monotonic(), dict(request.headers)))
        if self.refusals:
            status, retry_after = self.refusals.pop(0)
            headers = {"Retry-After": retry_after} if retry_after else {}
            return Response(json.dumps({"error": "busy"}), status=status, headers=headers, mimetype="application/json")(
                environ, start_response
            )
        return Response(json.dumps(ANSWER), mimetype="application/json")(environ, start_response)

    def stop(self):
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def throttling():
    servers: list[Throttling] = []

    def start(refusals):
        servers.append(Throttling(refusals))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_503_with_retry_after_is_retried_after_waiting(throttling):
    server = throttling([(503, "1")])
    response = InferenceClient(server.url, bearer="tok").infer_json("m", {"inputs": []})
    assert response.attempts == 2 and response.outputs["y"].tolist() == [0.5]
    (first, _), (second, headers) = server.seen
    assert second - first >= 0.95  # it waited what Retry-After asked, over real HTTP
    assert headers["Authorization"] == "Bearer tok"


def test_retry_after_is_bounded_and_dates_are_understood(throttling):
    server = throttling([(429, "3600"), (503, "Wed, 21 Oct 2015 07:28:00 GMT"), (503, None)])
    waits: list[float] = []
    client = InferenceClient(server.url, api_key="k", api_key_header="x-functions-key", max_wait_s=2.0, sleep=waits.append)
    assert client.infer_json("m", {"inputs": []}).attempts == 4
    assert waits == [2.0, 0.0, 2.0]  # capped; a date in the past: no wait; no header: backoff 0.5 * 2**2
    assert server.seen[-1][1]["X-Functions-Key"] == "k"


def test_throttling_past_the_retries_and_other_errors_raise(throttling):
    server = throttling([(503, "0")] * 3)
    with pytest.raises(InvokeError, match="503 Service Unavailable: busy") as info:
        InferenceClient(server.url, retries=2, sleep=lambda s: None).infer_json("m", {"inputs": []})
    assert info.value.status == 503 and len(server.seen) == 3

    server = throttling([(400, None), (503, None)])
    with pytest.raises(InvokeError, match="400 Bad Request: busy"):
        InferenceClient(server.url, sleep=lambda s: None).infer_json("m", {"inputs": []})
    assert len(server.seen) == 1  # a 4xx is never retried

    with pytest.raises(InvokeError, match="cannot reach"):
        InferenceClient("http://127.0.0.1:9", retries=0).infer_json("m", {"inputs": []})


class Redirecting(Throttling):
    """Answers every request with a 307 to `target` (another origin, or the same one)."""

    def __init__(self, target: str):
        self.target = target
        super().__init__([])

    def app(self, environ, start_response):
        request = Request(environ)
        self.seen.append((time.monotonic(), dict(request.headers)))
        if request.path.startswith("/moved"):
            return Response(json.dumps(ANSWER), mimetype="application/json")(environ, start_response)
        return Response("", status=307, headers={"Location": self.target + "/moved" + request.path})(environ, start_response)


@pytest.mark.parametrize("how", ["bearer", "api_key"])
def test_credentials_never_follow_a_redirect_to_another_origin(throttling, how):
    elsewhere = throttling([])
    redirecting = Redirecting(elsewhere.url)
    try:
        client = InferenceClient(redirecting.url, **({"bearer": "s3cret"} if how == "bearer" else {"api_key": "s3cret"}))
        assert client.metadata("m")["model_name"] == "m"  # a GET: urllib follows 307 for GET/HEAD only
    finally:
        redirecting.stop()
    sent = redirecting.seen[0][1]
    assert sent.get("Authorization") == "Bearer s3cret" or sent.get("X-Api-Key") == "s3cret"
    followed = elsewhere.seen[0][1]
    assert "Authorization" not in followed and "X-Api-Key" not in followed


def test_credentials_follow_a_redirect_on_the_same_origin(throttling):
    redirecting = Redirecting("")
    redirecting.target = redirecting.url
    try:
        InferenceClient(redirecting.url, bearer="s3cret").metadata("m")
    finally:
        redirecting.stop()
    assert [seen.get("Authorization") for _, seen in redirecting.seen] == ["Bearer s3cret", "Bearer s3cret"]
