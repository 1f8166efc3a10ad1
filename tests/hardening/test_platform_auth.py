"""Who may call a deployed function, per platform: on AWS every HTTP API route sits behind a JWT authorizer
(issuer and audience are deploy parameters) and the batch function has no HTTP route at all (only its
queue, through IAM); Azure's HTTP function needs a function key; GCP deploys without unauthenticated access."""

from __future__ import annotations

import json

import pytest

from tests.osls import ABSENT, OSLS, packaged_template
from tests.tools import need

ISSUER, AUDIENCE = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example", "client-123"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    need("osls (node_modules/.bin/osls)", OSLS.exists(), ABSENT)
    return packaged_template(tmp_path_factory.mktemp("service"), f"jwtIssuerUrl={ISSUER}", f"jwtAudience={AUDIENCE}")


def of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == kind}


def test_every_http_route_needs_a_jwt_from_the_configured_issuer(template):
    ((authorizer_id, authorizer),) = of_type(template, "AWS::ApiGatewayV2::Authorizer").items()
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


# Azure: tests/functions/azure/test_http.py reads every HTTP trigger's auth level off the indexed FunctionApp.
# GCP: tests/functions/gcp/test_deploy_script.py reads --no-allow-unauthenticated off the gcloud calls.
