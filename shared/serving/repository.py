"""The models a process serves, loaded once per process (cold start, shared/boot), looked up per request."""

from __future__ import annotations

from shared.artifact.manifest import NAME_PATTERN, VERSION_PATTERN
from shared.errors import ArtifactError, MalformedRequest, NotFound
from shared.serving.interface import ServedModel


class ModelRepository:
    def __init__(self, models: list[ServedModel] | None = None):
        self._models: dict[str, dict[str, ServedModel]] = {}
        for model in models or []:
            self.add(model)

    def add(self, model: ServedModel) -> None:
        versions = self._models.setdefault(model.name, {})
        if model.version in versions:
            raise ArtifactError(f"model {model.name!r} version {model.version!r} is loaded twice")
        versions[model.version] = model

    def replace(self, model: ServedModel) -> None:
        """Put `model` where the model of the same name and version was (the server's batcher wraps one)."""
        if model.version not in self._models.get(model.name, {}):
            raise KeyError(f"{model.name}/{model.version} is not served")
        self._models[model.name][model.version] = model

    def get(self, name: str, version: str | None = None) -> ServedModel:
        versions = self._models.get(name)
        if not versions:
            # Names come from URLs, headers and object keys: what no manifest could name is refused as such,
            # and never echoed whole (no traversal, no control characters in logs).
            if not NAME_PATTERN.fullmatch(name):
                raise MalformedRequest(f"model name {name[:64]!r} must match {NAME_PATTERN.pattern}")
            raise NotFound(f"unknown model {name!r}; this server serves {', '.join(sorted(self._models)) or 'no model'}")
        if version is not None and version not in versions and not VERSION_PATTERN.fullmatch(version):
            raise MalformedRequest(f"model version {version[:64]!r} must match {VERSION_PATTERN.pattern}")
        if version is None:
            # The highest version answers unversioned requests; numeric versions compare as numbers.
            return versions[max(versions, key=_version_key)]
        model = versions.get(version)
        if model is None:
            raise NotFound(f"model {name!r} has no version {version!r} (has {', '.join(sorted(versions))})")
        return model

    def only(self) -> ServedModel | None:
        """The one model served, or None when there are several (or none)."""
        models = list(self)
        return models[0] if len(models) == 1 else None

    def __iter__(self):
        for versions in self._models.values():
            yield from versions.values()

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
