"""Prove an unpacked Lambda bundle works on its own: a fresh `pythonX.Y -I -S` with only the bundle on
sys.path (no project, no site-packages, torch made unimportable) imports the handler and answers one
API Gateway HTTP API (payload 2.0) event. The builder runs it after slimming; tests and the cold-start
benchmark run the same script.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from shared.artifact.manifest import Manifest

# Runs inside the bundle's interpreter: stdlib only. Prints one JSON line last (powertools' EMF metrics and
# logs may come before it on stdout).
SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
root = sys.argv[1]
sys.path.insert(0, root)
sys.path += sys.argv[2:]  # after the bundle, as Lambda puts its runtime's own boto3 after /var/task

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the runtime must never import torch")

sys.meta_path.insert(0, NoTorch())
import functions.aws.handler as handler
t1 = time.perf_counter()
response = handler.http(json.loads(sys.stdin.read()), None)
t2 = time.perf_counter()
print(json.dumps({
    "response": response,
    "import_s": t1 - t0,
    "first_answer_s": t2 - t0,
    "handler_file": handler.__file__,
    "modules": sorted(sys.modules),
    "path": sys.path,
}))
"""


def api_event(method: str, path: str, body: dict | None = None) -> dict:
    """A minimal HTTP API payload 2.0 event, shaped as API Gateway sends it."""
    text = json.dumps(body, separators=(",", ":")) if body is not None else None
    headers = {"host": "probe.execute-api.local", "content-type": "application/json", "content-length": str(len(text or ""))}
    return {
        "version": "2.0",
        "routeKey": "ANY /v2/{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "domainName": "probe.execute-api.local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "probe"},
            "requestId": "probe",
            "routeKey": "ANY /v2/{proxy+}",
            "stage": "$default",
            "timeEpoch": 0,
        },
        "pathParameters": {"proxy": path.removeprefix("/v2/")},
        "body": text,
        "isBase64Encoded": False,
    }


def infer_event(manifest: Manifest) -> dict:
    """One inference with zeros (or one short text) shaped from the manifest's signature; readiness instead
    where the model answers from an endpoint, which a probe cannot reach."""
    base = f"/v2/models/{manifest.name}/versions/{manifest.version}"
    if manifest.placement == "endpoint":
        return api_event("GET", f"{base}/ready")
    inputs = []
    for spec in manifest.inputs:
        shape = [1 if d < 0 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        data = ["probe"] * count if spec.datatype == "BYTES" else [0] * count
        inputs.append({"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data})
    return api_event("POST", f"{base}/infer", {"inputs": inputs})


# What Lambda's python runtime puts on sys.path after /var/task (the bundle leaves them out): boto3 and the
# pure-Python packages it needs.
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def lambda_runtime_path(folder: Path) -> Path | None:
    """`folder`, holding links to this interpreter's copies of LAMBDA_RUNTIME_PACKAGES (pure Python, so any
    interpreter may import them); None when one is not installed here."""
    import importlib.util

    folder.mkdir(parents=True, exist_ok=True)
    for name in LAMBDA_RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            return None
        source = Path(spec.origin)
        source = source.parent if source.name == "__init__.py" else source
        if not (folder / source.name).exists():
            (folder / source.name).symlink_to(source)
    return folder


def clean_env() -> dict[str, str]:
    """A Lambda-like environment: nothing of ours; OPENBLAS_* kept where the machine needs them to run numpy."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **keep}


def run(
    python: Path, root: Path, event: dict, timeout: float = 120, env: dict[str, str] | None = None, extra_path: tuple[str, ...] = ()
) -> dict:
    """Run SCRIPT in a clean interpreter, cwd = the bundle, no inherited SLIMSERVE_* settings but `env`. -B:
    /var/task is read-only on Lambda, so nothing compiled at run time is kept; and the folder probed is the one
    zipped next. `extra_path` goes after the bundle on sys.path (what Lambda's runtime provides: boto3)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [str(python), "-I", "-S", "-B", "-c", SCRIPT, str(root), *extra_path],
        input=json.dumps(event),
        cwd=root,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"the bundle did not answer (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out
