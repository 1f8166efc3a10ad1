"""The required-tools switch itself: under `make test` (SLIMSERVE_TESTS_REQUIRE_TOOLS=1) a missing tool is a
failure that names it; in a developer's plain pytest run the same test skips, saying the same."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

MISSING = """
from tests.tools import need

def test_needs_a_tool_that_is_not_here():
    need("frobnicator (node_modules/.bin/frob)", False, "run `npm ci`")
"""


def run(tmp_path, required: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_missing.py").write_text(MISSING)
    env = {k: v for k, v in os.environ.items() if k != "SLIMSERVE_TESTS_REQUIRE_TOOLS"}
    if required:
        env["SLIMSERVE_TESTS_REQUIRE_TOOLS"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path / "test_missing.py")]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_tool_fails_under_make_test_and_names_it(tmp_path):
    proc = run(tmp_path, required=True)
    assert proc.returncode == 1 and "1 failed" in proc.stdout
    assert (
        "required tool missing (SLIMSERVE_TESTS_REQUIRE_TOOLS=1): frobnicator (node_modules/.bin/frob) is missing: run `npm ci`"
        in proc.stdout
    )


def test_a_missing_tool_skips_a_developers_partial_run(tmp_path):
    proc = run(tmp_path, required=False)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout and "frobnicator (node_modules/.bin/frob) is missing" in proc.stdout
