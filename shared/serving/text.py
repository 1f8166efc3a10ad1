"""Text models: texts (a BYTES input) -> token tensors for the session, by the `tokenizers` library.

The optimizer exports a Hugging Face model whose graph takes token tensors and writes the tokenizer beside
it; the manifest's `extra.text` says how to turn texts into those tensors:

    "text": {"input": "text",                 # the BYTES input clients send, one text per element
             "tokenizer": "tokenizer.json",   # listed in `files`, sha256-checked like the model
             "max_length": 256, "padding": "longest", "truncation": "longest_first",
             "pad_id": 0, "pad_token": "[PAD]",
             "feeds": {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}}

`tokenizers` (Rust, ~7 MB) is imported only when a text model loads, so image/tabular functions never pay
for it; transformers and torch never enter the runtime. The optimizer encodes its calibration and
evaluation texts with this same class, so what was measured is what is served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import ArtifactError, InvalidTensor

TEXT = "text"  # the key under the manifest's `extra`
FIELDS = ("ids", "attention_mask", "type_ids")  # what a `tokenizers` Encoding offers, by attribute name


@dataclass(frozen=True)
class TextConfig:
    input: str
    tokenizer: str
    max_length: int
    feeds: tuple[tuple[str, str], ...]  # (graph input, Encoding field)
    pad_id: int = 0
    pad_token: str = "[PAD]"
    padding: str = "longest"  # to the longest text of the request: no compute on padding beyond it
    truncation: str = "longest_first"

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "tokenizer": self.tokenizer,
            "max_length": self.max_length,
            "padding": self.padding,
            "truncation": self.truncation,
            "pad_id": self.pad_id,
            "pad_token": self.pad_token,
            "feeds": dict(self.feeds),
        }

    @classmethod
    def from_extra(cls, extra: dict) -> TextConfig | None:
        raw = extra.get(TEXT)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ArtifactError("manifest: extra.text must be an object")
        try:
            feeds = tuple((str(k), str(v)) for k, v in dict(raw["feeds"]).items())
            config = cls(
                input=str(raw["input"]),
                tokenizer=str(raw["tokenizer"]),
                max_length=int(raw["max_length"]),
                feeds=feeds,
                pad_id=int(raw.get("pad_id", 0)),
                pad_token=str(raw.get("pad_token", "[PAD]")),
                padding=str(raw.get("padding", "longest")),
                truncation=str(raw.get("truncation", "longest_first")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest: extra.text is incomplete or malformed ({exc!r})") from None
        bad = [f for _, f in config.feeds if f not in FIELDS]
        if bad or not config.feeds or config.max_length < 1 or config.padding != "longest":
            raise ArtifactError(
                f"manifest: extra.text feeds must map graph inputs to {', '.join(FIELDS)}, padding 'longest', max_length >= 1"
            )
        return config


class TextEncoder:
    """One tokenizer, configured once (cold start); `encode` is called per request or batch."""

    def __init__(self, config: TextConfig, tokenizer_json: str):
        from tokenizers import Tokenizer  # lazy: only text models pay for the import

        tokenizer = Tokenizer.from_str(tokenizer_json)
        # the manifest, not whatever the saved tokenizer.json carried, decides padding and truncation
        tokenizer.enable_truncation(config.max_length)
        tokenizer.enable_padding(pad_id=config.pad_id, pad_token=config.pad_token)
        self.config = config
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, config: TextConfig, path: Path) -> TextEncoder:
        return cls(config, path.read_text(encoding="utf-8"))

    def encode(self, texts: np.ndarray | Iterable[str | bytes]) -> dict[str, np.ndarray]:
        """int64 feeds for the graph, one row per text, padded to the longest text given."""
        strings = self._strings(texts)
        encodings = self._tokenizer.encode_batch(strings)
        return {
            name: np.array([getattr(e, field) for e in encodings], dtype=np.int64).reshape(len(strings), -1)
            for name, field in self.config.feeds
        }

    def lengths(self, texts: np.ndarray | Iterable[str | bytes]) -> list[int]:
        """Tokens each text reaches the graph as: truncated to `max_length`, special tokens in, padding out."""
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch(self._strings(texts))]

    def _strings(self, texts: np.ndarray | Iterable[str | bytes]) -> list[str]:
        items = texts.reshape(-1).tolist() if isinstance(texts, np.ndarray) else list(texts)
        return [_as_str(item, self.config.input, i) for i, item in enumerate(items)]


def _as_str(item, name: str, index: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTensor(f"input {name!r}: element {index} is not valid UTF-8 text") from None
    raise InvalidTensor(f"input {name!r}: element {index} is not text")
