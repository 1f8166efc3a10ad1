"""Where `slimserve backfill` sends its messages, each in the shape the platform itself would have sent
for a new object, so the function cannot tell a backfilled object from a new one:

    SqsSink(queue_url)            S3 -> SQS: one S3 event notification per message, the key URL-encoded
                                  as S3 encodes it (what shared/batch/s3_sqs.py:unwrap_sqs reads);
                                  SendMessageBatch of 10
    AzureQueueSink(conn, queue)   Blob -> the queue function: `azure://container/blob`, base64-encoded as
                                  host.json's messageEncoding says (shared/batch/azure.py:queue_message)
    CloudEventSink(url)           GCS -> the storage-event function: a binary-mode CloudEvent
                                  google.cloud.storage.object.v1.finalized POSTed to its URL, as Eventarc
                                  does (shared/batch/gcs.py:gcs_object); one object per request

SDKs are imported on first use (boto3, azure-storage-queue); the CloudEvent sink needs only the standard
library. A refusal that retrying cannot change raises `QueueError`; anything else is retried by the caller.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import quote_plus

from shared.batch.backfill import Failure
from shared.errors import QueueError
from shared.storage import Listed, parse

CONFIGURATION_ID = "slimserve-backfill"  # in every notification, so a message says where it came from
GCS_FINALIZED = "google.cloud.storage.object.v1.finalized"
_SQS_REGION = re.compile(r"https://sqs\.([a-z0-9-]+)\.amazonaws\.com/")
# Codes that say the queue or its permissions are wrong: every retry would fail the same way.
_SQS_FATAL = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidAddress",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "KMS.AccessDeniedException",
}


def describe(exc: BaseException) -> str:
    """An SDK's error as its service's code (`AWS.SimpleQueueService.NonExistentQueue`, `QueueNotFound`),
    never a traceback; the exception's type where there is none."""
    response = getattr(exc, "response", None)  # botocore: a dict; azure-core: an HTTP response
    code = (response.get("Error", {}).get("Code") if isinstance(response, dict) else None) or getattr(exc, "error_code", None)
    if code:
        return str(code)
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def s3_notification(bucket: str, key: str, size: int, etag: str = "", region: str = "", when: datetime | None = None) -> dict:
    """An S3 `ObjectCreated:Put` event notification for one object, as S3 sends it to SQS."""
    when = when or datetime.now(UTC)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region or "us-east-1",
                "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": CONFIGURATION_ID},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": CONFIGURATION_ID,
                    "bucket": {"name": bucket, "ownerIdentity": {"principalId": CONFIGURATION_ID}, "arn": f"arn:aws:s3:::{bucket}"},
                    # S3 URL-encodes keys in notifications, spaces as '+'; unwrap_sqs undoes exactly that.
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        **({"eTag": etag} if etag else {}),
                        "sequencer": f"{int(when.timestamp() * 1e6):016X}",
                    },
                },
            }
        ]
    }


class SqsSink:
    scheme = "s3"
    batch_size = 10  # SendMessageBatch's most

    def __init__(self, queue_url: str, client=None):
        self.queue_url = queue_url
        found = _SQS_REGION.match(queue_url)
        self.region = found.group(1) if found else ""
        self._client = client

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            # boto3's own retries cover throttling and 5xx of one call; Backfill retries what still fails.
            config = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3})
            self._client = boto3.client("sqs", region_name=self.region or None, config=config)
            self.region = self.region or self._client.meta.region_name or ""
        return self._client

    def check(self) -> None:
        try:
            self.client().get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        except Exception as exc:
            raise QueueError(f"cannot send to queue {self.queue_url}: {describe(exc)}") from None

    def message(self, item: Listed) -> str:
        obj = parse(item.uri)
        return json.dumps(s3_notification(obj.container, obj.key, item.size, region=self.region), separators=(",", ":"))

    def send(self, items: list[Listed]) -> list[Failure]:
        entries = [{"Id": str(i), "MessageBody": self.message(item)} for i, item in enumerate(items)]
        try:
            response = self.client().send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            code = describe(exc)
            if code in _SQS_FATAL:
                raise QueueError(f"queue {self.queue_url} refused: {code}") from None
            raise
        return [
            Failure(items[int(f["Id"])], f"{f.get('Code', '')}: {f.get('Message', '')}".strip(": "), not f.get("SenderFault", False))
            for f in response.get("Failed", [])
        ]


