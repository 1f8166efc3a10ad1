"""Calibration and evaluation texts of a transformers source, tokenized as the runtime tokenizes them.

Files: `.txt` (one text per line), `.jsonl` (a JSON string, or {"text": ..., "label": N} per line, the
batch core's format), or `.npz` with the text input's name as key (and `labels`). A `TextDataset` keeps
the texts and tokenizes each batch on demand with the artifact's own `TextEncoder`, so candidates are
measured on the tokens they will be served. Every batch is padded to the data set's longest text (masked
positions change no output): onnxruntime's histogram calibrators stack batches and need equal shapes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.npz_files import LABELS, read_npz
from optimizer.spec import Spec, Where
from shared.serving.text import TextEncoder


@dataclass(frozen=True, eq=False)
class TextDataset:
    texts: tuple[str, ...]
    encoder: TextEncoder
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @functools.cached_property
    def length(self) -> int:
        """Tokens in the longest text (after truncation)."""
        return next(iter(self.encoder.encode(self.texts).values())).shape[1]  # padded to the longest

    def batches(self, size: int):
        for start in range(0, len(self.texts), size):
            yield self._padded(self.encoder.encode(self.texts[start : start + size]))

    def head(self, count: int) -> TextDataset:
        return TextDataset(self.texts[:count], self.encoder, None if self.labels is None else self.labels[:count])

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """Every text at once (for steps that want whole arrays)."""
        return self.encoder.encode(self.texts)

    def _padded(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        config = self.encoder.config
        fields = dict(config.feeds)
        return {
            name: np.pad(value, ((0, 0), (0, self.length - value.shape[1])), constant_values=config.pad_id if fields[name] == "ids" else 0)
            for name, value in feeds.items()
        }


def load_texts(spec: Spec, which: str) -> TextDataset:
    from optimizer.hf_export import encoder_for

    path: Path = getattr(spec.data, which)
    where = spec.where(f"data.{which}")
    if path.suffix == ".npz":
        texts, labels = _npz(path, spec.inputs[0].name, where)
    else:
        texts, labels = _lines(path, where)
    if not texts:
        raise where.error(f"{path.name!r} holds no texts")
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(texts):
            raise where.error(f"{path.name!r}: every line needs a label once one has one ({len(labels)} labels, {len(texts)} texts)")
        if spec.task == "classification" and labels.dtype.kind not in "iu":
            raise where.error(f"{path.name!r}: labels must be integer class indices for classification")
    return TextDataset(tuple(texts), encoder_for(spec), labels)


def _lines(path: Path, where: Where) -> tuple[list[str], list | None]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error(f"{path.name!r} is not readable UTF-8 text ({exc})") from None
    if path.suffix == ".txt":
        return [line for line in lines if line.strip()], None
    texts, labels = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise where.error(f"{path.name!r} line {number} is not JSON") from None
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise where.error(f'{path.name!r} line {number} must be a JSON string or {{"text": "...", "label": N}}')
        texts.append(text)
        if isinstance(item, dict) and "label" in item:
            labels.append(item["label"])
    return texts, labels or None


def _npz(path: Path, name: str, where: Where) -> tuple[list[str], np.ndarray | None]:
    arrays = read_npz(path, where)
    if name not in arrays or arrays[name].dtype.kind not in "US":
        raise where.error(f"{path.name!r} needs the texts as a string array under {name!r}")
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in arrays[name].reshape(-1).tolist()]
    return texts, arrays.get(LABELS)
