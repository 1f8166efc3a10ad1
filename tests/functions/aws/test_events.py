"""The recorded API Gateway HTTP API events keep the shape AWS documents, and the loader keeps them consistent."""

from __future__ import annotations

import base64

import pytest

from tests.eventlib import EVENTS, load_event

RECORDED = sorted(p.stem for p in EVENTS.glob("apigw-v2-*.json"))


def body_bytes(event: dict) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event["isBase64Encoded"] else body.encode()


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_event_has_the_payload_2_0_shape(name):
    event = load_event(name)
    assert event["version"] == "2.0"
    assert {"routeKey", "rawPath", "rawQueryString", "headers", "requestContext", "isBase64Encoded"} <= set(event)
    http = event["requestContext"]["http"]
    assert {"method", "path", "protocol", "sourceIp", "userAgent"} <= set(http)
    assert event["rawPath"] == http["path"] and event["routeKey"] == event["requestContext"]["routeKey"]
    assert event["requestContext"]["stage"] == "$default"
    assert all(key == key.lower() for key in event["headers"])
    assert int(event["headers"]["content-length"]) == len(body_bytes(event))


def test_three_recordings_cover_get_json_and_binary():
    assert RECORDED == ["apigw-v2-get", "apigw-v2-post-binary-base64", "apigw-v2-post-json"]


def test_loader_moves_path_method_body_and_headers_together():
    event = load_event(
        "apigw-v2-get", method="POST", path="/v2/models/m/infer", body=b"\x00\xff", headers={"X-Custom": "1", "accept": None}
    )
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/v2/models/m/infer"
    assert event["routeKey"] == "ANY /v2/{proxy+}" and event["pathParameters"] == {"proxy": "models/m/infer"}
    assert event["isBase64Encoded"] is True and body_bytes(event) == b"\x00\xff"
    assert event["headers"]["content-length"] == "2" and event["headers"]["x-custom"] == "1"
    assert "accept" not in event["headers"]
    assert "body" not in load_event("apigw-v2-post-json", body=None)
    assert load_event("apigw-v2-get") == load_event("apigw-v2-get")  # fresh copies: tests cannot leak edits
    assert load_event("apigw-v2-get") is not load_event("apigw-v2-get")
