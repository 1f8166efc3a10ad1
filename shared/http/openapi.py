"""`GET /v2/openapi.json`: the routes this server answers, their bodies and their errors, from one source.

Open Inference Protocol v2 (KServe's REST spec, whose schemas these follow), the SageMaker container
contract (`/ping`, `/invocations`), the OpenAI-compatible embeddings (`/v1/...`), `/metrics` and this document. The SageMaker *runtime* API emulation
(`/endpoints/...`) is left out: it answers in AWS's shapes for boto3, a local stand-in, not this API.
Every error is the one `{"error": "..."}` shape (OpenAI's `{"error": {"message": ...}}` under /v1); every
response carries `x-request-id`.
Examples come from the models served, so a reader (or schemathesis) can send a request that works.
"""

from __future__ import annotations

from shared.protocol.datatypes import OIP_TO_NUMPY
from shared.artifact.manifest import NAME_PATTERN, VERSION_PATTERN
from shared.http.openai_api import embedding_output

_JSON, _OCTET, _NPY = "application/json", "application/octet-stream", "application/x-npy"
_BINARY_JSON = "application/vnd.sagemaker-triton.binary+json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict:
    reasons = {400: "The request is not a valid request for this model (the message says why)",
               401: "No API key, or a wrong one (when the server requires one)", 404: "Unknown model, version or route",
               406: "Accept names a type this endpoint cannot answer in", 413: "Over a request limit (the message names the setting)",
               415: "Unsupported Content-Type", 503: "Not ready, or the remote endpoint is unavailable (see Retry-After)"}  # fmt: skip
    return {str(c): {"description": reasons[c], "headers": _HEADERS, "content": {_JSON: {"schema": _ref("Error")}}} for c in codes}


_HEADERS = {"x-request-id": {"description": "The request's id: the caller's x-request-id, else a new one", "required": True, "schema": {"type": "string"}}}
_AUTH = (401,)
_METHOD_NOT_ALLOWED = {
    "description": "Method Not Allowed: the path does not take this method (the operations listed for it do)",
    "headers": {**_HEADERS, "Allow": {"description": "The methods the path takes", "required": True, "schema": {"type": "string"}}},
    "content": {_JSON: {"schema": _ref("Error")}},
}


def _openai_errors(*codes: int) -> dict:
    reasons = {400: "Not a valid embeddings request (the message says which field and why)", 401: "No API key, or a wrong one",
               404: "Unknown model, or not a text embedding model (the message lists those served)",
               413: "Over a request limit (the message names the setting)", 503: "The remote endpoint is unavailable (see Retry-After)"}  # fmt: skip
    return {str(c): {"description": reasons[c], "headers": _HEADERS, "content": {_JSON: {"schema": _ref("OpenAIError")}}} for c in codes}


def _ok(schema: dict | None, description: str = "OK", media: str = _JSON, extra: dict | None = None) -> dict:
    content = {media: {"schema": schema}} if schema is not None else {}
    content.update(extra or {})
    return {"200": {"description": description, "headers": _HEADERS, "content": content}}


