"""Tiny real artifacts built with onnx.helper, so runtime tests need neither torch nor training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.artifact.loading import file_entries, write_manifest
from shared.artifact.manifest import Choice, Manifest, TensorSpec


def linear_softmax_onnx(in_features: int = 4, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """probs = softmax(x @ W + b), x: [-1, in_features] float32."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(in_features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "linear_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", in_features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes]),
        ],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save_artifact(
    folder: Path, model: onnx.ModelProto, name: str, inputs, outputs, task: str = "classification", version: str = "1"
) -> Path:
    """`model` as a one-file artifact: model.onnx + a manifest with its sha256 and the given signature."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    manifest = Manifest(
        name=name,
        version=version,
        task=task,
        model_file="model.onnx",
        files=file_entries(folder, ["model.onnx"]),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        chosen=Choice("fp32", "test fixture"),
    )
    write_manifest(folder, manifest)
    return folder


def write_tiny_artifact(folder: Path, name: str = "tiny", version: str = "1", in_features: int = 4, classes: int = 3) -> Path:
    return save_artifact(
        folder,
        linear_softmax_onnx(in_features, classes),
        name,
        [TensorSpec("input", "FP32", (-1, in_features))],
        [TensorSpec("logits", "FP32", (-1, classes)), TensorSpec("probs", "FP32", (-1, classes))],
        version=version,
    )
