"""Artifacts that live in object storage: fetched at cold start into a local cache, verified, reused.

    SLIMSERVE_ARTIFACT=s3://models/tiny/1          (a prefix holding manifest.json and the files it lists)
    -> SLIMSERVE_CACHE_DIR/<sha256 of manifest.json>/

The manifest's own sha256 names the cache folder, so a new artifact version never reuses an old folder,
and the files it lists are the only ones fetched. Every load verifies every file's sha256 (`load_artifact`),
cached or not: a cache folder that no longer verifies is fetched again; a remote file that does not match
its manifest is refused. A fetch goes to a private temporary folder renamed into place when complete, so
two processes sharing /tmp, or a fetch cut short by a timeout, never leave a half folder behind as valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from shared import storage
from shared.artifact.loading import MANIFEST, load_artifact, resolve_inside
from shared.errors import ArtifactError, NotFound, SlimserveError
from shared.artifact.manifest import Manifest

log = logging.getLogger("slimserve")


def is_remote(location: str) -> bool:
    scheme = location.partition("://")[0].lower()
    return scheme in ("s3", "gs", "azure") or (scheme == "https" and ".blob.core.windows.net" in location)


def localize(location: str, cache_dir: str | Path) -> str:
    """A local folder for `location`: itself when local (`file://` stripped), else the verified cache."""
    location = location.strip()
    if location.startswith("file://"):
        return storage.parse(location).key
    if not is_remote(location):
        return location
    return str(fetch_artifact(location, Path(cache_dir)))


def fetch_artifact(prefix: str, cache_dir: Path) -> Path:
    raw = _read(storage.join(prefix, MANIFEST), prefix)
    try:
        manifest = Manifest.from_dict(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{prefix}/{MANIFEST}: not valid JSON ({exc})") from None
    absent_ok = _absent_ok(manifest)
    target = cache_dir / hashlib.sha256(raw).hexdigest()
    if target.is_dir():
        try:
            load_artifact(target, absent_ok)
            log.info("artifact %s: using the verified cache %s", prefix, target)
            return target
        except ArtifactError as exc:
            log.warning("artifact %s: cache %s does not verify (%s); fetching again", prefix, target, exc.message)
            shutil.rmtree(target, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:12]}-", dir=cache_dir))
    try:
        _download(prefix, manifest, raw, staging, absent_ok)
        load_artifact(staging, absent_ok)  # a tampered remote file stops here, before it is cached
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same fetch first; its folder is as good
            shutil.rmtree(staging, ignore_errors=True)
            load_artifact(target, absent_ok)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    total = sum(e.bytes for e in manifest.files.values())
    log.info("artifact %s: fetched %d file(s), %d bytes, into %s", prefix, len(manifest.files), total, target)
    return target


def _absent_ok(manifest: Manifest) -> frozenset[str]:
    # An endpoint-placed model's weights may stay with the endpoint (shared/boot/placement.py).
    return frozenset({manifest.model_file}) if manifest.placement == "endpoint" else frozenset()


def _download(prefix: str, manifest: Manifest, raw_manifest: bytes, folder: Path, absent_ok: frozenset[str]) -> None:
    (folder / MANIFEST).write_bytes(raw_manifest)
    for name in manifest.files:
        path = resolve_inside(folder, name)
        try:
            data = _read(storage.join(prefix, name), prefix)
        except ArtifactError:
            if name in absent_ok:
                continue
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _read(uri: str, prefix: str) -> bytes:
    try:
        return storage.read(uri)
    except NotFound:
        raise ArtifactError(f"artifact {prefix}: {uri} does not exist") from None
    except SlimserveError as exc:
        raise ArtifactError(f"artifact {prefix}: {exc.message}") from None
