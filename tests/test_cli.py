"""The `slimserve` command itself: `--version`."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from tests.conftest import ROOT


def test_version_prints_the_installed_one():
    proc = subprocess.run([sys.executable, "-m", "slimserve", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"slimserve {metadata.version('slimserve')}\n"
