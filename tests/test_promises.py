"""README promises that no other test held the code to, one test each (the list is in the README's
"Configuration" section and each claim names its test here):

    SLIMSERVE_KEEPALIVE_S            an idle connection is closed after it
    SLIMSERVE_THREADS                requests one process runs at once
    SLIMSERVE_LOG_FORMAT=text        readable access lines; an unknown format refused at start
    x-amzn-requestid                 taken as the request id
    SLIMSERVE_ENDPOINT_URL {model}   substituted; the bearer token re-read from its variable per request
    SLIMSERVE_ASYNC_ENDPOINT_NAME    the endpoint asynchronous requests go to
    SLIMSERVE_NAN_POLICY             overrides the manifest's extra.nan_policy, both ways
    SLIMSERVE_BATCH_MAX_WAIT_MS      a partial micro-batch runs while a slow record is still being read
    InferenceLatency                 in the batch handler's EMF line
    serve's flags                    each changes what the server does
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import numpy as np
import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from shared.batch.core import BatchRunner, Record
from shared.boot.build import build_app, start
from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.conftest import RunningServer
from tests.endpoint.faults import LoopbackServer
from tests.functions.aws.conftest import load_handler  # noqa: F401  (the fixture that imports the handler afresh)
from tests.hardening.conftest import tiny_request
from tests.hardening.models import with_extra
from tests.helpers import write_tiny_artifact

INFER = "/v2/models/tiny/infer"
BODY = json.dumps(tiny_request()).encode()


def post(url: str, path: str = INFER, body: bytes = BODY, headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def until(condition, timeout_s: float = 30.0, what: str = "the state") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} was not reached within {timeout_s} s"
        time.sleep(0.05)


# --- the server --------------------------------------------------------------------------------------


def test_keepalive_closes_an_idle_connection(tmp_path):
    server = RunningServer([write_tiny_artifact(tmp_path / "tiny")], env={"SLIMSERVE_KEEPALIVE_S": "1", "SLIMSERVE_WORKERS": "1"})
    try:
        host, port = server.url.split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0]
            ):
                answer += sock.recv(65536)  # the whole answer: head and body may come in separate packets
            assert answer.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(1) == b""  # the server closed the idle connection (recv would block otherwise)
            assert time.monotonic() - started >= 0.9
    finally:
        server.stop()


class Counting:
    """An OIP v2 endpoint that answers after `delay_s` and records how many requests it held at once."""

    def __init__(self, delay_s: float = 1.0):
        self.delay_s, self.now, self.most = delay_s, 0, 0
        self.lock = threading.Lock()
        self.seen: list[dict] = []

    def __call__(self, environ, start_response):
        request = Request(environ)
        request.get_data()
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.seen.append({"path": request.path, "authorization": request.headers.get("Authorization")})
        time.sleep(self.delay_s)
        with self.lock:
            self.now -= 1
        doc = {
            "model_name": "tiny",
            "outputs": [{"name": n, "datatype": "FP32", "shape": [1, 3], "data": [0.2, 0.3, 0.5]} for n in ("logits", "probs")],
        }
        return Response(json.dumps(doc), mimetype="application/json")(environ, start_response)


def remote_artifact(tmp_path):
    from tests.endpoint.conftest import write_endpoint_artifact

    return write_endpoint_artifact(tmp_path, fallback=False)[1]


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_bound_the_requests_one_process_runs_at_once(tmp_path, threads):
    endpoint = Counting(delay_s=1.0)
    loop = LoopbackServer(endpoint)
    env = {
        "SLIMSERVE_WORKERS": "1",
        "SLIMSERVE_THREADS": str(threads),
        "SLIMSERVE_ENDPOINT_TRANSPORT": "http",
        "SLIMSERVE_ENDPOINT_URL": loop.url,
    }
    server = RunningServer([remote_artifact(tmp_path)], env=env)
    try:
        with __import__("concurrent.futures").futures.ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: post(server.url)[0], range(6)))
        assert statuses == [200] * 6 and endpoint.most == threads  # each held request is one thread
    finally:
        server.stop()
        loop.stop()


def test_text_logs_are_readable_lines_and_an_unknown_format_is_refused(tmp_path):
    artifact = write_tiny_artifact(tmp_path / "tiny")
    server = RunningServer([artifact], env={"SLIMSERVE_LOG_FORMAT": "text", "SLIMSERVE_WORKERS": "1"})
    try:
        assert post(server.url, headers={"x-request-id": "req-text-1"})[0] == 200
        until(lambda: "id=req-text-1" in server.log(), what="the access line")
    finally:
        _, output = server.stop()
    line = next(line for line in output.splitlines() if "id=req-text-1" in line)
    assert " INFO slimserve.access: POST /v2/models/tiny/infer 200 tiny/1 " in line and line.rstrip().endswith("ms id=req-text-1")
    assert not line.lstrip().startswith("{")
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "slimserve", "serve", str(artifact), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SLIMSERVE_LOG_FORMAT": "xml"},
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr.strip() == "slimserve: error: SLIMSERVE_LOG_FORMAT='xml' must be one of json, text"


def test_the_serve_flags_change_what_the_server_does(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port, wait_for_http

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "slimserve",
        "serve",
        str(write_tiny_artifact(tmp_path / "tiny")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "3",
        "--threads",
        "2",
        "--ort-threads",
        "1",
        "--max-batch-size",
        "4",
        "--max-queue-delay-ms",
        "0",
        "--api-key",
        "k-1",
        "--sagemaker-runtime",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/health/ready", proc, timeout=60)
        url = f"127.0.0.1:{port}"
        assert post(url)[0] == 401 and post(url, headers={"x-api-key": "k-1"})[0] == 200  # --api-key
        assert post(url, "/endpoints/tiny/invocations", headers={"x-api-key": "k-1"})[0] == 200  # --sagemaker-runtime
        from tests.server.test_framing import _children

        until(lambda: len(_children(proc.pid)) == 3, what="three workers")  # --workers
        for _ in range(3):
            post(url, headers={"x-api-key": "k-1"})

        def batches_counted() -> bool:  # each worker writes its counts every second; any may answer
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/metrics", headers={"x-api-key": "k-1"})
            return b'slimserve_batch_size_count{model="tiny",version="1"}' in conn.getresponse().read()

        until(batches_counted, what="the batcher's runs in /metrics")  # --max-batch-size: the batcher runs
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# --- the app -------------------------------------------------------------------------------------------


def test_x_amzn_requestid_is_taken_as_the_request_id(tmp_path):
    client = Client(build_app(write_tiny_artifact(tmp_path / "tiny")))
    assert client.get("/v2/health/live", headers={"x-amzn-requestid": "c6af9ac6-7b61-11e6"}).headers["x-request-id"] == "c6af9ac6-7b61-11e6"
    both = client.get("/v2/health/live", headers={"x-request-id": "mine", "x-amzn-requestid": "theirs"})
    assert both.headers["x-request-id"] == "mine"  # the caller's own id first


@pytest.mark.parametrize("setting, manifest, accepted", [("allow", "reject", True), ("reject", "allow", False), ("", "reject", False)])
def test_the_nan_policy_setting_overrides_the_manifest(tmp_path, setting, manifest, accepted):
    artifact = with_extra(write_tiny_artifact(tmp_path / "tiny"), nan_policy=manifest)
    client = Client(build_app(artifact, nan_policy=setting))
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, float("nan"), 0, 0]}]}
    response = client.post(INFER, data=json.dumps(body), content_type="application/json")
    assert response.status_code == (200 if accepted else 400)


# --- the remote model ------------------------------------------------------------------------------


def test_the_endpoint_url_takes_the_model_name_and_the_token_is_read_per_request(tmp_path, monkeypatch):
    endpoint = Counting(delay_s=0.0)
    loop = LoopbackServer(endpoint)
    try:
        monkeypatch.setenv("VERTEX_TOKEN", "token-1")
        runtime = start(
            remote_artifact(tmp_path),
            endpoint_transport="http",
            endpoint_url=loop.url + "/custom/{model}/predict",
            endpoint_token_env="VERTEX_TOKEN",
        )
        model = runtime.plane.model("tiny")
        model.answer({"input": np.ones((1, 4), np.float32)})
        monkeypatch.setenv("VERTEX_TOKEN", "token-2")  # rotated: no restart
        model.answer({"input": np.ones((1, 4), np.float32)})
        assert [s["path"] for s in endpoint.seen] == ["/custom/tiny/predict"] * 2
        assert [s["authorization"] for s in endpoint.seen] == ["Bearer token-1", "Bearer token-2"]
    finally:
        loop.stop()


def test_asynchronous_requests_go_to_the_async_endpoint(tmp_path, monkeypatch):
    """SageMaker serves an endpoint configuration one way: sync calls go to one endpoint, async to another."""
    seen = []

    def runtime_api(environ, start_response):
        seen.append(environ["PATH_INFO"])
        headers = {"X-Amzn-SageMaker-OutputLocation": "s3://b/out", "X-Amzn-SageMaker-FailureLocation": "s3://b/fail"}
        return Response(json.dumps({"InferenceId": "x"}), status=202, headers=headers, mimetype="application/json")(environ, start_response)

    loop = LoopbackServer(runtime_api)
    try:
        for key, value in {
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": loop.url,
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        from shared.remote.transports import SageMakerTransport

        transport = SageMakerTransport("tiny-sync", 5.0, 30.0, async_endpoint_name="tiny-async")
        transport.invoke_async("s3://b/input/1", "application/json", "1")
        assert seen == ["/endpoints/tiny-async/async-invocations"]
        assert SageMakerTransport("tiny-sync", 5.0, 30.0).async_endpoint_name == "tiny-sync"  # empty: the sync one
    finally:
        loop.stop()


# --- batch -------------------------------------------------------------------------------------------


def test_a_partial_micro_batch_runs_after_the_wait_while_a_record_is_still_being_read(tmp_path):
    """Two small records are read at once; a third blocks in its read (a named pipe with no writer yet).
    With SLIMSERVE_BATCH_MAX_WAIT_MS=50 the two run and are written before the third has arrived."""
    import io

    def npy(x):
        buffer = io.BytesIO()
        np.save(buffer, x)
        return buffer.getvalue()

    runtime = start(write_tiny_artifact(tmp_path / "tiny"), output=f"file://{tmp_path}/out", batch_max_wait_ms=50)
    pipe = tmp_path / "slow.npy"
    os.mkfifo(pipe)
    records = [
        Record.inline("in/a.npy", npy(np.ones((1, 4), np.float32))),
        Record.inline("in/b.npy", npy(np.ones((1, 4), np.float32))),
        Record.from_uri(f"file://{pipe}"),
    ]
    runner = BatchRunner(runtime.plane, runtime.settings, runtime.storage)
    done = []
    thread = threading.Thread(target=lambda: done.append(runner.run(records)))
    thread.start()
    until(
        lambda: (tmp_path / "out/in/a.npy.json").exists() and (tmp_path / "out/in/b.npy.json").exists(),
        what="the first micro-batch's results",
    )
    assert thread.is_alive()  # the third record is still being read
    with open(pipe, "wb") as writer:
        writer.write(npy(np.ones((2, 4), np.float32)))
    thread.join(timeout=60)
    report = done[0]
    assert not report.failed and report.runs == 2  # a+b together, then the late one alone


def test_the_batch_handler_reports_inference_latency(load_handler, aws, tmp_path, capsys):
    import io

    from tests.eventlib import s3_notification, sqs_event

    buffer = io.BytesIO()
    np.save(buffer, np.ones((3, 4), np.float32))
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="promises")
    s3.put_object(Bucket="promises", Key="incoming/x.npy", Body=buffer.getvalue())
    handler = load_handler(
        SLIMSERVE_ARTIFACT=str(write_tiny_artifact(tmp_path / "tiny")),
        SLIMSERVE_OUTPUT="s3://promises/results",
        POWERTOOLS_METRICS_NAMESPACE="slimserve",
    )
    capsys.readouterr()
    assert handler.batch(sqs_event([s3_notification("promises", ["incoming/x.npy"])]), None) == {"batchItemFailures": []}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    names = {m["Name"] for m in emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"InferenceLatency", "Succeeded", "Failed", "BatchSize", "Runs"} <= names
    assert float(np.ravel(emf[0]["InferenceLatency"])[0]) > 0 and float(np.ravel(emf[0]["Succeeded"])[0]) == 1
