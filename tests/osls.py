"""`osls` on a copy of serverless.yml (and its bundle plugin), offline and without credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OSLS = ROOT / "node_modules" / ".bin" / "osls"
PLUGIN = Path("infra") / "aws" / "bundle-plugin.js"
ABSENT = "node_modules/.bin/osls is absent; run `npm ci` (make test does)"


def service_folder(service: Path) -> Path:
    """What a clone holds for osls: serverless.yml, package.json and the plugin serverless.yml names."""
    service.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "serverless.yml", service)
    shutil.copy(ROOT / "package.json", service)
    (service / PLUGIN).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / PLUGIN, service / PLUGIN)
    return service


def run_osls(service: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """osls in `service` with no AWS credentials anywhere (none are needed) and this interpreter as the
    bundle plugin's Python."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(AWS_SHARED_CREDENTIALS_FILE=str(service / "none"), AWS_CONFIG_FILE=str(service / "none"))
    clean.update(SLIMSERVE_PYTHON=str(Path(sys.executable)), **env)
    return subprocess.run([str(OSLS), *args], cwd=service, env=clean, capture_output=True, text=True, timeout=300)


def packaged_template(service: Path, *params: str) -> dict:
    """The CloudFormation template osls makes; the zip is a placeholder (the plugin does not build: osls only
    hashes it)."""
    service_folder(service)
    (service / "dist" / "aws-lambda").mkdir(parents=True)
    with zipfile.ZipFile(service / "dist" / "aws-lambda" / "slimserve.zip", "w") as zf:
        zf.writestr("placeholder.txt", "osls only hashes the zip")
    out = service / "out"
    proc = run_osls(service, "package", "--package", str(out), "--param=buildBundle=false", *(f"--param={p}" for p in params))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "cloudformation-template-update-stack.json").read_text())
