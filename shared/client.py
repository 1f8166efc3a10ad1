"""A small Open Inference Protocol v2 client for any slimserve deployment: API Gateway, Cloud Functions,
Azure Functions, `slimserve serve`. Standard library + numpy only, so it imports wherever `shared` does.

    client = InferenceClient("https://abc.execute-api.eu-west-1.amazonaws.com", bearer=token)
    outputs = client.infer("minilm", {"text": np.array([b"hello"], dtype=object)})   # name -> ndarray

Throttling (429) and unavailability (503) are retried, waiting what `Retry-After` asks (capped) or a
doubling backoff; any other 4xx/5xx raises `InvokeError` at once with the server's `{"error"}` message.
"""

from __future__ import annotations

import email.utils
import json
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import quote

import numpy as np

RETRYABLE = (429, 503)
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary tensor extension: JSON head, then raw tensors
MAX_REDIRECTS = 5


class _SameOriginCredentials(urllib.request.HTTPRedirectHandler):
    """urllib copies every header onto a redirect, the key and bearer token included: keep them only when
    the redirect stays on the same scheme, host and port (what curl and requests do)."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, secret_headers: tuple[str, ...]):
        self.secret = {h.lower() for h in secret_headers}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(req.full_url) != _origin(new.full_url):
            for name in list(new.headers):
                if name.lower() in self.secret:
                    del new.headers[name]
        return new


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


class InvokeError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Response:
    outputs: dict[str, np.ndarray]
    doc: dict  # the whole response body: model_name, model_version, id, parameters
    attempts: int = 1


@dataclass
class InferenceClient:
    url: str  # the deployment's base URL; `/v2/...` is appended
    api_key: str | None = None
    api_key_header: str = "x-api-key"  # Azure Functions' function keys travel in `x-functions-key`
    bearer: str | None = None
    timeout_s: float = 30.0
    retries: int = 3
    max_wait_s: float = 10.0  # the longest single wait, whatever Retry-After asks
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        self.url = base_url(self.url)

    def metadata(self, model: str, version: str | None = None) -> dict:
        return self._call("GET", self._path(model, version), None)[0]

    def infer(self, model: str, inputs: dict[str, np.ndarray], version: str | None = None) -> Response:
        body = {"inputs": [_tensor(name, np.asarray(value)) for name, value in inputs.items()]}
        return self.infer_json(model, body, version)

    def infer_json(self, model: str, body: dict, version: str | None = None) -> Response:
        """Send an OIP v2 request body as it is (`--json FILE`)."""
        doc, attempts, binary = self._call("POST", self._path(model, version) + "/infer", json.dumps(body).encode())
        return Response(_outputs(doc, binary), doc, attempts)

    def inputs_for(
        self, model: str, version: str | None = None, *, texts: list[str] | None = None, array: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The model's single input filled from texts or one array, named and shaped from its metadata."""
        specs = self.metadata(model, version).get("inputs", [])
        if len(specs) != 1:
            raise InvokeError(f"model {model!r} has {len(specs)} inputs ({', '.join(s['name'] for s in specs)}); send --json")
        spec = specs[0]
        if texts is not None:
            value = np.array([t.encode("utf-8") for t in texts], dtype=object)
            return {spec["name"]: value.reshape(-1, 1) if len(spec["shape"]) == 2 else value}
        return {spec["name"]: cast_to(array, spec["datatype"], spec["name"])}

    # --- transport ---------------------------------------------------------------------------------

    def _path(self, model: str, version: str | None) -> str:
        base = self.url.rstrip("/").removesuffix("/v2")
        path = f"{base}/v2/models/{quote(model, safe='')}"
        return path + (f"/versions/{quote(version, safe='')}" if version else "")

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "slimserve-invoke"}
        if self.api_key:
            headers[self.api_key_header] = self.api_key
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        return headers

    def _call(self, method: str, url: str, body: bytes | None) -> tuple[dict, int, bytes]:
        """(the JSON document, attempts, the binary data that followed it: the binary tensor extension)."""
        opener = urllib.request.build_opener(_SameOriginCredentials(("Authorization", self.api_key_header)))
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=body, method=method, headers=self._headers())
            try:
                with opener.open(request, timeout=self.timeout_s) as response:
                    raw, head_length = response.read(), response.headers.get(HEADER_LENGTH)
                    head, binary = _split(raw, head_length, url)
                    return _json(head, url), attempt + 1, binary
            except urllib.error.HTTPError as exc:
                payload = exc.read()
                if exc.code in RETRYABLE and attempt < self.retries:
                    self.sleep(self._wait(exc.headers.get("Retry-After"), attempt))
                    continue
                raise InvokeError(f"{exc.code} {_phrase(exc.code)}: {_message(payload)}", exc.code) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise InvokeError(f"cannot reach {url}: {reason}") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, retry_after: str | None, attempt: int) -> float:
        wait = _retry_after_s(retry_after)
        if wait is None:
            wait = 0.5 * 2**attempt
        return min(max(wait, 0.0), self.max_wait_s)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 allows both)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def base_url(url: str) -> str:
    """A deployment's URL as urllib takes it. Without a scheme, a loopback host (`localhost:8080`, what
    tritonclient takes) is plain HTTP; any other host is refused, naming what to write."""
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    if not sep:
        host = urllib.parse.urlsplit("//" + url).hostname or ""
        if host == "localhost" or host == "::1" or host.startswith("127."):
            return "http://" + url
        raise InvokeError(f"URL {url!r} has no scheme: write https://{url} (or http://{url} for a plain-HTTP server)")
    if scheme.lower() not in ("http", "https"):
        raise InvokeError(f"URL {url!r}: only http:// and https:// URLs are spoken")
    return url


