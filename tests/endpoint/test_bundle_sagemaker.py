"""`slimserve bundle --target sagemaker`: model.tar.gz with the artifact at its root, the same bytes every
time, loadable as /opt/ml/model by the endpoint."""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile

import pytest

from shared.artifact.loading import load_artifact
from tests.conftest import ROOT
from tests.endpoint.conftest import write_endpoint_artifact


def slimserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimserve", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_archive_is_deterministic_with_the_artifact_at_its_root(tmp_path):
    from optimizer.bundle_sagemaker import build

    endpoint_dir, _ = write_endpoint_artifact(tmp_path)
    (endpoint_dir / "notes.txt").write_text("not in the manifest: does not ship")
    first = build(endpoint_dir, tmp_path / "one").read_bytes()
    (endpoint_dir / "model.onnx").touch()  # a new mtime must not change the bytes
    second = build(endpoint_dir, tmp_path / "two").read_bytes()

    assert first == second
    assert gzip.decompress(first)  # a valid gzip stream
    with tarfile.open(tmp_path / "one" / "model.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["fallback.onnx", "manifest.json", "model.onnx"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    assert load_artifact(tmp_path / "opt-ml-model").manifest.placement == "endpoint"  # sha256s verified
    assert first[4:8] == b"\0\0\0\0"  # gzip MTIME field


def test_cli_writes_model_tar_gz_and_refuses_a_broken_artifact(tmp_path):
    endpoint_dir, _ = write_endpoint_artifact(tmp_path)
    done = slimserve("bundle", str(endpoint_dir), "--target", "sagemaker", "--out", str(tmp_path / "dist"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dist" / "model.tar.gz").is_file() and "model.tar.gz" in done.stdout

    (endpoint_dir / "model.onnx").write_bytes(b"tampered")
    broken = slimserve("bundle", str(endpoint_dir), "--target", "sagemaker", "--out", str(tmp_path / "dist2"))
    assert broken.returncode == 2 and "refusing to load" in broken.stderr and "Traceback" not in broken.stderr
    assert not (tmp_path / "dist2" / "model.tar.gz").exists()


@pytest.mark.parametrize("target", ["lambda-layer"])
def test_unknown_target_is_a_usage_error(tmp_path, target):
    done = slimserve("bundle", str(tmp_path), "--target", target)
    assert done.returncode == 2 and "invalid choice" in done.stderr
