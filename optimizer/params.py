"""How many parameters an ONNX model holds, whatever its precision: the weights, not their scales.

Quantization keeps the count (int8 weights are the same weights); pruning and distillation lower it.
Q/DQ scales and zero points, shapes (int64) and MatMulNBits' packing are not parameters of the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

_SCALES = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "MatMulNBits": (1, 2, 3, 4, 5),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
}
_QUANT_SUFFIXES = ("_scale", "_zero_point")  # onnxruntime's quantizers name their parameters so
_COUNTED = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.INT32,
}


def count_parameters(path: Path) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    skip, total = set(), 0
    for node in graph.node:
        for index in _SCALES.get(node.op_type, ()):
            if index < len(node.input):
                skip.add(node.input[index])
        if node.op_type == "MatMulNBits":  # B is packed: count the K×N weights it stands for
            attrs = {a.name: a.i for a in node.attribute}
            total += attrs.get("K", 0) * attrs.get("N", 0)
    for init in graph.initializer:
        if init.name not in skip and not init.name.endswith(_QUANT_SUFFIXES) and init.data_type in _COUNTED and init.dims:
            total += int(np.prod(init.dims))
    return total
