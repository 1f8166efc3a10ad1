"""Recorded platform events (`tests/events/*.json`), loaded by one helper and adjusted per test.

    load_event("apigw-v2-post-json", path="/v2/models/tiny/versions/1/infer", body={"inputs": [...]})

Only the fields API Gateway itself would change together are touched: a new path moves `rawPath`,
`requestContext.http.path`, `routeKey` and `pathParameters`; a new body sets `body`, `isBase64Encoded`
and `content-length` (bytes travel base64-encoded, as HTTP APIs send binary bodies); headers are
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
        route = "GET /v2" if path == "/v2" else "ANY /v2/{proxy+}"
        event["routeKey"] = event["requestContext"]["routeKey"] = route
        if path.startswith("/v2/"):
            event["pathParameters"] = {"proxy": path.removeprefix("/v2/")}
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
