"""`slimserve backfill s3://... --queue URL` against moto in server mode, drained through the real batch
handler by a poller shaped like Lambda's SQS event source mapping: up to 10 messages per invocation, the
handler's partial batch response deletes what succeeded, the rest come back after the visibility timeout,
and the queue's redrive policy moves a message to the DLQ after 2 receives.

The output bucket is versioned, so "exactly once" is checked where it happens: every result key has one
version, i.e. was written once, not rewritten by a redelivery.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

import numpy as np
import onnxruntime as ort
import pytest

from shared.batch.s3_sqs import unwrap_sqs
from slimserve.cli import main
from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.eventlib import sqs_event_from_messages
from tests.helpers import write_tiny_artifact

IN, OUT = "slimserve-backfill-in", "slimserve-backfill-out"
OUTPUT = f"s3://{OUT}/results"
VISIBILITY_S = 4  # well above one invocation here (~0.2 s), so only failed messages ever come back


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="module")
def handler(load_handler, artifact):
    return load_handler(
        SLIMSERVE_ARTIFACT=str(artifact),
        SLIMSERVE_OUTPUT=OUTPUT,
        SLIMSERVE_LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_NAMESPACE="slimserve",
        POWERTOOLS_LOG_LEVEL="ERROR",
    )


@pytest.fixture
def s3(aws):
    client = aws.client("s3")
    for bucket in (IN, OUT):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    client.put_bucket_versioning(Bucket=OUT, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
def queues(aws):
    """The batch queue and its DLQ as serverless.yml declares them, with maxReceiveCount 2."""
    sqs = aws.client("sqs")
    name = f"backfill-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(VISIBILITY_S), "RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, url, arn, dlq_url


def npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def put_all(s3, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=IN, Key=kv[0], Body=kv[1]), objects.items()))


def backfill(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["backfill", *args])
    out, err = capsys.readouterr()
    return code, out, err


def counts(summary: str) -> dict[str, int]:
    """listed/skipped/enqueued/failed of the summary line."""
    return {name: int(value.replace(",", "")) for name, value in re.findall(r"(listed|skipped|enqueued|failed) ([\d,]+)", summary)}


def queue_depth(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    return sum(int(v) for v in attributes["Attributes"].values())


def drain(handler, sqs, url: str, arn: str, dlq_url: str, dead_expected: int, deadline_s: float = 90.0):
    """Lambda's event source mapping, in small: receive up to 10, invoke, delete what the partial batch
    response does not name; until the queue is empty and the DLQ holds what it should (or the deadline)."""
    delivered, succeeded, invocations = Counter(), Counter(), 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if messages:
            invocations += 1
            event = sqs_event_from_messages(messages, arn)
            response = handler.batch(event, None)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(QueueUrl=url, Entries=done)
            for record, message in zip(unwrap_sqs(event).records, messages):
                key = record.key.partition(f"s3://{IN}/")[2]
                delivered[key] += 1
                succeeded[key] += message["MessageId"] not in failed
            continue
        if queue_depth(sqs, url) == 0 and queue_depth(sqs, dlq_url) >= dead_expected:
            break
        time.sleep(0.2)  # polling: the failed messages are invisible until their timeout lapses
    return delivered, succeeded, invocations


def dead_letters(sqs, dlq_url: str) -> list[str]:
    keys: list[str] = []
    while messages := sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages"):
        keys += [unquote_plus(json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"]) for m in messages]
    return sorted(keys)


def test_backfill_300_objects_15_corrupt_through_the_event_path(handler, s3, queues, artifact, capsys):
    sqs, url, arn, dlq_url = queues
    run = uuid.uuid4().hex[:8]
    prefix = f"incoming/{run}"
    rng = np.random.default_rng(3)
    good, corrupt = {}, {}
    for i in range(315):
        key = f"{prefix}/{'deep/' if i % 7 == 0 else ''}sample {i:04d}+ä.npy"  # spaces, '+', UTF-8: S3 encodes them all
        x = rng.normal(size=(1 + i % 3, 4)).astype(np.float32)
        if i % 21 == 5:  # 15 of them: junk, the wrong shape, the wrong dtype
            corrupt[key] = [b"\x93NUMPY junk", npy(x[:, :3]), npy(x.astype(np.float64))][i % 3]
        else:
            good[key] = x
    elsewhere = {f"{prefix}-later/x{i}.npy": npy(np.zeros((1, 4), np.float32)) for i in range(20)}  # shares the string prefix
    elsewhere |= {f"other/{run}/y{i}.npy": npy(np.zeros((1, 4), np.float32)) for i in range(10)}
    put_all(s3, {**{k: npy(v) for k, v in good.items()}, **corrupt, **elsewhere, f"{prefix}/empty/": b""})
    assert (len(good), len(corrupt)) == (300, 15)

    code, out, err = backfill(capsys, f"s3://{IN}/{prefix}/", "--queue", url, "--output", OUTPUT)
    assert code == 0, err
    assert counts(out) == {"listed": 316, "skipped": 1, "enqueued": 315, "failed": 0}, out  # the folder placeholder is skipped
    assert queue_depth(sqs, url) == 315
    rate = re.search(r"([\d,]+) messages/s", out).group(1)

    delivered, succeeded, invocations = drain(handler, sqs, url, arn, dlq_url, dead_expected=15)

    assert set(delivered) == set(good) | set(corrupt)  # nothing from elsewhere, nothing twice but the failures
    assert all(delivered[k] == 1 and succeeded[k] == 1 for k in good)
    assert all(delivered[k] == 2 and succeeded[k] == 0 for k in corrupt)  # received twice, then redriven
    assert dead_letters(sqs, dlq_url) == sorted(corrupt)
    assert queue_depth(sqs, url) == 0
    versions = s3.list_object_versions(Bucket=OUT, Prefix=f"results/{prefix}/").get("Versions", [])
    written = Counter(v["Key"] for v in versions)
    assert set(written) == {f"results/{k}.json" for k in good} and set(written.values()) == {1}  # 300 results, each written once

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    for key in list(good)[::60]:
        doc = json.loads(s3.get_object(Bucket=OUT, Key=f"results/{key}.json")["Body"].read())
        probs = next(o for o in doc["outputs"] if o["name"] == "probs")
        np.testing.assert_allclose(
            np.array(probs["data"]).reshape(probs["shape"]), session.run(["probs"], {"input": good[key]})[0], rtol=1e-6
        )

    code, out, _ = backfill(capsys, f"s3://{IN}/{prefix}/", "--queue", url, "--output", OUTPUT, "--quiet")
    assert code == 0 and counts(out) == {"listed": 316, "skipped": 301, "enqueued": 15, "failed": 0}, out
    again = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages"):
        again += [
            r.key.partition(f"s3://{IN}/")[2]
            for r in unwrap_sqs({"Records": [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]}).records
        ]
    assert sorted(again) == sorted(corrupt)
    print(
        f"\nbackfill: 315 messages at {rate} messages/s; {invocations} invocations; 300 results written once each, "
        f"15 in the DLQ after 2 receives; rerun enqueued 15"
    )


def test_results_inside_the_prefix_folders_and_what_has_a_result_are_never_sent(s3, queues, capsys):
    """Output under the listed prefix: its result objects are listed too, and skipped as results."""
    sqs, url, _, _ = queues
    run = uuid.uuid4().hex[:8]
    x = npy(np.zeros((1, 4), np.float32))
    put_all(
        s3, {f"{run}/a.npy": x, f"{run}/b c.npy": x, f"{run}/results/{run}/a.npy.json": b"{}", f"{run}/results/{run}/old.npy.json": b"{}"}
    )

    code, out, _ = backfill(capsys, f"s3://{IN}/{run}/", "--queue", url, "--output", f"s3://{IN}/{run}/results", "--quiet")

    assert code == 0 and counts(out) == {"listed": 4, "skipped": 3, "enqueued": 1, "failed": 0}, out
    assert "1 with a result, 2 results" in out
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    body = json.loads(messages[0]["Body"])
    assert len(messages) == 1 and body["Records"][0]["s3"]["object"]["key"] == f"{run}/b+c.npy"  # encoded as S3 does
    assert [r.key for r in unwrap_sqs({"Records": [{"messageId": "m", "body": messages[0]["Body"]}]}).records] == [
        f"s3://{IN}/{run}/b c.npy"
    ]


def test_dry_run_limit_and_since(s3, queues, capsys):
    sqs, url, _, _ = queues
    run = uuid.uuid4().hex[:8]
    put_all(s3, {f"{run}/{i}.npy": npy(np.zeros((1, 4), np.float32)) for i in range(25)})
    source = f"s3://{IN}/{run}/"

    code, out, _ = backfill(capsys, source, "--queue", url, "--output", OUTPUT, "--dry-run", "--quiet")
    assert code == 0 and "listed 25, skipped 0, would enqueue 25 (dry run)" in out and queue_depth(sqs, url) == 0

    code, out, _ = backfill(capsys, source, "--queue", url, "--output", OUTPUT, "--limit", "12", "--quiet")
    assert code == 0 and counts(out)["enqueued"] == 12 and queue_depth(sqs, url) == 12

    code, out, _ = backfill(capsys, source, "--queue", url, "--output", OUTPUT, "--since", "2999-01-01", "--quiet")
    assert code == 0 and "skipped 25 (25 older)" in out and counts(out)["enqueued"] == 0


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--queue", "{missing}"], 1, "cannot send to queue .*NonExistentQueue"),
        (["--queue", "{url}", "--since", "last tuesday"], 2, "--since 'last tuesday' is no date"),
        (["--function-url", "http://127.0.0.1:9/"], 2, "give --queue"),
        (["--queue", "{url}", "--output", ""], 2, "no output prefix"),
        (["--queue", "{url}", "--output", "s3://" + IN], 2, "lies under the output prefix"),
        (["--queue", "{url}", "--limit", "0"], 2, "--limit must be 1 or more"),
    ],
)
def test_arguments_that_cannot_work_end_in_one_line(s3, queues, capsys, monkeypatch, args, code, message):
    _, url, _, _ = queues
    monkeypatch.delenv("SLIMSERVE_OUTPUT", raising=False)
    args = [a.format(url=url, missing=url + "-missing") for a in args]
    if "--output" not in args:
        args += ["--output", OUTPUT]
    got, out, err = backfill(capsys, f"s3://{IN}/incoming/", *args)
    assert got == code and not out
    assert len(err.strip().splitlines()) == 1 and re.match(rf"slimserve: error: .*{message}", err), err


def test_a_missing_bucket_is_one_line_and_exit_1(s3, queues, capsys):
    _, url, _, _ = queues
    code, out, err = backfill(capsys, "s3://no-such-bucket-here/incoming/", "--queue", url, "--output", OUTPUT)
    assert (
        code == 1
        and not out
        and err == "slimserve: error: bucket 'no-such-bucket-here' of s3://no-such-bucket-here/incoming/ does not exist\n"
    )
