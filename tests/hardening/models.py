"""Tiny artifacts the hardening tests need beyond tests/helpers.py: a BYTES model, a NaN-rejecting copy,
and models whose weights live in ONNX external data (inside, outside or unlisted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.artifact.loading import file_entries
from shared.artifact.manifest import TensorSpec
from tests.helpers import save_artifact, write_tiny_artifact


def write_echo_artifact(folder: Path, name: str = "echo") -> Path:
    """text_out = text, BYTES [-1]: onnxruntime's string Identity."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["text_out"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("text_out", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_artifact(
        folder, model, name, [TensorSpec("text", "BYTES", (-1,))], [TensorSpec("text_out", "BYTES", (-1,))], task="regression"
    )


def with_extra(folder: Path, **extra) -> Path:
    """Add keys to the manifest's `extra` (the manifest itself is not in `files`, so no hash changes)."""
    path = folder / "manifest.json"
    doc = json.loads(path.read_text())
    doc["extra"] = {**doc.get("extra", {}), **extra}
    path.write_text(json.dumps(doc, indent=2))
    return folder


def write_nan_rejecting_artifact(folder: Path) -> Path:
    return with_extra(write_tiny_artifact(folder, name="tinynan"), nan_policy="reject")


def write_external_data_artifact(folder: Path, location: str, listed: bool = True, in_subgraph: bool = False) -> Path:
    """The tiny model with W in an external file named `location` (relative to the model, as ONNX has it).

    The data file is written where `location` points; `listed` puts it in the manifest's `files` (only
    possible when it lies inside the folder). `in_subgraph` hides the tensor in an If node's branch.
    """
    write_tiny_artifact(folder)
    model = onnx.load(folder / "model.onnx")
    weights = next(t for t in model.graph.initializer if t.name == "W")
    data = numpy_helper.to_array(weights).tobytes()
    target = (folder / location).resolve() if not Path(location).is_absolute() else Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    external = onnx.TensorProto()
    external.CopyFrom(weights)
    external.ClearField("raw_data")
    external.ClearField("float_data")
    external.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    if in_subgraph:
        model.graph.initializer.remove(weights)
        const = helper.make_node("Constant", [], ["W"], value=external)
        branch = helper.make_graph([const], "branch", [], [helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        model.graph.initializer.append(cond)
        model.graph.node.insert(0, helper.make_node("If", ["cond"], ["W"], then_branch=branch, else_branch=branch))
    else:
        weights.CopyFrom(external)
    onnx.save(model, folder / "model.onnx")
    names = ["model.onnx"] + ([location] if listed else [])
    doc = json.loads((folder / "manifest.json").read_text())
    doc["files"] = {n: {"sha256": e.sha256, "bytes": e.bytes} for n, e in file_entries(folder, names).items()}
    (folder / "manifest.json").write_text(json.dumps(doc, indent=2))
    return folder


def copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
