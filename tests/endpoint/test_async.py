"""Requests over the synchronous limit: input to S3 (moto's server), `invoke_endpoint_async` on the local
endpoint (which reads S3, runs the model, writes the answer back), 202 + Location, then polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.test import Client

from shared.protocol import codec
from tests.conftest import free_port, wait_for_http
from tests.endpoint.conftest import function_app, write_endpoint_artifact
from tests.helpers import write_tiny_artifact

BUCKET = "slimserve-async-test"
X = np.random.default_rng(5).normal(size=(64, 4)).astype(np.float32)  # 1 KB of tensors, over the 512 B limit below
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(X.shape), "data": X.ravel().tolist()}]}
ASYNC = dict(async_bucket=BUCKET, endpoint_max_sync_bytes=512, max_body_bytes=1 << 20)


@pytest.fixture(scope="module")
def moto_s3():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(moto_s3):
    os.environ["AWS_ENDPOINT_URL_S3"] = moto_s3
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def poll(client, location: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        assert response.headers["Retry-After"] == "1" and response.json["status"] == "pending"
        time.sleep(0.05)


def test_large_request_goes_async_and_the_answer_is_polled(tmp_path, endpoint, s3):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir, **ASYNC)
    client = Client(function_app(function_dir, server.url, **ASYNC))

    accepted = client.post("/v2/models/tiny/infer", json=BODY)

    assert accepted.status_code == 202, accepted.json
    location = accepted.headers["Location"]
    assert location == accepted.json["location"] == f"/v2/models/tiny/versions/1/async/{accepted.json['id']}"
    assert accepted.json["output_location"].startswith(f"s3://{BUCKET}/")
    stored = s3.get_object(Bucket=BUCKET, Key=f"slimserve-async/input/{accepted.json['id']}")
    assert stored["ContentType"].startswith(codec.BINARY_CONTENT_TYPE) and stored["ContentLength"] > 512

    done = poll(client, location)

    assert done.status_code == 200 and done.mimetype == "application/octet-stream"
    outputs = codec.decode_response(done.data, int(done.headers[codec.HEADER_LENGTH]))
    session = ort.InferenceSession(str(endpoint_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(outputs["probs"], session.run(["probs"], {"input": X})[0])
    model = client.application.plane.repository.get("tiny")
    assert model.stats.deferred == 1 and model.stats.attempts == 0  # never tried synchronously
    assert client.get("/v2/models/tiny/async/" + "0" * 32).status_code == 404
    assert client.get("/v2/models/tiny/async/../../etc").status_code == 404


def test_a_failure_on_the_endpoint_is_reported_by_the_poll(tmp_path, endpoint, s3):
    _, function_dir = write_endpoint_artifact(tmp_path)
    wrong = write_tiny_artifact(tmp_path / "wrong", in_features=6)  # same name, another signature
    server = endpoint(wrong, **ASYNC)
    client = Client(function_app(function_dir, server.url, **ASYNC))

    accepted = client.post("/v2/models/tiny/infer", json=BODY)
    failed = poll(client, accepted.headers["Location"])

    assert accepted.status_code == 202
    assert failed.status_code == 500 and "failed on the endpoint" in failed.json["error"] and "shape" in failed.json["error"]


def test_without_an_async_bucket_a_large_request_is_413(tmp_path, endpoint):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir)
    client = Client(function_app(function_dir, server.url, endpoint_max_sync_bytes=512, max_body_bytes=1 << 20))

    response = client.post("/v2/models/tiny/infer", json=BODY)

    assert response.status_code == 413 and "SLIMSERVE_ASYNC_BUCKET" in response.json["error"]
    assert server.faults.seen == 0


def test_the_stand_in_reads_only_under_its_async_prefix(tmp_path, endpoint, s3):
    endpoint_dir, _ = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir, **ASYNC)
    s3.create_bucket(Bucket="someone-elses")
    s3.put_object(Bucket="someone-elses", Key="secret.json", Body=b"{}")
    runtime = boto3.client("sagemaker-runtime", endpoint_url=server.url)
    for location in ("s3://someone-elses/secret.json", f"s3://{BUCKET}/elsewhere/x", f"s3://{BUCKET}/slimserve-async/../secret"):
        with pytest.raises(runtime.exceptions.ValidationError, match="InputLocation must be an object under"):
            runtime.invoke_endpoint_async(EndpointName="tiny-ep", InputLocation=location, ContentType="application/json")


def test_the_stand_in_runs_few_asynchronous_requests_at_once_and_throttles_the_rest(tmp_path, endpoint, s3):
    from shared.http.sagemaker_runtime import ASYNC_QUEUE, ASYNC_WORKERS

    endpoint_dir, _ = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir, **ASYNC)
    server.faults.delay_s = 0.0
    s3.put_object(Bucket=BUCKET, Key="slimserve-async/input/slow", Body=b"{}")
    stand_in = server.faults.app.stand_in
    release = __import__("threading").Event()
    stand_in._run_async = lambda *args: (release.wait(10), stand_in._slots.release())  # each job holds its slot
    client = Client(server.faults.app)
    headers = {
        "X-Amzn-SageMaker-InputLocation": f"s3://{BUCKET}/slimserve-async/input/slow",
        "X-Amzn-SageMaker-Content-Type": "application/json",
    }
    codes = [
        client.post("/endpoints/tiny-ep/async-invocations", headers=headers).status_code for _ in range(ASYNC_WORKERS + ASYNC_QUEUE + 3)
    ]
    release.set()
    assert codes.count(202) == ASYNC_WORKERS + ASYNC_QUEUE and codes[-3:] == [429, 429, 429]


def test_batch_never_defers_a_record_to_the_asynchronous_endpoint(tmp_path, endpoint, s3):
    """Nothing would poll it, and every redelivery would start another job: a record too large to send
    synchronously fails alone (413), and no asynchronous input is written."""
    from shared.batch.core import BatchRunner, Record
    from tests.endpoint.conftest import function_runtime

    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir, **ASYNC)
    runtime = function_runtime(function_dir, server.url, **ASYNC, output=f"file://{tmp_path}/out", batch_max_size=64)
    buffer = __import__("io").BytesIO()
    np.save(buffer, X)
    stored = lambda: {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="slimserve-async/").get("Contents", [])}  # noqa: E731
    before = stored()
    report = BatchRunner(runtime.plane, runtime.settings, runtime.storage).run([Record.inline("in/x.npy", buffer.getvalue(), id="r")])
    assert report.outcomes[0].status == 413 and "batch runs synchronously" in report.outcomes[0].error
    assert stored() == before
    assert server.faults.seen == 0
