"""torch never enters the function: the AWS handler imports and answers with torch made unimportable,
and importing it pulls in only the packages on an allow-list (click's tests/test_imports.py does this)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eventlib import load_event
from tests.helpers import write_tiny_artifact

ROOT = Path(__file__).resolve().parents[3]

# Third-party top-level packages the handler may import; everything else must be stdlib.
ALLOWED = {
    "functions",
    "shared",
    "onnxruntime",
    "numpy",
    "werkzeug",
    "markupsafe",  # werkzeug's
    "serverless_wsgi",
    "aws_lambda_powertools",
    "jmespath",  # powertools'
    "typing_extensions",  # powertools'
    "botocore",  # powertools tags botocore's user agent when botocore is there (it is, on Lambda)
    "snapshot_restore_py",  # SnapStart's runtime hooks; Lambda's python runtimes provide it
}
BLOCKED = {"torch", "transformers"}

SCRIPT = r"""
import importlib.abc, json, sys

BLOCKED = set(sys.argv[1].split(","))
attempts = []

class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{name} is unimportable in this test")
        return None

sys.meta_path.insert(0, Unimportable())
before = {name.partition(".")[0] for name in sys.modules}
import functions.aws.handler as handler
after = {name.partition(".")[0] for name in sys.modules}
response = handler.http(json.load(sys.stdin), None)
print(json.dumps({
    "response": response,
    "imported": sorted(after - before),
    "blocked_attempts": attempts,
    "handler_file": handler.__file__,
}))
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    artifact = write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")
    env = {**os.environ, "SLIMSERVE_ARTIFACT": str(artifact), "POWERTOOLS_LOG_LEVEL": "WARNING", "SLIMSERVE_LOG_LEVEL": "WARNING"}
    event = load_event("apigw-v2-post-json")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(sorted(BLOCKED))],
        cwd=ROOT,
        env=env,
        input=json.dumps(event),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_handler_answers_with_torch_unimportable(result):
    assert result["response"]["statusCode"] == 200
    body = json.loads(result["response"]["body"])
    assert [o["name"] for o in body["outputs"]] == ["logits", "probs"]
    assert Path(result["handler_file"]) == ROOT / "functions" / "aws" / "handler.py"


def test_torch_is_not_even_attempted(result):
    assert not BLOCKED & set(result["imported"])
    assert result["blocked_attempts"] == []


def test_handler_imports_only_allowed_packages(result):
    third_party = set(result["imported"]) - set(sys.stdlib_module_names) - {"__main__"}
    assert third_party <= ALLOWED, f"unexpected imports: {sorted(third_party - ALLOWED)}"
    assert {"onnxruntime", "numpy", "werkzeug", "serverless_wsgi", "shared", "functions"} <= third_party
