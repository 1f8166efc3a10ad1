"""Export: TorchScript, ExportedProgram and ONNX sources give the same fp32 model with dynamic batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from optimizer.errors import SpecError
from optimizer.export import export_fp32
from optimizer.spec import load_spec
from tests.optimizer.conftest import TinyNet, tiny_spec


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["out"], {"input": x})[0]


def _eager(x: np.ndarray) -> np.ndarray:
    torch.manual_seed(0)  # tiny_spec builds TinyNet right after this seed: same weights
    with torch.no_grad():
        return TinyNet().eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("source", ["pt", "pt2"])
def test_torch_sources_match_eager_at_any_batch(tmp_path: Path, source: str):
    spec = load_spec(tiny_spec(tmp_path, source=source))
    onnx_path = export_fp32(spec, tmp_path / "out" / "model.onnx")
    assert not list((tmp_path / "out").glob("*.data")), "weights must live inside the one model file"
    for batch in (1, 5):
        x = np.random.default_rng(batch).random((batch, 1, 8, 8), dtype=np.float32)
        np.testing.assert_allclose(_run(onnx_path, x), _eager(x), rtol=1e-4, atol=1e-5)


def test_onnx_source_is_checked_and_copied(tmp_path: Path):
    first = load_spec(tiny_spec(tmp_path / "a"))
    exported = export_fp32(first, tmp_path / "a" / "exported.onnx")
    spec_path = tiny_spec(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").write_bytes(exported.read_bytes())
    raw = yaml.safe_load(spec_path.read_text())
    raw["source"] = {"path": "model.onnx"}
    spec_path.write_text(yaml.safe_dump(raw))
    copied = export_fp32(load_spec(spec_path), tmp_path / "b" / "out.onnx")
    assert onnx.load(str(copied)).graph == onnx.load(str(exported)).graph


def _spec_with(tmp_path: Path, change, source: str = "pt"):
    path = tiny_spec(tmp_path, source=source)
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


MISMATCHES = {
    "input shape": (lambda r: r["inputs"][0].update(shape=[-1, 1, 8, 9]), "the model runs on [-1, 1, 8, 8]", "mat1 and mat2 shapes"),
    "output shape": (lambda r: r["outputs"][0].update(shape=[-1, 12]), "outputs[0].shape [-1, 12] does not match", ""),
    "output dtype": (
        lambda r: r["outputs"][0].update(dtype="float16"),
        "outputs[0].dtype 'float16' does not match the model's 'float32'",
        "",
    ),
    "input rank": (lambda r: r["inputs"][0].update(shape=[-1, 64]), "the spec gives input [-1, 64]; the model runs on [-1, 1, 8, 8]", ""),
}


@pytest.mark.parametrize("case", MISMATCHES, ids=list(MISMATCHES))
def test_spec_that_disagrees_with_the_model(tmp_path: Path, case: str, capfd):
    change, expected, detail = MISMATCHES[case]
    spec = _spec_with(tmp_path, change)
    capfd.readouterr()
    with pytest.raises(SpecError) as info:
        export_fp32(spec, tmp_path / "model.onnx")
    assert expected in info.value.message and detail in info.value.message
    assert "\n" not in info.value.message
    printed = capfd.readouterr()
    assert "Torch IR" not in printed.err + printed.out and "graph(" not in printed.err  # nothing from the exporter's C++


def test_the_first_layer_tells_the_width_and_where_nothing_runs_its_rule(tmp_path: Path):
    import torch

    from optimizer.shape_hint import shape_error

    spec = _spec_with(tmp_path, lambda r: r["inputs"][0].update(shape=[-1, 1, 8, 8]))
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 3))
    message = shape_error(linear, spec, RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x64 and 10x3)")).message
    assert "the model runs on [-1, 10] (its first layer 1 is Linear with weight [3, 10])" in message
    tokens = torch.nn.Sequential(torch.nn.Embedding(100, 4), torch.nn.Flatten(), torch.nn.Linear(32, 3))
    message = shape_error(tokens, spec, RuntimeError("Expected tensor for argument #1 'indices'")).message
    assert "its first layer 0 is Embedding with weight [100, 4], so it takes integer token ids [N, T]" in message
    assert "\n" not in message


def test_onnx_source_with_other_names_or_static_batch(tmp_path: Path):
    first = load_spec(tiny_spec(tmp_path / "a"))
    model = onnx.load(str(export_fp32(first, tmp_path / "a" / "exported.onnx")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # a fixed batch the spec calls dynamic
    spec_path = tiny_spec(tmp_path / "b")
    onnx.save(model, str(tmp_path / "b" / "model.onnx"))
    raw = yaml.safe_load(spec_path.read_text())
    raw["source"] = {"path": "model.onnx"}
    spec_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"inputs\[0\]\.shape \[-1, 1, 8, 8\] does not match the model's \[2, 1, 8, 8\] at axis 0"):
        export_fp32(load_spec(spec_path), tmp_path / "b" / "out.onnx")
    raw["inputs"][0]["name"] = "pixels"
    spec_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"inputs list pixels, but the model's are input"):
        export_fp32(load_spec(spec_path), tmp_path / "b" / "out.onnx")


def test_static_exported_program_is_reported(tmp_path: Path):
    path = tiny_spec(tmp_path, source="pt2")
    torch.manual_seed(0)
    program = torch.export.export(TinyNet().eval(), (torch.rand(2, 1, 8, 8),))  # no dynamic_shapes
    torch.export.save(program, str(tmp_path / "model.pt2"))
    with pytest.raises(SpecError, match=r"inputs\[0\]\.shape .* at axis 0"):
        export_fp32(load_spec(path), tmp_path / "model.onnx")


def test_unreadable_sources(tmp_path: Path):
    path = tiny_spec(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a zip")
    with pytest.raises(SpecError, match=r"source\.path is not a TorchScript file"):
        export_fp32(load_spec(path), tmp_path / "model.onnx")
    (tmp_path / "model.onnx").write_bytes(b"\x08garbage")
    raw = yaml.safe_load(path.read_text())
    raw["source"] = {"path": "model.onnx"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"source\.path is not a valid ONNX model"):
        export_fp32(load_spec(path), tmp_path / "out.onnx")
