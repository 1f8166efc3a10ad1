"""Files of an artifact folder: their sha256, and names that must stay inside the folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shared.artifact.manifest import FileEntry
from shared.errors import ArtifactError

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: Path, names: list[str]) -> dict[str, FileEntry]:
    """The `files` table of a manifest, for the optimizer that writes one."""
    return {name: FileEntry(sha256=sha256_of(folder / name), bytes=(folder / name).stat().st_size) for name in names}


def resolve_inside(folder: Path, name: str) -> Path:
    """`folder/name`, refusing names that would leave the folder (absolute, `..`, symlinks out)."""
    root = folder.resolve()
    path = (root / name).resolve()
    if name.startswith(("/", "\\")) or not path.is_relative_to(root):
        raise ArtifactError(f"{folder}: file {name!r} lies outside the artifact folder")
    return path
