"""Fixtures of the AWS adapter's tests: the handler imported afresh (tests/conftest.py restores os.environ)."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import pytest

HANDLER = "functions.aws.handler"


@pytest.fixture(scope="module")
def load_handler():
    """`load(**env)` imports `functions.aws.handler` afresh (it loads its model at import) with `env` set.

    The import's global effects are undone when the test module ends: the module leaves sys.modules, the
    environment is as before, and the "slimserve" logger loses the JSON handler Powertools put on it.
    """
    logger = logging.getLogger("slimserve")
    saved_logger = {**logger.__dict__, "handlers": list(logger.handlers), "filters": list(logger.filters)}
    saved_filters = {handler: list(handler.filters) for handler in logging.root.handlers}

    def load(**env: str):
        saved = os.environ.copy()
        os.environ.update(env)
        sys.modules.pop(HANDLER, None)
        try:
            return importlib.import_module(HANDLER)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    yield load
    sys.modules.pop(HANDLER, None)
    logger.__dict__.clear()
    logger.__dict__.update(saved_logger)
    logger.setLevel(saved_logger["level"])  # also clears logging's cached isEnabledFor answers
    for handler, filters in saved_filters.items():
        handler.filters[:] = filters
