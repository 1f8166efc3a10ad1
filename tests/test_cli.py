"""The `slimserve` command itself: it starts light (its module imports neither the optimizer's heavy parts
nor the runtime's; each command imports what it needs when it runs: `backfill` the storage SDK of its
prefix, never onnxruntime for s3:// or gs://), and `--version`."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from tests.conftest import ROOT

HEAVY = ("torch", "numpy", "onnxruntime", "boto3", "azure", "shared")  # not "google": a .pth file imports its namespace at startup


def test_the_cli_module_imports_nothing_heavy():
    probe = f"import sys, slimserve.cli; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_backfill_help_lists_its_options():
    done = subprocess.run([sys.executable, "-m", "slimserve", "backfill", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for option in ("--queue", "--function-url", "--output", "--since", "--limit", "--dry-run", "--concurrency", "--retries"):
        assert option in done.stdout


def test_version_prints_the_installed_one():
    proc = subprocess.run([sys.executable, "-m", "slimserve", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"slimserve {metadata.version('slimserve')}\n"
