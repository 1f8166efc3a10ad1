"""Artifacts in object storage (moto S3): pinned by their manifest's sha256, fetched into the cache at cold
start (streamed to disk), verified, reused, refused when tampered with or not what the pin says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from shared.boot.build import load_repository
from shared.config import Settings
from shared.errors import ArtifactError
from shared.serving.repository import ModelRepository
from shared.storage import Storage
from tests.helpers import write_tiny_artifact


@pytest.fixture
def store(aws) -> Storage:
    return Storage()


@pytest.fixture
def remote(aws, tmp_path) -> tuple[str, Path]:
    """The tiny artifact uploaded to s3://models-<test>/tiny/1/."""
    local = write_tiny_artifact(tmp_path / "local")
    s3 = aws.client("s3")
    bucket = f"models-{hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]}"
    s3.create_bucket(Bucket=bucket)
    for path in local.iterdir():
        s3.put_object(Bucket=bucket, Key=f"tiny/1/{path.name}", Body=path.read_bytes())
    pin = hashlib.sha256((local / "manifest.json").read_bytes()).hexdigest()
    return f"s3://{bucket}/tiny/1#sha256={pin}", local


@pytest.fixture
def gets(store):
    """Keys of every S3 GetObject that shared.storage makes, counted at botocore's own hook."""
    seen: list[str] = []
    client = store._backends["s3"].client()
    client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **kw: seen.append(params["Key"]))
    return seen


def load(uri: str, cache: Path, store: Storage | None = None, **settings) -> ModelRepository:
    return load_repository(Settings(artifact=uri, cache_dir=str(cache), **settings), store or Storage(), Path("/nonexistent"))


def test_fetched_once_verified_then_reused(remote, gets, store, tmp_path):
    uri, local = remote
    cache = tmp_path / "cache"

    model = next(iter(load(uri, cache, store)))
    digest = hashlib.sha256((local / "manifest.json").read_bytes()).hexdigest()
    assert [p.name for p in cache.iterdir()] == [digest]  # no staging folder left behind
    assert (cache / digest / "model.onnx").read_bytes() == (local / "model.onnx").read_bytes()
    assert sorted(gets) == ["tiny/1/manifest.json", "tiny/1/model.onnx"]
    assert model.answer({"input": np.ones((2, 4), np.float32)})[0]["probs"].shape == (2, 3)

    mtime = (cache / digest / "model.onnx").stat().st_mtime_ns
    gets.clear()
    load(uri, cache, store)
    assert gets == ["tiny/1/manifest.json"]  # the manifest names the cache folder; the weights stay put
    assert (cache / digest / "model.onnx").stat().st_mtime_ns == mtime


def test_a_tampered_remote_file_is_refused_and_not_cached(remote, aws, tmp_path):
    uri, local = remote
    bucket = uri.split("/")[2]
    tampered = bytearray((local / "model.onnx").read_bytes())
    tampered[-1] ^= 0xFF
    aws.client("s3").put_object(Bucket=bucket, Key="tiny/1/model.onnx", Body=bytes(tampered))
    cache = tmp_path / "cache"

    with pytest.raises(ArtifactError, match="sha256 of model.onnx .* refusing to load"):
        load(uri, cache)
    assert list(cache.iterdir()) == []


def test_a_cache_that_no_longer_verifies_is_fetched_again(remote, gets, store, tmp_path):
    uri, _ = remote
    cache = tmp_path / "cache"
    load(uri, cache, store)
    (folder,) = cache.iterdir()
    (folder / "model.onnx").write_bytes(b"rotted")

    gets.clear()
    load(uri, cache, store)
    assert sorted(gets) == ["tiny/1/manifest.json", "tiny/1/model.onnx"]
    assert (folder / "model.onnx").read_bytes() != b"rotted"


def test_a_missing_remote_artifact_says_where(aws, tmp_path):
    aws.client("s3").create_bucket(Bucket="empty-models")
    with pytest.raises(ArtifactError, match="s3://empty-models/tiny/1/manifest.json does not exist"):
        load("s3://empty-models/tiny/1", tmp_path / "cache", allow_unpinned=True)


def test_local_and_remote_artifacts_side_by_side(remote, tmp_path):
    uri, _ = remote
    other = write_tiny_artifact(tmp_path / "other", name="other")
    repository = load(f"{uri},file://{other}", tmp_path / "cache")
    assert sorted(m.name for m in repository) == ["other", "tiny"]


def test_an_unpinned_remote_artifact_is_refused_unless_allowed(remote, tmp_path):
    uri, _ = remote
    prefix = uri.partition("#")[0]
    with pytest.raises(ArtifactError, match=r"is not pinned: append #sha256=<sha256 of its manifest.json>"):
        load(prefix, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused before anything was read
    assert [m.name for m in load(prefix, tmp_path / "cache", allow_unpinned=True)] == ["tiny"]


def test_whoever_writes_the_bucket_cannot_choose_the_model(remote, aws, tmp_path):
    """A new manifest (and model) under the pinned prefix: the pin no longer matches, nothing loads."""
    uri, local = remote
    bucket = uri.split("/")[2]
    other = write_tiny_artifact(tmp_path / "other", classes=5)
    for path in other.iterdir():
        aws.client("s3").put_object(Bucket=bucket, Key=f"tiny/1/{path.name}", Body=path.read_bytes())
    with pytest.raises(ArtifactError, match=r"manifest.json has sha256 .*, SLIMSERVE_ARTIFACT pins .*; refusing to load"):
        load(uri, tmp_path / "cache")


@pytest.mark.parametrize("pin", ["abc", "G" * 64, "../" * 22])
def test_a_malformed_pin_is_refused(tmp_path, pin):
    with pytest.raises(ArtifactError, match="64 lowercase hex digits"):
        load(f"s3://b/tiny/1#sha256={pin}", tmp_path / "cache")


def test_the_pin_may_come_as_its_own_setting(remote, tmp_path):
    """SLIMSERVE_ARTIFACT_SHA256: what serverless.yml's artifactSha256 and the deploy scripts' ARTIFACT_SHA256 set."""
    uri, local = remote
    prefix, _, pin = uri.partition("#sha256=")
    assert [m.name for m in load(prefix, tmp_path / "cache", artifact_sha256=pin)] == ["tiny"]
    with pytest.raises(ArtifactError, match="pins one artifact"):
        load(f"{prefix},{prefix}", tmp_path / "cache", artifact_sha256=pin)
