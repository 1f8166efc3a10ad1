"""Models past the external-data threshold: gathered into ONE aligned data file whatever wrote them, exported
from every torch source that way, and compressed by the int8 candidates with answers onnxruntime agrees on.

SLIMSERVE_EXTERNAL_DATA_BYTES=10000 makes TinyNet (~130 KB of weights) a "big" model here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optimizer import onnx_io
from optimizer.candidates import REGISTRY, GraphOptimize
from optimizer.data import load_dataset
from optimizer.errors import SpecError
from optimizer.export import export_fp32
from optimizer.spec import load_spec
from optimizer.steps import StepContext
from tests.optimizer.conftest import tiny_spec

X = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "10000")


def _run(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["out"], {"input": X})[0]


def _offsets(path: Path) -> list[tuple[str, int]]:
    model = onnx.load(str(path), load_external_data=False)
    out = []
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            out.append((info["location"], int(info.get("offset", 0))))
    return out


@pytest.mark.parametrize("source", ["pt", "pt2"])
def test_torch_sources_past_the_threshold_export_to_one_aligned_data_file(tmp_path: Path, source: str, small_threshold):
    spec = load_spec(tiny_spec(tmp_path, source=source))
    path = export_fp32(spec, tmp_path / "out" / "reference.onnx")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["reference.onnx", "reference.onnx.data"]
    offsets = _offsets(path)
    assert offsets and {location for location, _ in offsets} == {"reference.onnx.data"}
    assert all(offset % 4096 == 0 for _, offset in offsets)
    assert onnx_io.model_bytes(path) == path.stat().st_size + (tmp_path / "out" / "reference.onnx.data").stat().st_size
    assert _run(path).shape == (3, 8)


def test_the_same_model_under_the_threshold_is_one_file_with_the_same_answers(tmp_path: Path, monkeypatch):
    spec = load_spec(tiny_spec(tmp_path))
    inline = export_fp32(spec, tmp_path / "a" / "model.onnx")
    assert onnx_io.data_files(inline) == []
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "10000")
    outside = export_fp32(spec, tmp_path / "b" / "model.onnx")
    assert [p.name for p in onnx_io.data_files(outside)] == ["model.onnx.data"]
    np.testing.assert_array_equal(_run(outside), _run(inline))
    monkeypatch.delenv(onnx_io.THRESHOLD_ENV)
    back = onnx_io.save(onnx_io.load(outside), tmp_path / "b" / "again.onnx", outside)  # small again: inline
    assert onnx_io.data_files(back) == [] and not (tmp_path / "b" / "again.onnx.data").exists()
    np.testing.assert_array_equal(_run(back), _run(inline))


@pytest.mark.parametrize("lengths", [True, False])
def test_one_file_per_tensor_is_gathered_into_one(tmp_path: Path, small_threshold, lengths: bool):
    """What torch's TorchScript exporter writes past 2 GB (a file per tensor, named by location alone, no
    offset or length: `lengths=False`), and what the 1B-parameter export refused itself over."""
    spec = load_spec(tiny_spec(tmp_path))
    model = onnx.load(str(export_fp32(spec, tmp_path / "a" / "model.onnx")))
    scattered = tmp_path / "scattered"
    scattered.mkdir()
    onnx.save_model(model, str(scattered / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(scattered.iterdir())) > 3
    if not lengths:
        bare = onnx.load(str(scattered / "model.onnx"), load_external_data=False)
        for init in bare.graph.initializer:
            kept = [(e.key, e.value) for e in init.external_data if e.key == "location"]
            del init.external_data[:]
            for key, value in kept:
                entry = init.external_data.add()
                entry.key, entry.value = key, value
        onnx.save(bare, str(scattered / "model.onnx"))
    gathered = onnx_io.save(onnx_io.load(scattered / "model.onnx"), tmp_path / "g" / "model.onnx", scattered / "model.onnx")
    assert sorted(p.name for p in gathered.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(_run(gathered), _run(scattered / "model.onnx"))
    (tmp_path / "c").mkdir()
    copied = onnx_io.copy(gathered, tmp_path / "c" / "renamed.onnx")
    assert {location for location, _ in _offsets(copied)} == {"renamed.onnx.data"}
    np.testing.assert_array_equal(_run(copied), _run(gathered))


def test_an_onnx_source_with_scattered_external_data_is_gathered(tmp_path: Path, small_threshold):
    import yaml

    spec_path = tiny_spec(tmp_path)
    model = onnx.load(str(export_fp32(load_spec(spec_path), tmp_path / "first.onnx")))
    onnx.save_model(model, str(tmp_path / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    raw = yaml.safe_load(spec_path.read_text())
    raw["source"] = {"path": "model.onnx"}
    spec_path.write_text(yaml.safe_dump(raw))
    copied = export_fp32(load_spec(spec_path), tmp_path / "out" / "model.onnx")
    assert sorted(p.name for p in copied.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(_run(copied), _run(tmp_path / "first.onnx"))


@pytest.mark.parametrize("candidate", ["fp32", "int8-dynamic", "int8-weight-only"])
def test_candidates_on_a_model_past_the_threshold_keep_one_data_file(tmp_path: Path, candidate: str, small_threshold):
    spec = load_spec(tiny_spec(tmp_path))
    reference = export_fp32(spec, tmp_path / "reference.onnx")
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp_path / "work")
    built = REGISTRY[candidate].build(reference, ctx)
    files = sorted(p.name for p in built.parent.iterdir() if p.name.startswith(built.name))
    if candidate == "int8-weight-only":  # 4x smaller: under the threshold again, one file
        assert files == [built.name] or files == [built.name, built.name + ".data"]
    else:
        assert files == [built.name, built.name + ".data"], files
    assert not [p for p in built.parent.iterdir() if p.suffix == ".data" and not p.name.endswith(".onnx.data")]
    want, got = _run(reference), _run(built)
    cosine = np.sum(want * got, axis=1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() > 0.99


def test_graph_optimize_keeps_its_weights_outside_in_one_file(tmp_path: Path, small_threshold):
    spec = load_spec(tiny_spec(tmp_path))
    reference = export_fp32(spec, tmp_path / "reference.onnx")
    GraphOptimize().apply(reference, tmp_path / "optimized.onnx", None)
    assert [p.name for p in onnx_io.data_files(tmp_path / "optimized.onnx")] == ["optimized.onnx.data"]
    np.testing.assert_allclose(_run(tmp_path / "optimized.onnx"), _run(reference), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_a_bad_threshold_is_one_line(value: str, monkeypatch):
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, value)
    with pytest.raises(SpecError, match=rf"^SLIMSERVE_EXTERNAL_DATA_BYTES='{value}' must be a positive number of bytes$"):
        onnx_io.threshold()


def test_a_model_past_the_threshold_is_not_repaired_layer_by_layer(tmp_path: Path, monkeypatch):
    from optimizer.fallback import repairs, worth_repairing
    from shared.artifact.manifest import CandidateResult

    spec = load_spec(tiny_spec(tmp_path))
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp_path / "work")
    plan = (REGISTRY["fp32"], REGISTRY["int8-dynamic"])
    results = [CandidateResult("fp32", 1000, {"drop": 0.0}, 1.0, True), CandidateResult("int8-dynamic", 300, {"drop": 0.5}, 1.0, False)]
    assert [r.name for r in worth_repairing(results, "size")] == ["int8-dynamic"]
    small = export_fp32(spec, tmp_path / "small" / "reference.onnx")
    assert [c.name for c in repairs(plan, results, small, ctx, "size")] == ["int8-dynamic+fallback"]
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "10000")
    big = export_fp32(spec, tmp_path / "big" / "reference.onnx")
    assert list(repairs(plan, results, big, ctx, "size")) == []
