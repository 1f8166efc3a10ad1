"""Calibration and evaluation data: `.npz` files keyed by input name, checked against the spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.npz_files import LABELS, read_npz
from optimizer.spec import Spec, Tensor, Where


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]  # one array per spec input, axis 0 = samples, in the spec's dtype
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, size: int):
        """Feeds of `size` samples (the last may be shorter), in order."""
        for start in range(0, len(self), size):
            yield {name: array[start : start + size] for name, array in self.inputs.items()}

    def head(self, count: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:count]
        return Dataset({name: array[:count] for name, array in self.inputs.items()}, labels)


def load_dataset(spec: Spec, which: str) -> Dataset:
    """`which` is `calibration` or `evaluation`; every problem is a SpecError naming `data.<which>`."""
    if spec.source.kind == "transformers":  # texts, tokenized by the artifact's tokenizer
        from optimizer.text_data import load_texts

        return load_texts(spec, which)
    path: Path = getattr(spec.data, which)
    where = spec.where(f"data.{which}")
    arrays = read_npz(path, where)
    inputs = {tensor.name: _input(arrays, tensor, where, path.name) for tensor in spec.inputs}
    counts = {name: len(array) for name, array in inputs.items()}
    if len(set(counts.values())) != 1:
        raise where.error(f"{path.name!r} holds different sample counts per input: {counts}")
    if min(counts.values()) == 0:
        raise where.error(f"{path.name!r} holds no samples")
    labels = _labels(arrays.get(LABELS), spec, where, path.name, len(next(iter(inputs.values()))))
    return Dataset(inputs=inputs, labels=labels)


def _input(arrays: dict[str, np.ndarray], tensor: Tensor, where: Where, file: str) -> np.ndarray:
    if tensor.name not in arrays:
        raise where.error(f"{file!r} lacks input {tensor.name!r} (it holds: {', '.join(arrays) or 'nothing'})")
    array = arrays[tensor.name]
    want = np.dtype(object if tensor.dtype == "string" else tensor.dtype)
    if array.ndim != len(tensor.shape) or any(s not in (-1, got) for s, got in zip(tensor.shape, array.shape)):
        raise where.error(f"{file!r}[{tensor.name!r}] has shape {list(array.shape)}, the spec's inputs say {list(tensor.shape)}")
    if not np.can_cast(array.dtype, want, casting="same_kind"):
        raise where.error(f"{file!r}[{tensor.name!r}] has dtype {array.dtype}, the spec says {tensor.dtype}")
    return np.ascontiguousarray(array.astype(want, copy=False))


def _labels(labels: np.ndarray | None, spec: Spec, where: Where, file: str, count: int) -> np.ndarray | None:
    if labels is None:
        return None
    if len(labels) != count:
        raise where.error(f"{file!r}[{LABELS!r}] holds {len(labels)} labels for {count} samples")
    if spec.task == "classification" and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise where.error(f"{file!r}[{LABELS!r}] must be a 1-D integer class index array for classification")
    return labels
