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

from shared.errors import ArtifactError, Deferred, EndpointUnavailable, InferenceFailed, NotFound, SlimserveError
from shared.protocol import jsontext
from shared.protocol.codec import HEADER_LENGTH, binary_content_type, header_length_from_content_type
from shared.remote.transports import EndpointFailure, SageMakerTransport
from shared.storage import Storage

_ID = re.compile(r"[0-9a-f]{32}")  # fullmatch


class AsyncInvoker:
    def __init__(self, bucket: str, prefix: str, transport, storage: Storage):
        if not isinstance(transport, SageMakerTransport):  # only SageMaker has an asynchronous API
            raise ArtifactError(f"SLIMSERVE_ASYNC_BUCKET is set but transport {transport.name} has no asynchronous path")
        self.bucket = bucket
        self.prefix = prefix
        self.transport = transport
        self.storage = storage

    def submit(self, model: str, version: str, body: bytes, header_length: int):
        inference_id = uuid.uuid4().hex
        content_type = binary_content_type(header_length)
        input_uri = f"s3://{self.bucket}/{self.prefix}input/{inference_id}"
        try:
            self.storage.write(input_uri, body, content_type)
            output, failure = self.transport.invoke_async(input_uri, content_type, inference_id)
            pointer = {"model_name": model, "model_version": version, "output_location": output, "failure_location": failure}
            self.storage.write(self._pointer(inference_id), json.dumps(pointer).encode(), "application/json")
        except EndpointFailure as exc:
            raise EndpointUnavailable(f"asynchronous request not accepted: {exc.reason}") from None
        except SlimserveError as exc:
            raise EndpointUnavailable(f"asynchronous request not stored: {exc.message}") from None
        location = f"/v2/models/{model}/versions/{version}/async/{inference_id}"
        raise Deferred(location, {"id": inference_id, "status": "pending", "location": location, **pointer})

    def poll(self, model: str, inference_id: str) -> tuple[int, bytes, dict[str, str]]:
        if not _ID.fullmatch(inference_id):
            raise NotFound(f"no asynchronous request {inference_id[:40]!r}")
        raw = self._get(self._pointer(inference_id))
        pointer = jsontext.loads(raw[0], 8, "asynchronous request pointer") if raw else None
        if not isinstance(pointer, dict) or pointer.get("model_name") != model:
            raise NotFound(f"model {model!r} has no asynchronous request {inference_id}")
        output = self._get(_s3_uri(pointer.get("output_location")))
        if output is not None:
            body, content_type = output
            header_length = header_length_from_content_type(content_type)
            if header_length is None:
                return 200, body, {"Content-Type": content_type or "application/json"}
            return 200, body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: header_length}
        failure = self._get(_s3_uri(pointer["failure_location"])) if pointer.get("failure_location") else None
        if failure is not None:
            raise InferenceFailed(
                f"asynchronous inference {inference_id} failed on the endpoint: {failure[0][:300].decode('utf-8', 'replace')}"
            )
        doc = {"id": inference_id, "status": "pending", "model_name": model}
        return 202, json.dumps(doc).encode(), {"Content-Type": "application/json", "Retry-After": "1"}

    def _pointer(self, inference_id: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}requests/{inference_id}.json"

    def _get(self, uri: str) -> tuple[bytes, str] | None:
        """The object and its content type (from the body's own framing), or None while it does not exist."""
        try:
            return self.storage.read_typed(uri)
        except NotFound:
            return None
        except SlimserveError as exc:
            raise EndpointUnavailable(f"cannot read {uri}: {exc.message}") from None


def _s3_uri(uri) -> str:
    if not isinstance(uri, str) or not uri.startswith("s3://") or "/" not in uri[5:]:
        raise EndpointUnavailable(f"endpoint gave an output location that is not an s3:// URI: {str(uri)[:100]!r}")
    return uri
