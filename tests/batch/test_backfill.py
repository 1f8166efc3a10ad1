"""The backfill engine's own rules, on the disk (file://) with a destination that fails as told: which
objects are sent, and what a failing destination costs. The platforms' destinations run against moto,
Azurite and functions-framework in tests/functions/*/test_backfill*.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from shared.batch.backfill import Backfill, Failure, ResultIndex
from shared.batch.backfill_sinks import CloudEventSink, s3_notification
from shared.batch.s3_sqs import unwrap_sqs
from shared.errors import QueueError, RecordError
from shared.storage import Listed, Storage


class Destination:
    """A queue that takes batches of 3 and fails as scripted: `plan` holds, per call, an exception to
    raise or the indexes of the batch to refuse (retryably unless `permanent`)."""

    scheme, batch_size = "file", 3

    def __init__(self, plan=(), permanent=False):
        self.plan, self.permanent = list(plan), permanent
        self.sent: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def check(self) -> None:
        pass

    def send(self, items: list[Listed]) -> list[Failure]:
        with self.lock:
            self.calls += 1
            step = self.plan.pop(0) if self.plan else ()
        if isinstance(step, Exception):
            raise step
        refused = [Failure(items[i], "refused", not self.permanent) for i in step if i < len(items)]
        with self.lock:
            self.sent += [item.uri for i, item in enumerate(items) if i not in step]
        return refused


@pytest.fixture
def tree(tmp_path: Path):
    for i in range(10):
        (tmp_path / "in" / f"{i}.npy").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"{i}.npy").write_bytes(b"x")
    return tmp_path


def job(tree: Path, destination, **options) -> Backfill:
    sleeps = []
    backfill = Backfill(
        Storage(), destination, f"file://{tree}/in/", output=f"file://{tree}/out", concurrency=1, sleep=sleeps.append, **options
    )
    backfill.sleeps = sleeps
    return backfill


def test_transient_failures_are_retried_with_backoff_only_for_what_failed(tree):
    destination = Destination([ConnectionResetError("reset"), (0, 2), ()])
    backfill = job(tree, destination, backoff_s=0.5, backoff_cap_s=1.0)
    tally = backfill.run()
    assert (tally.enqueued, tally.failed, tally.stopped) == (10, 0, "")
    assert sorted(destination.sent) == sorted(f"file://{tree}/in/{i}.npy" for i in range(10))  # each once
    assert len(backfill.sleeps) == 2 and all(0 <= s <= 1.0 for s in backfill.sleeps)  # full jitter, capped


def test_a_batch_still_failing_after_its_retries_stops_the_run(tree):
    destination = Destination([OSError("down")] * 10)
    tally = job(tree, destination, retries=2).run()
    assert tally.failed == 3 and tally.enqueued == 0 and "still failing after 2 retries" in tally.stopped
    assert destination.calls == 3  # the first batch, tried 3 times; nothing after it was sent


def test_a_refusal_for_good_is_not_retried_and_stops_the_run(tree):
    tally = job(tree, Destination([QueueError("queue q refused: AccessDenied")])).run()
    assert tally.enqueued == 0 and tally.failed == 3 and tally.stopped == "queue q refused: AccessDenied"
    permanent = Destination([(1,)], permanent=True)
    tally = job(tree, permanent).run()
    assert tally.failed == 1 and tally.enqueued == 2 and permanent.calls == 1


def test_what_has_a_result_is_skipped_and_the_limit_counts_what_is_sent(tree):
    results = tree / "out" / str(tree).lstrip("/") / "in"  # <output>/<input key>.json; a file's key is its path
    results.mkdir(parents=True)
    for i in (0, 1, 2):
        (results / f"{i}.npy.json").write_bytes(b"{}")
    destination = Destination()
    tally = job(tree, destination).run()
    assert (tally.results_indexed, tally.has_result, tally.enqueued) == (3, 3, 7)
    tally = job(tree, Destination(), limit=4).run()
    assert tally.enqueued == 4
    tally = job(tree, Destination()).run(dry_run=True)
    assert (tally.to_send, tally.enqueued) == (7, 0)


def test_result_index_membership():
    uris = [f"s3://b/results/{i}.npy.json" for i in range(5000)]
    index = ResultIndex(uris)
    assert len(index) == 5000 and all(u in index for u in uris[::7])
    assert "s3://b/results/5000.npy.json" not in index and "" not in ResultIndex([])


def test_the_source_must_suit_the_destination_and_not_lie_under_the_output(tree):
    with pytest.raises(RecordError, match="takes file:// objects"):
        Backfill(Storage(), Destination(), "s3://b/in/", output="s3://b/out")
    with pytest.raises(RecordError, match="lies under the output"):
        Backfill(Storage(), Destination(), f"file://{tree}/out/in/", output=f"file://{tree}/out")


def test_the_notification_is_what_unwrap_sqs_reads_for_any_key():
    for key in ("in/a b.npy", "in/a+b%20c.npy", "in/ünï/código?#.npy"):
        body = s3_notification("bucket", key, 12)
        assert [r.key for r in unwrap_sqs({"Records": [{"messageId": "m", "body": json.dumps(body)}]}).records] == [f"s3://bucket/{key}"]


def test_the_cloudevent_is_what_the_storage_event_function_reads():
    from shared.batch.gcs import GCS_FINALIZED, gcs_object

    request = CloudEventSink("http://127.0.0.1:1/").request(Listed("gs://b/in/a b.npy", 3, None))
    headers = {k.lower(): v for k, v in request.header_items()}
    assert headers["ce-type"] == GCS_FINALIZED and headers["ce-subject"] == "objects/in/a b.npy"
    record = gcs_object(headers["ce-type"], headers["ce-id"], json.loads(request.data), "gs://out/results")
    assert record.key == "gs://b/in/a b.npy"
