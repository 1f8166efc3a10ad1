"""Magnitude pruning ships compressed: smaller artifact, same model once the runtime inflates it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from optimizer.data import load_dataset
from optimizer.export import export_fp32
from optimizer.pipeline import optimize
from optimizer.sparse import Compress, MagnitudePrune, compression, inflate_to
from optimizer.spec import load_spec
from optimizer.steps import StepContext
from shared.artifact.loading import load_artifact, sha256_of
from shared.serving.local import LocalModel
from tests.optimizer.conftest import FAST_TIMING, tiny_spec


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sparse")
    spec = load_spec(tiny_spec(tmp / "project"))
    return spec, export_fp32(spec, tmp / "reference.onnx")


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_magnitude_prune_zeroes_the_smallest_weights_of_large_tensors(tiny_reference, tmp_path: Path):
    spec, reference = tiny_reference
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp_path)
    MagnitudePrune(0.5).apply(reference, tmp_path / "sparse.onnx", ctx)
    before, after = _weights(reference), _weights(tmp_path / "sparse.onnx")
    pruned = [n for n, a in before.items() if a.ndim > 1 and a.size >= 1024]
    assert pruned, "TinyNet has dense layers above min_elements"
    for name in pruned:
        zero = after[name] == 0
        assert 0.5 <= zero.mean() <= 0.52
        assert np.abs(before[name][zero]).max() <= np.abs(before[name][~zero]).min()  # the smallest went
        assert np.array_equal(after[name][~zero], before[name][~zero])
    small = [n for n, a in before.items() if a.size < 1024]
    assert all(np.array_equal(before[n], after[n]) for n in small)  # biases and the 4x1x3x3 conv untouched


@pytest.mark.parametrize("fmt", ["gz", "xz"])
def test_compress_round_trips_and_is_deterministic(tiny_reference, tmp_path: Path, fmt: str):
    spec, reference = tiny_reference
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp_path)
    MagnitudePrune(0.5).apply(reference, tmp_path / "sparse.onnx", ctx)
    Compress(fmt).apply(tmp_path / "sparse.onnx", tmp_path / "a", ctx)
    Compress(fmt).apply(tmp_path / "sparse.onnx", tmp_path / "b", ctx)
    assert compression(tmp_path / "a") == fmt and compression(tmp_path / "sparse.onnx") is None
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "a").stat().st_size < 0.7 * (tmp_path / "sparse.onnx").stat().st_size
    inflated = inflate_to(tmp_path / "a", tmp_path / "back.onnx")
    assert sha256_of(inflated) == sha256_of(tmp_path / "sparse.onnx")


def test_sparse_artifact_ships_compressed_and_the_runtime_serves_it(tmp_path: Path, monkeypatch):
    spec = tiny_spec(tmp_path / "project")
    out = optimize(spec, out=tmp_path / "art", candidates=("sparse-50-gz",), tolerance=1.0, quiet=True, timing=FAST_TIMING)
    artifact = load_artifact(out)
    manifest = artifact.manifest
    assert manifest.chosen.candidate == "sparse-50-gz" and manifest.model_file == "model.onnx.gz"
    facts = manifest.extra["optimizer"]["candidates"]["sparse-50-gz"]
    assert facts["compression"] == "gz" and facts["deployed_bytes"] == manifest.files["model.onnx.gz"].bytes
    assert facts["inflated_bytes"] == manifest.extra["inflated"]["bytes"] > 1.5 * facts["deployed_bytes"]
    assert "inflated" in next(c.note for c in manifest.candidates if c.name == "sparse-50-gz")
    monkeypatch.setenv("SLIMSERVE_CACHE_DIR", str(tmp_path / "cache"))
    model = LocalModel.load(artifact, str(tmp_path / "cache"), threads=1)
    x = load_dataset(load_spec(spec), "evaluation").inputs["input"][:8]
    got = model.predict({"input": x})["out"]
    inflated = tmp_path / "cache" / "inflated" / manifest.extra["inflated"]["sha256"] / "model.onnx"
    want = ort.InferenceSession(str(inflated), providers=["CPUExecutionProvider"]).run(["out"], {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
