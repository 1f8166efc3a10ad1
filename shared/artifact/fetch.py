"""Artifacts that live in object storage: fetched at cold start into a local cache, verified, reused.

    SLIMSERVE_ARTIFACT=s3://models/tiny/1#sha256=<sha256 of manifest.json>
    -> SLIMSERVE_CACHE_DIR/<sha256 of manifest.json>/

Trust comes from the pin: the manifest's sha256, fixed in the deploy configuration (`slimserve optimize`
and `slimserve bundle` print it). The manifest lists every file's sha256, so the pinned manifest fixes
every byte that loads, and whoever can write the bucket cannot choose the model. An unpinned remote
artifact is refused unless SLIMSERVE_ALLOW_UNPINNED says otherwise.

The manifest's own sha256 names the cache folder, so a new artifact version never reuses an old folder,
and the files it lists are the only ones fetched, each streamed to disk and hashed on the way (never held
whole in memory). Every load verifies every file's sha256 (`load_artifact`), cached or not: a cache
folder that no longer verifies is fetched again; a remote file that does not match its manifest is
refused. A fetch goes to a private temporary folder renamed into place when complete, so two processes
sharing /tmp, or a fetch cut short by a timeout, never leave a half folder behind as valid.

A function bundle of a `delivery: fetch` artifact (`slimserve bundle --fetch-from`) carries the artifact's
manifest without its weights, and `fetch.json` beside it: {"location": "s3://b/p#sha256=<hex>"}. That folder
localizes to the fetched copy; the pin must be the sha256 of the manifest shipped beside it, so the weights
fetched are the ones the bundle was built (and probed) with.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from shared.artifact.files import resolve_inside
from shared.artifact.loading import MANIFEST, load_artifact
from shared.artifact.manifest import SHA256_PATTERN, Manifest
from shared.errors import ArtifactError, NotFound, SlimserveError
from shared.storage import Storage, join, parse

log = logging.getLogger("slimserve")

PIN = "#sha256="
MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists files and candidates: kilobytes, never this
FETCH_FROM = "fetch.json"  # in a bundled artifact folder: where its weights are fetched from
MAX_POINTER_BYTES = 64 << 10


def is_remote(location: str) -> bool:
    scheme = location.partition("://")[0].lower()
    return scheme in ("s3", "gs", "azure") or (scheme == "https" and ".blob.core.windows.net" in location)


def split_pin(location: str) -> tuple[str, str | None]:
    """(`prefix`, pinned manifest sha256 or None) of `prefix#sha256=HEX`."""
    prefix, marker, pin = location.partition(PIN)
    if not marker:
        return location, None
    if not SHA256_PATTERN.fullmatch(pin):
        raise ArtifactError(f"SLIMSERVE_ARTIFACT {prefix}: the pin after {PIN} must be 64 lowercase hex digits")
    return prefix, pin


def locations(settings) -> list[str]:
    """SLIMSERVE_ARTIFACT's entries (commas, not os.pathsep: `s3://` holds the colon), with
    SLIMSERVE_ARTIFACT_SHA256 as the pin of the one entry when it is given that way."""
    entries = [a.strip() for a in settings.artifact.split(",") if a.strip()]
    if settings.artifact_sha256:
        if len(entries) != 1 or PIN in entries[0]:
            raise ArtifactError(
                "SLIMSERVE_ARTIFACT_SHA256 pins one artifact without a pin of its own; pin each entry of SLIMSERVE_ARTIFACT with #sha256="
            )
        entries = [f"{entries[0]}{PIN}{settings.artifact_sha256.strip().lower()}"]
    return entries


def manifest_digest(folder: str | Path) -> str:
    """The pin of an artifact: the sha256 of its manifest.json (which lists every other file's)."""
    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()


def localize(location: str, cache_dir: str | Path, storage: Storage, allow_unpinned: bool = False) -> str:
    """A local folder for `location`: itself when local (`file://` stripped), else the verified cache."""
    prefix, pin = split_pin(location.strip())
    if not is_remote(prefix):
        folder = parse(prefix).key if prefix.startswith("file://") else prefix
        if pin is not None:  # a local folder needs no pin, but one given is checked
            _check_pin(folder, hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest(), pin)
        if (Path(folder) / FETCH_FROM).is_file():
            return str(_fetch_pointed(Path(folder), Path(cache_dir), storage))
        return folder
    if pin is None and not allow_unpinned:
        raise ArtifactError(
            f"SLIMSERVE_ARTIFACT {prefix} is not pinned: append {PIN}<sha256 of its manifest.json> (printed by "
            "`slimserve optimize` and `slimserve bundle`), or set SLIMSERVE_ALLOW_UNPINNED=true to trust whoever can write it"
        )
    return str(fetch_artifact(prefix, Path(cache_dir), storage, pin))


def fetch_artifact(prefix: str, cache_dir: Path, storage: Storage, pin: str | None = None) -> Path:
    raw = _read_manifest(storage, prefix)
    digest = hashlib.sha256(raw).hexdigest()
    if pin is not None:
        _check_pin(prefix, digest, pin)
    try:
        manifest = Manifest.from_dict(json.loads(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{prefix}/{MANIFEST}: not valid JSON ({str(exc)[:200]})") from None
    absent_ok = _absent_ok(manifest)
    private_dir(cache_dir)
    target = cache_dir / digest
    if target.is_dir():
        try:
            if _read_local_manifest(target) != raw:  # the folder's name is no proof of what it holds
                raise ArtifactError(f"{target}/{MANIFEST} is not the manifest it is named after")
            load_artifact(target, absent_ok)
            log.info("artifact %s: using the verified cache %s", prefix, target)
            return target
        except ArtifactError as exc:
            log.warning("artifact %s: cache %s does not verify (%s); fetching again", prefix, target, exc.message)
            shutil.rmtree(target, ignore_errors=True)
    staging, lock = _staging(cache_dir, target)
    try:
        _check_room(cache_dir, manifest, prefix)
        _download(storage, prefix, manifest, raw, staging, absent_ok)
        load_artifact(staging, absent_ok)  # also scans external data; a tampered file stopped in _download
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same fetch first; its folder is as good
            shutil.rmtree(staging, ignore_errors=True)
            load_artifact(target, absent_ok)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    total = sum(e.bytes for e in manifest.files.values())
    log.info("artifact %s: fetched %d file(s), %d bytes, into %s", prefix, len(manifest.files), total, target)
    return target


def _staging(cache_dir: Path, target: Path) -> tuple[Path, int]:
    """A new staging folder and the descriptor holding its lock while this process fills it. Staging folders
    whose lock is free first go: a fetch killed mid-way (Lambda ends an init past its limit with SIGKILL, no
    cleanup runs) would otherwise hold its share of /tmp for the life of the environment, and the retry, in a
    /tmp sized for one copy, would run out of room."""
    for old in cache_dir.glob(".*-*"):
        try:
            fd = os.open(old, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live fetch in another process
            os.close(fd)
            continue
        shutil.rmtree(old, ignore_errors=True)
        os.close(fd)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:12]}-", dir=cache_dir))
    lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return staging, lock


def _check_room(cache_dir: Path, manifest: Manifest, prefix: str) -> None:
    needed = sum(e.bytes for e in manifest.files.values())
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        raise ArtifactError(f"artifact {prefix}: its files take {needed:,} bytes, {cache_dir} has {free:,} free; raise the function's /tmp")


def pointer(location: str) -> dict:
    """What `fetch.json` holds for a pinned remote `location`."""
    return {"location": location}


def _fetch_pointed(folder: Path, cache_dir: Path, storage: Storage) -> Path:
    where = folder / FETCH_FROM
    try:
        with open(where, "rb") as fh:
            text = fh.read(MAX_POINTER_BYTES + 1)
        if len(text) > MAX_POINTER_BYTES:
            raise ValueError
        raw = json.loads(text)
        location = raw["location"]
        if not isinstance(location, str):
            raise TypeError
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        raise ArtifactError(f'{where}: not {{"location": "s3://bucket/prefix#sha256=<hex>"}}') from None
    prefix, pin = split_pin(location)
    if pin is None or not is_remote(prefix):
        raise ArtifactError(f"{where}: {location!r} must be a pinned s3://, gs:// or Azure Blob prefix")
    _check_pin(location, manifest_digest(folder), pin)  # the manifest shipped beside it is the one to fetch
    log.info("artifact %s: fetched from %s, as %s says", folder, prefix, FETCH_FROM)
    return fetch_artifact(prefix, cache_dir, storage, pin)


def private_dir(folder: Path) -> None:
    """`folder`, made if need be, readable by this user only, and refused when another user owns it: whoever
    could write the cache could otherwise plant a model in it (/tmp is shared on a multi-user host)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = folder.stat().st_uid
    if owner != os.getuid():
        raise ArtifactError(
            f"the cache folder {folder} belongs to user {owner}, not to this process's user {os.getuid()}; set SLIMSERVE_CACHE_DIR"
        )


def _read_local_manifest(folder: Path) -> bytes | None:
    try:
        return (folder / MANIFEST).read_bytes()
    except OSError:
        return None


def _check_pin(where: str, digest: str, pin: str) -> None:
    if digest != pin:
        raise ArtifactError(
            f"artifact {where}: {MANIFEST} has sha256 {digest[:12]}..., SLIMSERVE_ARTIFACT pins {pin[:12]}...; refusing to load"
        )


def _absent_ok(manifest: Manifest) -> frozenset[str]:
    # An endpoint-placed model's weights (and their external data) may stay with the endpoint (shared/boot/placement.py).
    return frozenset(manifest.weight_files) if manifest.placement == "endpoint" else frozenset()


def _read_manifest(storage: Storage, prefix: str) -> bytes:
    uri = join(prefix, MANIFEST)
    try:
        return storage.read(uri, max_bytes=MAX_MANIFEST_BYTES, setting="the manifest's size limit")
    except NotFound:
        raise ArtifactError(f"artifact {prefix}: {uri} does not exist") from None
    except SlimserveError as exc:
        raise ArtifactError(f"artifact {prefix}: {exc.message}") from None


def _download(storage: Storage, prefix: str, manifest: Manifest, raw_manifest: bytes, folder: Path, absent_ok: frozenset[str]) -> None:
    (folder / MANIFEST).write_bytes(raw_manifest)
    for name, entry in manifest.files.items():
        path = resolve_inside(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = join(prefix, name)
        try:
            digest = storage.download(uri, path, entry.bytes)
        except NotFound:
            path.unlink(missing_ok=True)
            if name in absent_ok:
                continue
            raise ArtifactError(f"artifact {prefix}: {uri} does not exist") from None
        except SlimserveError as exc:
            raise ArtifactError(f"artifact {prefix}: {exc.message}") from None
        if digest != entry.sha256:
            raise ArtifactError(
                f"artifact {prefix}: sha256 of {name} is {digest[:12]}..., the manifest says {entry.sha256[:12]}...; refusing to load"
            )
