"""infra/sagemaker: the CloudFormation template passes cfn-lint and grants no more than it must; the
Dockerfile (which cannot be built here: no Docker, no GPU) has the structure SageMaker needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.server.sagemaker_entry import MODEL_DIR
from tests.conftest import ROOT

TEMPLATE = ROOT / "infra" / "sagemaker" / "endpoint.yaml"
DOCKERFILE = ROOT / "infra" / "sagemaker" / "Dockerfile"


def lint(path: Path) -> list[str]:
    """cfn-lint's findings (errors, warnings and informational), as its own one-line messages."""
    from cfnlint.api import lint_file

    return [f"{m.rule.id} {m.linenumber}: {m.message}" for m in lint_file(path)]


def test_template_passes_cfn_lint():
    assert lint(TEMPLATE) == []


def test_cfn_lint_does_catch_a_broken_template(tmp_path):
    broken = tmp_path / "endpoint.yaml"
    broken.write_text(TEMPLATE.read_text().replace("SageMakerVariantInvocationsPerInstance", "InvocationsPerFortnight"))
    findings = lint(broken)
    assert any("InvocationsPerFortnight" in f for f in findings), findings


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    doc, problems = decode(str(TEMPLATE))
    assert not problems
    return doc


def test_template_declares_model_gpu_config_endpoint_and_invocation_scaling(template):
    resources = template["Resources"]
    kinds = {name: r["Type"] for name, r in resources.items()}
    for kind in (
        "AWS::SageMaker::Model",
        "AWS::SageMaker::EndpointConfig",
        "AWS::SageMaker::Endpoint",
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        "AWS::IAM::Role",
    ):
        assert kind in kinds.values(), kind
    assert template["Parameters"]["InstanceType"]["Default"] == "ml.g5.xlarge"
    assert {"ImageUri", "ModelDataUrl"} <= set(template["Parameters"])
    policy = resources["InvocationsScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert resources["ScalableTarget"]["Properties"]["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"


def test_execution_role_is_least_privilege(template):
    statements = [s for p in template["Resources"]["ExecutionRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    statements += template["Resources"]["AsyncPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), statement
        if statement["Resource"] == "*":  # only actions AWS offers no resource-level permission for
            assert actions in (["ecr:GetAuthorizationToken"], ["cloudwatch:PutMetricData"]), statement
            assert actions == ["ecr:GetAuthorizationToken"] or "Condition" in statement
    s3_reads = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert "ModelDataUrl" in json.dumps(s3_reads[0]["Resource"])  # the one model object, not its bucket


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line.strip()]


def test_dockerfile_structure():
    steps = instructions(DOCKERFILE.read_text())
    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and re.match(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-", steps[0][1])
    runs = " ".join(arg for kind, arg in steps if kind == "RUN")
    assert re.search(r'"onnxruntime-gpu==[\d.]+"', runs)
    assert not re.search(r"onnxruntime(?!-gpu)[=<>\" ]", runs), "the CPU onnxruntime must not join onnxruntime-gpu"
    assert "--no-deps ." in runs
    copies = [arg for kind, arg in steps if kind == "COPY"]
    assert "shared/ shared/" in copies and not any("optimizer" in c or "functions" in c for c in copies)
    assert "torch" not in " ".join(arg for kind, arg in steps if kind in ("RUN", "COPY", "ENV"))
    assert ("EXPOSE", "8080") in steps
    assert MODEL_DIR in runs
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    assert entrypoint == ["python", "-m", "shared.server.sagemaker_entry"] and json.loads(dict(steps)["CMD"]) == ["serve"]


def test_the_entry_point_accepts_serve_and_imports_no_torch():
    probe = "import sys, shared.server.sagemaker_entry as e; assert 'torch' not in sys.modules; e.main(['serve', '--help'])"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "{serve}" in done.stdout and "--port" in done.stdout
