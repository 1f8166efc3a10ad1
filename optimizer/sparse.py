"""Magnitude pruning (`W·M`, M a 0/1 mask) and the compressed artifact that makes it pay.

Zeroed weights stored dense weigh what they weighed before, so `MagnitudePrune` alone shrinks nothing;
a candidate that uses it ends with `Compress`, and ships `model.onnx.xz`, which the runtime inflates into
/tmp at cold start (shared/artifact/inflate.py). The report states both sizes: compressed (what is deployed) and
inflated (what /tmp and memory hold). No fine-tune here, so it applies to any source, ONNX included; the
accuracy it costs is measured like every candidate's.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from optimizer import onnx_io
from optimizer.errors import NotApplicable

_WEIGHT_INPUTS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "ConvTranspose": 1}
_MAGIC = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gz"}


@dataclass(frozen=True)
class MagnitudePrune:
    """Zero the `sparsity` fraction of smallest-|w| entries of each Conv/Gemm/MatMul weight (per tensor)."""

    sparsity: float = 0.5
    min_elements: int = 1024  # first convolutions and small heads: little to gain, much accuracy to lose

    def apply(self, src: Path, dst: Path, ctx) -> None:
        model = onnx_io.load(src)
        weights = _weight_names(model.graph)
        for index, init in enumerate(model.graph.initializer):
            if init.name not in weights or init.data_type != onnx.TensorProto.FLOAT:
                continue
            if int(np.prod(init.dims)) < self.min_elements:
                continue
            array = numpy_helper.to_array(init, str(src.resolve().parent))
            if array.size < self.min_elements:
                continue
            cut = int(array.size * self.sparsity)
            threshold = np.partition(np.abs(array).ravel(), cut)[cut] if cut else 0.0
            pruned = np.where(np.abs(array) < threshold, 0.0, array).astype(array.dtype)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(pruned, init.name))
        onnx_io.save(model, dst, src)


@dataclass(frozen=True)
class Compress:
    """The model file compressed for the artifact; must be a plan's last step (nothing reads it after)."""

    # gzip by default: xz packs zeroed float32 weights ~8% tighter but inflates 10x slower (cold start)
    format: Literal["xz", "gz"] = "gz"

    def apply(self, src: Path, dst: Path, ctx) -> None:
        if onnx_io.data_files(src):
            raise NotApplicable("the model keeps its weights in an external data file, which ships uncompressed")
        with open(src, "rb") as fin, open(dst, "wb") as raw:
            # level 6: within 1% of 9 on float weights at several times the speed; mtime 0: same bytes each run
            packer = lzma.open(raw, "wb", preset=6) if self.format == "xz" else gzip.GzipFile("", "wb", 6, raw, mtime=0)
            with packer:
                shutil.copyfileobj(fin, packer, 1 << 20)


def compression(path: Path) -> str | None:
    """`xz`, `gz` or None (a plain ONNX file), from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def inflate_to(path: Path, dst: Path) -> Path:
    """A compressed candidate inflated for evaluation (the runtime does the same at cold start)."""
    opener = lzma.open if compression(path) == "xz" else gzip.open
    with opener(path, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dst


def _weight_names(graph: onnx.GraphProto) -> set[str]:
    return {n.input[_WEIGHT_INPUTS[n.op_type]] for n in graph.node if n.op_type in _WEIGHT_INPUTS and len(n.input) > 1}
