"""Who may call a deployed function, per platform: on AWS every HTTP API route sits behind a JWT authorizer
(issuer and audience are deploy parameters) and the batch function has no HTTP route at all (only its
queue, through IAM); Azure's HTTP function needs a function key; GCP deploys without unauthenticated access."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile

import pytest

from tests.conftest import ROOT

OSLS = ROOT / "node_modules" / ".bin" / "osls"
ISSUER, AUDIENCE = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example", "client-123"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    if not OSLS.exists():
        pytest.skip("node_modules/.bin/osls is absent; run `npm ci` (make test does)")
    service = tmp_path_factory.mktemp("service")
    shutil.copy(ROOT / "serverless.yml", service)
    shutil.copy(ROOT / "package.json", service)
    (service / "dist" / "aws-lambda").mkdir(parents=True)
    with zipfile.ZipFile(service / "dist" / "aws-lambda" / "slimserve.zip", "w") as zf:
        zf.writestr("placeholder.txt", "osls only hashes the zip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(service / "none"), AWS_CONFIG_FILE=str(service / "none"))
    params = [f"--param=jwtIssuerUrl={ISSUER}", f"--param=jwtAudience={AUDIENCE}"]
    proc = subprocess.run([str(OSLS), "package", "--package", str(service / "out"), *params], cwd=service, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((service / "out" / "cloudformation-template-update-stack.json").read_text())


def of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == kind}


def test_every_http_route_needs_a_jwt_from_the_configured_issuer(template):
    (authorizer_id, authorizer), = of_type(template, "AWS::ApiGatewayV2::Authorizer").items()
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["IdentitySource"] == ["$request.header.Authorization"]
    assert authorizer["JwtConfiguration"] == {"Issuer": ISSUER, "Audience": [AUDIENCE]}
    routes = of_type(template, "AWS::ApiGatewayV2::Route").values()
    assert routes and all(r["AuthorizationType"] == "JWT" and r["AuthorizerId"] == {"Ref": authorizer_id} for r in routes)


def test_the_batch_function_has_no_http_route(template):
    functions = of_type(template, "AWS::Lambda::Function")
    (batch,) = [name for name, f in functions.items() if f["Handler"] == "functions/aws/handler.batch"]
    integrations = of_type(template, "AWS::ApiGatewayV2::Integration").values()
    assert integrations and not any(batch in json.dumps(i) for i in integrations)
    assert not any(batch in json.dumps(p) for p in of_type(template, "AWS::Lambda::Permission").values() if "apigateway" in json.dumps(p))


def test_azure_http_function_needs_a_function_key():
    source = (ROOT / "functions" / "azure" / "function_app.py").read_text()
    assert "http_auth_level=func.AuthLevel.FUNCTION" in source and 'auth_level=func.AuthLevel.FUNCTION' in source
    assert "AuthLevel.ANONYMOUS" not in source


def test_gcp_functions_are_deployed_without_unauthenticated_access():
    script = (ROOT / "infra" / "gcp" / "deploy.sh").read_text()
    assert "--no-allow-unauthenticated" in script and "--allow-unauthenticated " not in script
