import json

import pytest

from shared.artifact.loading import load_artifact
from shared.artifact.manifest import Manifest
from shared.config import Settings
from shared.errors import ArtifactError


def edit_manifest(folder, **changes):
    path = folder / "manifest.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return doc


def test_round_trip(tiny_artifact):
    artifact = load_artifact(tiny_artifact)
    assert artifact.manifest.name == "tiny"
    assert Manifest.from_dict(artifact.manifest.to_dict()) == artifact.manifest


def test_one_changed_byte_is_refused(tiny_artifact):
    model = tiny_artifact / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 of model.onnx .* refusing to load"):
        load_artifact(tiny_artifact)


def test_truncated_file_is_refused(tiny_artifact):
    model = tiny_artifact / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="bytes, the manifest says"):
        load_artifact(tiny_artifact)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        ({"name": "Bad Name"}, "name 'Bad Name' must match"),
        ({"task": "dreaming"}, "task 'dreaming' must be one of"),
        ({"placement": "moon"}, "placement 'moon'"),
        ({"model_file": "other.onnx"}, "not listed in files"),
        ({"inputs": []}, "inputs must list at least one tensor"),
        ({"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}]}, r"inputs\[0\].datatype 'FLOAT' is unknown"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [0]}]}, r"outputs\[0\].shape"),
        ({"chosen": {}}, "chosen.candidate is missing"),
    ],
)
def test_bad_manifest_names_the_key(tiny_artifact, changes, message):
    edit_manifest(tiny_artifact, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tiny_artifact)


def test_files_outside_the_folder_are_refused(tiny_artifact, tmp_path):
    (tmp_path / "secret.onnx").write_bytes(b"x")
    doc = json.loads((tiny_artifact / "manifest.json").read_text())
    doc["files"]["../secret.onnx"] = {"sha256": "0" * 64, "bytes": 1}
    (tiny_artifact / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        load_artifact(tiny_artifact)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json; is this an artifact folder"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match=r"no artifact at .*absent: `slimserve optimize SPEC --out .*absent` writes one"):
        load_artifact(tmp_path / "absent")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(tmp_path)


def test_settings_precedence_argument_over_env_over_default():
    assert Settings.resolve({}).max_body_bytes == 6 * 1024 * 1024
    env = {"SLIMSERVE_MAX_BODY_BYTES": "100", "SLIMSERVE_PROVIDERS": "CPUExecutionProvider"}
    assert Settings.resolve(env).max_body_bytes == 100
    assert Settings.resolve(env, max_body_bytes=7).max_body_bytes == 7
    assert Settings.resolve(env).providers == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="SLIMSERVE_ORT_THREADS='many' is not an integer"):
        Settings.resolve({"SLIMSERVE_ORT_THREADS": "many"})
