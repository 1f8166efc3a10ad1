"""infra/azure/deploy.sh with recording `az` and `func` first on PATH (the real CLIs need a subscription):
the resources it makes, the app settings the triggers' binding expressions resolve from, the publish."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "infra" / "azure" / "deploy.sh"
RECORDER = """#!/usr/bin/env bash
{ printf '%s\\n' "$(basename "$0")" "$PWD" "$@"; echo '----'; } >> "$CLI_LOG"
case "$*" in *show-connection-string*) echo "DefaultEndpointsProtocol=https;AccountName=sa;AccountKey=k" ;; esac
"""


@pytest.fixture
def run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cli in ("az", "func"):
        (bin_dir / cli).write_text(RECORDER)
        (bin_dir / cli).chmod(0o755)
    app_root = tmp_path / "app"
    app_root.mkdir()
    for name in ("function_app.py", "host.json", "requirements.txt"):
        (app_root / name).write_text("")
    log = tmp_path / "cli.log"

    def run(root: Path = app_root, **env: str):
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
        full = {**base, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CLI_LOG": str(log), **env}
        proc = subprocess.run(["bash", str(SCRIPT), str(root)], env=full, capture_output=True, text=True, timeout=30)
        calls = [c.strip("\n").split("\n") for c in log.read_text().split("----\n") if c.strip()] if log.exists() else []
        return proc, calls

    return run


def test_creates_storage_app_settings_and_publishes_the_app_root(run, tmp_path):
    proc, calls = run(
        RESOURCE_GROUP="rg",
        APP="app",
        STORAGE_ACCOUNT="sa",
        SLIMSERVE_OUTPUT="azure://out/results",
        SLIMSERVE_ARTIFACT="azure://models/a/1",
        ARTIFACT_SHA256="b" * 64,
    )
    assert proc.returncode == 0, proc.stderr
    commands = [(c[0], *c[2:4]) for c in calls]
    created = {(c[2], c[3], c[c.index("--name") + 1]) for c in calls if c[0] == "az" and "create" in c[2:5] and "--name" in c}
    assert {("storage", "container", "incoming"), ("storage", "container", "out")} <= created
    assert {("storage", "queue", "slimserve-requests"), ("storage", "queue", "slimserve-requests-poison")} <= created
    create = next(c for c in calls if c[2:4] == ["functionapp", "create"])
    assert {"--runtime", "python", "--runtime-version", "3.12", "--functions-version", "4", "--os-type", "Linux"} <= set(create)
    settings = next(c for c in calls if c[2:5] == ["functionapp", "config", "appsettings"])
    assert {
        "SLIMSERVE_INPUT_CONTAINER=incoming",
        "SLIMSERVE_INPUT_QUEUE=slimserve-requests",
        "SLIMSERVE_OUTPUT=azure://out/results",
        "SLIMSERVE_ARTIFACT=azure://models/a/1",
        "SLIMSERVE_ARTIFACT_SHA256=" + "b" * 64,
    } <= set(settings)
    publish = next(c for c in calls if c[0] == "func")
    assert publish[1] == str(tmp_path / "app") and publish[2:] == ["azure", "functionapp", "publish", "app", "--python"]
    assert commands.index(("func", "azure", "functionapp")) > commands.index(("az", "functionapp", "config"))
    assert "AccountKey" not in proc.stdout


def test_refuses_what_it_cannot_deploy(run, tmp_path):
    proc, calls = run(tmp_path, RESOURCE_GROUP="rg", APP="app", STORAGE_ACCOUNT="sa")
    assert proc.returncode == 2 and "no azure-functions app root" in proc.stderr and calls == []
    proc, calls = run(RESOURCE_GROUP="rg", APP="app", STORAGE_ACCOUNT="sa", SLIMSERVE_OUTPUT="s3://b/p")
    assert proc.returncode == 2 and "azure://" in proc.stderr and calls == []
    proc, calls = run(RESOURCE_GROUP="rg", APP="app", STORAGE_ACCOUNT="sa", SLIMSERVE_ARTIFACT="azure://models/a/1")
    assert proc.returncode == 2 and "is not pinned" in proc.stderr and calls == []
