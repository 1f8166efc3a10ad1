"""serverless.yml lets the function invoke the model endpoint, that one only, and hands it the name, which
is a parameter. Read from `osls print` (the configuration as osls resolves it, offline, no credentials);
tests/functions/aws/test_package.py runs the full `osls package`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT

OSLS = ROOT / "node_modules" / ".bin" / "osls"

pytestmark = pytest.mark.usefixtures("osls_cli")


def resolved(tmp_path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    done = subprocess.run([str(OSLS), "print", "--format", "json", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def sagemaker_statements(config: dict) -> list[dict]:
    statements = config["provider"].get("iam", {}).get("role", {}).get("statements", [])
    actions = lambda s: s["Action"] if isinstance(s["Action"], list) else [s["Action"]]  # noqa: E731
    return [dict(s, Action=actions(s)) for s in statements if any(a.startswith("sagemaker:") for a in actions(s))]


def test_function_may_invoke_the_named_endpoint_and_nothing_else_of_sagemaker(tmp_path):
    config = resolved(tmp_path, "--param=endpointName=digits-gpu")  # the name is a deploy-time parameter

    assert config["provider"]["environment"]["SLIMSERVE_ENDPOINT_NAME"] == "digits-gpu"
    (statement,) = sagemaker_statements(config)
    assert statement["Effect"] == "Allow" and statement["Action"] == ["sagemaker:InvokeEndpoint"]
    parts = statement["Resource"]["Fn::Join"][1]
    assert parts[0] == "arn:" and parts[-1] == ":endpoint/digits-gpu" and "*" not in json.dumps(parts)