def _schemas() -> dict:
    datatype = {"type": "string", "enum": list(OIP_TO_NUMPY)}
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    tensor_meta = {"type": "object", "required": ["name", "datatype", "shape"],
                   "properties": {"name": {"type": "string"}, "datatype": datatype, "shape": {"type": "array", "items": {"type": "integer"}}}}  # fmt: skip
    data = {"description": "Row-major tensor data, flat or nested; strings for BYTES", "type": "array",
            "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "array"}]}}  # fmt: skip
    parameters = {"type": "object", "additionalProperties": True}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "ModelReady": {"type": "object", "required": ["name", "ready"], "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
        "Ping": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"],
                           "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "extensions": {"type": "array", "items": {"type": "string"}}}},  # fmt: skip
        "TensorMetadata": tensor_meta,
        "ModelMetadata": {"type": "object", "required": ["name", "platform", "inputs", "outputs"],
                          "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}}, "platform": {"type": "string"},
                                         "inputs": {"type": "array", "items": _ref("TensorMetadata")}, "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                                         "parameters": parameters}},  # fmt: skip
        "ModelConfig": {"type": "object", "required": ["name", "platform", "max_batch_size", "input", "output"],
                        "properties": {"name": {"type": "string"}, "platform": {"type": "string"}, "max_batch_size": {"type": "integer"},
                                       "input": {"type": "array", "items": {"type": "object"}}, "output": {"type": "array", "items": {"type": "object"}}}},  # fmt: skip
        "RequestInput": {"type": "object", "required": ["name", "datatype", "shape"],
                         "properties": {"name": {"type": "string", "minLength": 1}, "datatype": datatype, "shape": shape, "data": data,
                                        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}}}},  # fmt: skip
        "RequestOutput": {"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string"}, "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}},  # fmt: skip
        "InferenceRequest": {"type": "object", "required": ["inputs"],
                             "properties": {"id": {"type": "string"}, "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
                                            "inputs": {"type": "array", "minItems": 1, "items": _ref("RequestInput")},
                                            "outputs": {"type": "array", "items": _ref("RequestOutput")}}},  # fmt: skip
        "ResponseOutput": {"type": "object", "required": ["name", "datatype", "shape"],
                           "properties": {"name": {"type": "string"}, "datatype": datatype, "shape": shape, "data": data, "parameters": parameters}},  # fmt: skip
        **_openai_schemas(),
        "InferenceResponse": {"type": "object", "required": ["model_name", "outputs"],
                              "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                                             "parameters": parameters, "outputs": {"type": "array", "items": _ref("ResponseOutput")}}},  # fmt: skip
    }


def _openai_schemas() -> dict:
    vector = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}}
    card = {"type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"}, "owned_by": {"type": "string"}}}  # fmt: skip
    return {
        "OpenAIError": {"type": "object", "required": ["error"],
                        "properties": {"error": {"type": "object", "required": ["message", "type"],
                                                 "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                                                "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}}}}},  # fmt: skip
        "EmbeddingRequest": {"type": "object", "required": ["model", "input"],
                             "properties": {"model": {"type": "string", "description": "NAME or NAME/VERSION of a served text embedding model"},
                                            "input": {"oneOf": [{"type": "string", "minLength": 1},
                                                                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]},
                                            "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
                                            "dimensions": {"type": "integer", "minimum": 1, "description": "only the model's own width"},
                                            "user": {"type": "string", "description": "ignored"}}},  # fmt: skip
        "Embedding": {"type": "object", "required": ["object", "index", "embedding"],
                      "properties": {"object": {"type": "string", "enum": ["embedding"]}, "index": {"type": "integer"},
                                     "embedding": {"oneOf": [vector, {"type": "string", "description": "base64 of little-endian float32"}]}}},  # fmt: skip
        "EmbeddingList": {"type": "object", "required": ["object", "data", "model", "usage"],
                          "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _ref("Embedding")},
                                         "model": {"type": "string"}, "parameters": {"type": "object", "additionalProperties": True},
                                         "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                                                   "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}},  # fmt: skip
        "OpenAIModel": card,
        "OpenAIModelList": {"type": "object", "required": ["object", "data"],
                            "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _ref("OpenAIModel")}}},  # fmt: skip
    }


def _openai_paths(models: list, auth_errors: tuple) -> dict:
    embedding = [m for m in models if embedding_output(m) is not None]
    body = {"required": True, "content": {_JSON: {"schema": _ref("EmbeddingRequest")}}}
    if embedding:
        body["content"][_JSON]["examples"] = {m.name: {"value": {"model": m.name, "input": ["text"]}} for m in embedding}
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    if embedding:
        model_id["examples"] = {m.name: {"value": m.name} for m in embedding}
    return {
        "/v1/embeddings": {"post": {"summary": "OpenAI-compatible embeddings of texts (task: embedding text models)", "requestBody": body,
                                    "responses": {**_ok(_ref("EmbeddingList")), **_openai_errors(400, *auth_errors, 404, 413, 503)}}},
        "/v1/models": {"get": {"summary": "The text embedding models served (OpenAI's model list)",
                               "responses": {**_ok(_ref("OpenAIModelList")), **_openai_errors(*auth_errors)}}},
        "/v1/models/{model_id}": {"get": {"summary": "One of them (NAME or NAME/VERSION)", "parameters": [model_id],
                                          "responses": {**_ok(_ref("OpenAIModel")), **_openai_errors(400, *auth_errors, 404)}}},
    }  # fmt: skip


