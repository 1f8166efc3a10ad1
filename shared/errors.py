"""The one exception tree of slimserve, each error carrying its HTTP status.

    SlimserveError (500)
    ├── ClientError (400)
    │   ├── MalformedRequest (400)   body is not the protocol: bad JSON, bad binary framing, nested too deep
    │   ├── Unauthorized (401)       no or a wrong API key; carries WWW-Authenticate
    │   ├── InvalidTensor (400)      a tensor's name, datatype, shape or element count is wrong
    │   ├── NotFound (404)           unknown model or version, unknown route
    │   ├── MethodNotAllowed (405)
    │   ├── NotAcceptable (406)      `Accept` names a type we cannot answer in
    │   ├── PayloadTooLarge (413)    body over SLIMSERVE_MAX_BODY_BYTES (or the endpoint's sync limit)
    │   │   └── LimitExceeded (413)  a request limit of shared/protocol/limits.py: elements, batch, string, inputs
    │   ├── UnsupportedMediaType (415)
    │   ├── RejectedByEndpoint (400) the remote endpoint refused input that passed our checks
    │   └── RecordError (400)        a batch input that is no readable input: bad format, bad key/URI
    ├── ArtifactError (500)          an artifact that must not be served: bad manifest, sha256 mismatch
    ├── ModelNotReady (503)
    ├── StorageError (502)           object storage refused or failed a read or write
    ├── QueueError (502)             a queue or function refused what a backfill sends it, for good
    ├── EndpointUnavailable (503)    remote endpoint failed or breaker open, no local variant; Retry-After
    └── InferenceFailed (500)        onnxruntime failed on input that passed validation

    Deferred (202)                   not an error: the request went asynchronous; carries where to poll

`to_status_and_body` is the single place that turns any exception into `(status, {"error": ...})`;
adapters and the batch path call it instead of matching on types themselves.
"""

from __future__ import annotations

from http import HTTPStatus


class SlimserveError(Exception):
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Response headers this error needs beside its status (Retry-After, for one)."""
        return {}


class ClientError(SlimserveError):
    status = HTTPStatus.BAD_REQUEST


class MalformedRequest(ClientError):
    status = HTTPStatus.BAD_REQUEST


class InvalidTensor(ClientError):
    status = HTTPStatus.BAD_REQUEST


class NotFound(ClientError):
    status = HTTPStatus.NOT_FOUND


class Unauthorized(ClientError):
    status = HTTPStatus.UNAUTHORIZED

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="slimserve"'}


class MethodNotAllowed(ClientError):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class PayloadTooLarge(ClientError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class LimitExceeded(PayloadTooLarge):
    """The message names the setting that bounds it, so an operator knows which knob to turn."""


class NotAcceptable(ClientError):
    status = HTTPStatus.NOT_ACCEPTABLE


class UnsupportedMediaType(ClientError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class RejectedByEndpoint(ClientError):
    status = HTTPStatus.BAD_REQUEST


class RecordError(ClientError):
    status = HTTPStatus.BAD_REQUEST


class ArtifactError(SlimserveError):
    """Raised at load time; the process must refuse to serve the artifact."""


class ModelNotReady(SlimserveError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


class StorageError(SlimserveError):
    status = HTTPStatus.BAD_GATEWAY


class QueueError(SlimserveError):
    """A destination of `slimserve backfill` (SQS, an Azure queue, a function's URL) refused for good:
    missing, forbidden, or still failing after the retries."""

    status = HTTPStatus.BAD_GATEWAY


class EndpointUnavailable(SlimserveError):
    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class InferenceFailed(SlimserveError):
    pass


class Deferred(Exception):
    """Raised by a remote model whose request went asynchronous; the transport answers 202 + Location.

    An exception because it must unwind through the data plane, which only knows tensors in, tensors out
    (werkzeug's RequestRedirect travels the same way).
    """

    status = HTTPStatus.ACCEPTED

    def __init__(self, location: str, body: dict):
        super().__init__(location)
        self.location = location
        self.body = body


def translate_onnxruntime_error(exc: Exception) -> SlimserveError:
    """Map onnxruntime's pybind exceptions onto ours.

    Inputs are validated against the signature before `session.run`, so an INVALID_ARGUMENT here
    still means the request did not suit the model (a dimension the graph constrains further than
    its declared signature), while anything else is our failure.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if isinstance(exc, (state.InvalidArgument, state.InvalidProtobuf)):
        return InvalidTensor(f"model rejected the input: {text}")
    return InferenceFailed(f"inference failed: {text}")


def to_status_and_body(exc: BaseException) -> tuple[int, dict]:
    if isinstance(exc, SlimserveError):
        return int(exc.status), {"error": exc.message}
    # Anything unforeseen: a fixed message, so internals never reach the caller.
    return int(HTTPStatus.INTERNAL_SERVER_ERROR), {"error": "internal server error"}
