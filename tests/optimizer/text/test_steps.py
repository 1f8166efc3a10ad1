"""Each precision step on the tiny BERT, held to fp32 with explicit tolerances (onnxruntime's
check_model_correctness idea), plus the embedding layout checked element by element."""

from __future__ import annotations

import collections
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optimizer import candidates as registry
from optimizer.data import load_dataset
from optimizer.errors import NotApplicable
from optimizer.evaluate import run_model, task_metrics
from optimizer.export import export_fp32
from optimizer.precision import Float16, QuantizeEmbeddings, WeightOnly, cpu_features, quantize_rows
from optimizer.spec import load_spec
from optimizer.steps import StepContext


@pytest.fixture(scope="module")
def setup(tiny_bert_spec, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steps")
    spec = load_spec(tiny_bert_spec)
    reference = export_fp32(spec, tmp / "reference.onnx")
    data = load_dataset(spec, "evaluation")
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp / "work")
    return reference, data, ctx, run_model(reference, data, "embedding")


def _build(setup, *steps) -> tuple[Path, float]:
    reference, data, ctx, want = setup
    path = registry.Candidate("-".join(type(s).__name__ + str(abs(hash(s)) % 10_000) for s in steps), steps).build(reference, ctx)
    return path, task_metrics("embedding", run_model(path, data, "embedding"), want, None)["cosine"]


def _ops(path: Path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


# (steps, smallest mean cosine to fp32, largest bytes / fp32 bytes, kernel expected)
CASES = {
    "fp16": ((Float16(),), 0.99999, 0.6, None),
    "int8-weight-only": ((WeightOnly(8, 32), QuantizeEmbeddings(8, 32)), 0.9999, 0.42, "MatMulNBits"),  # positions stay fp32
    "int4-b32": ((WeightOnly(4, 32), QuantizeEmbeddings(4, 32)), 0.999, 0.3, "MatMulNBits"),
    "int4-b128-matmul-only": ((WeightOnly(4, 128),), 0.999, 0.7, "MatMulNBits"),
    "int8-embeddings-only": ((QuantizeEmbeddings(8, 64),), 0.9999, 0.75, "GatherBlockQuantized"),
    "int4-embeddings-only": ((QuantizeEmbeddings(4, 16),), 0.999, 0.7, "GatherBlockQuantized"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_step_is_close_to_fp32_and_smaller(setup, name):
    steps, min_cosine, max_ratio, kernel = CASES[name]
    path, cosine = _build(setup, *steps)
    assert cosine >= min_cosine
    assert path.stat().st_size <= max_ratio * setup[0].stat().st_size
    if kernel:
        assert _ops(path)[kernel] >= 1


def test_every_registered_precision_candidate_builds_on_a_transformer(setup):
    for name in ("fp16", "int8-weight-only", "int4-weight-only-b32", "int4-weight-only-b128"):
        path = registry.REGISTRY[name].build(setup[0], setup[2])
        assert path.stat().st_size < setup[0].stat().st_size, name


@pytest.mark.parametrize("bits", [4, 8])
def test_gather_block_quantized_reads_the_rows_as_written(bits, tmp_path):
    """The uint8 layout (4-bit packing, zero points) checked against onnxruntime's kernel element by element."""
    rng = np.random.default_rng(bits)
    table = rng.normal(size=(50, 64)).astype(np.float32)
    table[3] = 0.0  # a padding row must come back exactly zero
    data, scales, zeros = quantize_rows(table, bits, 32)
    node = onnx.helper.make_node(
        "GatherBlockQuantized",
        ["data", "ids", "scales", "zeros"],
        ["out"],
        domain="com.microsoft",
        bits=bits,
        block_size=32,
        gather_axis=0,
        quantize_axis=1,
    )
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [None])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
        [
            onnx.numpy_helper.from_array(data, "data"),
            onnx.numpy_helper.from_array(scales, "scales"),
            onnx.numpy_helper.from_array(zeros, "zeros"),
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid("com.microsoft", 1)])
    ids = np.array([0, 3, 49, 3], dtype=np.int64)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    step = (np.abs(table).max() * 2) / ((1 << bits) - 1)
    assert np.max(np.abs(got - table[ids])) <= step  # within one quantization step of the table
    assert not got[1].any()


def test_kept_layers_stay_at_higher_precision(setup):
    model = onnx.load(str(setup[0]))
    step = WeightOnly(4, 32)
    layers = step.quantizable(model)
    assert len(layers) == 12  # 2 layers x (q, k, v, attention out, intermediate, output)
    path, _ = _build(setup, step.keeping(layers[:2]))
    bits = collections.Counter(
        next(a.i for a in n.attribute if a.name == "bits") for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"
    )
    assert bits == {4: 10, 8: 2}
    path, _ = _build(setup, step.keeping(layers[:2], fp32=True))
    assert _ops(path)["MatMul"] >= 2 + 4  # two kept fp32, plus attention's activation x activation MatMuls
    tables = QuantizeEmbeddings(4, 32)
    assert tables.quantizable(model) == ("/model/embeddings/word_embeddings/Gather",)  # positions: 128 x 64 < min_elements
    path, _ = _build(setup, tables.keeping(tables.quantizable(model)))
    assert [
        next(a.i for a in n.attribute if a.name == "bits") for n in onnx.load(str(path)).graph.node if n.op_type == "GatherBlockQuantized"
    ] == [8]


def test_weight_only_takes_linear_layers_exported_as_gemm(tmp_path):
    """TinyNet's Linear layers are Gemm nodes (TorchScript export); they become MatMulNBits + Add."""
    from tests.optimizer.conftest import tiny_spec

    spec = load_spec(tiny_spec(tmp_path / "p"))
    reference = export_fp32(spec, tmp_path / "reference.onnx")
    path = tmp_path / "wo.onnx"
    WeightOnly(8, 32).apply(reference, path, None)
    assert _ops(path)["MatMulNBits"] == 2 and _ops(path)["Gemm"] == 0
    x = np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)
    want, got = (ort.InferenceSession(str(p)).run(None, {"input": x})[0] for p in (reference, path))
    assert np.max(np.abs(got - want)) <= 0.02 * np.max(np.abs(want))
    conv_only = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
            "c",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")],
        )
    )
    onnx.save(conv_only, str(tmp_path / "conv.onnx"))
    with pytest.raises(NotApplicable, match="no MatMul or Gemm with a constant 2-D weight"):
        WeightOnly().apply(tmp_path / "conv.onnx", tmp_path / "out.onnx", None)


def test_reduce_range_follows_the_cpu():
    features = cpu_features()
    assert set(features) >= {"machine", "avx512_vnni", "avx_vnni", "reduce_range"}
    if features["machine"] in ("x86_64", "amd64"):
        assert features["reduce_range"] == (not (features["avx512_vnni"] or features["avx_vnni"]))
    assert registry.DynamicInt8().reduce_range is None  # decided at apply time, on the CPU that measures
    assert replace(registry.DynamicInt8(), reduce_range=False).reduce_range is False
