"""An artifact that must not be served is refused at load, with a message naming the file and the reason:
a byte changed, weights read from outside the folder (ONNX external data, even inside a subgraph), or from
a file the manifest does not list. The scan that finds external data needs no `onnx`; it is checked here
against onnx's own reading of the same files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from shared.artifact.external_data import external_locations
from shared.artifact.loading import load_artifact
from shared.errors import ArtifactError
from shared.serving.local import LocalModel
from tests.conftest import ROOT
from tests.hardening.models import write_external_data_artifact
from tests.helpers import linear_softmax_onnx, write_tiny_artifact


def serve_exit(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slimserve", "serve", str(folder), "--port", "0", "--workers", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_changed_byte_is_refused_at_load_and_by_the_server(tmp_path):
    folder = write_tiny_artifact(tmp_path / "tiny")
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"sha256 of model.onnx is .* the manifest says .*refusing to load"):
        load_artifact(folder)
    proc = serve_exit(folder)
    assert proc.returncode == 1 and "sha256 of model.onnx" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("in_subgraph", [False, True], ids=["initializer", "if-branch-constant"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, in_subgraph):
    folder = write_external_data_artifact(tmp_path / "art" / "tiny", "../secret.bin", listed=False, in_subgraph=in_subgraph)
    assert (tmp_path / "art" / "secret.bin").exists()
    with pytest.raises(ArtifactError, match=r"reads external data from '\.\./secret\.bin', outside the artifact folder; refusing to load"):
        load_artifact(folder)
    proc = serve_exit(folder)
    assert proc.returncode == 1 and "outside the artifact folder" in proc.stderr and "Traceback" not in proc.stderr


def test_absolute_external_data_path_is_refused(tmp_path):
    secret = tmp_path / "elsewhere" / "weights.bin"
    folder = write_external_data_artifact(tmp_path / "tiny", str(secret), listed=False)
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        load_artifact(folder)


def test_external_data_the_manifest_does_not_list_is_refused(tmp_path):
    folder = write_external_data_artifact(tmp_path / "tiny", "weights.bin", listed=False)
    with pytest.raises(ArtifactError, match="'weights.bin', which the manifest does not list"):
        load_artifact(folder)


def test_listed_external_data_inside_the_folder_loads_and_answers(tmp_path):
    folder = write_external_data_artifact(tmp_path / "tiny", "weights/w.bin", listed=True)
    model = LocalModel.load(load_artifact(folder), str(tmp_path / "cache"))
    reference = LocalModel.load(load_artifact(write_tiny_artifact(tmp_path / "plain")), str(tmp_path / "cache"))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(model.predict({"input": x})["probs"], reference.predict({"input": x})["probs"], rtol=1e-6)


def test_every_file_onnxruntime_loads_is_scanned_whatever_its_suffix(tmp_path):
    """A model file named `model.bin` (or a fallback named anything) is scanned like `model.onnx`."""
    import json

    folder = write_external_data_artifact(tmp_path / "tiny", "weights.bin", listed=False)
    (folder / "model.onnx").rename(folder / "model.bin")
    doc = json.loads((folder / "manifest.json").read_text())
    doc["files"]["model.bin"] = doc["files"].pop("model.onnx")
    doc["model_file"] = "model.bin"
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="'weights.bin', which the manifest does not list"):
        load_artifact(folder)
    doc["model_file"] = "model.bin"
    doc["files"]["plain.onnx"] = doc["files"]["model.bin"]
    doc["extra"] = {"fallback": {"model_file": "model.bin"}}
    (folder / "plain.onnx").write_bytes((folder / "model.bin").read_bytes())
    (folder / "manifest.json").write_text(json.dumps({**doc, "model_file": "plain.onnx"}))
    with pytest.raises(ArtifactError, match="'weights.bin', which the manifest does not list"):
        load_artifact(folder)  # the fallback, model.bin, is what reads it


def test_tampered_external_data_is_refused(tmp_path):
    folder = write_external_data_artifact(tmp_path / "tiny", "weights.bin", listed=True)
    data = bytearray((folder / "weights.bin").read_bytes())
    data[0] ^= 0x01
    (folder / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 of weights.bin"):
        load_artifact(folder)


def test_the_scan_finds_what_onnx_finds(tmp_path):
    model = linear_softmax_onnx(in_features=64, classes=32)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    saved = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    expected = {dict((e.key, e.value) for e in t.external_data)["location"] for t in _get_all_tensors(saved) if uses_external_data(t)}
    assert len(expected) == 2
    assert external_locations((tmp_path / "m.onnx").read_bytes()) == expected


@pytest.mark.parametrize(
    "garbage", [b"\x0a\xff\xff\xff\xff\x0f", b"\x07", b"\x3a\x05abc"], ids=["length-past-end", "bad-wire-type", "truncated"]
)
def test_a_model_file_that_is_not_protobuf_is_refused(tmp_path, garbage):
    folder = write_tiny_artifact(tmp_path / "tiny")
    (folder / "model.onnx").write_bytes(garbage)
    import json

    from shared.artifact.loading import file_entries

    doc = json.loads((folder / "manifest.json").read_text())
    doc["files"] = {n: {"sha256": e.sha256, "bytes": e.bytes} for n, e in file_entries(folder, ["model.onnx"]).items()}
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="not a valid ONNX protobuf"):
        load_artifact(folder)
