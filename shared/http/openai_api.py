"""OpenAI-compatible embeddings: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{id}`, for text
models of task `embedding`, so OpenAI's clients, LangChain, LlamaIndex and vector databases reach them by
base URL (`http://host:8080/v1`).

Only the wire shape is OpenAI's. The texts take the same path as `/v2/models/NAME/infer`: the body limit
and the API key of every route, then `DataPlane.from_arrays` (signature, SLIMSERVE_MAX_REQUEST_BATCH,
SLIMSERVE_MAX_STRING_BYTES) and `DataPlane.infer` (the dynamic batcher, a remote endpoint and its
fallback). The checks here come first only to name OpenAI's fields in their messages.

    request   {"model": "NAME" | "NAME/VERSION", "input": "text" | ["text", ...],
               "encoding_format": "float" (default) | "base64", "dimensions": the model's own width only}
    response  {"object": "list", "model": as asked, "data": [{"object": "embedding", "index": i,
               "embedding": [floats] | base64 of little-endian float32}], "usage": {"prompt_tokens", "total_tokens"}}
    errors    {"error": {"message", "type", "param", "code"}} on every /v1 path (OpenAI's shape)

Token ids as input (OpenAI also takes [int] and [[int]]) are refused: the tokenizer ships with the model,
and ids from another tokenizer would mean nothing to it. `prompt_tokens` counts what the model was fed:
truncated to the manifest's `max_length`, special tokens in, padding out.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from shared.artifact.manifest import TensorSpec
from shared.errors import InferenceFailed, LimitExceeded, MalformedRequest, NotFound
from shared.http.observe import MODEL_KEY
from shared.protocol import jsontext
from shared.protocol.codec import RequestedOutput, json_floats
from shared.protocol.limits import Limits
from shared.serving.dataplane import DataPlane
from shared.serving.interface import ServedModel

PREFIX = "/v1"
FORMATS = ("float", "base64")
_FLOATS = ("FP16", "FP32", "FP64")
_MISSING: Any = object()


def rules() -> list[Rule]:
    return [
        Rule("/v1/embeddings", endpoint="openai_embeddings", methods=["POST"]),
        Rule("/v1/models", endpoint="openai_models", methods=["GET"]),
        Rule("/v1/models/<path:model_id>", endpoint="openai_model", methods=["GET"]),
    ]


def is_openai_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_body(status: int, message: str) -> dict:
    """OpenAI's error object (what its clients put in `exc.message`, `exc.code`), for slimserve's message."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def embedding_output(model: ServedModel) -> TensorSpec | None:
    """The output /v1/embeddings answers with: a text model of task `embedding`, one vector per text."""
    if model.manifest.task != "embedding" or model.text is None:
        return None
    return next((o for o in model.manifest.outputs if len(o.shape) == 2 and o.datatype in _FLOATS), None)


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: tuple[bytes, ...]  # UTF-8, each within SLIMSERVE_MAX_STRING_BYTES
    encoding_format: str = "float"
    dimensions: int | None = None

    @classmethod
    def parse(cls, body: bytes, limits: Limits) -> EmbeddingRequest:
        doc = jsontext.loads_object(body, limits.max_json_depth)
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise MalformedRequest(f"'model' must name a served model (GET /v1/models lists them), not {_show(model)}")
        encoding = doc.get("encoding_format")
        encoding = "float" if encoding is None else encoding
        if encoding not in FORMATS:  # a str, or nothing that equals one
            raise MalformedRequest(f"'encoding_format' must be 'float' or 'base64', not {_show(encoding)}")
        dimensions = doc.get("dimensions")
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
            raise MalformedRequest(f"'dimensions' must be a positive integer, not {_show(dimensions)}")
        return cls(model, _texts(doc.get("input", _MISSING), limits), encoding, dimensions)


