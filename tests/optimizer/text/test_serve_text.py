"""Text in, embeddings out: BYTES through tritonclient to `slimserve serve`, and .jsonl through the batch core,
both answering what transformers + mean pooling answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from shared.artifact.loading import load_artifact
from shared.batch.core import BatchRunner, Record
from shared.boot.build import start
from shared.errors import ArtifactError, InvalidTensor
from shared.serving.local import LocalModel
from shared.serving.text import TextConfig
from tests.optimizer.text.conftest import reference_embeddings

TEXTS = ["Nobody expected Grace to be so proud about climate change.", "Hi!", "Ünïcödé text, emoji 🙂 and numbers: 1,500 or 99.9%."]


def test_manifest_lists_the_tokenizer_and_describes_the_preprocessing(tiny_bert_artifact):
    manifest = load_artifact(tiny_bert_artifact).manifest
    assert "tokenizer.json" in manifest.files
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("text", "BYTES", (-1,))]
    text = manifest.extra["text"]
    assert text["input"] == "text" and text["max_length"] == 128 and text["padding"] == "longest"
    assert text["feeds"] == {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    assert text["in_graph"] == {"pooling": "mean", "normalize": True}


def test_tritonclient_sends_bytes_and_gets_the_transformers_embeddings(tiny_bert_artifact, tiny_bert_spec, serve_artifacts):
    server = serve_artifacts(tiny_bert_artifact)
    client = httpclient.InferenceServerClient(server.url)
    assert client.get_model_metadata("tiny-bert")["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))  # binary BYTES (tritonclient's default)
    got = client.infer("tiny-bert", [text]).as_numpy("embedding")
    want = reference_embeddings(tiny_bert_spec.parent / "bert", TEXTS)
    assert got.shape == (3, 64)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(got * want, axis=1)) > 0.9999
    one = httpclient.InferInput("text", [1], "BYTES")
    one.set_data_from_numpy(np.array(TEXTS[:1], dtype=object), binary_data=False)  # JSON strings too
    assert np.allclose(client.infer("tiny-bert", [one]).as_numpy("embedding"), got[:1], atol=1e-5)
    wrong = httpclient.InferInput("text", [1], "BYTES")
    wrong.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object))
    with pytest.raises(InferenceServerException, match="element 0 is not valid UTF-8"):
        client.infer("tiny-bert", [wrong])


def test_the_batch_core_embeds_a_jsonl_of_texts(tiny_bert_artifact, tiny_bert_spec, tmp_path):
    runtime = start(tiny_bert_artifact, output=f"file://{tmp_path}")
    runner = BatchRunner(runtime.plane, runtime.settings, runtime.storage)
    body = "\n".join(json.dumps(t) if i % 2 else json.dumps({"text": t}) for i, t in enumerate(TEXTS)).encode()
    report = runner.run([Record.inline("incoming/texts.jsonl", body, id="m1"), Record.inline("incoming/one.jsonl", b'"Hi!"', id="m2")])
    assert not report.failed and report.runs == 1  # two records of texts share one run
    result = json.loads((tmp_path / "incoming" / "texts.jsonl.json").read_text())
    got = np.array(result["outputs"][0]["data"], dtype=np.float32).reshape(result["outputs"][0]["shape"])
    assert np.min(np.sum(got * reference_embeddings(tiny_bert_spec.parent / "bert", TEXTS), axis=1)) > 0.9999


def test_a_text_manifest_that_does_not_hold_together_is_refused(tiny_bert_artifact, tmp_path):
    artifact = load_artifact(tiny_bert_artifact)
    assert TextConfig.from_extra({}) is None
    for bad in ({"input": "text"}, {**artifact.manifest.extra["text"], "feeds": {"input_ids": "tokens"}}):
        with pytest.raises(ArtifactError, match="extra.text"):
            TextConfig.from_extra({"text": bad})
    from dataclasses import replace

    renamed = replace(
        artifact,
        manifest=replace(
            artifact.manifest, extra={**artifact.manifest.extra, "text": {**artifact.manifest.extra["text"], "input": "words"}}
        ),
    )
    with pytest.raises(ArtifactError, match="extra.text.input 'words' is not a BYTES input"):
        LocalModel.load(renamed, str(tmp_path / "cache"))
    model = LocalModel.load(artifact, str(tmp_path / "cache"))
    with pytest.raises(InvalidTensor, match="element 1 is not text"):
        model.predict({"text": np.array([b"ok", 3], dtype=object)})
