"""Reading an artifact folder: manifest schema check, then every file's sha256 before anything loads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ArtifactError
from shared.artifact.external_data import check_external_data
from shared.artifact.manifest import FileEntry, Manifest

MANIFEST = "manifest.json"
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


@dataclass(frozen=True)
class Artifact:
    folder: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return resolve_inside(self.folder, self.manifest.model_file)


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest alone, schema-checked; `load_artifact` also verifies the files it lists."""
    manifest_path = Path(folder) / MANIFEST
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: no {MANIFEST}; is this an artifact folder?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from None
    return Manifest.from_dict(raw)


def load_artifact(folder: str | Path, absent_ok: frozenset[str] = frozenset()) -> Artifact:
    """Every listed file must be present with its sha256, except names in `absent_ok` that are absent
    (an endpoint-placed model's weights need not ride in the function); present files are always checked."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, entry in manifest.files.items():
        path = resolve_inside(folder, name)
        if not path.is_file():
            if name in absent_ok:
                continue
            raise ArtifactError(f"{folder}: {name} is listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.bytes:
            raise ArtifactError(f"{folder}: {name} is {size} bytes, the manifest says {entry.bytes}; refusing to load")
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise ArtifactError(
                f"{folder}: sha256 of {name} is {actual[:12]}..., the manifest says {entry.sha256[:12]}...; refusing to load"
            )
    # A verified model may still point its weights at a file nobody verified (ONNX external data).
    root = folder.resolve()
    listed = {resolve_inside(folder, name).relative_to(root).as_posix() for name in manifest.files}
    for name in manifest.files:
        if name.endswith(".onnx") and resolve_inside(folder, name).is_file():
            check_external_data(folder, name, listed)
    return Artifact(folder=folder, manifest=manifest)


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write `manifest.json`; `manifest.files` must already hold every file's sha256 and size."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
