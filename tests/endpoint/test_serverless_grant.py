"""serverless.yml lets the function invoke the model endpoint, that one only, and hands it the name."""

from __future__ import annotations

import json

import pytest

from tests.functions.aws.test_package import OSLS, packaged, service  # noqa: F401  (the fixtures: one `osls package`)

pytestmark = pytest.mark.skipif(not OSLS.exists(), reason="node_modules/.bin/osls is absent; run `npm ci` (make test does)")


def test_function_may_invoke_the_named_endpoint_and_nothing_else_of_sagemaker(packaged):  # noqa: F811
    template = json.loads((packaged / "cloudformation-template-update-stack.json").read_text())
    resources = template["Resources"].values()
    (function,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::Function"]
    assert function["Environment"]["Variables"]["SLIMSERVE_ENDPOINT_NAME"] == "slimserve-gpu"
    statements = [s for r in resources if r["Type"] == "AWS::IAM::Role" for p in r["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    sagemaker = [s for s in statements if any(a.startswith("sagemaker:") for a in _actions(s))]
    assert len(sagemaker) == 1 and _actions(sagemaker[0]) == ["sagemaker:InvokeEndpoint"]
    resource = json.dumps(sagemaker[0]["Resource"])
    assert resource.endswith(':endpoint/slimserve-gpu"]]}') and "*" not in resource, resource


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
