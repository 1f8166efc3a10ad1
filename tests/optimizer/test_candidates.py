"""Each registered candidate on a tiny generated model, checked against fp32 with explicit tolerances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optimizer import candidates as registry
from optimizer.candidates import Candidate, DynamicInt8, GraphOptimize, QuantPreProcess, StaticQDQ
from optimizer.data import load_dataset
from optimizer.export import export_fp32
from optimizer.spec import load_spec
from optimizer.steps import StepContext
from shared.artifact.loading import sha256_of
from tests.optimizer.conftest import tiny_spec

# (largest |y - y_fp32| / max|y_fp32|, smallest mean cosine to fp32, largest bytes / fp32 bytes)
TOLERANCES = {
    "fp32": (1e-5, 1 - 1e-6, 1.01),
    "fp16": (2e-3, 1 - 1e-5, 0.6),
    "int8-dynamic": (0.05, 0.999, 0.35),
    "int8-dynamic-per-tensor": (0.05, 0.999, 0.35),
    "int8-static-qdq-minmax": (0.08, 0.998, 0.35),
    "int8-static-qdq-entropy": (0.12, 0.995, 0.35),
    "int8-static-qdq-percentile": (0.12, 0.995, 0.35),
    "int8-static-qdq-minmax-per-tensor": (0.12, 0.995, 0.35),
}
KERNELS = {
    "fp32": None,
    "fp16": None,
    "int8-dynamic": "ConvInteger",
    "int8-dynamic-per-tensor": "ConvInteger",
    "int8-static-qdq-minmax": "QuantizeLinear",
    "int8-static-qdq-entropy": "QuantizeLinear",
    "int8-static-qdq-percentile": "QuantizeLinear",
    "int8-static-qdq-minmax-per-tensor": "QuantizeLinear",
}
# candidates that change the model itself (training, compression) have their own tests on models they suit
TESTED_ELSEWHERE = {
    "sparse-50-gz": "test_sparse.py",
    "pruned-30": "test_prune.py",
    "pruned-30+int8-static-qdq": "test_prune.py",
    "pruned-50": "test_prune.py",
    "pruned-50+int8-static-qdq": "test_prune.py",
    "distilled": "test_distill.py",
    "distilled+int8-static-qdq": "test_distill.py",
    # weight-only: on a transformer (MatMul, embedding tables) and on TinyNet's Gemm layers
    "int8-weight-only": "text/test_steps.py",
    "int4-weight-only-b32": "text/test_steps.py",
    "int4-weight-only-b128": "text/test_steps.py",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("candidates")
    spec = load_spec(tiny_spec(tmp / "project"))
    reference = export_fp32(spec, tmp / "reference.onnx")
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp / "work")
    before = sha256_of(reference)
    paths = {c.name: c.build(reference, ctx) for c in registry.select() if c.name in TOLERANCES}
    assert sha256_of(reference) == before, "a candidate changed the reference it was built from"
    return reference, paths


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["out"], {"input": x})[0]


def test_registry_is_cheapest_first_and_covers_the_table():
    assert list(registry.REGISTRY)[:5] == ["fp32", "fp16", "int8-dynamic", "int8-dynamic-per-tensor", "int8-static-qdq-minmax"]
    assert set(TOLERANCES) | set(TESTED_ELSEWHERE) == set(registry.REGISTRY)


@pytest.mark.parametrize("name", list(TOLERANCES))
def test_candidate_is_close_to_fp32_and_smaller(built, name: str):
    reference, paths = built
    max_error, min_cosine, max_ratio = TOLERANCES[name]
    x = np.random.default_rng(7).random((32, 1, 8, 8), dtype=np.float32)  # not the calibration data
    want, got = _outputs(reference, x), _outputs(paths[name], x)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= max_error
    cosine = np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.mean() >= min_cosine
    assert paths[name].stat().st_size <= max_ratio * reference.stat().st_size
    kernel = KERNELS[name]
    assert (kernel is None) == (registry.quantized_ops(paths[name]) == "")
    if kernel:
        assert kernel in registry.quantized_ops(paths[name])


def test_dynamic_int8_can_keep_convolutions_in_fp32(built, tmp_path: Path):
    reference, _ = built
    spec = load_spec(tiny_spec(tmp_path / "p"))
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp_path / "w")
    plan = Candidate("int8-dynamic-matmul", (QuantPreProcess(), DynamicInt8(op_types=("MatMul", "Gemm"))))
    ops = registry.quantized_ops(plan.build(reference, ctx))
    assert "MatMulInteger" in ops and "ConvInteger" not in ops


def test_steps_are_frozen_configs_and_candidates_compare_by_plan():
    with pytest.raises(AttributeError):
        StaticQDQ().method = "entropy"  # type: ignore[misc]
    assert Candidate("a", (GraphOptimize(),), "x") == Candidate("a", (GraphOptimize(),), "y")
    assert StaticQDQ(method="entropy") != StaticQDQ()


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Candidate("fp32", (GraphOptimize(),)))
    with pytest.raises(KeyError, match="int3"):
        registry.select(("int3",))
    assert [c.name for c in registry.select(("int8-static-qdq-entropy",))] == ["fp32", "int8-static-qdq-entropy"]