def _example_request(model) -> dict:
    inputs = []
    for spec in model.inputs:
        shape = [1 if d == -1 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        value = "text" if spec.datatype == "BYTES" else (False if spec.datatype == "BOOL" else 0)
        inputs.append({"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": [value] * count})
    return {"inputs": inputs}


def build(repository, auth: bool) -> dict:
    models = sorted(repository, key=lambda m: (m.name, m.version))
    names = sorted({m.name for m in models})
    name_param = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_PATTERN.pattern}}
    version_param = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string", "pattern": VERSION_PATTERN.pattern}}
    if names:
        name_param["examples"] = {n: {"value": n} for n in names}
        version_param["examples"] = {f"{m.name}-{m.version}": {"value": m.version} for m in models}
    auth_errors = _AUTH if auth else ()
    infer_body = {"required": True, "content": {_JSON: {"schema": _ref("InferenceRequest")},
                                                _OCTET: {"schema": {"type": "string", "format": "binary"}}}}  # fmt: skip
    if models:
        infer_body["content"][_JSON]["examples"] = {f"{m.name}-{m.version}": {"value": _example_request(m)} for m in models}
    infer_ok = _ok(_ref("InferenceResponse"), "Outputs as JSON, or with binary tensor data (Inference-Header-Content-Length)",
                   extra={_OCTET: {"schema": {"type": "string", "format": "binary"}}})  # fmt: skip

    def model_routes(prefix: str, params: list) -> dict:
        return {
            prefix: {"get": {"summary": "Model metadata", "parameters": params, "responses": {**_ok(_ref("ModelMetadata")), **_errors(400, *auth_errors, 404)}}},
            prefix + "/ready": {"get": {"summary": "Model readiness", "parameters": params, "responses": {**_ok(_ref("ModelReady")), **_errors(400, *auth_errors, 404)}}},
            prefix + "/config": {"get": {"summary": "Model configuration (Triton's shape)", "parameters": params, "responses": {**_ok(_ref("ModelConfig")), **_errors(400, *auth_errors, 404)}}},
            prefix + "/infer": {"post": {"summary": "Inference", "parameters": params, "requestBody": infer_body,
                                         "responses": {**infer_ok, **_errors(400, *auth_errors, 404, 413, 503)}}},  # fmt: skip
        }

    paths = {
        "/v2/health/live": {"get": {"summary": "Server liveness (no API key needed)", "security": [], "responses": _ok(_ref("Live"))}},
        "/v2/health/ready": {"get": {"summary": "Server readiness (no API key needed)", "security": [],
                                     "responses": {**_ok(_ref("Ready")), "503": {"description": "Not ready", "headers": _HEADERS, "content": {_JSON: {"schema": _ref("Ready")}}}}}},  # fmt: skip
        "/v2": {"get": {"summary": "Server metadata", "responses": {**_ok(_ref("ServerMetadata")), **_errors(*auth_errors)}}},
        **model_routes("/v2/models/{model_name}", [name_param]),
        **model_routes("/v2/models/{model_name}/versions/{model_version}", [name_param, version_param]),
        "/ping": {"get": {"summary": "SageMaker health check (no API key needed)", "security": [],
                          "responses": {**_ok(_ref("Ping")), "503": {"description": "Unhealthy", "headers": _HEADERS, "content": {_JSON: {"schema": _ref("Ping")}}}}}},  # fmt: skip
        "/invocations": {"post": {
            "summary": "SageMaker invocation: OIP v2 JSON/binary, or one .npy array for a single-input model",
            "parameters": [{"name": "X-Amzn-SageMaker-Target-Model", "in": "header", "required": False, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("InferenceRequest")}, _NPY: {"schema": {"type": "string", "format": "binary"}},
                                                          _BINARY_JSON: {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {**_ok(_ref("InferenceResponse"), extra={_NPY: {"schema": {"type": "string", "format": "binary"}},
                                                                  _BINARY_JSON: {"schema": {"type": "string", "format": "binary"}}}),
                          **_errors(400, *auth_errors, 404, 406, 413, 415, 503)},
        }},  # fmt: skip
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)",
                             "responses": {**_ok({"type": "string"}, media="text/plain"), **_errors(*auth_errors)}}},  # fmt: skip
        "/v2/openapi.json": {"get": {"summary": "This document", "responses": {**_ok({"type": "object"}), **_errors(*auth_errors)}}},
        **_openai_paths(models, auth_errors),
    }
    for operations in paths.values():  # any method a path does not take: 405 with Allow
        for operation in operations.values():
            operation["responses"]["405"] = _METHOD_NOT_ALLOWED
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "slimserve",
            "version": "2",
            "description": "Open Inference Protocol v2, the SageMaker container contract and OpenAI-compatible embeddings over onnxruntime. "
            "A method a path does not take is answered 405, its Allow header listing those it does.",
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}, "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc
