"""`osls package --param="fetchFrom=s3://..."` on a `delivery: fetch` artifact: the bundle plugin passes the prefix
to `slimserve bundle --fetch-from`, the zip carries artifact/fetch.json instead of the model, and both functions'
roles may read that prefix (and nothing else of the bucket); without the param the build stops with one line."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.bundle.builds import write_fetch_artifact
from tests.osls import packaged_template, run_osls, service_folder

pytestmark = pytest.mark.usefixtures("osls_cli")

ZIP = Path("dist") / "aws-lambda" / "slimserve.zip"
PREFIX = "s3://model-store/big/1"


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Path:
    service = service_folder(tmp_path_factory.mktemp("service"))
    write_fetch_artifact(service / "artifacts" / "big" / "1")
    return service


def fetch_grants(role: dict) -> list[dict]:
    return [s for s in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"] if s.get("Sid") == "FetchTheArtifactOnly"]


def test_fetch_from_builds_a_zip_without_the_model_and_grants_reading_the_prefix(service, tmp_path):
    out = tmp_path / "package"
    proc = run_osls(service, "package", "--package", str(out), "--param=bundleArtifact=artifacts/big/1", f"--param=fetchFrom={PREFIX}")

    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    with zipfile.ZipFile(service / ZIP) as zf:
        names = zf.namelist()
        location = json.loads(zf.read("artifact/fetch.json"))["location"]
    assert location.startswith(f"{PREFIX}#sha256=") and "artifact/model.onnx" not in names and "artifact/model.onnx.data" not in names
    template = json.loads((out / "cloudformation-template-update-stack.json").read_text())
    resources = template["Resources"]
    expected = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::model-store/big/1/*"]]}
    for role in ("IamRoleLambdaExecution", "BatchRole"):
        (grant,) = fetch_grants(resources[role])
        assert (grant["Action"], grant["Resource"]) == ("s3:GetObject", expected)


def test_without_fetch_from_the_build_stops_with_what_to_pass(service, tmp_path):
    clone = service_folder(tmp_path / "clone")
    shutil.copytree(service / "artifacts", clone / "artifacts")

    proc = run_osls(clone, "package", "--package", str(tmp_path / "out"), "--param=bundleArtifact=artifacts/big/1")

    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in said
    assert "slimserve bundle failed: " in said and "is delivered by fetch" in said and "pass --fetch-from" in said
    assert not (clone / ZIP).exists()


def _functions(template: dict) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}


def test_a_fetched_model_over_512_mb_gets_its_tmp_and_the_http_function_goes_without_snapstart(service, tmp_path):
    small = _functions(packaged_template(tmp_path / "small", f"bundleArtifact={service / 'artifacts' / 'big' / '1'}"))
    assert small["HttpLambdaFunction"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert not any("EphemeralStorage" in f for f in small.values())  # a small model fits Lambda's 512 MB
    large = shutil.copytree(service / "artifacts" / "big" / "1", tmp_path / "large")
    manifest = json.loads((large / "manifest.json").read_text())
    manifest["files"][manifest["model_file"]]["bytes"] = 1_112_433_599  # (b) of bench/scale.py: int8, 1.07B parameters
    (large / "manifest.json").write_text(json.dumps(manifest))

    functions = _functions(packaged_template(tmp_path / "large-service", f"bundleArtifact={large}"))

    needed = {f["EphemeralStorage"]["Size"] for f in functions.values()}
    assert len(needed) == 1 and 1_112_433_599 * 1.2 / 2**20 <= needed.pop() <= 10240  # both functions fetch it
    assert "SnapStart" not in functions["HttpLambdaFunction"]  # SnapStart allows at most 512 MB of /tmp
