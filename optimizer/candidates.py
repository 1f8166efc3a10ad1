"""The registry of compression candidates the search walks, cheapest first.

A *step* is a frozen config with `apply(src, dst, ctx)`: it reads one ONNX file and writes a new one,
never touching `src`. A *candidate* is a named plan, a tuple of steps run in order from the fp32
reference. New compressions (fp16, int4 MatMulNBits, pruning, distillation, op-wise fallback that
re-plans a candidate with `nodes_to_exclude`) are new step classes and new `register(...)` lines;
neither the search nor the evaluation changes.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort

from optimizer import onnx_io
from optimizer.data import Dataset
from optimizer.precision import Float16, QuantizeEmbeddings, WeightOnly, needs_reduce_range
from optimizer.sparse import Compress, MagnitudePrune
from optimizer.spec import Spec
from optimizer.steps import Step, StepContext
from optimizer.torch_steps import Distill, StructuredPrune


@dataclass(frozen=True)
class GraphOptimize:
    """onnxruntime's offline graph optimization, saved to a file.

    Basic level only: it folds constants and drops redundant nodes but adds no fused, CPU-specific
    kernels, so the file stays portable to any onnxruntime build. The runtime applies the rest
    (ORT_ENABLE_ALL) at session creation on the machine that serves.
    """

    level: Literal["basic"] = "basic"

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        if onnx_io.data_files(src):  # the optimized model keeps its weights outside too, in one file
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", onnx_io.data_name(dst))
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", str(onnx_io.MIN_EXTERNAL))
        ort.InferenceSession(str(src), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class QuantPreProcess:
    """onnxruntime's `quant_pre_process`: symbolic shape inference + basic optimization.

    The quantizers need value shapes to choose per-channel axes and to fuse; skipping it is the most
    common cause of "could not quantize" warnings and worse accuracy.
    """

    skip_symbolic_shape: bool = False

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # when symbolic shape inference gives up, onnxruntime saves its partial model (and a copy of every
        # weight as external data) into the working directory; keep that litter beside the candidate
        src, dst = src.resolve(), dst.resolve()
        scratch = dst.with_name(dst.stem + ".preprocessed.onnx")
        big = bool(onnx_io.data_files(src))
        with contextlib.chdir(dst.parent):
            quant_pre_process(
                str(src),
                str(scratch),
                skip_symbolic_shape=self.skip_symbolic_shape,
                save_as_external_data=big,
                all_tensors_to_one_file=True,
                external_data_location=onnx_io.data_name(scratch),
            )
        _normalized(scratch, dst)


@dataclass(frozen=True)
class DynamicInt8:
    """Weights int8 offline, activations quantized at run time (no calibration data needed).

    With `op_types=None` Conv becomes ConvInteger, which some onnxruntime builds lack and which is slower
    than fp32 Conv on x86 (digits CNN, onnxruntime 1.32, one thread: 0.16 vs 0.10 ms p50);
    `op_types=("MatMul", "Gemm")` keeps convolutions in fp32.
    """

    per_channel: bool = True
    reduce_range: bool | None = None  # 7-bit weights against U8S8 saturation; None: when this CPU lacks VNNI
    op_types: tuple[str, ...] | None = None
    nodes_to_exclude: tuple[str, ...] = ()

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        scratch = dst.with_name(dst.stem + ".dynamic.onnx")
        quantize_dynamic(
            str(src),
            str(scratch),
            op_types_to_quantize=list(self.op_types) if self.op_types else None,
            per_channel=self.per_channel,
            reduce_range=needs_reduce_range() if self.reduce_range is None else self.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(self.nodes_to_exclude) or None,
            use_external_data_format=bool(onnx_io.data_files(src)),  # past 2 GB in, maybe past 2 GB out
        )
        _normalized(scratch, dst)


_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class StaticQDQ:
    """Weights and activations int8 in QDQ format, activation ranges calibrated on `data.calibration`.

    S8S8 by default: onnxruntime's recommended QDQ pairing on x86 and arm64; `activation="uint8"` with
    `reduce_range=True` is the classic U8S8 choice for x86 CPUs without VNNI.
    Calibration: MinMax takes the observed range; Entropy picks the range that minimises the KL divergence
    between the float and the quantized histogram; Percentile clips at `percentile` of |x| (outliers saturate
    instead of stretching the scale for everyone).
    """

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    activation: Literal["int8", "uint8"] = "int8"
    weight: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False
    batch_size: int = 32
    max_samples: int = 512  # MinMax settles quickly; entropy/percentile histograms grow with samples
    nodes_to_exclude: tuple[str, ...] = ()
    percentile: float = 99.999  # Percentile only
    symmetric_activations: bool | None = None  # None: the method's own default (Percentile: symmetric)
    moving_average: bool = False  # MinMax only: average per-batch ranges instead of the extremes
    op_types: tuple[str, ...] | None = None  # None: every op the quantizer knows; ("Gemm", "MatMul"): the dense layers only

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        data = ctx.calibration.head(self.max_samples)
        batch = self._batch(ctx.spec)
        # the histogram calibrators print their progress on stdout; the CLI owns the terminal
        scratch = dst.with_name(dst.stem + ".static.onnx")
        with (
            ctx.progress.task(f"calibrating ({self.method})", total=math.ceil(len(data) / batch)) as advance,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            quantize_static(
                str(src),
                str(scratch),
                _Reader(data, batch, advance),
                quant_format=QuantFormat.QDQ,
                per_channel=self.per_channel,
                reduce_range=self.reduce_range,
                activation_type=getattr(QuantType, _QUANT_TYPES[self.activation]),
                weight_type=getattr(QuantType, _QUANT_TYPES[self.weight]),
                calibrate_method=getattr(CalibrationMethod, _CALIBRATION[self.method]),
                nodes_to_exclude=list(self.nodes_to_exclude) or None,
                op_types_to_quantize=list(self.op_types) if self.op_types else None,
                extra_options=self._calibration_options(),
                use_external_data_format=bool(onnx_io.data_files(src)),
            )
        _normalized(scratch, dst)

    def _calibration_options(self) -> dict:
        """The typed fields above in onnxruntime's CamelCase `extra_options`, only where they apply."""
        options: dict = {}
        if self.method == "percentile":
            options["CalibPercentile"] = self.percentile
        if self.method == "minmax" and self.moving_average:
            options["CalibMovingAverage"] = True
        if self.symmetric_activations is not None:
            options["CalibTensorRangeSymmetric"] = self.symmetric_activations
        return options

    def _batch(self, spec: Spec) -> int:
        fixed = {t.shape[0] for t in spec.inputs if t.shape and t.shape[0] != -1}
        return fixed.pop() if len(fixed) == 1 else self.batch_size


