"""Compressed model files: inflated once into the cache, verified against the manifest, then served."""

from __future__ import annotations

import dataclasses
import gzip
import lzma
from pathlib import Path

import numpy as np
import pytest

from shared.artifact import inflate
from shared.artifact.loading import file_entries, load_artifact, read_manifest, sha256_of, write_manifest
from shared.errors import ArtifactError
from shared.serving.local import LocalModel
from tests.helpers import write_tiny_artifact


def _compressed(tmp_path: Path, suffix: str = ".gz", inflated: dict | None = None) -> Path:
    """The tiny artifact with its model shipped as model.onnx<suffix> and extra.inflated recorded."""
    folder = write_tiny_artifact(tmp_path / "art")
    plain = folder / "model.onnx"
    name = "model.onnx" + suffix
    opener = gzip.open if suffix == ".gz" else lzma.open
    with opener(folder / name, "wb") as fh:
        fh.write(plain.read_bytes())
    entry = inflated or {"sha256": sha256_of(plain), "bytes": plain.stat().st_size}
    plain.unlink()
    manifest = read_manifest(folder)
    manifest = dataclasses.replace(
        manifest, model_file=name, files=file_entries(folder, [name]), extra={**manifest.extra, "inflated": entry}
    )
    write_manifest(folder, manifest)
    return folder


@pytest.mark.parametrize("suffix", [".gz", ".xz"])
def test_a_compressed_model_is_inflated_into_the_cache_and_served(tmp_path: Path, suffix: str):
    folder = _compressed(tmp_path, suffix)
    cache = tmp_path / "cache"
    artifact = load_artifact(folder)
    model = LocalModel.load(artifact, str(cache), threads=1)
    out = model.predict({"input": np.ones((2, 4), dtype=np.float32)})
    assert out["probs"].shape == (2, 3)
    entry = artifact.manifest.extra["inflated"]
    inflated = cache / "inflated" / entry["sha256"] / "model.onnx"
    assert sha256_of(inflated) == entry["sha256"] and not list(inflated.parent.glob(".inflating-*"))
    assert inflate.model_path(artifact, cache) == inflated  # a second cold start reuses the verified copy


def test_plain_models_are_loaded_in_place(tiny_artifact: Path, tmp_path: Path):
    artifact = load_artifact(tiny_artifact)
    assert inflate.model_path(artifact, tmp_path / "cache") == artifact.model_path
    assert not (tmp_path / "cache").exists()


def test_a_tampered_cached_copy_is_replaced(tmp_path: Path):
    artifact = load_artifact(_compressed(tmp_path))
    path = inflate.model_path(artifact, tmp_path / "cache")
    path.write_bytes(b"not a model")
    assert inflate.model_path(artifact, tmp_path / "cache") == path
    assert sha256_of(path) == artifact.manifest.extra["inflated"]["sha256"]


def test_refuses_what_does_not_inflate_to_the_recorded_model(tmp_path: Path):
    wrong = _compressed(tmp_path / "a", inflated={"sha256": "0" * 64, "bytes": 10**9})
    with pytest.raises(ArtifactError, match="refusing to load"):
        inflate.model_path(load_artifact(wrong), tmp_path / "cache")
    bomb = _compressed(tmp_path / "b", inflated={"sha256": "0" * 64, "bytes": 10})
    with pytest.raises(ArtifactError, match="inflates to more than the 10 bytes"):
        inflate.model_path(load_artifact(bomb), tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("model.onnx"))


def test_compressed_model_needs_its_inflated_entry(tmp_path: Path):
    artifact = load_artifact(_compressed(tmp_path))
    bare = dataclasses.replace(artifact, manifest=dataclasses.replace(artifact.manifest, extra={}))
    with pytest.raises(ArtifactError, match="extra.inflated"):
        inflate.model_path(bare, tmp_path / "cache")


def test_an_inflated_model_may_read_no_external_data(tmp_path: Path):
    """The scan covers what onnxruntime reads: the inflated copy, which lives beside nothing listed."""
    from tests.hardening.models import write_external_data_artifact

    folder = write_external_data_artifact(tmp_path / "ext", location="weights.bin", listed=True)
    plain = folder / "model.onnx"
    with gzip.open(folder / "model.onnx.gz", "wb") as fh:
        fh.write(plain.read_bytes())
    entry = {"sha256": sha256_of(plain), "bytes": plain.stat().st_size}
    plain.unlink()
    manifest = read_manifest(folder)
    names = ["model.onnx.gz", "weights.bin"]
    write_manifest(
        folder, dataclasses.replace(manifest, model_file="model.onnx.gz", files=file_entries(folder, names), extra={"inflated": entry})
    )
    artifact = load_artifact(folder)  # the compressed file itself is no protobuf to scan
    with pytest.raises(ArtifactError, match="reads external data from 'weights.bin'"):
        inflate.model_path(artifact, tmp_path / "cache")


def test_a_non_hex_inflated_digest_is_refused_with_the_manifest(tmp_path: Path):
    with pytest.raises(ArtifactError, match="64 lowercase hex"):
        load_artifact(_compressed(tmp_path, inflated={"sha256": "../../../../tmp/x", "bytes": 10}))
