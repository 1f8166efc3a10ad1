"""Recorded platform events (`tests/events/*.json`), loaded by one helper and adjusted per test.

    load_event("apigw-v2-post-json", path="/v2/models/tiny/versions/1/infer", body={"inputs": [...]})

Only the fields API Gateway itself would change together are touched: a new path moves `rawPath`,
`requestContext.http.path`, `routeKey` and `pathParameters` (under /v2 or /v1, serverless.yml's routes); a new
body sets `body`, `isBase64Encoded` and `content-length` (bytes travel base64-encoded, as HTTP APIs send binary bodies); headers are
lower-cased, as HTTP APIs deliver them.
"""

from __future__ import annotations

import base64
import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parent / "events"
_UNSET: Any = object()


@cache
def _recorded(name: str) -> dict:
    return json.loads((EVENTS / f"{name.removesuffix('.json')}.json").read_text(encoding="utf-8"))


def load_event(
    name: str,
    *,
    method: str | None = None,
    path: str | None = None,
    query: str | None = None,
    headers: dict[str, str | None] | None = None,
    body: bytes | str | dict | list | None = _UNSET,
) -> dict:
    """A fresh copy of `tests/events/<name>.json` with the given parts replaced.

    `body`: bytes -> base64 with isBase64Encoded true; str -> as is; dict/list -> JSON; None -> no body.
    `headers`: merged in lower case; a None value removes that header.
    """
    event = copy.deepcopy(_recorded(name))
    http = event["requestContext"]["http"]
    if method is not None:
        http["method"] = method
    if path is not None:
        event["rawPath"] = http["path"] = path
        prefix = "/v1" if path.startswith("/v1/") else "/v2"  # serverless.yml's two proxy routes
        route = "GET /v2" if path == "/v2" else f"ANY {prefix}/{{proxy+}}"
        event["routeKey"] = event["requestContext"]["routeKey"] = route
        if path.startswith(prefix + "/"):
            event["pathParameters"] = {"proxy": path.removeprefix(prefix + "/")}
        else:
            event.pop("pathParameters", None)
    if query is not None:
        event["rawQueryString"] = query
    if body is not _UNSET:
        _set_body(event, body)
    for key, value in (headers or {}).items():
        if value is None:
            event["headers"].pop(key.lower(), None)
        else:
            event["headers"][key.lower()] = value
    return event


def _set_body(event: dict, body: bytes | str | dict | list | None) -> None:
    if body is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
        event["headers"]["content-length"] = "0"
        return
    if isinstance(body, (dict, list)):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
        size = len(body)
    else:
        event["body"], event["isBase64Encoded"] = body, False
        size = len(body.encode("utf-8"))
    event["headers"]["content-length"] = str(size)


# --- SQS-delivered S3 notifications (the batch function's events) ---------------------------------


def s3_notification(bucket: str, keys: list[str], event_name: str = "ObjectCreated:Put") -> dict:
    """`tests/events/s3-notification-put.json` naming `keys` in `bucket`, one record each, keys URL-encoded
    with `+` for spaces as S3 writes them."""
    from urllib.parse import quote_plus

    template = _recorded("s3-notification-put")["Records"][0]
    records = []
    for i, key in enumerate(keys):
        record = copy.deepcopy(template)
        record["eventName"] = event_name
        record["s3"]["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
        record["s3"]["object"].update(key=quote_plus(key, safe="/"), sequencer=f"{i:018X}")
        records.append(record)
    return {"Records": records}


def sqs_event(bodies: list[dict | str], queue_arn: str | None = None, message_ids: list[str] | None = None) -> dict:
    """`tests/events/sqs-s3-notification.json` with one message per body (dict -> JSON), as Lambda's SQS
    event source mapping delivers a batch."""
    import hashlib
    import uuid

    template = _recorded("sqs-s3-notification")["Records"][0]
    records = []
    for i, body in enumerate(bodies):
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        record = copy.deepcopy(template)
        record["messageId"] = message_ids[i] if message_ids else str(uuid.uuid4())
        record["receiptHandle"] = base64.b64encode(record["messageId"].encode()).decode()
        record["body"] = text
        record["md5OfBody"] = hashlib.md5(text.encode()).hexdigest()
        if queue_arn:
            record["eventSourceARN"] = queue_arn
            record["awsRegion"] = queue_arn.split(":")[3]
        records.append(record)
    return {"Records": records}


def sqs_event_from_messages(messages: list[dict], queue_arn: str) -> dict:
    """What Lambda's event source mapping hands the function for messages it received (boto3's
    `receive_message` shape, with AttributeNames=["All"])."""
    event = sqs_event([m["Body"] for m in messages], queue_arn, [m["MessageId"] for m in messages])
    for record, message in zip(event["Records"], messages):
        record["receiptHandle"] = message["ReceiptHandle"]
        record["attributes"] = {k: v for k, v in message.get("Attributes", {}).items()} or record["attributes"]
    return event
