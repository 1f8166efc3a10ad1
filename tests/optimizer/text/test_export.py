"""A Hugging Face folder exported to ONNX: token-tensor graph, pooling and normalization inside, tokenizer beside."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optimizer.candidates import QuantPreProcess
from optimizer.data import load_dataset
from optimizer.export import export_fp32
from optimizer.spec import load_spec
from optimizer.steps import StepContext
from shared.serving.text import TextConfig, TextEncoder
from tests.optimizer.text.conftest import reference_embeddings, tiny_project

TEXTS = ["Hello world.", "A much longer sentence about the weather in the mountains, which was cold and bright.", "x"]


@pytest.fixture(scope="module")
def exported(tiny_bert_spec, tmp_path_factory):
    spec = load_spec(tiny_bert_spec)
    return spec, export_fp32(spec, tmp_path_factory.mktemp("export") / "reference.onnx")


def _embed(path, spec, texts):
    from optimizer.hf_export import text_preprocessing

    feeds = TextEncoder(*text_preprocessing(spec)).encode(texts)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_graph_takes_tokens_and_returns_what_transformers_mean_pooling_gives(exported):
    spec, path = exported
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["embedding"]
    got = _embed(path, spec, TEXTS)  # one batch: the short texts are padded against the long one
    want = reference_embeddings(spec.source.path, TEXTS)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(got * want, axis=1)) > 0.99999
    alone = _embed(path, spec, TEXTS[:1])  # unpadded: padding changes nothing
    assert np.allclose(alone[0], got[0], atol=1e-5)


def test_tokenizer_is_written_beside_with_the_manifest_settings(exported):
    spec, path = exported
    shipped = json.loads((path.parent / "tokenizer.json").read_text())
    assert shipped["truncation"]["max_length"] == 128 and shipped["padding"]["strategy"] == "BatchLongest"


def test_symbolic_shape_inference_follows_the_graph(exported, tmp_path):
    """quant_pre_process gives up ("Incomplete symbolic shape inference") on transformers 5's own mask code."""
    spec, path = exported
    QuantPreProcess().apply(path, tmp_path / "pre.onnx", StepContext(spec, None, tmp_path))
    assert np.allclose(_embed(tmp_path / "pre.onnx", spec, TEXTS), _embed(path, spec, TEXTS), atol=1e-5)


def test_text_data_is_tokenized_like_the_runtime(exported):
    spec, _ = exported
    data = load_dataset(spec, "evaluation")
    first = next(data.batches(8))
    assert len(data) == 64 and set(first) == {"input_ids", "attention_mask", "token_type_ids"}
    assert first["input_ids"].shape[1] == data.length  # padded to the longest text of the set
    single = next(data.head(1).batches(1))
    assert single["attention_mask"].all()  # one text: no padding at all


def test_classification_exports_the_logits(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    spec = load_spec(tiny_project(tmp_path, task="classification"))
    path = export_fp32(spec, tmp_path / "reference.onnx")
    got = _embed(path, spec, TEXTS)
    config = TextConfig.from_extra(
        {
            "text": {
                "input": "text",
                "tokenizer": "t",
                "max_length": 128,
                "feeds": {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"},
            }
        }
    )
    feeds = TextEncoder(config, (spec.source.path / "tokenizer.json").read_text()).encode(TEXTS)
    model = AutoModelForSequenceClassification.from_pretrained(str(spec.source.path)).eval()
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    assert got.shape == (3, 3) and np.allclose(got, want, atol=1e-4)
