"""The Azure app root as `slimserve bundle --target azure-functions` lays it out, loaded the way the Python
worker loads it: the root on sys.path, `function_app.py` imported from there, its `app` indexed.

    function_app.py (re-exports `app`) · host.json (functions/azure/host.json) · functions/ · shared/ · artifact/

No SLIMSERVE_ARTIFACT: the model must come from `artifact/` beside functions/, and every module from the
app root, not from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from optimizer.bundle.source import SHIMS
from tests.functions.azure.conftest import ROOT
from tests.helpers import write_tiny_artifact

SCRIPT = r"""
import json, sys
import azure.functions as func
import function_app
import functions.azure.function_app as adapter
import shared

functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
response = functions["http"](func.HttpRequest("GET", "https://app.azurewebsites.net/v2/models/tiny", headers={}, body=b"",
                                              route_params={"route": "models/tiny"}))
print(json.dumps({"status": response.status_code, "body": json.loads(response.get_body()), "functions": sorted(functions),
                  "files": [function_app.__file__, adapter.__file__, shared.__file__]}))
"""


def test_worker_loads_the_app_root_and_serves_its_artifact(tmp_path):
    root = tmp_path / "app"
    for name in ("functions", "shared"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _, entry, shim = SHIMS["azure-functions"]
    (root / entry).write_text(shim, encoding="utf-8")
    shutil.copyfile(ROOT / "functions" / "azure" / "host.json", root / "host.json")
    write_tiny_artifact(root / "artifact", name="tiny")

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == 200 and out["body"]["name"] == "tiny"
    assert out["functions"] == ["http", "on_blob", "on_queue", "openai"]
    assert all(path.startswith(str(root)) for path in out["files"]), out["files"]
    assert json.loads((root / "host.json").read_text())["extensions"]["http"]["routePrefix"] == ""
