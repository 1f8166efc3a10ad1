"""`osls package` on serverless.yml, offline and without AWS credentials, with the bundle builder's zip as
`package.artifact`: the template deploys exactly the bytes the builder wrote (CodeSha256), and declares the
function and its routes. That the zip answers from an empty folder is tests/bundle's job."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.bundle.builds import tiny_lambda_bundle

ROOT = Path(__file__).resolve().parents[3]
OSLS = ROOT / "node_modules" / ".bin" / "osls"

pytestmark = pytest.mark.usefixtures("osls_cli")


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Path:
    """The service folder after `slimserve bundle ARTIFACT --target aws-lambda --out dist/aws-lambda`."""
    service = tmp_path_factory.mktemp("service")
    shutil.copy(ROOT / "serverless.yml", service)
    shutil.copy(ROOT / "package.json", service)
    built, _ = tiny_lambda_bundle()
    shutil.copytree(built, service / "dist" / "aws-lambda")
    return service


@pytest.fixture(scope="module")
def packaged(service, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(out / "no-credentials"),  # no credentials anywhere: none are needed
        AWS_CONFIG_FILE=str(out / "no-config"),
    )
    proc = subprocess.run(
        [str(OSLS), "package", "--package", str(out)], cwd=service, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def lambda_functions(template: dict) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}


def test_every_function_deploys_the_zip_the_builder_wrote(service, packaged):
    built = service / "dist" / "aws-lambda" / "slimserve.zip"
    report = json.loads((service / "dist" / "aws-lambda" / "bundle.json").read_text())
    assert hashlib.sha256(built.read_bytes()).hexdigest() == report["sha256"]
    template = json.loads((packaged / "cloudformation-template-update-stack.json").read_text())
    functions = lambda_functions(template)
    assert functions and all(f["Code"]["S3Key"].endswith("/slimserve.zip") for f in functions.values())
    # osls hashes the file it will upload; AWS::Lambda::Version carries it: the builder's bytes, unchanged.
    versions = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Version"]
    expected = base64.b64encode(hashlib.sha256(built.read_bytes()).digest()).decode()
    assert versions and {v["CodeSha256"] for v in versions} == {expected}
    state = json.loads((packaged / "serverless-state.json").read_text())
    assert state["service"]["initialServerlessConfig"]["package"]["artifact"] == "dist/aws-lambda/slimserve.zip"
    assert not list(packaged.glob("*.zip"))  # osls packs nothing of its own from the service folder


def test_the_deployed_zip_holds_both_handlers_and_the_artifact(service):
    with zipfile.ZipFile(service / "dist" / "aws-lambda" / "slimserve.zip") as zf:
        names = set(zf.namelist())
    assert {"functions/aws/handler.py", "shared/http/app.py", "artifact/manifest.json", "artifact/model.onnx"} <= names
    assert not any(n.split("/")[0] in {"optimizer", "tests", "examples", "node_modules", "artifacts", "torch"} for n in names)


def test_cloudformation_declares_the_function_and_its_routes(packaged):
    template = json.loads((packaged / "cloudformation-template-update-stack.json").read_text())
    resources = template["Resources"].values()
    (function,) = [f for f in lambda_functions(template).values() if f["Handler"] == "functions/aws/handler.http"]
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["x86_64"]
    assert function["Timeout"] < 30  # under API Gateway's 30 s
    assert function["Environment"]["Variables"]["SLIMSERVE_ARTIFACT"] == "/var/task/artifact"
    routes = {r["Properties"]["RouteKey"] for r in resources if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes == {"GET /v2", "ANY /v2/{proxy+}", "ANY /v1/{proxy+}"}
    (integration,) = [r["Properties"] for r in resources if r["Type"] == "AWS::ApiGatewayV2::Integration"]
    assert (integration["IntegrationType"], integration["PayloadFormatVersion"]) == ("AWS_PROXY", "2.0")


def test_cloudformation_template_passes_cfn_lint(packaged):
    """cfn-lint (it comes with moto[server]) checks the template against CloudFormation's resource specs, offline."""
    api = __import__("cfnlint.api", fromlist=["api"])
    matches = api.lint_file(packaged / "cloudformation-template-update-stack.json")
    errors = [f"{m.rule.id}: {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == [] and {m.rule.id for m in matches} <= {"W3005"}  # osls's own redundant DependsOn: W3005 only
