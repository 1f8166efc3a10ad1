"""Local tools the suite needs beside Python packages (node and the npm packages, python3.12, emulators).

`make test` (so CI) sets SLIMSERVE_TESTS_REQUIRE_TOOLS=1: a missing tool then fails the tests that need
it, naming the tool and how to get it, so a run that forgot `npm ci` cannot come out green. A developer's
partial run (plain `pytest`) skips them instead, saying the same.
"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRE_ENV = "SLIMSERVE_TESTS_REQUIRE_TOOLS"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def need(tool: str, present: bool, how: str) -> None:
    """Go on when `present`; else fail under `make test`, skip otherwise."""
    if present:
        return
    message = f"{tool} is missing: {how}"
    if required():
        pytest.fail(f"required tool missing ({REQUIRE_ENV}=1): {message}", pytrace=False)
    pytest.skip(message)


def need_module(name: str, how: str):
    """The imported module, or the same failure/skip as `need`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        need(f"the Python module {name}", False, how)
