"""`slimserve upload ARTIFACT_DIR PREFIX`: put an artifact where a function fetches it from.

Every file is verified against the manifest first (a bad copy would only fail at some cold start), streamed
to PREFIX through shared storage (S3 multipart, GCS, Azure Blob), manifest.json last: a function that reads
the prefix meanwhile finds the old manifest or files that match the new one, never a manifest whose files are
not there yet. Prints the pinned location to deploy with (`bundle --fetch-from`, SLIMSERVE_ARTIFACT).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from optimizer.errors import CliError, SpecError
from shared.artifact.fetch import MAX_MANIFEST_BYTES, PIN, is_remote, manifest_digest
from shared.artifact.loading import MANIFEST, load_artifact, resolve_inside
from shared.config import Settings
from shared.errors import ArtifactError, SlimserveError
from shared.storage import Storage, join, parse


def upload(artifact: Path, prefix: str, storage: Storage, say=print, replace: bool = False) -> str:
    """The pinned location of the uploaded copy: `prefix#sha256=<sha256 of manifest.json>`."""
    if PIN in prefix or not is_remote(prefix):
        raise CliError(f"{prefix!r}: give an s3://, gs:// or azure:// prefix without a pin (the pin is printed afterwards)")
    try:
        parse(join(prefix, MANIFEST))
        manifest = load_artifact(artifact).manifest
    except ArtifactError as exc:
        raise SpecError(exc.message) from None
    except SlimserveError as exc:
        raise CliError(exc.message) from None
    total = 0
    try:
        if not replace:
            _refuse_another(artifact, prefix, storage)
        for name in [*sorted(manifest.files), MANIFEST]:
            path = resolve_inside(artifact, name)
            storage.upload(join(prefix, name), path)
            total += path.stat().st_size
            say(f"uploaded {join(prefix, name)} ({path.stat().st_size:,} bytes)")
    except SlimserveError as exc:
        raise CliError(exc.message) from None
    location = f"{prefix.rstrip('/')}{PIN}{manifest_digest(artifact)}"
    say(f"uploaded {len(manifest.files) + 1} files, {total:,} bytes")
    return location


def _refuse_another(artifact: Path, prefix: str, storage: Storage) -> None:
    """Functions pin the manifest they were deployed with: overwriting another artifact's prefix would make
    every cold start of theirs refuse to load (and, mid-upload, find files of two versions)."""
    there = join(prefix, MANIFEST)
    if not storage.exists(there):
        return
    old = storage.read(there, max_bytes=MAX_MANIFEST_BYTES, setting="the manifest's size limit")
    if old != (artifact / MANIFEST).read_bytes():
        raise CliError(
            f"{prefix} already holds another artifact (manifest sha256 {hashlib.sha256(old).hexdigest()[:12]}...), which "
            "deployed functions may pin: upload to a prefix of its own (one per version), or pass --replace"
        )


def upload_command(args) -> int:
    say = (lambda text: None) if args.quiet else print
    try:
        storage = Storage.from_settings(Settings.resolve())
    except ValueError as exc:  # a SLIMSERVE_* setting that cannot work
        raise CliError(str(exc)) from None
    location = upload(Path(args.artifact), args.prefix.rstrip("/"), storage, say, replace=args.replace)
    deploy = f"slimserve bundle {args.artifact} --target aws-lambda --fetch-from {args.prefix}"
    print(f"slimserve: artifact at {location}: deploy it with `{deploy}` or SLIMSERVE_ARTIFACT={location}")
    return 0
