"""A Hugging Face folder of sharded safetensors past the external-data threshold, end to end: export ->
int4 weight-only -> an artifact of model.onnx + model.onnx.data, both listed -> served answers equal
onnxruntime's on the candidate file; a data file missing or unlisted is refused in one line.

SLIMSERVE_EXTERNAL_DATA_BYTES makes "big" mean past 20 KB here, so the path a 4 GB model takes runs in seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.test import Client

from optimizer.evaluate import TimingConfig
from shared.artifact.loading import load_artifact, write_manifest
from shared.artifact.manifest import EXTERNAL_DATA, Manifest
from shared.boot.build import app_from_folders
from shared.errors import ArtifactError
from shared.serving.text import TextConfig, TextEncoder
from tests.conftest import ROOT
from tests.optimizer.text.conftest import tiny_project

TEXTS = ["Grace recommended the blue bicycle every winter.", "Hi!", "A longer sentence, so that the first one is padded."]
THRESHOLD = "20000"


@pytest.fixture(scope="module")
def big_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optimizer.pipeline import optimize

    tmp = tmp_path_factory.mktemp("big-bert")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIMSERVE_EXTERNAL_DATA_BYTES", THRESHOLD)
        spec = tiny_project(tmp, tolerance=0.2, shard="100KB")
        return optimize(
            spec,
            out=tmp / "artifact",
            quiet=True,
            candidates=("int4-weight-only-b128",),
            timing=TimingConfig(warmup=1, runs=3, max_seconds=0.2),
        )


def test_the_source_is_sharded_safetensors(big_artifact: Path):
    folder = big_artifact.parent / "bert"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (folder / "model.safetensors").exists()


def test_the_artifact_is_the_model_and_one_listed_data_file(big_artifact: Path):
    manifest = load_artifact(big_artifact).manifest
    assert manifest.chosen.candidate == "int4-weight-only-b128"
    assert {"model.onnx", "model.onnx.data"} <= set(manifest.files)
    assert manifest.extra[EXTERNAL_DATA] == ["model.onnx.data"] and manifest.weight_files == ("model.onnx", "model.onnx.data")
    assert not [p.name for p in big_artifact.iterdir() if p.name.endswith(".data") and p.name != "model.onnx.data"]
    # the weights are in the data file, not in the graph: int4 blocks of the embeddings and MatMuls
    assert manifest.files["model.onnx.data"].bytes > manifest.files["model.onnx"].bytes
    chosen = next(c for c in manifest.candidates if c.name == "int4-weight-only-b128")
    shipped = manifest.files["model.onnx"].bytes + manifest.files["model.onnx.data"].bytes
    assert abs(chosen.bytes - shipped) < 0.01 * shipped  # both files counted; only the data file's name in the graph differs


def test_served_answers_equal_onnxruntime_on_the_candidate_file(big_artifact: Path):
    manifest = load_artifact(big_artifact).manifest
    client = Client(app_from_folders([str(big_artifact)]))
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]}
    response = client.post("/v2/models/tiny-bert/infer", data=json.dumps(body))
    assert response.status_code == 200, response.json
    (output,) = response.json["outputs"]
    served = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    encoder = TextEncoder(TextConfig.from_extra(manifest.extra), (big_artifact / "tokenizer.json").read_text())
    session = ort.InferenceSession(str(big_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["embedding"], encoder.encode(TEXTS))[0]
    np.testing.assert_allclose(served, want, rtol=1e-5, atol=1e-6)


def _copy(artifact: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(artifact, folder)
    return folder


def test_a_missing_data_file_is_refused_in_one_line(big_artifact: Path, tmp_path: Path):
    folder = _copy(big_artifact, tmp_path)
    (folder / "model.onnx.data").unlink()
    with pytest.raises(ArtifactError, match=r"model.onnx.data is listed in the manifest but missing"):
        load_artifact(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "slimserve", "serve", str(folder), "--port", "0"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "model.onnx.data is listed in the manifest but missing" in proc.stderr


def test_an_unlisted_data_file_is_refused_in_one_line(big_artifact: Path, tmp_path: Path):
    folder = _copy(big_artifact, tmp_path)
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["files"]["model.onnx.data"]
    del raw["extra"][EXTERNAL_DATA]
    write_manifest(folder, Manifest.from_dict(raw))
    with pytest.raises(ArtifactError, match=r"reads external data from 'model.onnx.data', which the manifest does not list"):
        load_artifact(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "slimserve", "serve", str(folder), "--port", "0"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_manifest_naming_external_data_it_does_not_list_is_refused(big_artifact: Path):
    raw = json.loads((big_artifact / "manifest.json").read_text())
    raw["extra"][EXTERNAL_DATA] = ["elsewhere.data"]
    with pytest.raises(ArtifactError, match=r"extra.external_data must list files named in files"):
        Manifest.from_dict(raw)
