"""`osls package` on a copy of serverless.yml, offline and without credentials, for template tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OSLS = ROOT / "node_modules" / ".bin" / "osls"
ABSENT = "node_modules/.bin/osls is absent; run `npm ci` (make test does)"


def packaged_template(service: Path, *params: str) -> dict:
    """The CloudFormation template osls makes; the zip is a placeholder, since osls only hashes it."""
    shutil.copy(ROOT / "serverless.yml", service)
    shutil.copy(ROOT / "package.json", service)
    (service / "dist" / "aws-lambda").mkdir(parents=True)
    with zipfile.ZipFile(service / "dist" / "aws-lambda" / "slimserve.zip", "w") as zf:
        zf.writestr("placeholder.txt", "osls only hashes the zip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(service / "none"), AWS_CONFIG_FILE=str(service / "none"))
    out = service / "out"
    cmd = [str(OSLS), "package", "--package", str(out), *(f"--param={p}" for p in params)]
    proc = subprocess.run(cmd, cwd=service, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "cloudformation-template-update-stack.json").read_text())
