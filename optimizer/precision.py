"""Precision steps for transformer-shaped models: fp16, weight-only MatMul (4/8-bit blocks), embeddings.

Why weight-only for transformers: dynamic int8 quantizes activations too, per tensor, at run time; on
all-MiniLM-L6-v2 (onnxruntime 1.32, x86 without VNNI) `quantize_dynamic` defaults give mean cosine 0.964
to fp32 at 23 MB. Keeping activations in fp32 and storing only weights in 8-bit blocks gives 0.9998 at
the same size: the error lives in the activations, not the weights. Embedding tables are half of a
small transformer's bytes (MiniLM: 30522 x 384 floats of 22.7M parameters), so they are quantized too.

Both quantizing steps speak the fallback's protocol (`optimizer/fallback.py`): `quantizable(model)`
names the layers they would quantize, `keeping(nodes)` returns the same step with those layers at
higher precision (8-bit for a 4-bit step, else fp32): mixed precision is a fallback result, not a guess.
"""

from __future__ import annotations

import collections
import dataclasses
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optimizer import onnx_io
from optimizer.errors import NotApplicable

if TYPE_CHECKING:
    from optimizer.steps import StepContext

MS_DOMAIN = "com.microsoft"


@cache
def cpu_features() -> dict:
    """What decides int8 kernels here: VNNI (u8s8 dot products without int16 saturation)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i686")
    vnni = bool(flags & {"avx512_vnni", "avx_vnni"})
    return {"machine": machine, "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags, "reduce_range": x86 and not vnni}


def needs_reduce_range() -> bool:
    """x86 without VNNI multiplies u8 x s8 pairs into int16 (vpmaddubsw), which saturates with full-range
    weights; 7-bit weights avoid it. arm64 and VNNI x86 have exact int8 dot products."""
    return cpu_features()["reduce_range"]


@dataclass(frozen=True)
class Float16:
    """fp16 weights and activations, fp32 inputs/outputs; onnxruntime casts around ops lacking fp16 kernels."""

    keep_io_types: bool = True

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        big = bool(onnx_io.data_files(src))  # shape inference serializes the model: not past 2 GB
        model = onnx.load(str(src))  # every float tensor is rewritten: all of them in memory, once
        onnx_io.save(convert_float_to_float16(model, keep_io_types=self.keep_io_types, disable_shape_infer=big), dst, src)


def _constant_weights(model: onnx.ModelProto, op_type: str, index: int, rank: int = 2) -> dict[str, onnx.TensorProto]:
    """Named nodes of `op_type` whose input `index` is a float32 initializer of `rank`, by node name."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != op_type or not node.name or len(node.input) <= index:
            continue
        init = inits.get(node.input[index])
        if init is not None and init.data_type == TensorProto.FLOAT and len(init.dims) == rank:
            out[node.name] = init
    return out


@dataclass(frozen=True)
class WeightOnly:
    """MatMul weights to `bits`-bit blocks along K (onnxruntime's MatMulNBits), activations stay fp32."""

    bits: Literal[4, 8] = 4
    block_size: Literal[16, 32, 64, 128, 256] = 32
    symmetric: bool = False  # asymmetric blocks fit skewed weight rows better, for 1/8 bit more per weight
    # "int8": activations quantized per block at run time (MatMulNBits accuracy_level 4). Measured on
    # MiniLM, x86 AVX2, one thread: 8-bit weights with fp32 compute run 3.4x slower than fp32 (33 vs 9.6 ms),
    # with int8 compute as fast (9.2 ms) at cosine 0.9991 instead of 0.9998; 4-bit: 7.2 vs 11.6 ms, same cosine
    compute: Literal["fp32", "int8"] = "int8"
    keep: tuple[str, ...] = ()  # MatMuls at higher precision (set by the fallback)
    keep_bits: Literal[8] | None = 8  # None: kept MatMuls stay fp32
    keep_block_size: int = 128  # 8-bit blocks need few scales: their error is far below 4-bit's

    def quantizable(self, model: onnx.ModelProto) -> tuple[str, ...]:
        return (*_constant_weights(model, "MatMul", 1), *_plain_gemms(model))

    def keeping(self, nodes: tuple[str, ...], fp32: bool = False) -> WeightOnly:
        return dataclasses.replace(self, keep=tuple(nodes), keep_bits=None if fp32 else self.keep_bits)

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        model = onnx_io.load(src)  # weights stay on disk until each is quantized: one fp32 tensor in memory at a time
        targets = self.quantizable(model)
        if not targets:
            raise NotApplicable("no MatMul or Gemm with a constant 2-D weight")
        keep = [n for n in targets if n in set(self.keep)]
        level = _ACCURACY_LEVEL[self.compute]
        higher = self.keep_bits if self.keep_bits and self.keep_bits > self.bits else None
        with onnx_io.weights_beside(src):
            _gemms_as_matmuls(model, _plain_gemms(model))
            model = _nbits(model, self.bits, self.block_size, self.symmetric, level, exclude=keep)
            if keep and higher:
                model = _nbits(model, higher, self.keep_block_size, self.symmetric, level, exclude=[n for n in targets if n not in keep])
        onnx_io.save(model, dst, src)


