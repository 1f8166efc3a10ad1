"""Requests too big for a synchronous call: input to S3, `invoke_endpoint_async`, 202 with where to poll.

A function keeps no state between requests, so what a poll needs lives in S3 beside the input:

    s3://BUCKET/PREFIX/input/ID          the request (OIP v2, binary tensors)
    s3://BUCKET/PREFIX/requests/ID.json  model, version and the Output/FailureLocation SageMaker returned

`GET /v2/models/M/async/ID` reads that pointer, then the output (200, the OIP v2 answer), the failure
(500) or neither yet (202, Retry-After). IDs are our own uuid4 hex, so a poll cannot name other keys.
"""

from __future__ import annotations

import json
import re
import uuid

from shared.protocol.codec import HEADER_LENGTH, binary_content_type, header_length_from_content_type
from shared.errors import ArtifactError, Deferred, EndpointUnavailable, InferenceFailed, NotFound
from shared.remote.transports import EndpointFailure

_ID = re.compile(r"^[0-9a-f]{32}$")
_MISSING = {"NoSuchKey", "404", "NotFound"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise EndpointUnavailable(f"endpoint gave an output location that is not an s3:// URI: {uri[:100]!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class AsyncInvoker:
    def __init__(self, bucket: str, prefix: str, transport):
        if not hasattr(transport, "invoke_async"):
            raise ArtifactError(f"SLIMSERVE_ASYNC_BUCKET is set but transport {transport.name} has no asynchronous path")
        import boto3

        self.bucket = bucket
        self.prefix = prefix
        self.transport = transport
        self._s3 = boto3.client("s3")

    def submit(self, model: str, version: str, body: bytes, header_length: int):
        from botocore.exceptions import BotoCoreError, ClientError

        inference_id = uuid.uuid4().hex
        content_type = binary_content_type(header_length)
        input_key = f"{self.prefix}input/{inference_id}"
        try:
            self._s3.put_object(Bucket=self.bucket, Key=input_key, Body=body, ContentType=content_type)
            output, failure = self.transport.invoke_async(f"s3://{self.bucket}/{input_key}", content_type, inference_id)
            pointer = {"model_name": model, "model_version": version, "output_location": output, "failure_location": failure}
            self._s3.put_object(Bucket=self.bucket, Key=self._pointer_key(inference_id), Body=json.dumps(pointer).encode())
        except EndpointFailure as exc:
            raise EndpointUnavailable(f"asynchronous request not accepted: {exc.reason}") from None
        except (BotoCoreError, ClientError) as exc:
            raise EndpointUnavailable(f"asynchronous request not stored: {type(exc).__name__}") from None
        location = f"/v2/models/{model}/versions/{version}/async/{inference_id}"
        raise Deferred(location, {"id": inference_id, "status": "pending", "location": location, **pointer})

    def poll(self, model: str, inference_id: str) -> tuple[int, bytes, dict[str, str]]:
        if not _ID.match(inference_id):
            raise NotFound(f"no asynchronous request {inference_id[:40]!r}")
        raw = self._get(self.bucket, self._pointer_key(inference_id))
        pointer = json.loads(raw[0]) if raw else None
        if not pointer or pointer.get("model_name") != model:
            raise NotFound(f"model {model!r} has no asynchronous request {inference_id}")
        output = self._get(*parse_s3_uri(pointer["output_location"]))
        if output is not None:
            body, content_type = output
            header_length = header_length_from_content_type(content_type)
            if header_length is None:
                return 200, body, {"Content-Type": content_type or "application/json"}
            return 200, body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: header_length}
        failure = self._get(*parse_s3_uri(pointer["failure_location"])) if pointer.get("failure_location") else None
        if failure is not None:
            raise InferenceFailed(f"asynchronous inference {inference_id} failed on the endpoint: {failure[0][:300].decode('utf-8', 'replace')}")
        doc = {"id": inference_id, "status": "pending", "model_name": model}
        return 202, json.dumps(doc).encode(), {"Content-Type": "application/json", "Retry-After": "1"}

    def _pointer_key(self, inference_id: str) -> str:
        return f"{self.prefix}requests/{inference_id}.json"

    def _get(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._s3.get_object(Bucket=bucket, Key=key)
            return response["Body"].read(), response.get("ContentType", "")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise EndpointUnavailable(f"cannot read s3://{bucket}/{key}: {exc.response.get('Error', {}).get('Code')}") from None
        except BotoCoreError as exc:
            raise EndpointUnavailable(f"cannot read s3://{bucket}/{key}: {type(exc).__name__}") from None
