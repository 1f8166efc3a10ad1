"""Open Inference Protocol v2 tensors on the wire: JSON `data` and the binary tensor data extension.

Request body = JSON header [+ binary section]. When `Inference-Header-Content-Length: N` is present,
the first N bytes are the JSON and the rest holds, in input order, the raw bytes of every input that
carries `parameters.binary_data_size`. BYTES elements are framed as a 4-byte little-endian length
followed by the bytes (Triton's layout, which tritonclient writes and reads).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InvalidTensor, LimitExceeded, MalformedRequest
from shared.protocol import jsontext
from shared.protocol.bytes_tensor import deserialize_bytes, serialize_bytes
from shared.protocol.datatypes import numpy_dtype, oip_datatype
from shared.protocol.limits import Limits

HEADER_LENGTH = "Inference-Header-Content-Length"
# Where only the Content-Type survives the trip (SageMaker's runtime, Vertex AI's rawPredict), the JSON
# header's length rides in it, as SageMaker's Triton containers do it.
BINARY_CONTENT_TYPE = "application/vnd.sagemaker-triton.binary+json"
_HEADER_SIZE_PARAM = "json-header-size"
_MAX_DIMS, _MAX_DIM = 32, 2**62  # numpy's own bounds, so a shape never fails inside numpy


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferenceRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False  # request-level `binary_data_output`
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray, bool]]  # name, value, binary?
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


# --- request -------------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        raise MalformedRequest(f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}") from None
    if not 0 <= n <= len(body):
        raise MalformedRequest(f"{HEADER_LENGTH} is {n} but the body holds {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def parse_json(raw: bytes, max_depth: int | None = None) -> dict:
    return jsontext.loads_object(raw, max_depth)


_NO_LIMITS = Limits(max_elements=2**62, max_request_batch=2**62, max_string_bytes=2**62, max_json_depth=2**62, max_inputs=2**62)


def decode_request(body: bytes, header_length: str | None, check_input, limits: Limits | None = None) -> InferenceRequest:
    """Decode an infer request; `check_input(name, datatype, shape)` vets each header, and `limits` bound
    it, before its data is read (shared/protocol/limits.py)."""
    limits = limits or _NO_LIMITS
    head, binary = split_body(body, header_length)
    doc = parse_json(head, limits.max_json_depth)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("request must have a non-empty 'inputs' list")
    limits.check_count(len(raw_inputs), "inputs")
    if isinstance(doc.get("outputs"), list):
        limits.check_count(len(doc["outputs"]), "outputs")
    offset = elements = 0
    inputs: dict[str, np.ndarray] = {}
    for i, raw in enumerate(raw_inputs):
        name, datatype, shape, params = _tensor_header(raw, f"inputs[{i}]")
        elements = limits.check_shape(name, shape, elements)
        check_input(name, datatype, shape)
        if name in inputs:
            raise InvalidTensor(f"input {name!r} given more than once")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not _is_int(size) or size < 0:
                raise MalformedRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise MalformedRequest(f"input {name!r}: binary_data_size {size} runs past the {len(binary)} bytes of binary data")
            inputs[name] = _from_binary(name, datatype, shape, binary[offset : offset + size], limits.max_string_bytes)
            offset += size
        elif "data" in raw:
            inputs[name] = _from_json(name, datatype, shape, raw["data"], limits.max_string_bytes)
        else:
            raise MalformedRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    if offset != len(binary):
        raise MalformedRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return InferenceRequest(
        inputs=inputs,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=bool(_params(doc, "request").get("binary_data_output", False)),
        id=str(doc["id"]) if isinstance(doc.get("id"), (str, int)) else None,
        parameters=_params(doc, "request"),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _params(raw: dict, where: str) -> dict:
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise MalformedRequest(f"{where}: parameters must be an object")
    return params


def _tensor_header(raw: Any, where: str) -> tuple[str, str, list[int], dict]:
    if not isinstance(raw, dict):
        raise MalformedRequest(f"{where} must be an object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise MalformedRequest(f"{where}: 'name' must be a non-empty string")
    if not isinstance(datatype, str):
        raise MalformedRequest(f"input {name!r}: 'datatype' must be a string")
    numpy_dtype(datatype)  # unknown datatype -> 400 naming it
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(_is_int(d) and 0 <= d < _MAX_DIM for d in shape):
        raise InvalidTensor(f"input {name!r}: 'shape' must be a list of at most {_MAX_DIMS} non-negative integers below 2**62")
    return name, datatype, shape, _params(raw, f"input {name!r}")


def _from_binary(name: str, datatype: str, shape: list[int], raw: memoryview, max_string_bytes: int | None = None) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return deserialize_bytes(raw, count, name, max_string_bytes).reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensor(f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


_KINDS_ACCEPTED = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


def _from_json(name: str, datatype: str, shape: list[int], data: Any, max_string_bytes: int | None = None) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten_strings(name, data, max_string_bytes)
        if len(flat) != count:
            raise InvalidTensor(f"input {name!r}: shape {shape} needs {count} elements, got {len(flat)}")
        out = np.empty(count, dtype=object)
        out[:] = flat
        return out.reshape(shape)
    dtype = numpy_dtype(datatype)
    try:
        array = np.array(data)
    except (ValueError, TypeError):
        raise InvalidTensor(f"input {name!r}: 'data' is not a regular nested list of numbers") from None
    if array.size != count:
        raise InvalidTensor(f"input {name!r}: shape {shape} needs {count} elements, got {array.size}")
    if array.dtype.kind == "f" and dtype.kind == "u":
        array = _exact_unsigned(name, datatype, data, dtype)
    if array.dtype.kind in "US" and dtype.kind == "f":  # "NaN"/"Infinity" as JSON answers carry them
        array = _non_finite_words(name, datatype, data, array.shape)
    if array.dtype.kind not in _KINDS_ACCEPTED[dtype.kind]:
        raise InvalidTensor(f"input {name!r}: 'data' holds values that are not {datatype}")
    if dtype.kind in "iu" and array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
        raise InvalidTensor(f"input {name!r}: values out of range for {datatype}")
    return array.astype(dtype, copy=False).reshape(shape)


_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _non_finite_words(name: str, datatype: str, data: list, shape: tuple) -> np.ndarray:
    """Float data whose non-finite elements are the words JSON answers use for them (see `json_floats`);
    any other string is still no number."""
    flat = []
    for item in np.array(data, dtype=object).reshape(-1).tolist():
        if isinstance(item, str) and item in _NON_FINITE:
            flat.append(_NON_FINITE[item])
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            try:
                flat.append(float(item))
            except OverflowError:
                raise InvalidTensor(f"input {name!r}: values out of range for {datatype}") from None
        else:
            raise InvalidTensor(f"input {name!r}: 'data' holds values that are not {datatype}")
    return np.array(flat, dtype=np.float64).reshape(shape)


def _exact_unsigned(name: str, datatype: str, data: list, dtype: np.dtype) -> np.ndarray:
    # numpy reads [0, 2**63] as float64 (no signed type holds both), which would round the large one.
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in np.array(data, dtype=object).reshape(-1)):
        raise InvalidTensor(f"input {name!r}: 'data' holds values that are not {datatype}")
    try:
        return np.array(data, dtype=dtype)
    except OverflowError:
        raise InvalidTensor(f"input {name!r}: values out of range for {datatype}") from None


def _flatten_strings(name: str, data: list, max_string_bytes: int | None = None) -> list[bytes]:
    flat: list[bytes] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if isinstance(item, str):
                try:
                    flat.append(item.encode("utf-8"))
                except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text
                    raise InvalidTensor(f"input {name!r}: BYTES 'data' holds a string that is not valid Unicode") from None
                if max_string_bytes is not None and len(flat[-1]) > max_string_bytes:
                    raise LimitExceeded(
                        f"tensor {name!r} has a BYTES element of {len(flat[-1]):,} bytes, "
                        f"over SLIMSERVE_MAX_STRING_BYTES={max_string_bytes:,}"
                    )
            else:
                raise InvalidTensor(f"input {name!r}: BYTES 'data' must hold strings")
        else:
            stack.pop()
    return flat


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MalformedRequest("'outputs' must be a list")
    out, seen = [], set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedRequest(f"outputs[{i}] must be an object with a 'name'")
        if item["name"] in seen:
            raise InvalidTensor(f"output {item['name'][:64]!r} is requested more than once")
        seen.add(item["name"])
        out.append(RequestedOutput(item["name"], bool(_params(item, f"outputs[{i}]").get("binary_data", False))))
    return out


# --- response ------------------------------------------------------------------------------------


def encode_response(response: InferenceResponse) -> tuple[bytes, dict[str, str]]:
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    tensors, chunks = [], []
    for name, value, binary in response.outputs:
        value = np.ascontiguousarray(value) if value.dtype != object else value
        tensor: dict[str, Any] = {"name": name, "datatype": oip_datatype(value), "shape": list(value.shape)}
        data = None
        if binary:
            raw = serialize_bytes(value) if tensor["datatype"] == "BYTES" else value.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif tensor["datatype"] == "BYTES":
            tensor["data"] = [_text(v) for v in value.reshape(-1)]
        elif value.dtype.kind == "f":
            data = json_floats(value.reshape(-1))
        else:
            tensor["data"] = value.reshape(-1).tolist()
        # The tensor's JSON, its float data spliced in as text (see json_floats).
        tensors.append(jsontext.dumps(tensor) if data is None else jsontext.dumps(tensor)[:-1] + b',"data":' + data + b"}")
    head = jsontext.dumps(doc)[:-1] + b',"outputs":[' + b",".join(tensors) + b"]}"
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(chunks), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(head)),
    }


def json_floats(flat: np.ndarray) -> bytes:
    """A JSON array of a float tensor's elements, each the shortest decimal that reads back as the same
    float of *its* width: Python's float repr of a float32 is float64's, about twice as long (a 1,024 x 384
    embedding answer: 4.8 MB this way, 8.6 MB that way, over Lambda's 6 MB). JSON has no NaN or Infinity:
    those travel as the words "NaN", "Infinity", "-Infinity", which numpy (so tritonclient) reads back."""
    text = flat.astype(str)
    if not np.isfinite(flat).all():
        text = text.astype(object)
        text[np.isnan(flat)] = '"NaN"'
        text[np.isposinf(flat)] = '"Infinity"'
        text[np.isneginf(flat)] = '"-Infinity"'
    return ("[" + ",".join(text.tolist()) + "]").encode("ascii")


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


# --- the client half: what a remote model sends to, and reads from, another OIP v2 server ----------


def encode_request(inputs: dict[str, np.ndarray], binary_output: bool = True) -> tuple[bytes, int]:
    """An infer request with every input in the binary section (as tritonclient sends); returns the body
    and the length of its JSON header."""
    tensors, chunks = [], []
    for name, value in inputs.items():
        datatype = oip_datatype(value)
        raw = serialize_bytes(value) if datatype == "BYTES" else np.ascontiguousarray(value).tobytes()
        tensors.append({"name": name, "datatype": datatype, "shape": list(value.shape), "parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    head = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": binary_output}}, separators=(",", ":")).encode()
    return head + b"".join(chunks), len(head)


def decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Output tensors of an infer response, JSON or binary; raises MalformedRequest/InvalidTensor only."""
    try:
        return _decode_response(body, header_length)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # whatever numpy makes of a hostile answer
        raise MalformedRequest(f"response tensors cannot be decoded: {type(exc).__name__}") from None


def _decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    head, binary = split_body(body, None if header_length is None else str(header_length))
    doc = parse_json(head)
    raw_outputs = doc.get("outputs")
    if not isinstance(raw_outputs, list) or not raw_outputs:
        raise MalformedRequest("response must have a non-empty 'outputs' list")
    offset, outputs = 0, {}
    for i, raw in enumerate(raw_outputs):
        name, datatype, shape, params = _tensor_header(raw, f"outputs[{i}]")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not _is_int(size) or size < 0 or offset + size > len(binary):
                raise MalformedRequest(f"output {name!r}: binary_data_size runs past the binary data")
            outputs[name] = _from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            outputs[name] = _from_json(name, datatype, shape, raw.get("data"))
    return outputs


def binary_content_type(header_length: int) -> str:
    return f"{BINARY_CONTENT_TYPE};{_HEADER_SIZE_PARAM}={header_length}"


def header_length_from_content_type(content_type: str | None) -> str | None:
    """`json-header-size` of a binary+json Content-Type, as the string HEADER_LENGTH would carry; else None."""
    if not content_type or not content_type.lower().startswith(BINARY_CONTENT_TYPE):
        return None
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == _HEADER_SIZE_PARAM:
            return value.strip()
    raise MalformedRequest(f"Content-Type {BINARY_CONTENT_TYPE} needs a {_HEADER_SIZE_PARAM} parameter")
