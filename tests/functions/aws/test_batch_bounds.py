"""The batch handler's memory is bounded whatever the inputs claim: one SQS invocation holding 10 good
objects, a ~2 MB `.npz` whose member inflates to 2 GB, and a valid 5,000-row `.npy`, against moto in server
mode. The bomb alone fails (refused from the `.npy` header inside it, never inflated); the long record is
answered whole, run in SLIMSERVE_BATCH_MAX_SIZE rows; the handler's peak RSS stays under 1 GiB.

The handler runs in its own process, so its peak RSS (ru_maxrss) is its own, not the test runner's."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort
import pytest

from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.conftest import ROOT
from tests.eventlib import s3_notification, sqs_event
from tests.helpers import write_tiny_artifact

BUCKET = "slimserve-bounds"
GIB = 1 << 30

RUN = r"""
import json, resource, sys
import functions.aws.handler as handler
response = handler.batch(json.load(open(sys.argv[1])), None)
print(json.dumps({"response": response, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def bomb(inflated: int = 2 * GIB) -> bytes:
    """An .npz whose one member, `input.npy`, is `inflated` bytes of zeros: about a thousandth of it deflated."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (inflated // 16, 4)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("input.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = bytes(16 << 20)
            for _ in range(inflated // len(zeros)):
                member.write(zeros)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


def test_one_invocation_with_a_zip_bomb_and_a_long_record_stays_bounded(aws, artifact, tmp_path):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(3)
    inputs = {f"incoming/good {i}.npy": rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(10)}
    inputs["incoming/long.npy"] = rng.normal(size=(5000, 4)).astype(np.float32)
    for key, value in inputs.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=npy(value))
    payload = bomb()
    assert len(payload) < 3 << 20  # ~2 MB on the wire
    s3.put_object(Bucket=BUCKET, Key="incoming/bomb.npz", Body=payload)

    keys = [*inputs, "incoming/bomb.npz"]
    event = sqs_event([s3_notification(BUCKET, [key]) for key in keys], message_ids=[f"m{i}" for i in range(len(keys))])
    (tmp_path / "event.json").write_text(json.dumps(event))
    env = {
        **os.environ,
        **aws.env,
        "SLIMSERVE_ARTIFACT": str(artifact),
        "SLIMSERVE_OUTPUT": f"s3://{BUCKET}/results",
        "SLIMSERVE_BATCH_MAX_SIZE": "64",
        "POWERTOOLS_METRICS_NAMESPACE": "slimserve",
        "SLIMSERVE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "event.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"peak RSS {outcome['peak_rss'] / 2**20:.0f} MiB; bomb {len(payload):,} bytes -> {2 * GIB:,} inflated")

    assert outcome["response"] == {"batchItemFailures": [{"itemIdentifier": f"m{len(keys) - 1}"}]}  # exactly the bomb
    assert outcome["peak_rss"] < GIB
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="results/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"results/{key}.json" for key in inputs)
    long = json.loads(s3.get_object(Bucket=BUCKET, Key="results/incoming/long.npy.json")["Body"].read())
    probs = next(o for o in long["outputs"] if o["name"] == "probs")
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["probs"], {"input": inputs["incoming/long.npy"]})[0]
    assert probs["shape"] == [5000, 3]
    np.testing.assert_allclose(np.array(probs["data"], np.float32).reshape(5000, 3), want, rtol=1e-5, atol=1e-6)
