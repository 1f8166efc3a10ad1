"""A tiny real text model for the .jsonl path: word counts of a BYTES input, via ONNX's StringSplit."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from shared.artifact.manifest import TensorSpec
from tests.helpers import save_artifact


def write_word_count_artifact(folder: Path, name: str = "words") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("StringSplit", ["text"], ["pieces", "count"])],
        "word_count",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("count", TensorProto.INT64, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return save_artifact(
        folder, model, name, [TensorSpec("text", "BYTES", (-1,))], [TensorSpec("count", "INT64", (-1,))], task="regression"
    )


def write_lookup_artifact(folder: Path, name: str = "lookup", rows: int = 10) -> Path:
    """emb = table[idx]: validation cannot see an out-of-range index, onnxruntime's Gather refuses it at
    run time, so one bad record fails a whole concatenated run."""
    import numpy as np
    from onnx import numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    table = numpy_helper.from_array(np.arange(rows * 3, dtype=np.float32).reshape(rows, 3), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["emb"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", 1, 3])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return save_artifact(
        folder, model, name, [TensorSpec("idx", "INT64", (-1, 1))], [TensorSpec("emb", "FP32", (-1, 1, 3))], task="embedding"
    )