class AzureQueueSink:
    scheme = "azure"
    batch_size = 1  # Azure queues take one message per request

    def __init__(self, connection: str, queue: str, client=None):
        self.queue = queue
        self.connection = connection
        self._client = client

    def client(self):
        if self._client is None:
            from azure.storage.queue import QueueClient, TextBase64EncodePolicy

            if not self.connection:
                raise QueueError("an Azure queue needs a connection string in SLIMSERVE_AZURE_CONNECTION or AzureWebJobsStorage")
            # host.json's messageEncoding is base64: the host decodes every message before the function sees it.
            self._client = QueueClient.from_connection_string(self.connection, self.queue, message_encode_policy=TextBase64EncodePolicy())
        return self._client

    def check(self) -> None:
        try:
            self.client().get_queue_properties()
        except QueueError:
            raise
        except Exception as exc:
            raise QueueError(f"cannot send to queue {self.queue!r}: {describe(exc)}") from None

    def send(self, items: list[Listed]) -> list[Failure]:
        failures = []
        for item in items:
            try:
                self.client().send_message(item.uri)
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                if status in (401, 403, 404):
                    raise QueueError(f"queue {self.queue!r} refused: {describe(exc)}") from None
                failures.append(Failure(item, describe(exc), True))
        return failures


class CloudEventSink:
    scheme = "gs"
    batch_size = 1  # one event per request, as Eventarc delivers them

    def __init__(self, url: str, bearer: str = "", timeout_s: float = 600.0):
        if not url.startswith(("http://", "https://")):
            raise QueueError(f"{url!r}: the function's URL must be http:// or https://")
        self.url, self.bearer, self.timeout_s = url, bearer, timeout_s

    def check(self) -> None:
        """Nothing to ask a function before it is sent an event: the first answer tells."""

    def request(self, item: Listed) -> urllib.request.Request:
        obj = parse(item.uri)
        when = (item.modified or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event_id = "backfill-" + hashlib.sha256(item.uri.encode()).hexdigest()[:32]
        body = {
            "kind": "storage#object",
            "bucket": obj.container,
            "name": obj.key,
            "size": str(item.size),
            "id": f"{obj.container}/{obj.key}",
            "timeCreated": when,
            "updated": when,
        }
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": GCS_FINALIZED,
            "ce-id": event_id,
            "ce-source": f"//storage.googleapis.com/projects/_/buckets/{obj.container}",
            "ce-subject": f"objects/{obj.key}",
            "ce-time": when,
        }
        if self.bearer:
            headers["authorization"] = f"Bearer {self.bearer}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def send(self, items: list[Listed]) -> list[Failure]:
        failures = []
        for item in items:
            try:
                with urllib.request.urlopen(self.request(item), timeout=self.timeout_s) as response:
                    response.read(1 << 16)
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403, 404, 405):  # the wrong URL or no right to call it: every event would fail
                    raise QueueError(
                        f"{self.url} answered {exc.code}: is it the storage-event function's URL, and the token valid?"
                    ) from None
                # 5xx: the function failed (storage, an endpoint down) and Eventarc would redeliver; retry.
                failures.append(Failure(item, f"the function answered {exc.code}", exc.code >= 500 or exc.code == 429))
            except (OSError, urllib.error.URLError) as exc:
                failures.append(Failure(item, describe(exc), True))
        return failures
