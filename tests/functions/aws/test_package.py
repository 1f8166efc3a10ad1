"""`osls package` on serverless.yml, offline and without AWS credentials, from a clean clone: the bundle
plugin (infra/aws/bundle-plugin.js) builds `package.artifact` with `slimserve bundle` from the artifact the
`bundleArtifact` param names, reuses it when nothing changed, and says what to run when there is no artifact.
The template deploys exactly the bytes the builder wrote (CodeSha256), and declares the function and its
routes. That the zip answers from an empty folder is tests/bundle's job."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.bundle.builds import tiny_artifact
from tests.osls import run_osls, service_folder
from tests.tools import need

pytestmark = pytest.mark.usefixtures("osls_cli")

ZIP = Path("dist") / "aws-lambda" / "slimserve.zip"


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Path:
    """A clone after `make demo`: serverless.yml, the plugin and artifacts/digits/1 (here the tiny artifact), no dist/."""
    service = service_folder(tmp_path_factory.mktemp("service"))
    shutil.copytree(tiny_artifact(), service / "artifacts" / "digits" / "1")
    return service


@pytest.fixture(scope="module")
def packaged(service, tmp_path_factory) -> tuple[Path, str]:
    """`osls package` once from the clean clone: (its package folder, what it printed)."""
    out = tmp_path_factory.mktemp("package")
    proc = run_osls(service, "package", "--package", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout + proc.stderr


def test_package_builds_the_zip_itself_then_reuses_it(service, packaged, tmp_path):
    _, said = packaged
    assert "slimserve bundle artifacts/digits/1 --arch x86_64 --python 3.12 --out dist/aws-lambda" in said
    assert "wrote dist/aws-lambda/slimserve.zip" in said and "reusing" not in said
    built = (service / ZIP).stat()

    again = run_osls(service, "package", "--package", str(tmp_path / "again"))

    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing dist/aws-lambda/slimserve.zip" in again.stdout + again.stderr
    assert (service / ZIP).stat().st_mtime_ns == built.st_mtime_ns  # the same file, not a rebuild


def test_a_missing_artifact_is_one_line_naming_what_to_run(tmp_path):
    service = service_folder(tmp_path / "clone")

    proc = run_osls(service, "package")

    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    lines = [line for line in said.splitlines() if "no artifact at artifacts/digits/1" in line]
    expected = (
        "no artifact at artifacts/digits/1: run `make demo` (or `slimserve optimize SPEC --out artifacts/digits/1`), "
        'or name another with --param="bundleArtifact=DIR"'
    )
    assert lines == [expected]
    assert "Traceback" not in said and "Cannot access package artifact" not in said
    assert not (service / ZIP).exists()


def lambda_functions(template: dict) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}


def test_every_function_deploys_the_zip_the_builder_wrote(service, packaged):
    packaged, _ = packaged
    built = service / ZIP
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
    with zipfile.ZipFile(service / ZIP) as zf:
        names = set(zf.namelist())
    assert {"functions/aws/handler.py", "shared/http/app.py", "artifact/manifest.json", "artifact/model.onnx"} <= names
    assert not any(n.split("/")[0] in {"optimizer", "tests", "examples", "node_modules", "artifacts", "torch"} for n in names)


def test_cloudformation_declares_the_function_and_its_routes(packaged):
    packaged, _ = packaged
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
    packaged, _ = packaged
    api = __import__("cfnlint.api", fromlist=["api"])
    matches = api.lint_file(packaged / "cloudformation-template-update-stack.json")
    errors = [f"{m.rule.id}: {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == [] and {m.rule.id for m in matches} <= {"W3005"}  # osls's own redundant DependsOn: W3005 only


NODE_CHECK = r"""
const Plugin = require(process.argv[1]);
class ServerlessError extends Error {}
const plugin = new Plugin({ classes: { Error: ServerlessError } }, {}, {});
try {
  plugin.checkDirectUpload(process.argv[2], 'dist/aws-lambda/slimserve.zip');
  console.log('passed');
} catch (error) {
  console.log(error instanceof ServerlessError ? error.message : `unexpected: ${error}`);
}
"""


@pytest.mark.parametrize("zipped, verdict", [(40 * 2**20, "passed"), (60 * 2**20, "is 60.0 MiB, over Lambda's 50 MiB limit")])
def test_deploy_function_stops_a_zip_over_the_direct_upload_limit(tmp_path, zipped, verdict):
    """`deploy function` uploads straight to Lambda (no S3): the plugin's check before it packages the function."""
    node = shutil.which("node")
    need("node", node is not None, "install Node.js 20 (make test needs it for the osls CLI)")
    report = tmp_path / "bundle.json"
    report.write_text(json.dumps({"direct_upload_limit_bytes": 50 * 2**20, "sizes": {"zipped_bytes": zipped}}))
    plugin = Path(__file__).resolve().parents[3] / "infra" / "aws" / "bundle-plugin.js"
    proc = subprocess.run([node, "-e", NODE_CHECK, str(plugin), str(report)], capture_output=True, text=True, timeout=60)
    assert verdict in proc.stdout, proc.stdout + proc.stderr
    if zipped > 50 * 2**20:
        assert "run `serverless deploy` (it uploads through S3)" in proc.stdout
