"""Every platform adapter conforms: it exposes the documented entry points with the platform's calling
convention, stays thin (the logic lives in `shared`), and importing it pulls in no other platform's SDK
and no torch. mangum has one handler per event source but no test that they agree; this is ours.

Each adapter is imported in a fresh interpreter (they load a model at import and register themselves
with their framework), with a tiny real artifact.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import write_tiny_artifact

ROOT = Path(__file__).resolve().parents[2]
MAX_CODE_LINES = 80  # without the module docstring, comments and blank lines
OTHER_SDKS = {
    "aws": {"boto3", "botocore", "aws_lambda_powertools", "serverless_wsgi"},
    "gcp": {"google", "functions_framework", "flask", "cloudevents"},
    "azure": {"azure"},
}


@dataclass(frozen=True)
class Adapter:
    platform: str
    module: str
    entry_points: dict[str, int | None]  # name -> positional parameters (None: not a function)

    @property
    def path(self) -> Path:
        return ROOT / (self.module.replace(".", "/") + ".py")


ADAPTERS = [
    Adapter("aws", "functions.aws.handler", {"http": 2, "batch": 2}),  # (event, context)
    Adapter("gcp", "functions.gcp.main", {"http": 1, "on_storage_event": 1}),  # (flask request) / (CloudEvent)
    Adapter("azure", "functions.azure.function_app", {"app": None}),  # the func.FunctionApp the worker indexes
]

SCRIPT = r"""
import importlib, inspect, json, sys

module_name, names = sys.argv[1], sys.argv[2].split(",")
before = {m.partition(".")[0] for m in sys.modules}
module = importlib.import_module(module_name)
after = {m.partition(".")[0] for m in sys.modules}
info = {"imported": sorted(after - before), "entry_points": {}}
for name in names:
    obj = getattr(module, name, None)
    params = len(inspect.signature(obj).parameters) if inspect.isfunction(obj) else None
    info["entry_points"][name] = {"present": obj is not None, "params": params}
if module_name.endswith(".main"):
    from functions_framework._function_registry import REGISTRY_MAP
    info["registered"] = {n: REGISTRY_MAP.get(n) for n in names}
if module_name.endswith(".function_app"):
    import azure.functions as func
    info["is_function_app"] = isinstance(module.app, func.FunctionApp)
    info["functions"] = {f.get_function_name(): json.loads(json.dumps(f.get_bindings_dict()["bindings"], default=str))
                         for f in module.app.get_functions()}
print(json.dumps(info))
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


def inspect_adapter(adapter: Adapter, artifact: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
    env.update(SLIMSERVE_ARTIFACT=str(artifact), SLIMSERVE_LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, adapter.module, ",".join(adapter.entry_points)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def code_lines(path: Path) -> int:
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    if docstring is not None:
        first = ast.parse(source).body[0]
        skip = set(range(first.lineno, first.end_lineno + 1))
    else:
        skip = set()
    return sum(1 for n, line in enumerate(source.splitlines(), 1) if n not in skip and line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.platform)
def test_adapter_is_thin(adapter):
    assert adapter.path.exists()
    assert code_lines(adapter.path) < MAX_CODE_LINES, (
        f"{adapter.path.name} grew past {MAX_CODE_LINES} lines of code: move logic into shared/"
    )


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.platform)
def test_adapter_exposes_its_entry_points_and_no_other_platform(adapter, artifact):
    info = inspect_adapter(adapter, artifact)
    for name, params in adapter.entry_points.items():
        assert info["entry_points"][name] == {"present": True, "params": params}, name
    imported = set(info["imported"])
    assert "torch" not in imported
    for platform, sdks in OTHER_SDKS.items():
        if platform != adapter.platform:
            assert not imported & sdks, f"{adapter.module} imports {platform}'s {sorted(imported & sdks)}"
    if adapter.platform == "gcp":
        assert info["registered"] == {"http": "http", "on_storage_event": "cloudevent"}
    if adapter.platform == "azure":
        assert info["is_function_app"]
        triggers = {name: bindings[0] for name, bindings in info["functions"].items()}
        assert {name: t["type"] for name, t in triggers.items()} == {
            "http": "httpTrigger",
            "openai": "httpTrigger",
            "on_blob": "blobTrigger",
            "on_queue": "queueTrigger",
        }
        assert triggers["http"]["route"] == "v2/{*route}" and "function" in triggers["http"]["authLevel"].lower()
        assert triggers["openai"]["route"] == "v1/{*route}" and "function" in triggers["openai"]["authLevel"].lower()
        assert triggers["on_queue"]["queueName"] == "%SLIMSERVE_INPUT_QUEUE%"
        assert triggers["on_blob"]["path"] == "%SLIMSERVE_INPUT_CONTAINER%/{name}"


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.platform)
def test_a_setting_that_cannot_work_fails_the_init_with_its_one_line(adapter, artifact):
    """An unknown SLIMSERVE_LOG_FORMAT fails the platform's init (no function serves half-configured), and
    the error it reports is one line naming the setting and what it may be."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
    env.update(SLIMSERVE_ARTIFACT=str(artifact), SLIMSERVE_LOG_FORMAT="xml")
    proc = subprocess.run(
        [sys.executable, "-c", f"import {adapter.module}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "ValueError: SLIMSERVE_LOG_FORMAT='xml' must be one of json, text"
    if adapter.platform == "aws":  # powertools' JSON line: the message alone, no traceback of ours
        (line,) = [json.loads(x) for x in proc.stdout.splitlines() if "cold start failed" in x]
        assert line["level"] == "ERROR" and "exception" not in line
        assert line["message"] == "cold start failed: SLIMSERVE_LOG_FORMAT='xml' must be one of json, text"
