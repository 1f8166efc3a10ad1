"""Batch inputs and results on object storage: bytes <-> tensors, checked as strictly as an HTTP request.

    .npy    one array, for a model with one input
    .npz    arrays keyed by input name
    .json   an Open Inference Protocol v2 infer request body (decoded by the HTTP path's own codec)
    .jsonl  one text per line, a JSON string or {"text": ...}, for a model with one BYTES input

Results are an OIP v2 response body (`.json`) or the outputs keyed by name (`.npz`). Both are a pure
function of the input and the model, so a redelivered record rewrites the same bytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from shared.protocol import codec
from shared.protocol.codec import InferenceResponse, RequestedOutput
from shared.protocol.datatypes import oip_datatype
from shared.errors import InvalidTensor, RecordError, SlimserveError
from shared.serving.local import Model

INPUT_FORMATS = (".npy", ".npz", ".json", ".jsonl")
OUTPUT_FORMATS = {"json": ("application/json", ".json"), "npz": ("application/octet-stream", ".npz")}
# A fixed timestamp inside .npz results: zip entries otherwise carry the time they were written.
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class Decoded:
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None  # a .json request may name the outputs it wants
    id: str | None = None


def input_format(name: str) -> str:
    lowered = name.lower()
    for suffix in sorted(INPUT_FORMATS, key=len, reverse=True):
        if lowered.endswith(suffix):
            return suffix
    raise RecordError(f"{name!r}: unsupported input format; expected one of {', '.join(INPUT_FORMATS)}")


def decode(name: str, data: bytes, model: Model) -> Decoded:
    """The record's tensors, each checked against the model's signature (name, datatype, shape)."""
    fmt = input_format(name)
    if fmt == ".json":
        request = codec.decode_request(data, None, model.check_input)
        model.check_complete(list(request.inputs))
        if request.outputs is not None:
            known = model.output_names()
            unknown = [o.name for o in request.outputs if o.name not in known]
            if unknown:
                raise InvalidTensor(f"unknown output(s) {', '.join(unknown)}; model {model.name!r} has {', '.join(known)}")
        return Decoded(request.inputs, request.outputs, request.id)
    if fmt == ".jsonl":
        inputs = {_only_input(model, fmt).name: _texts(name, data, model)}
    elif fmt == ".npy":
        inputs = {_only_input(model, fmt).name: _load_npy(name, data)}
    else:
        inputs = _load_npz(name, data)
    for input_name, value in inputs.items():
        model.check_input(input_name, _datatype(input_name, value), list(value.shape))
    model.check_complete(list(inputs))
    return Decoded(inputs)


def encode(fmt: str, model: Model, decoded: Decoded, results: dict[str, np.ndarray], parameters: dict, source: str) -> bytes:
    wanted = [o.name for o in decoded.outputs] if decoded.outputs is not None else model.output_names()
    if fmt == "npz":
        return _npz({n: results[n] for n in wanted})
    body, _ = codec.encode_response(
        InferenceResponse(
            model_name=model.name,
            model_version=model.version,
            outputs=[(n, results[n], False) for n in wanted],
            id=decoded.id if decoded.id is not None else source,
            parameters={**parameters, "source": source},
        )
    )
    return body


def _only_input(model: Model, fmt: str):
    if len(model.inputs) != 1:
        names = ", ".join(s.name for s in model.inputs)
        raise RecordError(f"a {fmt} input holds one tensor; model {model.name!r} has inputs {names}: use .npz or .json")
    return model.inputs[0]


def _datatype(name: str, value: np.ndarray) -> str:
    try:
        return oip_datatype(value)
    except SlimserveError:
        raise InvalidTensor(f"input {name!r} has numpy dtype {value.dtype}, which no model input can take") from None


def _load_npy(name: str, data: bytes) -> np.ndarray:
    try:
        value = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, EOFError, OSError... for a bad header
        raise RecordError(f"{name!r} is not a readable .npy file ({type(exc).__name__})") from None
    if not isinstance(value, np.ndarray):
        raise RecordError(f"{name!r} is a .npz archive, not a .npy array")
    return _strings_as_bytes(value)


def _load_npz(name: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: _strings_as_bytes(archive[key]) for key in archive.files}
    except Exception as exc:
        raise RecordError(f"{name!r} is not a readable .npz archive ({type(exc).__name__})") from None


def _strings_as_bytes(value: np.ndarray) -> np.ndarray:
    """numpy saves texts as fixed-width str/bytes (pickle-free); BYTES tensors are object arrays of bytes."""
    if value.dtype.kind not in "US":
        return value
    flat = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value.reshape(-1).tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(value.shape)


def _texts(name: str, data: bytes, model: Model) -> np.ndarray:
    spec = model.inputs[0]
    if spec.datatype != "BYTES":
        raise RecordError(f"a .jsonl input holds texts; input {spec.name!r} of model {model.name!r} takes {spec.datatype}")
    texts: list[bytes] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RecordError(f"{name!r} line {number} is not JSON") from None
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise RecordError(f'{name!r} line {number} must be a JSON string or {{"text": "..."}}')
        texts.append(text.encode("utf-8"))
    if not texts:
        raise RecordError(f"{name!r} holds no texts")
    value = np.empty(len(texts), dtype=object)
    value[:] = texts
    # A text input is [batch] or [batch, 1]; anything wider is not "one text per line".
    if len(spec.shape) == 2 and spec.shape[1] in (1, -1):
        return value.reshape(-1, 1)
    if len(spec.shape) != 1:
        raise RecordError(f"input {spec.name!r} of model {model.name!r} has shape {list(spec.shape)}; .jsonl fills [n] or [n, 1]")
    return value


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            if value.dtype == object:  # BYTES: saved as str, so readers need no pickle
                value = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]).reshape(value.shape)
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.getvalue())
    return buffer.getvalue()
