"""`osls package` on serverless.yml, offline and without AWS credentials: what the zip holds (our code and the
artifact, nothing else) and what the CloudFormation template declares. Then the unpacked zip answers an
event with the artifact found where the handler looks by default."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.eventlib import load_event
from tests.helpers import write_tiny_artifact

ROOT = Path(__file__).resolve().parents[3]
OSLS = ROOT / "node_modules" / ".bin" / "osls"

pytestmark = pytest.mark.skipif(not OSLS.exists(), reason="node_modules/.bin/osls is absent; run `npm ci` (make test does)")


def _copy_tree(name: str, service: Path) -> None:
    shutil.copytree(ROOT / name, service / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Path:
    """The service folder as a checkout holds it, plus what must NOT ship: dev tools, tests, caches."""
    service = tmp_path_factory.mktemp("service")
    shutil.copy(ROOT / "serverless.yml", service)
    shutil.copy(ROOT / "package.json", service)
    for name in ("functions", "shared"):
        _copy_tree(name, service)
    write_tiny_artifact(service / "artifact", name="tiny")
    decoys = [
        "optimizer/cli.py",
        "tests/helpers.py",
        "examples/digits/train.py",
        ".venv/lib/python3.12/site-packages/torch/__init__.py",
        "node_modules/osls/package.json",
        "shared/__pycache__/app.cpython-312.pyc",
        "functions/aws/__pycache__/handler.cpython-312.pyc",
        "artifacts/digits/1/model.onnx",
        "README.md",
    ]
    for decoy in decoys:
        (service / decoy).parent.mkdir(parents=True, exist_ok=True)
        (service / decoy).write_text("must not ship\n")
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


def expected_files(service: Path) -> set[str]:
    names = {"functions/__init__.py"}
    for folder in ("functions/aws", "shared", "artifact"):
        names |= {p.relative_to(service).as_posix() for p in (service / folder).rglob("*") if p.is_file()}
    return {n for n in names if "__pycache__" not in n}


def test_zip_holds_the_code_and_the_artifact_only(service, packaged):
    with zipfile.ZipFile(packaged / "slimserve.zip") as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
    for required in ("functions/aws/handler.py", "shared/app.py", "artifact/manifest.json", "artifact/model.onnx"):
        assert required in names
    assert names == expected_files(service)
    assert not any(n.split("/")[0] in {"optimizer", "tests", "examples", ".venv", "node_modules", "artifacts"} for n in names)
    assert not any("torch" in n or n.endswith(".pyc") for n in names)


def test_cloudformation_declares_the_function_and_its_routes(packaged):
    template = json.loads((packaged / "cloudformation-template-update-stack.json").read_text())
    resources = template["Resources"].values()
    (function,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::Function"]
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == "functions/aws/handler.http"
    assert function["Architectures"] == ["x86_64"]
    assert function["Timeout"] < 30  # under API Gateway's 30 s
    assert function["Environment"]["Variables"]["SLIMSERVE_ARTIFACT"] == "/var/task/artifact"
    routes = {r["Properties"]["RouteKey"] for r in resources if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes == {"GET /v2", "ANY /v2/{proxy+}"}
    (integration,) = [r["Properties"] for r in resources if r["Type"] == "AWS::ApiGatewayV2::Integration"]
    assert (integration["IntegrationType"], integration["PayloadFormatVersion"]) == ("AWS_PROXY", "2.0")


def test_unpacked_zip_answers_with_its_own_artifact(packaged, tmp_path):
    """The zip's layout is what the handler expects: `artifact/` beside `functions/`, found without any setting."""
    task_root = tmp_path / "task"
    with zipfile.ZipFile(packaged / "slimserve.zip") as zf:
        zf.extractall(task_root)
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import functions.aws.handler as h; "
        "print(json.dumps({'files': [h.__file__, sys.modules['shared'].__file__], "
        "'response': h.http(json.load(sys.stdin), None)}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, str(task_root)],
        input=json.dumps(load_event("apigw-v2-post-json")),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert [Path(f) for f in out["files"]] == [task_root / "functions/aws/handler.py", task_root / "shared/__init__.py"]
    assert out["response"]["statusCode"] == 200
    assert json.loads(out["response"]["body"])["model_name"] == "tiny"


def test_cloudformation_template_passes_cfn_lint(packaged):
    """cfn-lint (it comes with moto[server]) checks the template against CloudFormation's resource specs, offline."""
    api = pytest.importorskip("cfnlint.api")
    matches = api.lint_file(packaged / "cloudformation-template-update-stack.json")
    errors = [f"{m.rule.id}: {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert matches is not None and errors == []  # osls's own redundant DependsOn gives W3005 warnings only
