"""The models a process serves, loaded once per process (cold start), looked up per request."""

from __future__ import annotations

import logging
from pathlib import Path

from shared.config import Settings
from shared.errors import ArtifactError, MalformedRequest, NotFound
from shared.artifact.fetch import localize
from shared.artifact.manifest import NAME_PATTERN, VERSION_PATTERN
from shared.serving.local import Model
from shared.boot.placement import load_model

log = logging.getLogger("slimserve")


class ModelRepository:
    def __init__(self, models: list[Model] | None = None):
        self._models: dict[str, dict[str, Model]] = {}
        for model in models or []:
            self.add(model)

    def add(self, model: Model) -> None:
        versions = self._models.setdefault(model.name, {})
        if model.version in versions:
            raise ArtifactError(f"model {model.name!r} version {model.version!r} is loaded twice")
        versions[model.version] = model

    def get(self, name: str, version: str | None = None) -> Model:
        versions = self._models.get(name)
        if not versions:
            # Names come from URLs, headers and object keys: what no manifest could name is refused as such,
            # and never echoed whole (no traversal, no control characters in logs).
            if not NAME_PATTERN.match(name):
                raise MalformedRequest(f"model name {name[:64]!r} must match {NAME_PATTERN.pattern}")
            raise NotFound(f"unknown model {name!r}")
        if version is not None and version not in versions and not VERSION_PATTERN.match(version):
            raise MalformedRequest(f"model version {version[:64]!r} must match {VERSION_PATTERN.pattern}")
        if version is None:
            # The highest version answers unversioned requests; numeric versions compare as numbers.
            return versions[max(versions, key=_version_key)]
        model = versions.get(version)
        if model is None:
            raise NotFound(f"model {name!r} has no version {version!r} (has {', '.join(sorted(versions))})")
        return model

    def __iter__(self):
        for versions in self._models.values():
            yield from versions.values()

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())

    @classmethod
    def from_folders(cls, folders: list[str | Path], settings: Settings | None = None) -> "ModelRepository":
        settings = settings or Settings.resolve()
        return cls([load_model(f, settings) for f in folders])  # local or remote: shared/boot/placement.py

    @classmethod
    def from_settings(cls, settings: Settings, default_folder: Path) -> "ModelRepository":
        # Commas, not os.pathsep: `s3://...` holds the colon. Remote prefixes are fetched and verified here.
        folders = [localize(f, settings.cache_dir) for f in settings.artifact.split(",") if f.strip()]
        folders = folders or [str(default_folder)]
        return cls.from_folders(folders, settings)


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
