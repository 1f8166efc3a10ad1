"""infra/gcp/deploy.sh with a recording `gcloud` first on PATH (the real CLI needs credentials and a
project): the two deploy commands it would run, and the env-vars file they share."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SCRIPT = ROOT / "infra" / "gcp" / "deploy.sh"
PIN = "a" * 64
RECORDER = """#!/usr/bin/env bash
{ printf '%s\\n' "$@"; echo '----'; } >> "$GCLOUD_LOG"
for arg in "$@"; do
  case "$arg" in --env-vars-file=*) cp "${arg#*=}" "$GCLOUD_LOG.env" ;; esac
done
"""


@pytest.fixture
def run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(RECORDER)
    (bin_dir / "gcloud").chmod(0o755)
    source = tmp_path / "source"
    source.mkdir()
    (source / "main.py").write_text("from functions.gcp.main import http, on_storage_event\n")
    (source / "requirements.txt").write_text("onnxruntime\n")
    log = tmp_path / "gcloud.log"

    def run(source_dir: Path = source, **env: str):
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
        full = {**base, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GCLOUD_LOG": str(log), **env}
        proc = subprocess.run(["bash", str(SCRIPT), str(source_dir)], env=full, capture_output=True, text=True, timeout=30)
        calls = [c.strip("\n").split("\n") for c in log.read_text().split("----\n") if c.strip()] if log.exists() else []
        env_file = yaml.safe_load(Path(f"{log}.env").read_text()) if Path(f"{log}.env").exists() else None
        return proc, calls, env_file

    return run


def test_deploys_both_targets_authenticated_with_the_callers_settings(run):
    proc, calls, env_file = run(
        PROJECT="p",
        INPUT_BUCKET="in-bucket",
        SLIMSERVE_OUTPUT="gs://out/results",
        SLIMSERVE_ARTIFACT=f"gs://models/a/1#sha256={PIN},gs://models/b/2#sha256={PIN}",
        SLIMSERVE_LOG_LEVEL="it's INFO",
    )
    assert proc.returncode == 0, proc.stderr
    http, batch, describe = calls
    for call in (http, batch):
        assert call[:3] == ["functions", "deploy", call[2]]
        assert {"--gen2", "--runtime=python312", "--no-allow-unauthenticated", "--project=p", "--memory=2Gi"} <= set(call)
    assert http[2] == "slimserve-http" and {"--entry-point=http", "--trigger-http"} <= set(http)
    assert batch[2] == "slimserve-batch" and {"--entry-point=on_storage_event", "--retry", "--timeout=540s"} <= set(batch)
    assert {"--trigger-event-filters=type=google.cloud.storage.object.v1.finalized", "--trigger-event-filters=bucket=in-bucket"} <= set(
        batch
    )
    assert describe[:3] == ["functions", "describe", "slimserve-http"]
    # Commas and quotes survive: the values reach the functions as they were set.
    assert env_file == {
        "SLIMSERVE_ARTIFACT": f"gs://models/a/1#sha256={PIN},gs://models/b/2#sha256={PIN}",
        "SLIMSERVE_LOG_LEVEL": "it's INFO",
        "SLIMSERVE_OUTPUT": "gs://out/results",
    }


def test_refuses_without_settings_or_a_bundle(run, tmp_path):
    proc, calls, _ = run(PROJECT="p", INPUT_BUCKET="b")
    assert proc.returncode != 0 and "SLIMSERVE_OUTPUT" in proc.stderr and calls == []
    proc, calls, _ = run(tmp_path, PROJECT="p", INPUT_BUCKET="b", SLIMSERVE_OUTPUT="gs://o/r")
    assert proc.returncode == 2 and "no gcp-functions bundle" in proc.stderr and calls == []


def test_a_remote_artifact_deploys_pinned_only(run):
    common = dict(PROJECT="p", INPUT_BUCKET="b", SLIMSERVE_OUTPUT="gs://o/r", SLIMSERVE_ARTIFACT="gs://models/a/1")
    proc, calls, _ = run(**common)
    assert proc.returncode == 2 and "is not pinned: set ARTIFACT_SHA256" in proc.stderr and calls == []
    proc, calls, env_file = run(**common, ARTIFACT_SHA256=PIN)
    assert proc.returncode == 0 and env_file["SLIMSERVE_ARTIFACT_SHA256"] == PIN
    proc, _, env_file = run(**common, SLIMSERVE_ALLOW_UNPINNED="true")
    assert proc.returncode == 0 and env_file["SLIMSERVE_ALLOW_UNPINNED"] == "true"
