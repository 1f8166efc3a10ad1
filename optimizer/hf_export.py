"""A Hugging Face model folder -> an fp32 ONNX graph on token tensors, and the tokenizer the runtime runs.

The graph ends where the client's answer ends: for `task: embedding`, pooling (mean over the attention
mask, or the first token) and L2 normalization happen inside it, so the runtime only tokenizes and runs
one session; classification and regression return the head's logits.

Export choices, measured with torch 2.13 / transformers 5.x / onnxruntime 1.32 on all-MiniLM-L6-v2:
- the TorchScript exporter (`dynamo=False`) with dynamic batch and sequence axes: its graph is the plain
  MatMul/Add/Softmax form that onnxruntime's quantizers and fusions know;
- eager attention and a 4-D additive mask built here: transformers 5's mask builder traces into
  Range/Expand/Where chains, and slicing the position-id buffer into `Min(512, s)` dims, both of which
  onnxruntime's symbolic shape inference (`quant_pre_process`) gives up on;
- the norm as sqrt(sum(x * x)), not `ReduceL2`, which symbolic shape inference does not know at opset 18.
The exported graph is checked against the torch module on texts of different lengths (so padding is
exercised) before anything else runs on it. Imported only for transformers sources (torch is heavy).
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from optimizer.export_common import OPSET, error_line, quiet_exporters, scratch_export
from optimizer.spec import Spec, Where
from shared.serving.text import TextConfig, TextEncoder

TOKENIZER = "tokenizer.json"
# Model types whose positions are 0..n-1: passing them explicitly keeps the graph's shapes symbolic.
# RoBERTa-style models count positions from the padding index; they keep their own position ids.
_ARANGE_POSITIONS = {"bert", "albert", "electra", "mobilebert", "megatron-bert"}
_PROBE = ("slimserve", "A longer sentence, so that the first one is padded: does the mask hold?")
_EXPORT_AGREEMENT = 1e-4  # largest |onnx - torch| / max|torch| on the probe texts


def text_preprocessing(spec: Spec) -> tuple[TextConfig, str]:
    """The manifest's `extra.text` and the tokenizer.json to ship, derived from the folder and the spec."""
    return _preprocessing(spec.source.path, spec.source.text.max_length, spec.inputs[0].name, spec.file)


def encoder_for(spec: Spec) -> TextEncoder:
    return TextEncoder(*text_preprocessing(spec))


@functools.cache
def _preprocessing(folder: Path, max_length: int | None, input_name: str, spec_file: Path) -> tuple[TextConfig, str]:
    from tokenizers import Tokenizer

    where = _where(spec_file)
    config = _json(folder / "config.json", where)
    try:
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
    except Exception as exc:  # tokenizers raises its own Exception subclass with a serde message
        raise where.error(f"{TOKENIZER} in {folder} cannot be read by the tokenizers library: {error_line(exc)}") from None
    positions = int(config.get("max_position_embeddings") or 0) or None
    length = max_length or _default_length(folder, positions)
    if positions and length > positions:
        raise _where(spec_file, "source.max_length").error(f"{length} exceeds the model's {positions} positions")
    padding = tokenizer.padding or {}
    pad_id = int(padding.get("pad_id", config.get("pad_token_id") or 0))
    pad_token = padding.get("pad_token") or tokenizer.id_to_token(pad_id) or "[PAD]"
    feeds = [("input_ids", "ids"), ("attention_mask", "attention_mask")]
    if int(config.get("type_vocab_size") or 0) > 0:  # BERT-style segment embeddings; DistilBERT has none
        feeds.append(("token_type_ids", "type_ids"))
    text = TextConfig(input=input_name, tokenizer=TOKENIZER, max_length=length, feeds=tuple(feeds), pad_id=pad_id, pad_token=pad_token)
    # the shipped file says the same as the manifest, for anyone who loads it without slimserve
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return text, tokenizer.to_str()


def _default_length(folder: Path, positions: int | None) -> int:
    """sentence-transformers' own setting when the folder has one (all-MiniLM-L6-v2: 256 of 512)."""
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return int(json.loads(sbert.read_text(encoding="utf-8"))["max_seq_length"])
    return positions or 512


def export_transformers(spec: Spec, dst: Path) -> Path:
    """Write the fp32 graph to `dst` and the tokenizer beside it (`dst.parent / tokenizer.json`)."""
    text, tokenizer_json = text_preprocessing(spec)
    if len(spec.outputs) != 1 or spec.outputs[0].dtype != "float32":
        raise spec.where("outputs").error("a transformers source has one float32 output (embedding or logits)")
    model = _load(spec)
    names = [name for name, _ in text.feeds]
    graph = _Graph(model, names, spec.task, spec.source.text, model.config.model_type in _ARANGE_POSITIONS).eval()
    probe = TextEncoder(text, tokenizer_json).encode(list(_PROBE))
    args = tuple(torch.from_numpy(probe[n]) for n in names)
    output = spec.outputs[0].name
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch"}}
    with quiet_exporters(), torch.no_grad(), scratch_export(dst) as scratch:
        expected = graph(*args).numpy()
        try:
            torch.onnx.export(
                graph, args, str(scratch), input_names=names, output_names=[output], dynamic_axes=axes, opset_version=OPSET, dynamo=False
            )
        except Exception as exc:
            raise spec.where("source.transformers").error(f"could not be exported to ONNX: {error_line(exc)}") from None
    del graph, model  # the check's session needs the memory the torch weights held (4 GB at a billion parameters)
    _check(spec, dst, probe, expected)
    (dst.parent / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
    return dst


def _load(spec: Spec):
    import transformers
    from transformers import AutoModel, AutoModelForSequenceClassification

    head = AutoModel if spec.task == "embedding" else AutoModelForSequenceClassification
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        return head.from_pretrained(str(spec.source.path), attn_implementation="eager").eval()
    except Exception as exc:  # OSError for missing weights, ValueError for unknown architectures...
        raise spec.where("source.transformers").error(f"transformers cannot load {spec.source.path}: {error_line(exc)}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


class _Graph(torch.nn.Module):
    """The model plus what turns its output into the client's answer (pooling, normalization)."""

    def __init__(self, model, names: list[str], task: str, text, explicit_positions: bool):
        super().__init__()
        self.model, self.names, self.task = model, names, task
        self.pooling, self.normalize, self.explicit_positions = text.pooling, text.normalize, explicit_positions

    def forward(self, *tensors):
        feeds = dict(zip(self.names, tensors))
        mask = feeds["attention_mask"]
        kwargs = dict(feeds)
        kwargs["attention_mask"] = (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        if self.explicit_positions:
            kwargs["position_ids"] = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
        out = self.model(**kwargs)
        if self.task != "embedding":
            return out.logits
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = pooled / (pooled * pooled).sum(1, keepdim=True).sqrt().clamp(min=1e-12)
        return pooled


def _check(spec: Spec, path: Path, probe: dict[str, np.ndarray], expected: np.ndarray) -> None:
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, probe)[0]
    want = spec.outputs[0].shape
    if got.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want, got.shape)):
        raise (spec.where("outputs")[0] / "shape").error(f"{list(want)} does not match what the model returns: {list(got.shape)}")
    error = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-12))
    if error > _EXPORT_AGREEMENT:
        raise spec.where("source.transformers").error(f"exports to ONNX but disagrees with torch (relative error {error:.2g})")


def _json(path: Path, where: Where) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise where.error(f"{path.name} in {path.parent} is not readable JSON ({exc})") from None


def _where(spec_file: Path, key: str = "source.transformers") -> Where:
    return Where(spec_file, key)
