"""`GET /v2/openapi.json`: the routes this server answers, their bodies and their errors, from one source.

Open Inference Protocol v2 (KServe's REST spec, whose schemas these follow), the SageMaker container
contract (`/ping`, `/invocations`), the OpenAI-compatible embeddings (`/v1/...`), `/metrics` and this document.
The SageMaker *runtime* API emulation (`/endpoints/...`) is left out: it answers in AWS's shapes for boto3, a local stand-in, not this API.
Every error is the one `{"error": "..."}` shape (OpenAI's `{"error": {"message": ...}}` under /v1); every
response carries `x-request-id`.
Examples come from the models served, so a reader (or schemathesis) can send a request that works.
"""

from __future__ import annotations

from shared.artifact.manifest import NAME_PATTERN, VERSION_PATTERN
from shared.http.openai_api import embedding_output
from shared.http.openapi_schemas import ref, schemas

_JSON, _OCTET, _NPY = "application/json", "application/octet-stream", "application/x-npy"
_BINARY_JSON = "application/vnd.sagemaker-triton.binary+json"


def _errors(*codes: int) -> dict:
    reasons = {
        400: "The request is not a valid request for this model (the message says why)",
        401: "No API key, or a wrong one (when the server requires one)",
        404: "Unknown model, version or route",
        406: "Accept names a type this endpoint cannot answer in",
        413: "Over a request limit (the message names the setting)",
        415: "Unsupported Content-Type",
        503: "Not ready, or the remote endpoint is unavailable (see Retry-After)",
    }
    return {str(c): {"description": reasons[c], "headers": _HEADERS, "content": {_JSON: {"schema": ref("Error")}}} for c in codes}


_HEADERS = {
    "x-request-id": {
        "description": "The request's id: the caller's x-request-id, else a new one",
        "required": True,
        "schema": {"type": "string"},
    }
}
_AUTH = (401,)
_METHOD_NOT_ALLOWED = {
    "description": "Method Not Allowed: the path does not take this method (the operations listed for it do)",
    "headers": {**_HEADERS, "Allow": {"description": "The methods the path takes", "required": True, "schema": {"type": "string"}}},
    "content": {_JSON: {"schema": ref("Error")}},
}


def _openai_errors(*codes: int) -> dict:
    reasons = {
        400: "Not a valid embeddings request (the message says which field and why)",
        401: "No API key, or a wrong one",
        404: "Unknown model, or not a text embedding model (the message lists those served)",
        413: "Over a request limit (the message names the setting)",
        503: "The remote endpoint is unavailable (see Retry-After)",
    }
    return {str(c): {"description": reasons[c], "headers": _HEADERS, "content": {_JSON: {"schema": ref("OpenAIError")}}} for c in codes}


def _ok(schema: dict | None, description: str = "OK", media: str = _JSON, extra: dict | None = None) -> dict:
    content = {media: {"schema": schema}} if schema is not None else {}
    content.update(extra or {})
    return {"200": {"description": description, "headers": _HEADERS, "content": content}}


