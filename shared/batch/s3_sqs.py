"""S3 event notifications delivered through SQS, unwrapped into batch `Record`s.

An SQS message body is one S3 notification, which may hold several `Records` (S3 batches them), or the
`s3:TestEvent` S3 sends once when the notification is configured: acknowledged, never an input. The
EventBridge shape (`detail-type: Object Created`) is accepted too, for a rule that targets the queue.
Keys arrive URL-encoded with `+` for spaces in S3's own shape, plain in EventBridge's.

Every record carries its SQS messageId, so the batch report's failures are the messages to retry:
`partial_response` is Lambda's partial batch response (`batchItemFailures`, with ReportBatchItemFailures
on the event source mapping), built here from the batch core's verdicts, so one place owns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from shared.batch.core import BatchReport, Record
from shared.errors import MalformedRequest
from shared.protocol import jsontext

MAX_RECORDS = 100  # S3 puts one record in a notification; a message naming more is no notification of S3's


@dataclass
class Unwrapped:
    records: list[Record] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # messageId -> why its body is no notification
    acknowledged: list[str] = field(default_factory=list)  # messageIds of test events
    skipped: list[str] = field(default_factory=list)  # our own results, notified back to us

    def failures(self, report: BatchReport) -> dict[str, str]:
        """messageId -> the first reason it failed: its body, or any of its objects."""
        failed = dict(self.rejected)
        for outcome in report.failed:
            failed.setdefault(outcome.record.id, f"{outcome.record.key[:300]}: {outcome.error}")
        return failed


def partial_response(failed: dict[str, str]) -> dict:
    """Lambda's answer to an SQS batch: the messages to retry (all others are deleted from the queue)."""
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def unwrap_sqs(event: dict, output: str = "") -> Unwrapped:
    """Records of every object the messages name, except objects under `output` (SLIMSERVE_OUTPUT):
    a notification filter that also matches the result prefix would otherwise feed results back, forever."""
    out = Unwrapped()
    results = output.rstrip("/") + "/" if output else None
    for message in event.get("Records", []):
        message_id = message.get("messageId", "")
        try:
            body = jsontext.loads(message.get("body") or "", 16, "the SQS message body")
        except MalformedRequest as exc:
            out.rejected[message_id] = exc.message
            continue
        if not isinstance(body, dict):
            out.rejected[message_id] = "the SQS message body is not a JSON object"
        elif body.get("Event") == "s3:TestEvent":
            out.acknowledged.append(message_id)
        else:
            try:
                uris = object_uris(body)
            except ValueError as exc:
                out.rejected[message_id] = str(exc)[:300]
                continue
            except (AttributeError, TypeError):  # a field of the wrong kind ({"Records": [1]}): this message alone fails
                out.rejected[message_id] = "the SQS message body is not an S3 event notification"
                continue
            out.skipped += [uri for uri in uris if results and uri.startswith(results)]
            out.records += [Record.from_uri(uri, id=message_id) for uri in uris if not (results and uri.startswith(results))]
    return out


def object_uris(notification: dict) -> list[str]:
    """`s3://bucket/key` of every created object the notification names; ValueError if none or malformed."""
    if notification.get("detail-type") == "Object Created":
        detail = notification.get("detail") or {}
        return [_uri(detail.get("bucket", {}).get("name"), detail.get("object", {}).get("key"), encoded=False)]
    records = notification.get("Records")
    if not isinstance(records, list) or not records:
        raise ValueError("the SQS message body is not an S3 event notification")
    if len(records) > MAX_RECORDS:
        raise ValueError(f"the S3 notification names {len(records):,} objects, over {MAX_RECORDS}")
    uris = []
    for record in records:
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            raise ValueError(f"not an S3 ObjectCreated record: {record.get('eventSource')} {record.get('eventName')}")
        s3 = record.get("s3") or {}
        uris.append(_uri(s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key"), encoded=True))
    return uris


def _uri(bucket, key, encoded: bool) -> str:
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise ValueError("the S3 notification lacks a bucket name or object key")
    return f"s3://{bucket}/{unquote_plus(key) if encoded else key}"