class OpenAIRoutes:
    """The /v1 views; the app reads the body (SLIMSERVE_MAX_BODY_BYTES) and maps errors to `error_body`."""

    def __init__(self, plane: DataPlane, read_body: Callable[[Request], bytes]):
        self.plane = plane
        self._read_body = read_body
        self._created = int(time.time())  # OpenAI's `created`: here, when this process loaded its models

    def views(self) -> dict[str, Callable[..., Response]]:
        return {"openai_embeddings": self.embeddings, "openai_models": self.models, "openai_model": self.model}

    def models(self, request: Request) -> Response:
        return _json({"object": "list", "data": [self._card(name) for name in self._served()]})

    def model(self, request: Request, model_id: str) -> Response:
        model, _ = self._resolve(model_id)
        request.environ[MODEL_KEY] = (model.name, model.version)
        return _json(self._card(model_id))

    def embeddings(self, request: Request) -> Response:
        body = self._read_body(request)
        if request.headers.get("Content-Encoding", "identity") not in ("identity", ""):
            raise MalformedRequest("Content-Encoding is not supported; send the body uncompressed")
        call = EmbeddingRequest.parse(body, self.plane.limits)
        model, output = self._resolve(call.model)
        request.environ[MODEL_KEY] = (model.name, model.version)
        width = output.shape[1]
        if width != -1:
            _check_dimensions(call.dimensions, width, model.name)
        texts = np.empty(len(call.texts), dtype=object)
        texts[:] = call.texts
        checked = self.plane.from_arrays(model, {model.text.config.input: texts}, outputs=[RequestedOutput(output.name, False)])
        answer = self.plane.infer(model, checked)  # never deferred: an OpenAI client has nothing to poll with
        ((_, vectors, _),) = answer.outputs
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            shape = list(vectors.shape)
            raise InferenceFailed(f"model {model.name!r} answered shape {shape} for {len(texts)} texts, not one vector each")
        _check_dimensions(call.dimensions, vectors.shape[1], model.name)
        tokens = sum(self.plane.tokens_fed(model, texts))
        rows = base64_rows(vectors) if call.encoding_format == "base64" else float_rows(vectors)
        data = ",".join(f'{{"object":"embedding","index":{i},"embedding":{row}}}' for i, row in enumerate(rows))
        tail = {"model": call.model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        if answer.parameters:  # a degraded answer says so, as on /v2
            tail["parameters"] = answer.parameters
        payload = b'{"object":"list","data":[' + data.encode("ascii") + b"]," + jsontext.dumps(tail)[1:]
        return Response(payload, status=200, mimetype="application/json")

    # --- which models answer here --------------------------------------------------------------------

    def _served(self) -> list[str]:
        return sorted({m.name for m in self.plane.repository if embedding_output(m) is not None})

    def _resolve(self, model_id: str) -> tuple[ServedModel, TensorSpec]:
        name, slash, version = model_id.partition("/")
        if name not in {m.name for m in self.plane.repository}:
            raise NotFound(f"unknown model {model_id[:64]!r}; {self._offer()}")
        model = self.plane.model(name, version if slash else None)
        output = embedding_output(model)
        if output is None:
            raise NotFound(f"model {name!r} (task: {model.manifest.task}) is not a text embedding model; {self._offer()}")
        return model, output

    def _offer(self) -> str:
        served = self._served()
        if not served:
            return "this server serves no text embedding model (task: embedding)"
        return f"the embedding models served are {', '.join(served)}"

    def _card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self._created, "owned_by": "slimserve"}


def _texts(raw: Any, limits: Limits) -> tuple[bytes, ...]:
    if raw is _MISSING:
        raise MalformedRequest("'input' is required: a string or a list of strings")
    single = isinstance(raw, str)
    items = [raw] if single else raw
    if not isinstance(items, list):
        raise MalformedRequest(f"'input' must be a string or a list of strings, not {_show(raw)}")
    if not items:
        raise MalformedRequest("'input' is an empty list: send at least one string")
    if len(items) > limits.max_request_batch:
        raise LimitExceeded(f"'input' has {len(items):,} strings, over SLIMSERVE_MAX_REQUEST_BATCH={limits.max_request_batch:,}")
    texts = []
    for i, item in enumerate(items):
        where = "'input'" if single else f"'input[{i}]'"
        if not isinstance(item, str):
            if isinstance(item, list) or (isinstance(item, int) and not isinstance(item, bool)):
                raise MalformedRequest(
                    f"{where} is {_show(item)}: token ids are not accepted here, send text (the model's own tokenizer runs on it)"
                )
            raise MalformedRequest(f"{where} must be a string, not {_show(item)}")
        if not item:
            raise MalformedRequest(f"{where} is an empty string")
        try:
            text = item.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedRequest(f"{where} is not valid Unicode: it holds an unpaired surrogate (\\ud800-\\udfff)") from None
        if len(text) > limits.max_string_bytes:
            limit = limits.max_string_bytes
            raise LimitExceeded(f"{where} is {len(text):,} bytes of UTF-8, over SLIMSERVE_MAX_STRING_BYTES={limit:,}")
        texts.append(text)
    return tuple(texts)


def _check_dimensions(asked: int | None, width: int, name: str) -> None:
    if asked is not None and asked != width:
        raise MalformedRequest(
            f"'dimensions' is {asked}, but model {name!r} gives {width}-dimensional embeddings and cannot shorten them; "
            f"leave 'dimensions' out or send {width}"
        )


def float_rows(vectors: np.ndarray) -> list[str]:
    """Each row as a JSON array of float32's shortest round-trip decimals (the codec's `json_floats`)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return [json_floats(row).decode("ascii") for row in vectors]


def base64_rows(vectors: np.ndarray) -> list[str]:
    little = np.ascontiguousarray(vectors, dtype="<f4")
    return ['"' + base64.b64encode(row.tobytes()).decode("ascii") + '"' for row in little]


def _show(value: Any) -> str:
    """A client's value in a message: its type, or the start of a string (never the whole of it)."""
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        shown = repr(value)
        return f"a number ({shown})" if len(shown) <= 40 else "a number"
    return "an array" if isinstance(value, list) else "an object"


def _json(doc: dict) -> Response:
    return Response(jsontext.dumps(doc), status=200, mimetype="application/json")
