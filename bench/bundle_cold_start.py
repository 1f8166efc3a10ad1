"""Cold start from the unpacked Lambda bundle: a new `python3.12 -I -S -B` process, only the bundle on
sys.path (as /var/task on Lambda: read-only, hence -B), imports the handler, loads the model, answers one
API Gateway v2 inference event. Median of N fresh processes.

    python bench/bundle_cold_start.py ARTIFACT [--runs 7] [--json]
    python bench/bundle_cold_start.py --zip dist/aws-lambda/slimserve.zip [--runs 7] [--json]

Without --zip the bundle is built first (slimserve bundle --target aws-lambda, into a temporary folder).
`measure()` is what bench/run.py calls. Figures: process_ms = spawn to exit with the answer printed;
in_process_ms = from the first line of the handler's interpreter to the answer (imports + model load +
inference); python_ms = the bare interpreter's own start (`-I -S -c pass`), for scale.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.bundle import aws_lambda, probe  # noqa: E402
from optimizer.bundle.common import Options  # noqa: E402
from optimizer.bundle.pack import find_python  # noqa: E402
from shared.artifact.loading import read_manifest  # noqa: E402


def measure(artifact: Path | None, runs: int = 7, zip_path: Path | None = None, python: str = "3.12") -> dict:
    """Build the bundle of `artifact` (or take `zip_path`), unpack it, time `runs` fresh processes."""
    interpreter = find_python(python)
    if interpreter is None:
        return {"skipped": f"no python{python} here (PATH or pyenv)"}
    with tempfile.TemporaryDirectory(prefix="slimserve-coldstart-") as tmp_name:
        tmp = Path(tmp_name)
        if zip_path is None:
            aws_lambda.build(artifact, tmp / "dist", Options(target="aws-lambda", python=python, quiet=True))
            zip_path = tmp / "dist" / aws_lambda.ZIP_NAME
        task_root = tmp / "task"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(task_root)
        event = probe.infer_event(read_manifest(task_root / "artifact"))  # the model the bundle carries
        bare = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([str(interpreter), "-I", "-S", "-c", "pass"], check=True)
            bare.append(time.perf_counter() - start)
        answers = [probe.run(interpreter, task_root, event) for _ in range(runs)]
    statuses = {a["response"]["statusCode"] for a in answers}
    return {
        "runs": runs,
        "status": sorted(statuses),
        "process_ms": round(statistics.median(a["process_s"] for a in answers) * 1000, 1),
        "in_process_ms": round(statistics.median(a["first_answer_s"] for a in answers) * 1000, 1),
        "import_ms": round(statistics.median(a["import_s"] for a in answers) * 1000, 1),
        "python_ms": round(statistics.median(bare) * 1000, 1),
        "zip_bytes": zip_path.stat().st_size if zip_path.exists() else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, nargs="?", help="artifact folder to bundle (not needed with --zip)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--zip", type=Path, help="an already built slimserve.zip (default: build one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.artifact is None and args.zip is None:
        parser.error("give an ARTIFACT folder or --zip")
    result = measure(args.artifact, args.runs, args.zip)
    if args.json or "skipped" in result:
        print(json.dumps(result))
    else:
        print(
            f"cold start from the unpacked bundle, median of {result['runs']}: {result['process_ms']} ms process "
            f"(handler import {result['import_ms']} ms, to first answer {result['in_process_ms']} ms; "
            f"bare python {result['python_ms']} ms); status {result['status']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