def cast_to(array: np.ndarray, datatype: str, name: str) -> np.ndarray:
    """`array` as the model's datatype when nothing is lost: numpy's float64 default to FP32, int64 to INT32
    when every value fits, integers to floats; a float to an integer, or a value out of range, is refused."""
    target = _TO_NUMPY.get(datatype)
    if target is None or array.dtype == np.dtype(target):
        return array
    wanted = np.dtype(target)
    lossless = (
        (wanted.kind == "f" and array.dtype.kind in "fiub")
        or (wanted.kind in "iu" and array.dtype.kind in "iub" and _fits(array, wanted))
        or (wanted.kind == "b" and array.dtype.kind == "b")
    )
    if not lossless:
        raise InvokeError(f"input {name!r} is {datatype}; the array is {array.dtype} and cannot be cast to it without loss")
    return array.astype(wanted)


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    if array.size == 0 or array.dtype.kind == "b":
        return True
    info = np.iinfo(dtype)
    return int(array.min()) >= info.min and int(array.max()) <= info.max


def _split(raw: bytes, head_length: str | None, url: str) -> tuple[bytes, bytes]:
    """The JSON head and the binary tail of a response (`Inference-Header-Content-Length`)."""
    if head_length is None:
        return raw, b""
    if not head_length.isdigit() or int(head_length) > len(raw):
        raise InvokeError(f"{url} answered {HEADER_LENGTH}: {head_length[:20]!r} for a body of {len(raw)} bytes")
    return raw[: int(head_length)], raw[int(head_length) :]


def _json(raw: bytes, url: str) -> dict:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvokeError(f"{url} answered something that is not JSON ({len(raw)} bytes)") from None
    if not isinstance(doc, dict):
        raise InvokeError(f"{url} answered JSON that is not an object")
    return doc


def _phrase(code: int) -> str:
    # The standard phrase, not the server's: HTTP/2 sends none, and servers spell them as they like.
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "HTTP error"


def _message(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["error"])
    except (ValueError, KeyError, TypeError):
        return payload[:200].decode("utf-8", "replace") or "(empty body)"


