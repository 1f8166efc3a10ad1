"""The SageMaker inference container contract over the same data plane: `GET /ping`, `POST /invocations`.

Bodies of /invocations, by Content-Type:

    application/json (or none)                         OIP v2 infer request, JSON tensors
    application/vnd.sagemaker-triton.binary+json;json-header-size=N
                                                       OIP v2 with binary tensors (the runtime API
                                                       passes Content-Type through, not our headers)
    application/octet-stream + Inference-Header-Content-Length   the same, as tritonclient sends it
    application/x-npy                                  one array for a single-input model

Answers, by Accept: OIP v2 (JSON, or binary+json when binary outputs were asked for) or
`application/x-npy` (one output: `X-Amzn-SageMaker-Custom-Attributes: output=NAME`, else the first).
Without Accept an npy request is answered in npy, anything else in OIP v2. Anything else: 415 / 406.
Which model: the only one, else `X-Amzn-SageMaker-Target-Model: NAME[/VERSION]`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from shared.errors import InvalidTensor, MalformedRequest, NotAcceptable, UnsupportedMediaType
from shared.protocol import codec
from shared.protocol.codec import HEADER_LENGTH, InferenceRequest
from shared.protocol.npy import read_npy
from shared.serving import signature
from shared.serving.dataplane import DataPlane
from shared.serving.interface import ServedModel

NPY = "application/x-npy"
JSON = "application/json"
OCTET = "application/octet-stream"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def rules() -> list[Rule]:
    # Fresh Rule objects per app: werkzeug binds a Rule to one Map only.
    return [
        Rule("/ping", endpoint="sm_ping", methods=["GET"]),
        Rule("/invocations", endpoint="sm_invocations", methods=["POST"]),
    ]


@dataclass(frozen=True)
class Invocation:
    """One call, transport-neutral: the container route, the runtime API emulation and async replay share it."""

    body: bytes
    content_type: str = ""
    accept: str = ""
    target_model: str = ""
    custom_attributes: str = ""
    header_length: str | None = None  # Inference-Header-Content-Length, when it came as a header

    @classmethod
    def from_request(cls, request: Request, body: bytes) -> Invocation:
        return cls(
            body=body,
            content_type=request.headers.get("Content-Type", ""),
            accept=request.headers.get("Accept", ""),
            target_model=request.headers.get(TARGET_MODEL, ""),
            custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES, ""),
            header_length=request.headers.get(HEADER_LENGTH),
        )


def ping(plane: DataPlane) -> Response:
    ready = plane.ready()
    return Response('{"status":"healthy"}' if ready else '{"status":"unhealthy"}', status=200 if ready else 503, mimetype=JSON)


def invoke(plane: DataPlane, call: Invocation, may_defer: bool = True) -> tuple[bytes, dict[str, str]]:
    """Run one invocation; returns the body and its headers. Raises SlimserveError (4xx) on bad input."""
    model = _target(plane, call.target_model)
    mime = call.content_type.split(";")[0].strip().lower()
    wants = _accepted(call.accept, npy_in=mime == NPY)
    if mime == NPY:
        request = _npy_request(plane, model, call.body)
    elif mime in ("", JSON, codec.BINARY_CONTENT_TYPE, OCTET):
        header_length = codec.header_length_from_content_type(call.content_type) or call.header_length
        if mime == OCTET and header_length is None:
            raise UnsupportedMediaType(f"{OCTET} needs an {HEADER_LENGTH} header (OIP v2 binary tensors)")
        request = plane.decode(model, call.body, header_length)
    else:
        raise UnsupportedMediaType(f"Content-Type {mime!r} is not supported; send {JSON}, {codec.BINARY_CONTENT_TYPE} or {NPY}")
    response = plane.infer(model, request, may_defer=may_defer)
    if wants == NPY:
        return _npy_answer(response, call.custom_attributes), {"Content-Type": NPY}
    payload, headers = codec.encode_response(response)
    if HEADER_LENGTH in headers:  # only Content-Type survives SageMaker's runtime on the way back
        headers["Content-Type"] = codec.binary_content_type(int(headers[HEADER_LENGTH]))
    return payload, headers


def _target(plane: DataPlane, target: str) -> ServedModel:
    if target:
        name, _, version = target.removesuffix(".tar.gz").partition("/")
        return plane.model(name, version or None)
    model = plane.repository.only()
    if model is None:
        names = ", ".join(sorted(f"{m.name}/{m.version}" for m in plane.repository))
        raise MalformedRequest(f"this endpoint serves {names}; name one in {TARGET_MODEL}")
    return model


def _accepted(accept: str, npy_in: bool) -> str:
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    for kind in kinds:
        if kind == NPY:
            return NPY
        if kind in (JSON, OCTET, codec.BINARY_CONTENT_TYPE):
            return JSON
        if kind in ("*/*", "application/*"):
            return NPY if npy_in else JSON
    if not kinds:
        return NPY if npy_in else JSON
    raise NotAcceptable(f"Accept {accept[:80]!r}: this endpoint answers {JSON}, {codec.BINARY_CONTENT_TYPE} or {NPY}")


def _npy_request(plane: DataPlane, model: ServedModel, body: bytes) -> InferenceRequest:
    if len(model.manifest.inputs) != 1:
        raise InvalidTensor(f"model {model.name!r} has {len(model.manifest.inputs)} inputs; {NPY} carries one, send OIP v2 JSON")
    name = model.manifest.inputs[0].name
    # The header is checked against the limits and the signature before the data is read.
    array = read_npy(
        body, plane.limits, "body", check=lambda _, datatype, shape: signature.check_input(model.manifest, name, datatype, shape)
    )
    return plane.from_arrays(model, {name: array})


def _npy_answer(response: codec.InferenceResponse, custom_attributes: str) -> bytes:
    outputs = {name: value for name, value, _ in response.outputs}
    attributes = dict(part.strip().partition("=")[::2] for part in custom_attributes.split(",") if "=" in part)
    name = attributes.get("output") or next(iter(outputs))
    if name not in outputs:
        raise InvalidTensor(f"output {name!r} (from {CUSTOM_ATTRIBUTES}) is not one of {', '.join(outputs)}")
    value = outputs[name]
    if value.dtype == object:  # BYTES: npy cannot hold objects without pickle, so as unicode text
        value = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]).reshape(value.shape)
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()
