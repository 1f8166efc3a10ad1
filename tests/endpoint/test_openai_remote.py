"""/v1/embeddings on a function whose text embedding model is placed on the endpoint: the texts go through
boto3 to a real local endpoint server, the tokens are counted by the artifact's tokenizer on the function's
side, and a failing endpoint answers degraded (fallback) or 503 + Retry-After, in OpenAI's error shape."""

from __future__ import annotations

from werkzeug.test import Client

from tests.bundle.builds import write_text_artifact
from tests.endpoint.conftest import function_app

BODY = {"model": "words", "input": ["hello world", "world"]}
PATIENT = {"endpoint_read_timeout_s": 10.0, "endpoint_deadline_s": 20.0}  # a first text run on a busy machine takes a while


def test_embeddings_from_the_endpoint_count_tokens_here(tmp_path, endpoint):
    folder = write_text_artifact(tmp_path / "words", task="embedding")
    server = endpoint(folder)
    app = function_app(folder, server.url, placement="endpoint", fallback="off", **PATIENT)
    model = app.plane.repository.get("words")
    assert model.manifest.placement == "endpoint" and model.fallback is None and model.text is not None
    client = Client(app)

    doc = client.post("/v1/embeddings", json=BODY).json
    assert [d["embedding"] for d in doc["data"]] == [[2.5], [1.5]]  # [2, 3] and [3, PAD]: the endpoint ran them
    assert doc["usage"] == {"prompt_tokens": 3, "total_tokens": 3} and "parameters" not in doc
    assert server.faults.seen == 1  # one call to the endpoint

    server.faults.mode = "5xx"
    failed = client.post("/v1/embeddings", json=BODY)
    assert failed.status_code == 503 and failed.headers["Retry-After"].isdigit()
    error = failed.json["error"]
    assert (error["type"], error["code"]) == ("server_error", "service_unavailable") and "no local variant" in error["message"]


def test_a_degraded_answer_says_so(tmp_path, endpoint):
    folder = write_text_artifact(tmp_path / "words", task="embedding")
    server = endpoint(folder)
    app = function_app(folder, server.url, placement="endpoint", **PATIENT)  # forced: its own model is the fallback
    server.faults.mode = "5xx"
    doc = Client(app).post("/v1/embeddings", json=BODY).json
    assert [d["embedding"] for d in doc["data"]] == [[2.5], [1.5]]
    assert doc["parameters"] == {"degraded": True, "served_by": "function"} and doc["usage"]["total_tokens"] == 3