def _tensor(name: str, value: np.ndarray) -> dict:
    if value.dtype == object or value.dtype.kind in "SU":
        flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
        return {"name": name, "datatype": "BYTES", "shape": list(value.shape), "data": flat}
    datatype = next((k for k, v in _TO_NUMPY.items() if np.dtype(v) == value.dtype), None)
    if datatype is None:
        raise InvokeError(f"input {name!r}: numpy dtype {value.dtype} has no OIP v2 datatype")
    return {"name": name, "datatype": datatype, "shape": list(value.shape), "data": value.reshape(-1).tolist()}


def _outputs(doc: dict, binary: bytes) -> dict[str, np.ndarray]:
    """Output tensors by name: JSON `data`, or `parameters.binary_data_size` bytes of the binary tail, in order."""
    outputs, offset = {}, 0
    for output in doc.get("outputs", []):
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = _array(output)
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvokeError(f"output {output.get('name')!r}: binary_data_size {size!r} runs past the {len(binary)} bytes sent")
        outputs[output["name"]] = _binary_array(output, binary[offset : offset + size])
        offset += size
    return outputs


def _array(output: dict) -> np.ndarray:
    shape = output.get("shape", [])
    if output.get("datatype") == "BYTES":
        return np.array(output.get("data", []), dtype=object).reshape(shape)
    return np.array(output.get("data", []), dtype=_TO_NUMPY.get(output.get("datatype"), "float64")).reshape(shape)


def _binary_array(output: dict, raw: bytes) -> np.ndarray:
    shape, datatype = output.get("shape", []), output.get("datatype")
    try:
        if datatype == "BYTES":  # each element: a 4-byte little-endian length, then its bytes
            items, at = [], 0
            while at < len(raw):
                (length,) = struct.unpack_from("<I", raw, at)
                items.append(raw[at + 4 : at + 4 + length])
                at += 4 + length
            return np.array(items, dtype=object).reshape(shape)
        if datatype not in _TO_NUMPY:
            raise InvokeError(f"output {output.get('name')!r}: datatype {datatype!r} is not one this client reads")
        return np.frombuffer(raw, dtype=np.dtype(_TO_NUMPY[datatype]).newbyteorder("<")).reshape(shape)
    except (struct.error, ValueError) as exc:
        raise InvokeError(f"output {output.get('name')!r}: its binary data does not match shape {shape}: {exc}") from None


def format_outputs(response: Response) -> str:
    """What `slimserve invoke` prints: one block per output, then the response parameters if any."""
    lines = [f"model {response.doc.get('model_name')} version {response.doc.get('model_version')}"]
    with np.printoptions(precision=6, suppress=True, threshold=200):
        for name, value in response.outputs.items():
            lines.append(f"{name} {value.dtype} {list(value.shape)}")
            lines.append(np.array2string(value, separator=", "))
    if response.doc.get("parameters"):
        lines.append("parameters " + json.dumps(response.doc["parameters"]))
    return "\n".join(lines)


def invoke_command(
    url: str,
    model: str,
    *,
    text: list[str] | None = None,
    npy: str | None = None,
    json_file: str | None = None,
    api_key: str | None = None,
    api_key_header: str = "x-api-key",
    bearer: str | None = None,
    version: str | None = None,
    retries: int = 3,
    timeout_s: float = 30.0,
) -> str:
    """`slimserve invoke`: build the request from exactly one of text/npy/json_file; returns what to print."""
    client = InferenceClient(url, api_key=api_key, api_key_header=api_key_header, bearer=bearer, retries=retries, timeout_s=timeout_s)
    if json_file is not None:
        try:
            with open(json_file, "rb") as fh:
                body = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InvokeError(f"{json_file}: {exc}") from None
        return format_outputs(client.infer_json(model, body, version))
    if npy is not None:
        try:
            array = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvokeError(f"{npy}: not a readable .npy file ({exc})") from None
        inputs = client.inputs_for(model, version, array=array)
    else:
        inputs = client.inputs_for(model, version, texts=list(text or []))
    return format_outputs(client.infer(model, inputs, version))
