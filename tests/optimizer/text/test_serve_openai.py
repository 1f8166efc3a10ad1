"""OpenAI's own Python client (`openai`) on the tiny BERT: against `slimserve serve`, and through the Lambda
handler (an httpx transport that turns each request into an API Gateway HTTP API event, as serverless.yml's
`/v1/{proxy+}` route delivers it, and calls `functions.aws.handler.http`). Its embeddings must be the OIP v2
answer for the same texts (tritonclient, `/v2/models/tiny-bert/infer`) and transformers' own."""

from __future__ import annotations

import base64
import json

import httpx2
import numpy as np
import openai
import pytest
import tritonclient.http as httpclient
from tokenizers import Tokenizer

from tests.eventlib import load_event
from tests.functions.aws.conftest import load_handler  # noqa: F401  (the fixture, re-used as is)
from tests.optimizer.text.conftest import reference_embeddings

KEY = "openai-test-key-0123"
TEXTS = [
    "Nobody expected Grace to be so proud about climate change.",
    "Hi!",
    "Ünïcödé text, emoji 🙂 and numbers: 1,500 or 99.9%.",
    " ".join(["a long text, longer than the model's max_length of 128 tokens"] * 20),
]


def oip_embeddings(url: str, texts: list[str]) -> np.ndarray:
    client = httpclient.InferenceServerClient(url)
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return client.infer("tiny-bert", [text], headers={"x-api-key": KEY}).as_numpy("embedding")


def tokens_fed(artifact, texts: list[str]) -> int:
    """What the model is fed, counted apart from the server: the artifact's tokenizer.json, truncated to 128."""
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    tokenizer.no_padding()  # the saved file pads to a fixed length; the server pads to the longest text, uncounted
    tokenizer.enable_truncation(128)
    return sum(len(e.ids) for e in tokenizer.encode_batch(texts))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_openai_client_against_slimserve_serve(tiny_bert_artifact, tiny_bert_spec, serve_artifacts):
    server = serve_artifacts(tiny_bert_artifact, env={"SLIMSERVE_API_KEY": KEY})
    client = openai.OpenAI(base_url=f"http://{server.url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-bert"]
    assert client.models.retrieve("tiny-bert").owned_by == "slimserve"

    packed = client.embeddings.create(model="tiny-bert", input=TEXTS)  # the client asks for base64 and decodes it
    floats = client.embeddings.create(model="tiny-bert", input=TEXTS, encoding_format="float", dimensions=64)
    got = np.array([d.embedding for d in packed.data], dtype=np.float32)
    assert got.shape == (4, 64) and [d.index for d in packed.data] == [0, 1, 2, 3] and packed.model == "tiny-bert"
    np.testing.assert_array_equal(
        np.array([d.embedding for d in floats.data], dtype=np.float32), got
    )  # shortest float32 decimals round-trip

    oip = oip_embeddings(server.url, TEXTS)
    assert np.min(cosines(got, oip)) >= 0.9999
    np.testing.assert_allclose(got, oip, atol=1e-6)  # the same data plane, the same run
    assert np.min(cosines(got[:3], reference_embeddings(tiny_bert_spec.parent / "bert", TEXTS[:3]))) >= 0.9999  # it does not truncate

    assert packed.usage.prompt_tokens == packed.usage.total_tokens == tokens_fed(tiny_bert_artifact, TEXTS)
    assert tokens_fed(tiny_bert_artifact, TEXTS[3:]) == 128  # the long text counts what was fed, not what was sent
    one = client.embeddings.create(model="tiny-bert", input="Hi!")
    np.testing.assert_allclose(one.data[0].embedding, got[1], atol=1e-5)

    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="tiny-bert", input=TEXTS, dimensions=32)
    assert refused.value.code == "bad_request" and "gives 64-dimensional embeddings" in refused.value.message
    with pytest.raises(openai.NotFoundError, match="the embedding models served are tiny-bert"):
        client.embeddings.create(model="text-embedding-3-small", input="Hi!")
    with pytest.raises(openai.AuthenticationError, match="the API key is not valid"):
        openai.OpenAI(base_url=f"http://{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def lambda_transport(handler) -> httpx2.MockTransport:
    """Each request as API Gateway HTTP API (payload 2.0) hands it to Lambda; the function's answer as the response."""

    def send(request: httpx2.Request) -> httpx2.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        body = request.content.decode("utf-8") if request.content else None  # JSON travels as text, not base64
        event = load_event(
            "apigw-v2-post-json", method=request.method, path=request.url.path, query=request.url.query.decode(), headers=headers, body=body
        )
        answer = handler.http(event, None)
        content = base64.b64decode(answer["body"]) if answer.get("isBase64Encoded") else answer.get("body", "").encode()
        return httpx2.Response(answer["statusCode"], headers=answer["headers"], content=content)

    return httpx2.MockTransport(send)


def test_the_openai_client_through_the_lambda_handler(tiny_bert_artifact, load_handler):  # noqa: F811
    handler = load_handler(SLIMSERVE_ARTIFACT=str(tiny_bert_artifact))
    http = httpx2.Client(transport=lambda_transport(handler), base_url="https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com")
    client = openai.OpenAI(
        base_url="https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/v1", api_key="a-jwt", http_client=http, max_retries=0
    )

    assert [m.id for m in client.models.list()] == ["tiny-bert"]
    answer = client.embeddings.create(model="tiny-bert", input=TEXTS)
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)

    oip = handler.http(
        load_event(
            "apigw-v2-post-json",
            path="/v2/models/tiny-bert/infer",
            body={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [4], "data": TEXTS}]},
        ),
        None,
    )
    (output,) = json.loads(oip["body"])["outputs"]
    want = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    assert np.min(cosines(got, want)) >= 0.9999
    assert answer.usage.prompt_tokens == tokens_fed(tiny_bert_artifact, TEXTS)

    with pytest.raises(openai.BadRequestError, match="token ids are not accepted here"):
        client.embeddings.create(model="tiny-bert", input=[[101, 2023, 102]])
