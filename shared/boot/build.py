"""The composition root: settings -> storage -> models (placed) -> data plane -> WSGI app, once per process.

Settings are resolved here, once, and passed to everything that needs them; nothing below reads the
environment on its own. Adapters call `start()` at import (the platform's init phase).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.artifact.fetch import localize, locations
from shared.boot.placement import load_model
from shared.config import LOG_FORMATS, Settings
from shared.http.app import InferenceApp
from shared.http.observe import JsonFormatter
from shared.protocol.limits import Limits
from shared.serving.dataplane import DataPlane
from shared.serving.repository import ModelRepository
from shared.storage import Storage

log = logging.getLogger("slimserve")


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    plane: DataPlane
    app: InferenceApp


def configure_logging(level: str, fmt: str = "text") -> None:
    """A stderr handler on the `slimserve` logger unless something (powertools' Logger in Lambda, a test's
    capture) already handles it; `fmt` json writes one JSON object per line (shared/http/observe.py)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"SLIMSERVE_LOG_FORMAT={fmt!r} must be one of {', '.join(LOG_FORMATS)}")
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level.upper())


def load_repository(settings: Settings, storage: Storage, default_folder: Path) -> ModelRepository:
    """Every artifact, remote ones fetched into the cache and verified against their pins."""
    folders = [localize(a, settings.cache_dir, storage, settings.allow_unpinned) for a in locations(settings) or [str(default_folder)]]
    return ModelRepository([load_model(f, settings, storage) for f in folders])


def start(default_folder: Path | str, settings: Settings | None = None, *, sagemaker_runtime: bool = False, **overrides) -> Runtime:
    """Load every artifact named by SLIMSERVE_ARTIFACT (or `default_folder`) and build the app around them.
    `sagemaker_runtime` mounts the local stand-in for SageMaker's runtime API (`slimserve serve` and tests
    only; a cloud function never answers it)."""
    settings = settings or Settings.resolve(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    storage = Storage.from_settings(settings)
    repository = load_repository(settings, storage, Path(default_folder))
    plane = DataPlane(repository, Limits.from_settings(settings), settings.nan_policy)
    app = InferenceApp(plane, settings, storage=storage if sagemaker_runtime else None, sagemaker_runtime=sagemaker_runtime)
    return Runtime(settings, storage, plane, app)


def build_app(
    default_folder: Path | str, settings: Settings | None = None, *, sagemaker_runtime: bool = False, **overrides
) -> InferenceApp:
    return start(default_folder, settings, sagemaker_runtime=sagemaker_runtime, **overrides).app


def app_from_folders(folders: list[str], **overrides) -> InferenceApp:
    return build_app(folders[0], Settings.resolve(artifact=",".join(folders), **overrides))
