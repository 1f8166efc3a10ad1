"""How a remote model reaches its endpoint: SageMaker's runtime API, or OIP v2 over HTTP with a bearer token.

Both send the same bytes (an OIP v2 request with binary tensors) and classify every way a call can end
into three outcomes the router acts on:

    Reply               the endpoint answered 2xx
    EndpointRejected    it answered 4xx about our input: the caller's fault, never retried, no fallback
    EndpointFailure     down, timed out, throttled, 5xx, misconfigured: `retryable` only for
                        throttling and 5xx (a timeout retried would blow the caller's deadline)

boto3 is imported when a SageMaker transport is built (cold start of an endpoint-placed model), never
at module import: functions whose models run locally do not pay for it.
"""

from __future__ import annotations

import http.client
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from shared.config import Settings
from shared.errors import ArtifactError, MalformedRequest
from shared.protocol.codec import HEADER_LENGTH, binary_content_type, header_length_from_content_type

MAX_REPLY_BYTES = 256 << 20  # an answer larger than this is no answer of ours: refused, not held in memory
_THROTTLING = {"ThrottlingException", "Throttling", "TooManyRequestsException", "ModelNotReadyException"}


@dataclass(frozen=True)
class Reply:
    body: bytes
    header_length: int | None  # None: the body is plain JSON


class EndpointFailure(Exception):
    def __init__(self, reason: str, retryable: bool = False, kind: str = "error"):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.kind = kind  # down | timeout | throttled | server | config | protocol


class EndpointRejected(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Transport(Protocol):
    name: str

    def invoke(self, model: str, body: bytes, header_length: int) -> Reply: ...


def _reply(body: bytes, content_type: str | None, header: str | None = None) -> Reply:
    try:
        raw = header if header is not None else header_length_from_content_type(content_type)
        return Reply(body, int(raw) if raw is not None else None)
    except (ValueError, MalformedRequest):
        raise EndpointFailure(f"endpoint answered with a bad binary header length ({content_type!r})", kind="protocol") from None


def _error_text(raw: bytes | str | None) -> str:
    """The `{"error": ...}` text of an endpoint running slimserve, else the raw text, shortened."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    try:
        doc = json.loads(text)
        text = doc.get("error", text) if isinstance(doc, dict) else text
    except ValueError:
        pass
    return str(text)[:300]


def classify_status(status: int, message: str) -> Exception:
    """One place for what an HTTP status from the endpoint means to the router."""
    if status == 429:
        return EndpointFailure(f"endpoint throttled ({status}): {message}", retryable=True, kind="throttled")
    if status >= 500:
        return EndpointFailure(f"endpoint failed ({status}): {message}", retryable=True, kind="server")
    if status in (401, 403, 404, 405):  # our configuration (token, URL, model name), not the caller's input
        return EndpointFailure(f"endpoint refused the call ({status}): {message}", kind="config")
    return EndpointRejected(message)


class SageMakerTransport:
    """boto3 `sagemaker-runtime`; botocore's own retries are off, the router retries with its budget."""

    def __init__(self, endpoint_name: str, connect_timeout_s: float, read_timeout_s: float, async_endpoint_name: str = ""):
        import boto3
        from botocore.config import Config

        self.endpoint_name = endpoint_name
        self.async_endpoint_name = async_endpoint_name or endpoint_name
        self.name = f"sagemaker:{endpoint_name}"
        config = Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s, retries={"total_max_attempts": 1})
        self._client = boto3.client("sagemaker-runtime", config=config)

    def invoke(self, model: str, body: bytes, header_length: int) -> Reply:
        content_type = binary_content_type(header_length)
        with _boto_errors():
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType=content_type, Accept=content_type.split(";")[0]
            )
            data = response["Body"].read()
        return _reply(data, response.get("ContentType"))

    def invoke_async(self, input_location: str, content_type: str, inference_id: str) -> tuple[str, str]:
        with _boto_errors():
            response = self._client.invoke_endpoint_async(
                EndpointName=self.async_endpoint_name,
                InputLocation=input_location,
                ContentType=content_type,
                Accept=content_type.split(";")[0],
                InferenceId=inference_id,
            )
        return response["OutputLocation"], response.get("FailureLocation", "")