def _openai_paths(models: list, auth_errors: tuple) -> dict:
    embedding = [m for m in models if embedding_output(m) is not None]
    body = {"required": True, "content": {_JSON: {"schema": ref("EmbeddingRequest")}}}
    if embedding:
        body["content"][_JSON]["examples"] = {m.name: {"value": {"model": m.name, "input": ["text"]}} for m in embedding}
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    if embedding:
        model_id["examples"] = {m.name: {"value": m.name} for m in embedding}
    return {
        "/v1/embeddings": {
            "post": {
                "summary": "OpenAI-compatible embeddings of texts (task: embedding text models)",
                "requestBody": body,
                "responses": {**_ok(ref("EmbeddingList")), **_openai_errors(400, *auth_errors, 404, 413, 503)},
            }
        },
        "/v1/models": {
            "get": {
                "summary": "The text embedding models served (OpenAI's model list)",
                "responses": {**_ok(ref("OpenAIModelList")), **_openai_errors(*auth_errors)},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "summary": "One of them (NAME or NAME/VERSION)",
                "parameters": [model_id],
                "responses": {**_ok(ref("OpenAIModel")), **_openai_errors(400, *auth_errors, 404)},
            }
        },
    }


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
    version_param = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": VERSION_PATTERN.pattern},
    }
    if names:
        name_param["examples"] = {n: {"value": n} for n in names}
        version_param["examples"] = {f"{m.name}-{m.version}": {"value": m.version} for m in models}
    auth_errors = _AUTH if auth else ()
    infer_body = {
        "required": True,
        "content": {_JSON: {"schema": ref("InferenceRequest")}, _OCTET: {"schema": {"type": "string", "format": "binary"}}},
    }
    if models:
        infer_body["content"][_JSON]["examples"] = {f"{m.name}-{m.version}": {"value": _example_request(m)} for m in models}
    infer_ok = _ok(
        ref("InferenceResponse"),
        "Outputs as JSON, or with binary tensor data (Inference-Header-Content-Length)",
        extra={_OCTET: {"schema": {"type": "string", "format": "binary"}}},
    )

    def model_routes(prefix: str, params: list) -> dict:
        return {
            prefix: {
                "get": {
                    "summary": "Model metadata",
                    "parameters": params,
                    "responses": {**_ok(ref("ModelMetadata")), **_errors(400, *auth_errors, 404)},
                }
            },
            prefix + "/ready": {
                "get": {
                    "summary": "Model readiness",
                    "parameters": params,
                    "responses": {**_ok(ref("ModelReady")), **_errors(400, *auth_errors, 404)},
                }
            },
            prefix + "/config": {
                "get": {
                    "summary": "Model configuration (Triton's shape)",
                    "parameters": params,
                    "responses": {**_ok(ref("ModelConfig")), **_errors(400, *auth_errors, 404)},
                }
            },
            prefix + "/infer": {
                "post": {
                    "summary": "Inference",
                    "parameters": params,
                    "requestBody": infer_body,
                    "responses": {**infer_ok, **_errors(400, *auth_errors, 404, 413, 503)},
                }
            },
        }

    paths = {
        "/v2/health/live": {"get": {"summary": "Server liveness (no API key needed)", "security": [], "responses": _ok(ref("Live"))}},
        "/v2/health/ready": {
            "get": {
                "summary": "Server readiness (no API key needed)",
                "security": [],
                "responses": {
                    **_ok(ref("Ready")),
                    "503": {"description": "Not ready", "headers": _HEADERS, "content": {_JSON: {"schema": ref("Ready")}}},
                },
            }
        },
        "/v2": {"get": {"summary": "Server metadata", "responses": {**_ok(ref("ServerMetadata")), **_errors(*auth_errors)}}},
        **model_routes("/v2/models/{model_name}", [name_param]),
        **model_routes("/v2/models/{model_name}/versions/{model_version}", [name_param, version_param]),
        "/ping": {
            "get": {
                "summary": "SageMaker health check (no API key needed)",
                "security": [],
                "responses": {
                    **_ok(ref("Ping")),
                    "503": {"description": "Unhealthy", "headers": _HEADERS, "content": {_JSON: {"schema": ref("Ping")}}},
                },
            }
        },
        "/invocations": {
            "post": {
                "summary": "SageMaker invocation: OIP v2 JSON/binary, or one .npy array for a single-input model",
                "parameters": [{"name": "X-Amzn-SageMaker-Target-Model", "in": "header", "required": False, "schema": {"type": "string"}}],
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {"schema": ref("InferenceRequest")},
                        _NPY: {"schema": {"type": "string", "format": "binary"}},
                        _BINARY_JSON: {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    **_ok(
                        ref("InferenceResponse"),
                        extra={
                            _NPY: {"schema": {"type": "string", "format": "binary"}},
                            _BINARY_JSON: {"schema": {"type": "string", "format": "binary"}},
                        },
                    ),
                    **_errors(400, *auth_errors, 404, 406, 413, 415, 503),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": {**_ok({"type": "string"}, media="text/plain"), **_errors(*auth_errors)},
            }
        },
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
            "description": "Open Inference Protocol v2, the SageMaker container contract and OpenAI-compatible embeddings "
            "over onnxruntime. "
            "A method a path does not take is answered 405, its Allow header listing those it does.",
        },
        "paths": paths,
        "components": {"schemas": schemas()},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc
