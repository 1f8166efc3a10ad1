"""The deployed memory follows the artifact: with the `memorySize` param at `auto` (serverless.yml's default) the
bundle plugin sets the HTTP function's memory to the manifest's `extra.serving.recommended_memory_mb`, which
`slimserve optimize` measured; `osls package` writes it into the CloudFormation template."""

from __future__ import annotations

import json
import shutil

import pytest

from shared.artifact.loading import read_manifest
from slimserve.cli import main
from tests.optimizer.conftest import tiny_spec
from tests.osls import packaged_template, run_osls, service_folder

pytestmark = pytest.mark.usefixtures("osls_cli")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    spec = tiny_spec(tmp_path_factory.mktemp("project"))
    out = tmp_path_factory.mktemp("art") / "tiny"
    assert main(["optimize", str(spec), "--out", str(out), "--quiet", "--candidates", "int8-dynamic"]) == 0
    return out


def _memory(template: dict) -> dict[str, int]:
    return {k: r["Properties"]["MemorySize"] for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}


def test_memory_size_is_the_manifests_recommendation(artifact, tmp_path):
    recommended = read_manifest(artifact).extra["serving"]["recommended_memory_mb"]
    memory = _memory(packaged_template(tmp_path / "service", f"bundleArtifact={artifact}"))
    assert memory["HttpLambdaFunction"] == recommended != 1024
    assert memory["BatchLambdaFunction"] == 2048  # the batch function keeps its own param


def test_a_number_overrides_the_recommendation(artifact, tmp_path):
    memory = _memory(packaged_template(tmp_path / "service", f"bundleArtifact={artifact}", "memorySize=3008"))
    assert memory["HttpLambdaFunction"] == 3008


def test_a_bad_memory_size_is_one_line(artifact, tmp_path):
    service = service_folder(tmp_path / "service")
    proc = run_osls(
        service,
        "package",
        "--package",
        str(tmp_path / "out"),
        "--param=buildBundle=false",
        f"--param=bundleArtifact={artifact}",
        "--param=memorySize=lots",
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'the memorySize param "lots" must be auto or a whole number of MB from 128 to 10240' in said
    assert "Traceback" not in said and "    at " not in said


def test_without_a_manifest_auto_keeps_osls_default(tmp_path):
    service = tmp_path / "service"
    memory = _memory(packaged_template(service, f"bundleArtifact={tmp_path / 'absent'}"))
    assert memory["HttpLambdaFunction"] == 1024


def _environment(template: dict) -> dict[str, str]:
    return template["Resources"]["HttpLambdaFunction"]["Properties"]["Environment"]["Variables"]


def test_memory_measured_at_fewer_rows_than_the_limits_holds_requests_to_them(artifact, tmp_path):
    assert "SLIMSERVE_MAX_REQUEST_BATCH" not in _environment(packaged_template(tmp_path / "full", f"bundleArtifact={artifact}"))
    capped = shutil.copytree(artifact, tmp_path / "capped")  # as for long texts: measured at 32 of 1,024 rows
    manifest = json.loads((capped / "manifest.json").read_text())
    manifest["extra"]["serving"].update(batch=32, limit_batch=1024)
    (capped / "manifest.json").write_text(json.dumps(manifest))
    assert _environment(packaged_template(tmp_path / "service", f"bundleArtifact={capped}"))["SLIMSERVE_MAX_REQUEST_BATCH"] == "32"
