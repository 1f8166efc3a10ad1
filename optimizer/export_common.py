"""What the two export paths share: `export` (ONNX, TorchScript, ExportedProgram sources) and `hf_export`
(Hugging Face folders) target one opset, silence the exporters the same way, gather what they write into one
model file (+ one data file past SLIMSERVE_EXTERNAL_DATA_BYTES) and report errors the same way.

Kept apart from both so that `export`, which hands transformers sources to `hf_export`, is the only one of
the two that imports the other.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from optimizer import onnx_io

OPSET = 18  # the dynamo exporter's lowest; the legacy one is pinned to it too so both paths agree


@contextlib.contextmanager
def quiet_exporters():
    """The exporters print progress and deprecation notes; the CLI owns the terminal. The TorchScript exporter
    also dumps its whole IR graph from C++ to file descriptor 2 when it fails (torch 2.13 turns its ONNX log
    on whatever was asked), which no Python redirect catches: fd 2 goes to a scratch file meanwhile. What
    went wrong still arrives, as the exception."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _stderr_fd_aside():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _stderr_fd_aside():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextlib.contextmanager
def scratch_export(dst: Path) -> Iterator[Path]:
    """Where an exporter writes (with whatever external files it makes); gathered into `dst` on success."""
    folder = dst.parent / (dst.stem + ".export")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder / "model.onnx"
        onnx_io.save(onnx_io.load(folder / "model.onnx"), dst, folder / "model.onnx")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def error_line(exc: BaseException) -> str:
    """The line that says what went wrong. TorchScript puts a Python-like traceback first and the
    actual error (`RuntimeError: mat1 and mat2 shapes cannot be multiplied ...`) last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "TorchScript interpreter" in lines[0] or lines[0].startswith("Traceback"):
        return lines[-1][:300]
    return lines[0][:300]
