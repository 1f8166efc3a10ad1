"""Lambda bundles built once per test session and shared (a build is ~10 s warm, ~30 s with a cold wheel cache).

The wheels come from PyPI on the first run and from the wheel cache after that (SLIMSERVE_WHEEL_CACHE,
default ~/.cache/slimserve/wheels), so the suite needs the index once per machine.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from functools import cache
from pathlib import Path

from optimizer.bundle.common import Options
from optimizer.bundle.pack import find_python
from tests.helpers import write_tiny_artifact

PYTHON312 = find_python("3.12")
NO_PYTHON312 = "no python3.12 here (PATH or pyenv): the bundle's cp312 wheels cannot be imported by this interpreter"


@cache
def _session_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="slimserve-bundles-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def tiny_artifact() -> Path:
    return write_tiny_artifact(_session_dir() / "tiny-artifact", name="tiny")


@cache
def tiny_lambda_bundle() -> tuple[Path, dict]:
    """(out folder with slimserve.zip + bundle.json, the builder's report) for the tiny artifact."""
    from optimizer.bundle import aws_lambda

    out = _session_dir() / "aws-lambda"
    report = aws_lambda.build(tiny_artifact(), out, Options(target="aws-lambda", quiet=True))
    return out, report


@cache
def text_lambda_bundle() -> tuple[Path, dict]:
    """The same for a text artifact: the largest runtime a Lambda bundle carries (tokenizers joins it)."""
    from optimizer.bundle import aws_lambda

    out = _session_dir() / "aws-lambda-text"
    report = aws_lambda.build(write_text_artifact(_session_dir() / "words"), out, Options(target="aws-lambda", quiet=True))
    return out, report


def write_text_artifact(folder: Path, task: str = "regression") -> Path:
    """A text model in miniature: a word-level tokenizer.json (built with `tokenizers`) and a graph that
    averages the token ids, so an answer shows the tokenizer ran: "hello world" -> ids [2, 3] -> 2.5.
    `task="embedding"`: the same answer as a one-dimensional embedding (what /v1/embeddings serves)."""
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    from shared.artifact.loading import file_entries, write_manifest
    from shared.artifact.manifest import Choice, Manifest, TensorSpec

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["ids"], ["score"], axes=[1], keepdims=1),
        ],
        "mean_id",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    manifest = Manifest(
        name="words",
        version="1",
        task=task,
        model_file="model.onnx",
        files=file_entries(folder, ["model.onnx", "tokenizer.json"]),
        inputs=(TensorSpec("text", "BYTES", (-1,)),),
        outputs=(TensorSpec("score", "FP32", (-1, 1)),),
        chosen=Choice("fp32", "test fixture"),
        extra={"text": {"input": "text", "tokenizer": "tokenizer.json", "max_length": 16, "feeds": {"input_ids": "ids"}}},
    )
    write_manifest(folder, manifest)
    return folder


def write_fetch_artifact(folder: Path) -> Path:
    """The tiny model with its weights in external data (model.onnx + model.onnx.data), `delivery: fetch`."""
    import onnx

    from shared.artifact.loading import file_entries, load_artifact, read_manifest, write_manifest

    write_tiny_artifact(folder)
    model = onnx.load(folder / "model.onnx")
    onnx.save_model(
        model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0
    )
    manifest = read_manifest(folder)
    write_manifest(folder, dataclasses.replace(manifest, files=file_entries(folder, ["model.onnx", "model.onnx.data"]), delivery="fetch"))
    load_artifact(folder)
    return folder