@contextmanager
def _boto_errors():
    """botocore's exceptions -> Endpoint* (httpx's map_httpcore_exceptions, in one place)."""
    from botocore import exceptions as bx

    try:
        yield
    except bx.ClientError as exc:
        raise _from_client_error(exc) from None
    except bx.ReadTimeoutError as exc:
        raise EndpointFailure(f"endpoint did not answer within the read timeout: {exc}", kind="timeout") from None
    except (bx.ConnectTimeoutError, bx.EndpointConnectionError) as exc:
        raise EndpointFailure(f"endpoint unreachable: {exc}", kind="down") from None
    except (bx.BotoCoreError, OSError) as exc:
        raise EndpointFailure(f"endpoint call failed: {type(exc).__name__}: {exc}", kind="down") from None


def _from_client_error(exc) -> Exception:
    response = exc.response
    code = response.get("Error", {}).get("Code", "")
    message = response.get("Error", {}).get("Message", "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code == "ModelError":  # the container answered non-2xx; its own status says whose fault it was
        original = int(response.get("OriginalStatusCode") or 500)
        return classify_status(original, _error_text(response.get("OriginalMessage") or message))
    if code in _THROTTLING:
        return EndpointFailure(f"endpoint throttled: {code}: {message}", retryable=True, kind="throttled")
    if status >= 500:
        return EndpointFailure(f"endpoint failed ({status} {code}): {message}", retryable=True, kind="server")
    # ValidationError and the like: a missing endpoint or a bad setting, not the caller's input, which we
    # checked against the same signature before sending it.
    return EndpointFailure(f"endpoint refused the call ({status} {code}): {message}", kind="config")


class HttpTransport:
    """OIP v2 to a URL (Vertex AI / Azure ML online endpoints running this server), bearer token from env."""

    def __init__(self, url: str, token_env: str, connect_timeout_s: float, read_timeout_s: float):
        if not url.startswith(("http://", "https://")):
            raise ArtifactError(f"SLIMSERVE_ENDPOINT_URL must be an http(s) URL, got {url!r}")
        self.url = url
        self.token_env = token_env
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.name = f"http:{urlsplit(url).netloc}"

    def target(self, model: str) -> str:
        return self.url.replace("{model}", model) if "{model}" in self.url else f"{self.url.rstrip('/')}/v2/models/{model}/infer"

    def invoke(self, model: str, body: bytes, header_length: int) -> Reply:
        parts = urlsplit(self.target(model))
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.hostname, parts.port, timeout=self.connect_timeout_s)
        headers = {
            "Content-Type": binary_content_type(header_length),
            HEADER_LENGTH: str(header_length),
            "Accept": "application/json, application/octet-stream",
        }
        token = os.environ.get(self.token_env, "")  # per call: a rotated token is picked up without a restart
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise EndpointFailure(f"endpoint did not accept a connection within {self.connect_timeout_s}s", kind="down") from None
            conn.sock.settimeout(self.read_timeout_s)
            conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(MAX_REPLY_BYTES + 1)
            if len(data) > MAX_REPLY_BYTES:
                raise EndpointFailure(f"endpoint answered more than {MAX_REPLY_BYTES:,} bytes", kind="protocol")
        except TimeoutError:
            raise EndpointFailure(f"endpoint did not answer within {self.read_timeout_s}s", kind="timeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise EndpointFailure(f"endpoint unreachable: {type(exc).__name__}: {exc}", kind="down") from None
        finally:
            conn.close()
        if response.status != 200:
            raise classify_status(response.status, _error_text(data))
        return _reply(data, response.getheader("Content-Type"), response.getheader(HEADER_LENGTH))


def make_transport(settings: Settings) -> SageMakerTransport | HttpTransport:
    if settings.endpoint_transport == "sagemaker":
        if not settings.endpoint_name:
            raise ArtifactError("a model is placed on an endpoint but SLIMSERVE_ENDPOINT_NAME is empty")
        return SageMakerTransport(
            settings.endpoint_name, settings.endpoint_connect_timeout_s, settings.endpoint_read_timeout_s, settings.async_endpoint_name
        )
    if settings.endpoint_transport == "http":
        return HttpTransport(
            settings.endpoint_url, settings.endpoint_token_env, settings.endpoint_connect_timeout_s, settings.endpoint_read_timeout_s
        )
    raise ArtifactError(f"SLIMSERVE_ENDPOINT_TRANSPORT={settings.endpoint_transport!r} must be sagemaker or http")
