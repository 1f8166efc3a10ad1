"""The schemas of `GET /v2/openapi.json` (shared/http/openapi.py): the Open Inference Protocol v2's tensors,
requests and answers (after KServe's REST spec), the one error shape, and the OpenAI-compatible /v1 bodies."""

from __future__ import annotations

from shared.protocol.datatypes import OIP_TO_NUMPY


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def schemas() -> dict:
    datatype = {"type": "string", "enum": list(OIP_TO_NUMPY)}
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": datatype, "shape": {"type": "array", "items": {"type": "integer"}}},
    }
    data = {
        "description": "Row-major tensor data, flat or nested; strings for BYTES",
        "type": "array",
        "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "array"}]},
    }
    parameters = {"type": "object", "additionalProperties": True}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "Ping": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": tensor_meta,
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": ref("TensorMetadata")},
                "outputs": {"type": "array", "items": ref("TensorMetadata")},
                "parameters": parameters,
            },
        },
        "ModelConfig": {
            "type": "object",
            "required": ["name", "platform", "max_batch_size", "input", "output"],
            "properties": {
                "name": {"type": "string"},
                "platform": {"type": "string"},
                "max_batch_size": {"type": "integer"},
                "input": {"type": "array", "items": {"type": "object"}},
                "output": {"type": "array", "items": {"type": "object"}},
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "datatype": datatype,
                "shape": shape,
                "data": data,
                "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
                "inputs": {"type": "array", "minItems": 1, "items": ref("RequestInput")},
                "outputs": {"type": "array", "items": ref("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {"name": {"type": "string"}, "datatype": datatype, "shape": shape, "data": data, "parameters": parameters},
        },
        **openai_schemas(),
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": parameters,
                "outputs": {"type": "array", "items": ref("ResponseOutput")},
            },
        },
    }


def openai_schemas() -> dict:
    vector = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}}
    card = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    }
    return {
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": "string", "nullable": True},
                        "code": {"type": "string", "nullable": True},
                    },
                }
            },
        },
        "EmbeddingRequest": {
            "type": "object",
            "required": ["model", "input"],
            "properties": {
                "model": {"type": "string", "description": "NAME or NAME/VERSION of a served text embedding model"},
                "input": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    ]
                },
                "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
                "dimensions": {"type": "integer", "minimum": 1, "description": "only the model's own width"},
                "user": {"type": "string", "description": "ignored"},
            },
        },
        "Embedding": {
            "type": "object",
            "required": ["object", "index", "embedding"],
            "properties": {
                "object": {"type": "string", "enum": ["embedding"]},
                "index": {"type": "integer"},
                "embedding": {"oneOf": [vector, {"type": "string", "description": "base64 of little-endian float32"}]},
            },
        },
        "EmbeddingList": {
            "type": "object",
            "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {"type": "array", "items": ref("Embedding")},
                "model": {"type": "string"},
                "parameters": {"type": "object", "additionalProperties": True},
                "usage": {
                    "type": "object",
                    "required": ["prompt_tokens", "total_tokens"],
                    "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
                },
            },
        },
        "OpenAIModel": card,
        "OpenAIModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": ref("OpenAIModel")}},
        },
    }
