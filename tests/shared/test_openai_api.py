"""The OpenAI-compatible routes in process (werkzeug's test client), on the word-level text model of
tests/bundle/builds.py served as a one-dimensional embedding ("hello world" -> ids [2, 3] -> [2.5]), beside a
classifier that must not be offered. OpenAI's own client, the tiny BERT and the adapters:
tests/optimizer/text/test_serve_openai.py, tests/functions/*, tests/endpoint/test_openai_remote.py."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
from werkzeug.test import Client

from shared.boot.build import app_from_folders
from tests.bundle.builds import write_text_artifact
from tests.helpers import write_tiny_artifact

EMBEDDINGS = "/v1/embeddings"
TEXTS = ["hello world", "world", "hello hello world unknown"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    return write_text_artifact(root / "words", task="embedding"), write_tiny_artifact(root / "tiny")


@pytest.fixture(scope="module")
def client(folders):
    return Client(app_from_folders([str(f) for f in folders]))


def embed(client, **body):
    return client.post(EMBEDDINGS, json={"model": "words", **body})


def oip_answer(client, texts: list[str]) -> np.ndarray:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    response = client.post("/v2/models/words/infer", json=body)
    assert response.status_code == 200, response.json
    (output,) = response.json["outputs"]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def openai_error(response, status: int) -> str:
    assert response.status_code == status and response.mimetype == "application/json", (response.status_code, response.get_data()[:300])
    error = response.json["error"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error") and error["param"] is None
    assert isinstance(error["code"], str) and error["code"]
    return error["message"]


def test_float_and_base64_embeddings_equal_the_oip_answer(client):
    want = oip_answer(client, TEXTS)
    # the tokenizer ran: padded to the longest text ([PAD] = 0), [UNK] = 1
    np.testing.assert_array_equal(want, [[(2 + 3) / 4], [3 / 4], [(2 + 2 + 3 + 1) / 4]])

    floats = embed(client, input=TEXTS)
    assert floats.status_code == 200 and floats.mimetype == "application/json"
    doc = floats.json
    assert doc["object"] == "list" and doc["model"] == "words"
    assert [(d["object"], d["index"]) for d in doc["data"]] == [("embedding", 0), ("embedding", 1), ("embedding", 2)]
    np.testing.assert_array_equal(np.array([d["embedding"] for d in doc["data"]], dtype=np.float32), want)

    packed = embed(client, input=TEXTS, encoding_format="base64").json
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]])
    np.testing.assert_array_equal(decoded, want)
    assert packed["usage"] == doc["usage"]

    one = embed(client, input="hello world", encoding_format=None).json  # a bare string: one embedding; null: float
    assert one["data"] == [{"object": "embedding", "index": 0, "embedding": [2.5]}]


def test_usage_counts_the_tokens_fed_after_truncation(client):
    long = " ".join(["hello"] * 40)  # the manifest's max_length is 16
    doc = embed(client, input=["hello world", long, "world"]).json
    assert doc["usage"] == {"prompt_tokens": 2 + 16 + 1, "total_tokens": 2 + 16 + 1}
    assert doc["data"][1]["embedding"] == [2.0]  # 16 x "hello" (id 2): truncated, then fed


def test_dimensions_are_refused_unless_they_are_the_models_own(client):
    assert embed(client, input="hello", dimensions=1).status_code == 200
    message = openai_error(embed(client, input="hello", dimensions=8), 400)
    assert (
        message
        == "'dimensions' is 8, but model 'words' gives 1-dimensional embeddings and cannot shorten them; leave 'dimensions' out or send 1"
    )
    for bad in (True, 0, -3, 1.5, "1"):
        assert "'dimensions' must be a positive integer" in openai_error(embed(client, input="hello", dimensions=bad), 400)


def test_models_lists_the_text_embedding_models_only(client):
    listed = client.get("/v1/models").json
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["words"]
    (card,) = listed["data"]
    assert card["object"] == "model" and card["owned_by"] == "slimserve" and isinstance(card["created"], int)
    assert client.get("/v1/models/words").json == card
    assert client.get("/v1/models/words/1").json["id"] == "words/1"
    assert embed(client, model="words/1", input="hello").json["model"] == "words/1"
    assert "model 'tiny' (task: classification) is not a text embedding model; the embedding models served are words" == openai_error(
        client.get("/v1/models/tiny"), 404
    )
    assert "unknown model 'text-embedding-3-small'; the embedding models served are words" == openai_error(
        embed(client, model="text-embedding-3-small", input="hello"), 404
    )
    assert "has no version '7'" in openai_error(embed(client, model="words/7", input="hello"), 404)
    assert "is not a text embedding model" in openai_error(client.post(EMBEDDINGS, json={"model": "tiny", "input": "x"}), 404)


def test_every_v1_path_errs_in_openais_shape_and_v2_keeps_its_own(client):
    wrong_method = client.get(EMBEDDINGS)
    assert openai_error(wrong_method, 405) == "method GET is not allowed on /v1/embeddings" and wrong_method.headers["Allow"] == "POST"
    assert openai_error(client.post("/v1/chat/completions", json={}), 404) == "no route /v1/chat/completions"
    assert "not valid JSON" in openai_error(client.post(EMBEDDINGS, data=b"{", content_type="application/json"), 400)
    assert "must be a JSON object" in openai_error(client.post(EMBEDDINGS, json=["hello"]), 400)
    assert client.get("/v2/models/nope").json == {"error": "unknown model 'nope'; this server serves tiny, words"}


def test_the_api_key_guards_v1_as_every_route(folders):
    client = Client(app_from_folders([str(folders[0])], api_key="k-123"))
    refused = client.get("/v1/models")
    assert "needs an API key" in openai_error(refused, 401) and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "not valid" in openai_error(
        client.post(EMBEDDINGS, json={"model": "words", "input": "hello"}, headers={"Authorization": "Bearer k-999"}), 401
    )
    answer = client.post(EMBEDDINGS, json={"model": "words", "input": "hello"}, headers={"Authorization": "Bearer k-123"})
    assert answer.status_code == 200 and answer.json["data"][0]["embedding"] == [2.0]


def test_metrics_and_the_access_log_name_the_model_from_the_body(folders):
    client = Client(app_from_folders([str(folders[0])]))
    embed(client, input="hello")
    embed(client, input="hello", dimensions=3)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'slimserve_requests_total{model="words",version="1",code="200"} 1' in text
    assert 'slimserve_requests_total{model="words",version="1",code="400"} 1' in text


def test_non_finite_embeddings_stay_json(client):
    """JSON has no NaN: as on /v2, a non-finite element travels as "NaN"/"Infinity"; base64 carries it as is."""
    from shared.http.openai_api import float_rows  # the encoder itself: no model here answers NaN

    rows = float_rows(np.array([[np.nan, np.inf], [-np.inf, 0.1]], dtype=np.float32))
    assert rows == ['["NaN","Infinity"]', '["-Infinity",0.1]']


# --- what a stranger may send: a clear 4xx in bounded time, and the next request still served -------------

ATTACKS = {
    "100,000 strings": ({"input": ["hello"] * 100_000}, 413, "'input' has 100,000 strings, over SLIMSERVE_MAX_REQUEST_BATCH=1,024"),
    "a 6 MB string": ({"input": "a" * 6_000_000}, 413, "'input' is 6,000,000 bytes of UTF-8, over SLIMSERVE_MAX_STRING_BYTES=65,536"),
    "a 7 MB body": ({"input": ["hello " * 1000] * 1200}, 413, "over the limit of 6291456 (SLIMSERVE_MAX_BODY_BYTES)"),
    "a list in a list": ({"input": [["hello", "world"]]}, 400, "'input[0]' is an array: token ids are not accepted here"),
    "token ids": ({"input": [101, 7592, 102]}, 400, "'input[0]' is a number (101): token ids are not accepted here"),
    "1,000 nested lists": ({"input": "NESTED"}, 400, "nested too deeply: 1,001 levels, over SLIMSERVE_MAX_JSON_DEPTH=32"),
    "an encoding_format of 5 MB": (
        {"input": "hello", "encoding_format": "b" * 5_000_000},
        400,
        "'encoding_format' must be 'float' or 'base64', not 'bbbb",
    ),
    "an encoding_format list": (
        {"input": "hello", "encoding_format": ["base64"] * 100_000},
        400,
        "'encoding_format' must be 'float' or 'base64', not an array",
    ),
    "a lone surrogate": ({"input": ["hello", "\ud800"]}, 400, "'input[1]' is not valid Unicode: it holds an unpaired surrogate"),
    "an empty string": ({"input": ["hello", ""]}, 400, "'input[1]' is an empty string"),
    "an empty list": ({"input": []}, 400, "'input' is an empty list"),
    "no input": ({}, 400, "'input' is required"),
    "an object as input": ({"input": {"text": "hello"}}, 400, "'input' must be a string or a list of strings, not an object"),
    "a number as model": (
        {"model": 7, "input": "hello"},
        400,
        "'model' must name a served model (GET /v1/models lists them), not a number (7)",
    ),
    "a 5,000-digit dimensions": ({"input": "hello", "dimensions": "DIGITS"}, 400, "holds a number JSON cannot carry here"),
    "a model name of 1 MB": ({"model": "m" * 1_000_000, "input": "hello"}, 404, "unknown model 'mmmm"),
}


@pytest.mark.parametrize("body, status, message", ATTACKS.values(), ids=ATTACKS.keys())
def test_attacks_get_a_clear_4xx_in_bounded_time(client, body, status, message):
    raw = json.dumps({"model": "words", **body}).replace('"DIGITS"', "1" * 5000).replace('"NESTED"', "[" * 1000 + "]" * 1000).encode()
    started = time.perf_counter()
    response = client.post(EMBEDDINGS, data=raw, content_type="application/json")
    seconds = time.perf_counter() - started
    got = openai_error(response, status)
    assert message in got and len(got) < 300, got  # the value is named, never echoed whole
    assert seconds < 2.0, seconds  # generous: behaviour, not speed
    assert embed(client, input="hello world").json["data"][0]["embedding"] == [2.5]


def test_a_full_batch_of_long_strings_is_answered(client):
    texts = [f"hello world {i}" for i in range(1024)]  # SLIMSERVE_MAX_REQUEST_BATCH exactly
    doc = embed(client, input=texts, encoding_format="base64").json
    assert len(doc["data"]) == 1024 and doc["usage"]["prompt_tokens"] == 1024 * 3


def test_a_compressed_body_is_refused(client):
    response = client.post(EMBEDDINGS, data=b"\x1f\x8b", content_type="application/json", headers={"Content-Encoding": "gzip"})
    assert "Content-Encoding is not supported" in openai_error(response, 400)
