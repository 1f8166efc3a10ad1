"""What `osls package` makes of serverless.yml's batch and SnapStart parts: the bucket notifies the queue
without a dependency cycle, the queue dead-letters, the batch function reports partial failures, each role
holds only what its function needs, and the HTTP function is snapshotted and invoked through its alias.

The zip is a placeholder (osls only hashes it); tests/functions/aws/test_package.py packages the real one.
"""

from __future__ import annotations

import json

import pytest

from tests.osls import packaged_template

pytestmark = pytest.mark.usefixtures("osls_cli")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    return packaged_template(tmp_path_factory.mktemp("service"))


def resource(template: dict, kind: str) -> dict:
    (props,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]
    return props


def statements(template: dict, role: str) -> list[dict]:
    return [s for p in template["Resources"][role]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def refs(node) -> set[str]:
    """Logical ids a template fragment depends on through Ref or Fn::GetAtt."""
    if isinstance(node, dict):
        found = {node["Ref"]} if isinstance(node.get("Ref"), str) else set()
        if "Fn::GetAtt" in node:
            found.add(node["Fn::GetAtt"][0])
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def test_bucket_notifies_the_queue_without_a_cycle(template):
    bucket = template["Resources"]["InputBucket"]
    (notification,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "incoming/"}]
    assert refs(notification["Queue"]) == {"BatchQueue"} and bucket["DependsOn"] in ("BatchQueuePolicy", ["BatchQueuePolicy"])
    policy = template["Resources"]["BatchQueuePolicy"]
    assert "InputBucket" not in refs(policy)  # the bucket ARN is built from its name: no cycle
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"


def test_queue_dead_letters_and_the_function_reports_partial_failures(template):
    queue = template["Resources"]["BatchQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 3 and refs(queue["RedrivePolicy"]) == {"BatchDeadLetterQueue"}
    functions = {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    batch = functions["BatchLambdaFunction"]
    assert batch["Handler"] == "functions/aws/handler.batch"
    assert queue["VisibilityTimeout"] >= 6 * batch["Timeout"]  # AWS: a visibility timeout of 6x the function's
    mapping = resource(template, "AWS::Lambda::EventSourceMapping")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert refs(mapping) == {"BatchQueue", "BatchLambdaFunction"}
    output = json.dumps(batch["Environment"]["Variables"]["SLIMSERVE_OUTPUT"])
    assert '"s3://"' in output and '"/results/"' in output


def test_each_role_holds_only_what_its_function_needs(template):
    batch = {s["Sid"]: s for s in statements(template, "BatchRole")}
    assert batch["ReadInputsOnly"]["Action"] == "s3:GetObject" and json.dumps(batch["ReadInputsOnly"]["Resource"]).endswith(
        '"/incoming/*"]]}'
    )
    assert batch["WriteResultsOnly"]["Action"] == "s3:PutObject" and json.dumps(batch["WriteResultsOnly"]["Resource"]).endswith(
        '"/results/*"]]}'
    )
    assert refs(batch["ConsumeTheBatchQueueOnly"]["Resource"]) == {"BatchQueue"}
    assert not any("*" == s.get("Resource") or "s3:*" in json.dumps(s["Action"]) for s in batch.values())
    http_actions = json.dumps([s["Action"] for s in statements(template, "IamRoleLambdaExecution")])
    assert "sqs:" not in http_actions and "s3:" not in http_actions  # the HTTP function touches neither


def test_http_function_is_snapshotted_and_invoked_through_its_alias(template):
    functions = {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    assert functions["HttpLambdaFunction"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert functions["HttpLambdaFunction"]["Runtime"] in ("python3.12", "python3.13")
    assert "SnapStart" not in functions["BatchLambdaFunction"]
    alias = resource(template, "AWS::Lambda::Alias")
    integration = resource(template, "AWS::ApiGatewayV2::Integration")
    assert alias["Name"] == "snapstart" and json.dumps(integration["IntegrationUri"]).endswith('"snapstart"]]}')