def _normalized(scratch: Path, dst: Path) -> None:
    """onnxruntime's quantizers write one file, or one data file named their own way: ours from here."""
    onnx_io.save(onnx_io.load(scratch), dst, scratch)
    for path in (*onnx_io.data_files(scratch), scratch):
        path.unlink(missing_ok=True)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a Dataset (duck-typed: `get_next`)."""

    def __init__(self, data: Dataset, batch_size: int, advance=lambda n=1: None):
        self._batches: Iterator[dict[str, np.ndarray]] = data.batches(batch_size)
        self._advance = advance

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is not None:
            self._advance(1)
        return batch


@dataclass(frozen=True)
class Candidate:
    name: str
    steps: tuple[Step, ...]
    description: str = field(default="", compare=False)

    def build(self, reference: Path, ctx: StepContext) -> Path:
        """Run the plan from the reference (steps never write their input); returns the last step's file,
        inside ctx.workdir. No copy of the reference first: past 2 GB each copy costs gigabytes of disk."""
        folder = ctx.workdir / self.name
        folder.mkdir(parents=True, exist_ok=True)
        current = reference
        for index, step in enumerate(self.steps, start=1):
            out = folder / f"{index}-{type(step).__name__}.onnx"
            with quiet_quantizer():
                step.apply(current, out, ctx)
            current = out
        return current


REGISTRY: dict[str, Candidate] = {}


def register(candidate: Candidate) -> Candidate:
    if candidate.name in REGISTRY:
        raise ValueError(f"candidate {candidate.name!r} is registered twice")
    REGISTRY[candidate.name] = candidate
    return candidate


def select(names: tuple[str, ...] | None = None) -> tuple[Candidate, ...]:
    """Registered candidates in registry (cheapest-first) order; `names` picks a subset, fp32 always kept."""
    if names is None:
        return tuple(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return tuple(c for c in REGISTRY.values() if c.name in names or c.name == FP32)


FP32 = "fp32"
register(Candidate(FP32, (GraphOptimize(),), "fp32, onnxruntime basic graph optimization"))
register(Candidate("fp16", (Float16(),), "fp16 weights and activations, fp32 inputs and outputs"))
register(Candidate("int8-dynamic", (QuantPreProcess(), DynamicInt8()), "int8 weights, dynamic activations, per-channel"))
register(
    Candidate(
        "int8-dynamic-per-tensor", (QuantPreProcess(), DynamicInt8(per_channel=False)), "int8 weights, dynamic activations, per-tensor"
    )
)
register(
    Candidate(
        "int8-static-qdq-minmax", (QuantPreProcess(), StaticQDQ("minmax")), "int8 QDQ, MinMax-calibrated activations, per-channel weights"
    )
)
register(
    Candidate(
        "int8-static-qdq-entropy",
        (QuantPreProcess(), StaticQDQ("entropy")),
        "int8 QDQ, entropy-calibrated activations, per-channel weights",
    )
)
register(
    Candidate(
        "int8-static-qdq-percentile",
        (QuantPreProcess(), StaticQDQ("percentile")),
        "int8 QDQ, 99.999th-percentile-calibrated activations, per-channel weights",
    )
)
# one scale per weight tensor: fewer multiplies when requantizing, ~0.1x faster at batch 1 on AVX2 (digits:
# 1.61x vs 1.49x fp32, bench/quantized_latency.py), at the accuracy risk per-channel exists to avoid
register(
    Candidate(
        "int8-static-qdq-minmax-per-tensor",
        (QuantPreProcess(), StaticQDQ("minmax", per_channel=False)),
        "int8 QDQ, MinMax-calibrated activations, per-tensor weights",
    )
)

# Weight-only: activations stay fp32; MatMul weights (MatMulNBits) and embedding tables in blocks.
register(
    Candidate("int8-weight-only", (WeightOnly(8, 128), QuantizeEmbeddings(8, 128)), "8-bit MatMul weights and embeddings, blocks of 128")
)
register(
    Candidate("int4-weight-only-b32", (WeightOnly(4, 32), QuantizeEmbeddings(4, 32)), "4-bit MatMul weights and embeddings, blocks of 32")
)
register(
    Candidate(
        "int4-weight-only-b128", (WeightOnly(4, 128), QuantizeEmbeddings(4, 128)), "4-bit MatMul weights and embeddings, blocks of 128"
    )
)

# Smaller models, costlier to build (training): after every quantization-only candidate.
_INT8 = (QuantPreProcess(), StaticQDQ("minmax"))
register(
    Candidate(
        "sparse-50-gz",
        (MagnitudePrune(0.5), Compress("gz")),
        "50% of weights zeroed by magnitude; ships gzip-compressed, inflated into /tmp at cold start",
    )
)
for _percent in (30, 50):
    _prune = StructuredPrune(_percent / 100)
    register(Candidate(f"pruned-{_percent}", (_prune,), f"{_percent}% of hidden channels/neurons removed (L1), fine-tuned"))
    register(Candidate(f"pruned-{_percent}+int8-static-qdq", (_prune, *_INT8), f"pruned-{_percent}, then int8 QDQ (MinMax)"))
register(Candidate("distilled", (Distill(),), "student distilled from the fp32 model (distill: settings)"))
register(Candidate("distilled+int8-static-qdq", (Distill(), *_INT8), "distilled student, then int8 QDQ (MinMax)"))

_QUANTIZED_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QuantizeLinear", "MatMulNBits", "GatherBlockQuantized")


def quantized_ops(path: Path) -> str:
    """Which quantized kernels a model holds, e.g. `ConvInteger×2 MatMulInteger×2`, for the candidate's note."""
    counts = collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    return " ".join(f"{op}×{counts[op]}" for op in _QUANTIZED_OPS if counts[op])


class quiet_quantizer:
    """onnxruntime's quantizer logs advice at WARNING on the root logger; the CLI owns the terminal."""

    def __enter__(self):
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)
