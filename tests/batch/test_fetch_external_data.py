"""A model with its weights in `model.onnx.data` (a model past 2 GB, in miniature) fetched from object storage
(moto S3): both files arrive beside each other in the cache, verified, and the model answers as it does locally."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx

from shared.artifact.loading import file_entries, load_artifact, write_manifest
from shared.artifact.manifest import EXTERNAL_DATA, Manifest
from shared.boot.build import load_repository
from shared.config import Settings
from shared.storage import Storage
from tests.helpers import write_tiny_artifact


def with_external_data(folder: Path) -> Path:
    model = onnx.load(str(folder / "model.onnx"))
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    raw = json.loads((folder / "manifest.json").read_text())
    raw["files"] = {
        name: {"sha256": e.sha256, "bytes": e.bytes} for name, e in file_entries(folder, [*raw["files"], "model.onnx.data"]).items()
    }
    raw["extra"][EXTERNAL_DATA] = ["model.onnx.data"]
    write_manifest(folder, Manifest.from_dict(raw))
    assert load_artifact(folder).manifest.weight_files == ("model.onnx", "model.onnx.data")
    return folder


def test_a_fetched_model_reads_its_data_file_from_the_cache(aws, tmp_path):
    local = with_external_data(write_tiny_artifact(tmp_path / "local"))
    s3 = aws.client("s3")
    bucket = f"big-{hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]}"
    s3.create_bucket(Bucket=bucket)
    for path in local.iterdir():
        s3.put_object(Bucket=bucket, Key=f"tiny/1/{path.name}", Body=path.read_bytes())
    pin = hashlib.sha256((local / "manifest.json").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    settings = Settings(artifact=f"s3://{bucket}/tiny/1#sha256={pin}", cache_dir=str(cache))

    model = next(iter(load_repository(settings, Storage(), Path("/nonexistent"))))

    assert sorted(p.name for p in (cache / pin).iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data"]
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    here = next(iter(load_repository(Settings(artifact=str(local)), Storage(), Path("/nonexistent"))))
    np.testing.assert_array_equal(model.answer({"input": x})[0]["probs"], here.answer({"input": x})[0]["probs"])