def _plain_gemms(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Gemm nodes that are a Linear layer (alpha = beta = 1, A not transposed, constant B): MatMul + Add."""
    plain = {}
    uses = collections.Counter(name for node in model.graph.node for name in node.input)
    for name, weight in _constant_weights(model, "Gemm", 1).items():
        if uses[weight.name] > 1:  # a shared weight is transposed for one consumer only: leave it
            continue
        node = next(n for n in model.graph.node if n.name == name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0):
            plain[name] = weight
    return plain


def _gemms_as_matmuls(model: onnx.ModelProto, gemms: dict[str, onnx.TensorProto]) -> None:
    """MatMulNBits takes MatMul only; a Linear exported as Gemm becomes MatMul (+ Add), keeping its name."""
    if not gemms:
        return
    graph = model.graph
    nodes = []
    for node in graph.node:
        if node.name not in gemms:
            nodes.append(node)
            continue
        weight = gemms[node.name]
        transposed = next((a.i for a in node.attribute if a.name == "transB"), 0)
        if transposed:  # B is [N, K]; MatMul wants [K, N]
            array = numpy_helper.to_array(weight).T.copy()
            weight.CopyFrom(numpy_helper.from_array(array, weight.name))
        product = node.output[0] + "_matmul" if len(node.input) > 2 and node.input[2] else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight.name], [product], name=node.name))
        if product != node.output[0]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_bias"))
    graph.ClearField("node")
    graph.node.extend(nodes)


_ACCURACY_LEVEL = {"fp32": None, "int8": 4}  # MatMulNBits' own names: 0/1 fp32, 4 int8 activations


def _nbits(model: onnx.ModelProto, bits: int, block: int, symmetric: bool, level: int | None, exclude: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block,
        is_symmetric=symmetric,
        accuracy_level=level,
        op_types_to_quantize=("MatMul",),
        nodes_to_exclude=exclude,
    )
    quantizer.process()
    return quantizer.model.model


@dataclass(frozen=True)
class QuantizeEmbeddings:
    """Embedding tables (Gather on a constant table) to uint8 blocks read by `GatherBlockQuantized`.

    onnxruntime's MatMulNBitsQuantizer takes Gather only at 4 bits, as INT4/UINT4 tensors for which it
    raises the model to opset 21 / IR 10 ("may not be a valid model"). `GatherBlockQuantized` also reads
    uint8 data with `bits` 4 or 8 (4-bit packed two per byte, low nibble first) at any opset, so this step
    writes that: per row, blocks of `block_size` along the hidden axis, asymmetric (scale, zero point).
    Only rows that are looked up are dequantized, so the table stays small in memory too.
    """

    bits: Literal[4, 8] = 8
    block_size: Literal[16, 32, 64, 128, 256] = 128
    min_elements: int = 1 << 14  # smaller tables (token types: 2 x hidden) are not worth a kernel change
    keep: tuple[str, ...] = ()  # Gathers at higher precision (set by the fallback)
    keep_bits: Literal[8] | None = 8  # for a 4-bit step; None (or an 8-bit step): kept tables stay fp32

    def quantizable(self, model: onnx.ModelProto) -> tuple[str, ...]:
        return tuple(name for name, init in self._tables(model).items() if self._block(init.dims[1]))

    def keeping(self, nodes: tuple[str, ...], fp32: bool = False) -> QuantizeEmbeddings:
        return dataclasses.replace(self, keep=tuple(nodes), keep_bits=None if fp32 else self.keep_bits)

    def _tables(self, model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
        gathers = {n.name: n for n in model.graph.node if n.op_type == "Gather"}
        tables = _constant_weights(model, "Gather", 0)
        return {
            name: init for name, init in tables.items() if _axis(gathers[name]) == 0 and init.dims[0] * init.dims[1] >= self.min_elements
        }

    def _block(self, columns: int) -> int | None:
        """The largest power-of-two block <= block_size (>= 16, the kernel's minimum) dividing the row."""
        block = self.block_size
        while block >= 16 and columns % block:
            block //= 2
        return block if block >= 16 else None

    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None:
        model = onnx_io.load(src)
        tables = {n: t for n, t in self._tables(model).items() if self._block(t.dims[1])}
        higher = self.keep_bits if self.keep_bits and self.keep_bits > self.bits else None
        plan = {name: (self.bits if name not in self.keep else higher) for name in tables}
        plan = {name: bits for name, bits in plan.items() if bits}
        if plan:
            with onnx_io.weights_beside(src):
                _rewrite_gathers(model, {n: (bits, self._block(tables[n].dims[1])) for n, bits in plan.items()}, tables)
        onnx_io.save(model, dst, src)


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def quantize_rows(table: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, scales, zero points) in GatherBlockQuantized's uint8 layout; data packed for 4 bits."""
    rows, columns = table.shape
    blocks = table.reshape(rows, columns // block, block).astype(np.float64)
    low = np.minimum(blocks.min(axis=2, keepdims=True), 0.0)  # 0 exact: padding rows stay exactly zero
    high = np.maximum(blocks.max(axis=2, keepdims=True), 0.0)
    top = (1 << bits) - 1
    scale = (high - low) / top
    scale[scale == 0] = 1.0
    zero = np.clip(np.round(-low / scale), 0, top)
    q = np.clip(np.round(blocks / scale) + zero, 0, top).astype(np.uint8).reshape(rows, columns)
    zero, scale = zero.astype(np.uint8).reshape(rows, -1), scale.astype(np.float32).reshape(rows, -1)
    if bits == 4:
        q, zero = _pack4(q), _pack4(zero)
    return q, scale, zero


def _pack4(values: np.ndarray) -> np.ndarray:
    if values.shape[1] % 2:
        values = np.pad(values, ((0, 0), (0, 1)))
    return (values[:, 0::2] | (values[:, 1::2] << 4)).astype(np.uint8)


def _rewrite_gathers(model: onnx.ModelProto, plan: dict[str, tuple[int, int]], tables: dict[str, onnx.TensorProto]) -> None:
    graph = model.graph
    replaced = set()
    nodes = []
    for node in graph.node:
        if node.name not in plan:
            nodes.append(node)
            continue
        bits, block = plan[node.name]
        init = tables[node.name]
        data, scales, zeros = quantize_rows(numpy_helper.to_array(init), bits, block)
        base = f"{init.name}_q{bits}"
        graph.initializer.extend(
            [
                numpy_helper.from_array(data, base),
                numpy_helper.from_array(scales, base + "_scales"),
                numpy_helper.from_array(zeros, base + "_zero_points"),
            ]
        )
        nodes.append(
            helper.make_node(
                "GatherBlockQuantized",
                [base, node.input[1], base + "_scales", base + "_zero_points"],
                list(node.output),
                name=node.name,
                domain=MS_DOMAIN,
                bits=bits,
                block_size=block,
                gather_axis=0,
                quantize_axis=1,
            )
        )
        replaced.add(init.name)
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name in replaced and i.name not in used]  # a tied head keeps its table
    for init in unused:
        graph.initializer.remove(init)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
