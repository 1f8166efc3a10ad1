"""Lambda bundles built once per test session and shared (a build is ~10 s warm, ~30 s with a cold wheel cache).

The wheels come from PyPI on the first run and from the wheel cache after that (SLIMSERVE_WHEEL_CACHE,
default ~/.cache/slimserve/wheels), so the suite needs the index once per machine.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from optimizer.bundle.common import Options
from optimizer.bundle.pack import find_python
from tests.helpers import write_tiny_artifact

PYTHON312 = find_python("3.12")
NO_PYTHON312 = "no python3.12 here (PATH or pyenv): the bundle's cp312 wheels cannot be imported by this interpreter"


@cache
def _session_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="slimserve-bundles-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def tiny_artifact() -> Path:
    return write_tiny_artifact(_session_dir() / "tiny-artifact", name="tiny")


@cache
def tiny_lambda_bundle() -> tuple[Path, dict]:
    """(out folder with slimserve.zip + bundle.json, the builder's report) for the tiny artifact."""
    from optimizer.bundle import aws_lambda

    out = _session_dir() / "aws-lambda"
    report = aws_lambda.build(tiny_artifact(), out, Options(target="aws-lambda", quiet=True))
    return out, report
