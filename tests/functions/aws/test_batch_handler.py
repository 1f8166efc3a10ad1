"""The AWS batch handler end to end against moto in server mode (real HTTP on 127.0.0.1).

S3 objects are real objects in moto; the events are Lambda's SQS event shape carrying S3 notifications,
built from the recordings in tests/events/ (and, in the round trip, taken from a real moto queue that
moto's S3 itself notified). Results land in moto S3; failures come back as `batchItemFailures`.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

import numpy as np
import onnxruntime as ort
import pytest

from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.eventlib import _recorded, s3_notification, sqs_event, sqs_event_from_messages
from tests.helpers import write_tiny_artifact

INPUT_BUCKET = "slimserve-test-input"
OUTPUT_BUCKET = "slimserve-test-output"
OUTPUT = f"s3://{OUTPUT_BUCKET}/results"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="module")
def handler(load_handler, artifact):
    return load_handler(
        SLIMSERVE_ARTIFACT=str(artifact),
        SLIMSERVE_OUTPUT=OUTPUT,
        SLIMSERVE_BATCH_MAX_SIZE="64",
        SLIMSERVE_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_NAMESPACE="slimserve",
        POWERTOOLS_LOG_LEVEL="WARNING",
    )


@pytest.fixture
def s3(aws):
    client = aws.client("s3")
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    return client


def npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def results(s3, prefix: str) -> dict[str, str]:
    """Result key -> ETag (the MD5 of its bytes: equal ETags, equal contents)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=OUTPUT_BUCKET, Prefix=f"results/{prefix}")
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def put_inputs(s3, prefix: str, count: int, corrupt: set[int]) -> tuple[list[str], dict[str, np.ndarray]]:
    """`count` .npy inputs (names with a space, as users upload them); the `corrupt` ones are junk bytes or
    a wrong shape or dtype, which only reading and checking them reveals."""
    rng = np.random.default_rng(7)
    keys, good, bodies = [], {}, []
    for i in range(count):
        key = f"{prefix}/sample {i:04d}.npy"
        x = rng.normal(size=(1 + i % 3, 4)).astype(np.float32)
        if i in corrupt:
            body = [b"\x93NUMPY garbage", npy(x[:, :3]), npy(x.astype(np.float64))][i % 3]
        else:
            body, good[key] = npy(x), x
        keys.append(key)
        bodies.append(body)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kb: s3.put_object(Bucket=INPUT_BUCKET, Key=kb[0], Body=kb[1]), zip(keys, bodies)))
    return keys, good


def test_200_inputs_10_corrupt_then_redelivered(handler, s3, artifact):
    prefix = f"incoming/{uuid.uuid4().hex[:8]}"
    corrupt = set(range(3, 200, 20))  # 10 of them
    keys, good = put_inputs(s3, prefix, 200, corrupt)
    test_event = _recorded("s3-test-event")  # what S3 sends once when the notification is configured
    event = sqs_event([test_event] + [s3_notification(INPUT_BUCKET, [k]) for k in keys])
    message_of = {k: r["messageId"] for k, r in zip(keys, event["Records"][1:])}

    start = time.perf_counter()
    first = handler.batch(event, None)
    elapsed = time.perf_counter() - start

    failed = {f["itemIdentifier"] for f in first["batchItemFailures"]}
    assert failed == {message_of[keys[i]] for i in corrupt}
    stored = results(s3, prefix)
    assert len(stored) == 190
    assert set(stored) == {f"results/{k}.json" for k in good}

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    for key in list(good)[:10]:
        doc = json.loads(s3.get_object(Bucket=OUTPUT_BUCKET, Key=f"results/{key}.json")["Body"].read())
        probs = next(o for o in doc["outputs"] if o["name"] == "probs")
        want = session.run(["probs"], {"input": good[key]})[0]
        np.testing.assert_allclose(np.array(probs["data"]).reshape(probs["shape"]), want, rtol=1e-6)

    again = handler.batch(event, None)  # SQS at-least-once: the same messages, delivered twice
    assert {f["itemIdentifier"] for f in again["batchItemFailures"]} == failed
    assert results(s3, prefix) == stored  # same keys, same ETags (MD5 of the bytes): no duplicates
    print(f"\n200 inputs: {len(stored)} results, {len(failed)} batchItemFailures, first run {elapsed:.2f}s")


def test_one_message_with_several_objects_fails_if_any_does(handler, s3):
    prefix = f"incoming/{uuid.uuid4().hex[:8]}"
    keys, _ = put_inputs(s3, prefix, 5, corrupt={1})
    event = sqs_event([s3_notification(INPUT_BUCKET, keys[:3]), s3_notification(INPUT_BUCKET, keys[3:]), "not json", {"Records": []}])
    ids = [r["messageId"] for r in event["Records"]]

    response = handler.batch(event, None)

    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {ids[0], ids[2], ids[3]}
    assert len(results(s3, prefix)) == 4  # the good objects of the failed message are written anyway


def test_test_event_alone_is_acknowledged(handler, s3):
    assert handler.batch(sqs_event([_recorded("s3-test-event")]), None) == {"batchItemFailures": []}


def test_sqs_round_trip_sends_bad_inputs_to_the_dead_letter_queue(handler, s3, aws):
    """S3 notifies a real (moto) queue; messages are received, handled, deleted on success; failures
    come back after the visibility timeout, and after maxReceiveCount=2 receives SQS moves them to the DLQ."""
    sqs = aws.client("sqs")
    name = f"batch-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    queue_url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bucket = f"in-{name}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                }
            ]
        },
    )
    prefix = f"incoming/{name}"
    corrupt = {2, 9, 15}
    for i in range(20):
        x = np.full((1, 4), i, np.float32)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{i:02d}.npy", Body=b"junk" if i in corrupt else npy(x))

    # A poller shaped like Lambda's event source mapping: receive up to 10, hand them over, delete what
    # succeeded; failures come back once the visibility timeout lapses. It stops when the queue is empty,
    # however long that takes on a loaded machine (the deadline only bounds a broken run).
    receives: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1).get(
            "Messages", []
        )
        for m in messages:
            receives[m["MessageId"]] = int(m["Attributes"]["ApproximateReceiveCount"])
        if messages:
            response = handler.batch(sqs_event_from_messages(messages, queue_arn), None)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)
            continue
        counts = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
        if counts["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}:
            break

    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
    dead_keys = sorted(unquote_plus(json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"]) for m in dead)
    assert dead_keys == [f"{prefix}/{i:02d}.npy" for i in sorted(corrupt)]
    # Each bad message was received exactly maxReceiveCount (2) times before SQS moved it; each good one once,
    # as was S3's s3:TestEvent (sent when the notification was configured; acknowledged).
    assert sorted(receives[m["MessageId"]] for m in dead) == [2, 2, 2]
    assert len(receives) == 21 and sorted(receives.values()) == [1] * 18 + [2] * 3
    written = s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=f"results/{prefix}/").get("KeyCount")
    assert written == 17
    print(f"\nSQS round trip: 20 objects, 17 results, {len(dead)} in the DLQ, each received twice")


def test_results_notified_back_are_not_processed_again(handler, s3):
    """A notification filter that also matches the result prefix must not loop results through the model."""
    s3.put_object(Bucket=OUTPUT_BUCKET, Key="results/incoming/x.npy.json", Body=b"{}")
    event = sqs_event([s3_notification(OUTPUT_BUCKET, ["results/incoming/x.npy.json"])])
    assert handler.batch(event, None) == {"batchItemFailures": []}
    assert not results(s3, "results/")  # no results/results/...
