"""A tiny BERT project (model folder + WordPiece tokenizer + texts + model.yaml), generated offline.

The model is random (seeded), 2 layers of width 64: quantization error shows the same way as on
MiniLM, in seconds instead of minutes. The sentences are MiniLM's example generator's.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def sentences():
    spec = importlib.util.spec_from_file_location("minilm_sentences", ROOT / "examples" / "minilm" / "sentences.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_bert(folder: Path, *, hidden: int = 64, seed: int = 0, classes: int | None = None, shard: str | None = None) -> Path:
    """A BertModel (or a sequence classifier with `classes` labels) + tokenizer.json in `folder`; `shard`
    (e.g. "100KB") saves the weights as sharded safetensors with an index, as large models come."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    calibration, evaluation = sentences().split(64, 64)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(calibration + evaluation, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=special))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    model = (
        BertModel(config) if classes is None else BertForSequenceClassification(config.__class__(**config.to_dict(), num_labels=classes))
    )
    model.eval().save_pretrained(str(folder), **({"max_shard_size": shard} if shard else {}))
    return folder


def tiny_project(tmp: Path, *, task: str = "embedding", tolerance: float = 0.01, shard: str | None = None, **source) -> Path:
    """model.yaml + texts + the tiny BERT in `tmp`; `source` adds keys under `source:`."""
    calibration, evaluation = sentences().split(64, 64)
    tiny_bert(tmp / "bert", classes=3 if task == "classification" else None, shard=shard)
    (tmp / "calibration.txt").write_text("\n".join(calibration) + "\n", encoding="utf-8")
    (tmp / "evaluation.txt").write_text("\n".join(evaluation) + "\n", encoding="utf-8")
    width = 3 if task == "classification" else 64
    spec = {
        "name": "tiny-bert",
        "version": "1",
        "source": {"transformers": "bert", **source},
        "inputs": [{"name": "text", "dtype": "string", "shape": [-1]}],
        "outputs": [{"name": "embedding" if task == "embedding" else "logits", "dtype": "float32", "shape": [-1, width]}],
        "task": task,
        "data": {"calibration": "calibration.txt", "evaluation": "evaluation.txt"},
        "tolerance": tolerance,
    }
    path = tmp / "model.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bert_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("tiny-bert"))


def reference_embeddings(folder: Path, texts: list[str]):
    """What sentence-transformers computes: transformers' own model, mean pooling over the mask, L2 norm."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    model = AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=1).numpy()


@pytest.fixture(scope="session")
def tiny_bert_artifact(tiny_bert_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT optimized with fp32 only: the served answer must be transformers' own, exactly."""
    from optimizer.evaluate import TimingConfig
    from optimizer.pipeline import optimize

    out = tmp_path_factory.mktemp("tiny-bert-artifact") / "tiny-bert" / "1"
    return optimize(tiny_bert_spec, out=out, quiet=True, candidates=("fp32",), timing=TimingConfig(warmup=1, runs=3, max_seconds=0.2))
