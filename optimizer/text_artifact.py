"""What a text model adds to its artifact: `tokenizer.json` (listed in `files`) and `extra.text`."""

from __future__ import annotations

from pathlib import Path

from optimizer.spec import Spec
from shared.serving.text import TEXT


def text_extra(spec: Spec) -> dict:
    """`{"text": {...}}` for a transformers source (see shared/serving/text.py), else nothing."""
    if spec.source.text is None:
        return {}
    from optimizer.hf_export import text_preprocessing

    config, _ = text_preprocessing(spec)
    source = spec.source.text
    graph = {"pooling": source.pooling, "normalize": source.normalize} if spec.task == "embedding" else {"head": "logits"}
    return {TEXT: {**config.to_dict(), "source": source.given, "in_graph": graph}}


def ship_text_files(spec: Spec, folder: Path) -> list[str]:
    """Write the tokenizer into the artifact folder; returns the names written (for `files`)."""
    if spec.source.text is None:
        return []
    from optimizer.hf_export import text_preprocessing

    config, tokenizer_json = text_preprocessing(spec)
    (folder / config.tokenizer).write_text(tokenizer_json, encoding="utf-8")
    return [config.tokenizer]
