"""Bundling every placement: a `delivery: fetch` artifact becomes a zip without its weights whose artifact/fetch.json
names the pinned prefix, and that zip, unpacked, fetches the model from moto S3 and answers what onnxruntime
answers; an endpoint-placed one becomes the zip with its local fallback plus SageMaker's model.tar.gz. Every
refusal is one line (`slimserve: error: ...`), never a traceback."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from optimizer.bundle import probe
from shared.artifact.loading import file_entries, read_manifest
from slimserve.cli import main
from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.bundle.builds import PYTHON312, write_fetch_artifact
from tests.helpers import linear_softmax_onnx, write_tiny_artifact


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("slimserve: error: "), err
    return lines[0]


@pytest.fixture
def fetch_artifact(tmp_path) -> Path:
    return write_fetch_artifact(tmp_path / "big")


@pytest.mark.usefixtures("python312")
def test_a_fetch_delivered_bundle_holds_no_weights_and_answers_from_s3(aws, fetch_artifact, tmp_path, capsys):
    aws.client("s3").create_bucket(Bucket="fetched-models")
    prefix = "s3://fetched-models/big/1"
    assert main(["upload", str(fetch_artifact), prefix, "--quiet"]) == 0
    digest = hashlib.sha256((fetch_artifact / "manifest.json").read_bytes()).hexdigest()
    assert f"artifact at {prefix}#sha256={digest}" in capsys.readouterr().out
    out = tmp_path / "dist"

    assert main(["bundle", str(fetch_artifact), "--target", "aws-lambda", "--out", str(out), "--fetch-from", prefix, "--quiet"]) == 0

    report = json.loads((out / "bundle.json").read_text())
    assert report["artifact"]["fetch_from"] == f"{prefix}#sha256={digest}" and report["artifact"]["delivery"] == "fetch"
    assert report["probe"]["status"] == 200  # the builder's probe answered with the model from the folder here
    weights = [(fetch_artifact / "model.onnx").read_bytes(), (fetch_artifact / "model.onnx.data").read_bytes()]
    with zipfile.ZipFile(out / "slimserve.zip") as zf:
        names = zf.namelist()
        assert json.loads(zf.read("artifact/fetch.json")) == {"location": f"{prefix}#sha256={digest}"}
        assert not any(w in zf.read(n) for n in names for w in weights)  # no model bytes anywhere in the zip
        task_root = tmp_path / "task"
        zf.extractall(task_root)
    assert sorted(n for n in names if n.startswith("artifact/")) == ["artifact/fetch.json", "artifact/manifest.json"]

    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}]}
    event = probe.api_event("POST", "/v2/models/tiny/infer", request)
    cache = tmp_path / "cache"
    lambda_runtime = str(probe.lambda_runtime_path(tmp_path / "var-runtime"))  # boto3, as Lambda provides it
    answer = probe.run(PYTHON312, task_root, event, env={**aws.env, "SLIMSERVE_CACHE_DIR": str(cache)}, extra_path=(lambda_runtime,))

    assert answer["response"]["statusCode"] == 200, answer["response"]
    import onnxruntime as ort

    expected = ort.InferenceSession(str(fetch_artifact / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in json.loads(answer["response"]["body"])["outputs"]}
    np.testing.assert_allclose(outputs["logits"], expected[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs["probs"], expected[1], rtol=1e-6, atol=1e-6)
    assert (cache / digest / "model.onnx.data").read_bytes() == weights[1]  # fetched, verified, cached


def test_the_runtime_refuses_a_fetch_json_that_pins_another_manifest(aws, fetch_artifact, tmp_path):
    from shared.boot.build import load_repository
    from shared.config import Settings
    from shared.errors import ArtifactError
    from shared.storage import Storage

    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / "manifest.json").write_bytes((fetch_artifact / "manifest.json").read_bytes())
    (folder / "fetch.json").write_text(json.dumps({"location": "s3://fetched-models/big/1#sha256=" + "0" * 64}))
    with pytest.raises(ArtifactError, match="refusing to load"):
        load_repository(Settings(artifact=str(folder), cache_dir=str(tmp_path / "cache")), Storage(), folder)


def test_a_fetch_delivered_artifact_without_a_location_says_what_to_pass(fetch_artifact, tmp_path, capsys):
    code = main(["bundle", str(fetch_artifact), "--target", "aws-lambda", "--out", str(tmp_path / "out"), "--quiet"])
    line = one_line_error(capsys)
    assert code == 1 and "is delivered by fetch" in line and "pass --fetch-from s3://BUCKET/PREFIX" in line
    assert "slimserve upload" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fetch-from", "ftp://host/models"], "not a pinnable s3://"),
        (["--fetch-from", "/local/folder"], "not a pinnable s3://"),
        (["--fetch-from", "s3://b/p#sha256=" + "0" * 64], "--fetch-from pins 000000000000..., but"),
        (["--fetch-from", "s3://b/p#sha256=nothex"], "64 lowercase hex digits"),
        (["--target", "sagemaker", "--fetch-from", "s3://b/p"], "--fetch-from is for function targets"),
    ],
)
def test_bad_fetch_locations_are_one_line(fetch_artifact, tmp_path, capsys, args, message):
    target = [] if "--target" in args else ["--target", "aws-lambda"]
    assert main(["bundle", str(fetch_artifact), *target, "--out", str(tmp_path / "out"), "--quiet", *args]) != 0
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bundle", "{missing}", "--target", "aws-lambda"], "no artifact at"),
        (["bundle", "{missing}", "--target", "sagemaker"], "no artifact at"),
        (["upload", "{missing}", "s3://bucket/prefix"], "no artifact at"),
        (["upload", "{artifact}", "/not/a/bucket"], "give an s3://, gs:// or azure:// prefix"),
        (["upload", "{artifact}", "s3://bucket/p#sha256=" + "0" * 64], "without a pin"),
    ],
)
def test_bundle_and_upload_errors_are_one_line(fetch_artifact, tmp_path, capsys, argv, message):
    argv = [a.format(missing=tmp_path / "missing", artifact=fetch_artifact) for a in argv]
    assert main([*argv, "--quiet"] if argv[0] == "upload" else [*argv, "--out", str(tmp_path / "o")]) != 0
    assert message in one_line_error(capsys)


def test_upload_over_another_artifact_is_refused_unless_replaced(aws, fetch_artifact, tmp_path, capsys):
    aws.client("s3").create_bucket(Bucket="versions")
    other = write_fetch_artifact(tmp_path / "other")  # the same model written again: another manifest
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = "2"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["upload", str(fetch_artifact), "s3://versions/big", "--quiet"]) == 0
    assert main(["upload", str(fetch_artifact), "s3://versions/big", "--quiet"]) == 0  # the same artifact again: fine
    capsys.readouterr()

    assert main(["upload", str(other), "s3://versions/big", "--quiet"]) == 1
    assert "s3://versions/big already holds another artifact" in one_line_error(capsys)
    assert main(["upload", str(other), "s3://versions/big", "--quiet", "--replace"]) == 0


def test_upload_to_a_missing_bucket_is_one_line(aws, fetch_artifact, capsys):
    assert main(["upload", str(fetch_artifact), "s3://no-such-bucket/big/1", "--quiet"]) == 1
    assert "no-such-bucket" in one_line_error(capsys)


def test_an_endpoint_placed_artifact_bundles_its_fallback_and_the_sagemaker_tarball(tmp_path, capsys):
    from tests.endpoint.conftest import write_endpoint_artifact

    endpoint_dir, _ = write_endpoint_artifact(tmp_path / "placed", fallback=True)
    out = tmp_path / "dist"

    assert main(["bundle", str(endpoint_dir), "--target", "aws-lambda", "--out", str(out), "--quiet"]) == 0

    with zipfile.ZipFile(out / "slimserve.zip") as zf:
        bundled = sorted(n for n in zf.namelist() if n.startswith("artifact/"))
        fallback = zf.read("artifact/fallback.onnx")
    assert bundled == ["artifact/fallback.onnx", "artifact/manifest.json"]  # the endpoint's weights stay out
    assert fallback == (endpoint_dir / "fallback.onnx").read_bytes()
    with tarfile.open(out / "model.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members["model.onnx"] == (endpoint_dir / "model.onnx").read_bytes()
    assert sorted(members) == ["fallback.onnx", "manifest.json", "model.onnx"]
    report = json.loads((out / "bundle.json").read_text())
    assert report["artifact"]["placement"] == "endpoint" and report["artifact"]["endpoint_model"] == "model.tar.gz"
    assert "--fetch-from" not in capsys.readouterr().err


def test_the_zip_of_an_endpoint_artifact_without_a_fallback_carries_no_model(tmp_path):
    from tests.endpoint.conftest import write_endpoint_artifact

    endpoint_dir, _ = write_endpoint_artifact(tmp_path / "placed", fallback=False)
    out = tmp_path / "dist"
    assert main(["bundle", str(endpoint_dir), "--target", "aws-lambda", "--out", str(out), "--quiet"]) == 0
    with zipfile.ZipFile(out / "slimserve.zip") as zf:
        assert sorted(n for n in zf.namelist() if n.startswith("artifact/")) == ["artifact/manifest.json"]
    assert io.BytesIO((out / "model.tar.gz").read_bytes()).getbuffer().nbytes > 0


def test_external_data_is_left_out_with_the_model(fetch_artifact):
    from optimizer.bundle.common import shipped_files

    manifest = read_manifest(fetch_artifact)
    assert shipped_files(manifest, fetch_artifact) == []
    other = write_tiny_artifact(fetch_artifact.parent / "plain")
    onnx.save(linear_softmax_onnx(seed=3), other / "extra.onnx")
    plain = replace(read_manifest(other), files=file_entries(other, ["model.onnx", "extra.onnx"]))
    assert shipped_files(plain, other) == ["extra.onnx", "model.onnx"]
    assert shipped_files(plain, other, fetched=True) == ["extra.onnx"]


def test_serve_keeps_the_pin_of_a_model_a_fetch_json_fetched(aws, fetch_artifact, tmp_path):
    """The arbiter fetches; workers started later load the cache folder, checked against the pin again."""
    from shared.artifact.fetch import manifest_digest
    from shared.config import Settings
    from shared.server.serve import check_artifacts
    from shared.storage import Storage
    from slimserve.upload import upload

    aws.client("s3").create_bucket(Bucket="pinned")
    location = upload(fetch_artifact, "s3://pinned/big/1", Storage(), say=lambda _: None)
    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / "manifest.json").write_bytes((fetch_artifact / "manifest.json").read_bytes())
    (folder / "fetch.json").write_text(json.dumps({"location": location}))

    (checked,) = check_artifacts(Settings(artifact=str(folder), cache_dir=str(tmp_path / "cache")))

    assert checked.endswith(f"#sha256={manifest_digest(fetch_artifact)}") and checked.startswith(str(tmp_path / "cache"))
