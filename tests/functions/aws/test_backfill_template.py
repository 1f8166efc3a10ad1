"""infra/aws/backfill.yaml, the Step Functions Distributed Map backfill for buckets too large to list from a
laptop: it passes cfn-lint (which validates the state machine's definition too), its role holds only what it
needs, and the messages its JSONata builds are what the batch handler reads (evaluated with jsonata-python
on a page of items shaped as ListObjectsV2's ItemReader hands them to a child workflow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cfnlint  # noqa: E402,F401  (the dev extra: always installed where the suite runs)
import pytest

from shared.batch.s3_sqs import unwrap_sqs
from tests.conftest import ROOT
from tests.tools import need_module

TEMPLATE = ROOT / "infra" / "aws" / "backfill.yaml"


def lint(path: Path) -> list[str]:
    from cfnlint.api import lint_file

    return [f"{m.rule.id} {m.linenumber}: {m.message}" for m in lint_file(path)]


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    doc, problems = decode(str(TEMPLATE))
    assert not problems
    return doc


def test_template_passes_cfn_lint():
    assert lint(TEMPLATE) == []


def test_cfn_lint_does_catch_a_broken_state_machine(tmp_path):
    broken = tmp_path / "backfill.yaml"
    for old, new in (("StartAt: EachObject", "StartAt: EachObjct"), ("Type: Map\n", "Type: Mapp\n")):
        broken.write_text(TEMPLATE.read_text().replace(old, new))
        findings = lint(broken)
        assert any(repr(new.split()[-1]) in f for f in findings), findings


def test_the_role_may_list_the_bucket_send_to_the_queue_and_run_its_own_children_only(template):
    role = template["Resources"]["StateMachineRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    actions = sorted(a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    assert actions == [
        "s3:ListBucket",
        "sqs:SendMessage",
        "states:DescribeExecution",
        "states:RedriveExecution",
        "states:StartExecution",
        "states:StopExecution",
    ]
    assert all(s["Resource"] != "*" for s in statements)
    assert {"Ref": "BatchQueueArn"} in [s["Resource"] for s in statements]


def definition(template: dict) -> dict:
    """The definition with DefinitionSubstitutions applied, as Step Functions does at deploy."""
    props = template["Resources"]["StateMachine"]["Properties"]
    values = {
        "Bucket": "slimserve-dev-123456789012-us-east-1",
        "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "DefaultPrefix": "incoming/",
        "OutputPrefix": "results/",
    }
    assert set(props["DefinitionSubstitutions"]) == set(values)
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], json.dumps(props["Definition"]))
    return json.loads(text)


def evaluate(expression: str, states: dict):
    import jsonata  # jsonata-python (dev extra)

    return jsonata.Jsonata(expression.strip().removeprefix("{%").removesuffix("%}")).evaluate(None, {"states": states})


def test_each_child_sends_what_the_batch_handler_reads(template):
    need_module("jsonata", "install the dev extra (make test does)")
    doc = definition(template)
    each = doc["States"]["EachObject"]
    assert each["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2" and each["ItemBatcher"]["MaxItemsPerBatch"] == 10
    children = each["ItemProcessor"]["States"]
    keys = ["incoming/a b+c.npy", "incoming/ünï/x%20.npz", "incoming/folder/", "results/incoming/a b+c.npy.json", "incoming/z.jsonl"]
    child_input = {
        "Items": [
            {"Key": k, "Size": 10, "Etag": '"abc"', "LastModified": "2024-01-01T00:00:00Z", "StorageClass": "STANDARD"} for k in keys
        ],
        "BatchInput": each["ItemBatcher"]["BatchInput"],
    }

    entries = evaluate(children["Messages"]["Output"]["entries"], {"input": child_input})

    assert [e["Id"] for e in entries] == ["0", "1", "2"]  # unique within the batch, as SendMessageBatch wants
    event = {"Records": [{"messageId": e["Id"], "body": e["MessageBody"]} for e in entries]}
    unwrapped = unwrap_sqs(event, "s3://slimserve-dev-123456789012-us-east-1/results/")
    bucket = "s3://slimserve-dev-123456789012-us-east-1/"
    assert [r.key for r in unwrapped.records] == [
        bucket + "incoming/a b+c.npy",
        bucket + "incoming/ünï/x%20.npz",
        bucket + "incoming/z.jsonl",
    ]
    assert not unwrapped.rejected
    assert evaluate(children["AnyToSend"]["Choices"][0]["Condition"], {"input": {"entries": entries}}) is True
    nothing = evaluate(children["Messages"]["Output"]["entries"], {"input": {**child_input, "Items": child_input["Items"][2:4]}})
    assert nothing == [] and evaluate(children["AnyToSend"]["Choices"][0]["Condition"], {"input": {"entries": nothing}}) is False


def test_an_execution_lists_its_input_prefix_or_the_default(template):
    need_module("jsonata", "install the dev extra (make test does)")
    prefix = definition(template)["States"]["EachObject"]["ItemReader"]["Arguments"]["Prefix"]
    assert evaluate(prefix, {"input": {"prefix": "incoming/2024/"}}) == "incoming/2024/"
    assert evaluate(prefix, {"input": {}}) == "incoming/"
