"""Reading an artifact folder: manifest schema check, then every file's sha256 before anything loads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.artifact.external_data import check_external_data
from shared.artifact.files import file_entries, resolve_inside, sha256_of
from shared.artifact.manifest import Manifest
from shared.errors import ArtifactError

MANIFEST = "manifest.json"
__all__ = ["MANIFEST", "Artifact", "file_entries", "load_artifact", "read_manifest", "resolve_inside", "sha256_of", "write_manifest"]


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
        hint = f"`slimserve optimize SPEC --out {folder}` writes one (`make demo`: artifacts/digits/1)"
        if not Path(folder).exists():
            raise ArtifactError(f"no artifact at {folder}: {hint}") from None
        raise ArtifactError(f"{folder}: no {MANIFEST}; is this an artifact folder? {hint}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: bad JSON, or an integer past int's digit limit
        raise ArtifactError(f"{manifest_path}: not valid JSON ({str(exc)[:200]})") from None
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
    # A verified model may still point its weights at a file nobody verified (ONNX external data). Every
    # file onnxruntime will load is scanned, whatever its suffix; compressed ones when inflated (inflate.py).
    root = folder.resolve()
    listed = {resolve_inside(folder, name).relative_to(root).as_posix() for name in manifest.files}
    scanned = {name for name in manifest.files if name.endswith(".onnx")} | set(manifest.model_files)
    for name in sorted(scanned):
        path = resolve_inside(folder, name)
        if path.is_file() and not _compressed(name):
            check_external_data(path, folder, listed)
    return Artifact(folder=folder, manifest=manifest)


def _compressed(name: str) -> bool:
    return name.endswith((".xz", ".gz"))


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write `manifest.json`; `manifest.files` must already hold every file's sha256 and size."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
