"""Compressed model files: `model.onnx.xz` (or `.gz`) in the artifact, inflated into /tmp once per cold start.

Why: a magnitude-pruned model (`W·M`, half its weights zero) is as big as the dense one on disk, but
compresses to far less. The bundle carries the small file; the function pays the inflated size in /tmp
and memory, and the inflate time at cold start. The manifest records both:

    files[model_file]   sha256 and bytes of the compressed file (checked by load_artifact like any file)
    extra.inflated      {"sha256": ..., "bytes": ...} of the ONNX model it inflates to

The inflated copy lives at `<cache_dir>/inflated/<sha256>/model.onnx` (SLIMSERVE_CACHE_DIR, default
/tmp/slimserve), is verified against `extra.inflated` before it is used, and is reused by later cold
starts of the same sandbox. Standard library only (lzma, gzip): nothing more to ship.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from shared.artifact.external_data import check_external_data
from shared.artifact.fetch import private_dir
from shared.artifact.files import sha256_of
from shared.artifact.loading import Artifact
from shared.artifact.manifest import INFLATED
from shared.errors import ArtifactError

SUFFIXES = (".xz", ".gz")
_CHUNK = 1 << 20


def is_compressed(name: str) -> bool:
    return name.endswith(SUFFIXES)


def model_path(artifact: Artifact, cache_dir: str | Path) -> Path:
    """The ONNX file to load: the artifact's own, or its inflated copy in the cache (SLIMSERVE_CACHE_DIR)."""
    path = artifact.model_path
    if not is_compressed(path.name):
        return path
    entry = artifact.manifest.extra.get(INFLATED)
    if entry is None:  # its shape (64 hex digits, a byte count) is checked with the manifest
        raise ArtifactError(f"manifest: model_file {path.name!r} is compressed but extra.{INFLATED} has no sha256 and bytes")
    private_dir(Path(cache_dir))
    target = Path(cache_dir) / "inflated" / entry["sha256"] / "model.onnx"
    if not (target.is_file() and target.stat().st_size == entry["bytes"] and sha256_of(target) == entry["sha256"]):
        target.parent.mkdir(parents=True, exist_ok=True)
        _inflate(path, target, entry["sha256"], entry["bytes"])
    # The copy lives outside the artifact, beside nothing the manifest lists: it may read no external data.
    check_external_data(target, target.parent, listed=set())
    return target


def _inflate(src: Path, target: Path, sha256: str, size: int) -> None:
    opener = _opener(src.name)
    digest, written = hashlib.sha256(), 0
    fd, partial = tempfile.mkstemp(prefix=".inflating-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, opener(src, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                if written > size:  # a file that inflates past what the manifest promised is not ours
                    raise ArtifactError(f"{src.name} inflates to more than the {size:,} bytes extra.{INFLATED} records")
                digest.update(chunk)
                out.write(chunk)
        if written != size or digest.hexdigest() != sha256:
            raise ArtifactError(
                f"{src.name} inflates to {written:,} bytes with sha256 {digest.hexdigest()[:12]}..., extra.{INFLATED} "
                f"says {size:,} bytes, {sha256[:12]}...; refusing to load"
            )
        os.replace(partial, target)  # atomic: a concurrent cold start sees the whole file or none
    except (OSError, EOFError, ValueError) as exc:  # lzma.LZMAError and gzip.BadGzipFile derive from these
        raise ArtifactError(f"{src.name} cannot be inflated: {exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _opener(name: str):
    if name.endswith(".gz"):
        import gzip

        return gzip.open
    try:
        import lzma
    except ImportError:  # a Python built without liblzma; the optimizer can write .gz instead
        raise ArtifactError(f"{name}: this Python has no lzma module to inflate .xz files") from None
    return lzma.open
