"""What an adapter calls at cold start: settings -> models -> the WSGI app, once per process."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from shared.http.app import InferenceApp
from shared.config import Settings
from shared.serving.dataplane import DataPlane
from shared.protocol.limits import Limits
from shared.http.observe import JsonFormatter
from shared.serving.repository import ModelRepository

log = logging.getLogger("slimserve")


def configure_logging(level: str, fmt: str = "text") -> None:
    """A stderr handler on the `slimserve` logger unless something (powertools' Logger in Lambda, a test's
    capture) already handles it; `fmt` json writes one JSON object per line (shared/http/observe.py)."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level.upper())


def build_app(default_folder: Path | str, settings: Settings | None = None, **overrides) -> InferenceApp:
    """Load every artifact named by SLIMSERVE_ARTIFACT (or `default_folder`) and wrap them in the app."""
    settings = settings or Settings.resolve(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    repository = ModelRepository.from_settings(settings, Path(default_folder))
    return InferenceApp(DataPlane(repository, Limits.from_settings(settings), settings.nan_policy), settings)


def app_from_folders(folders: list[str], **overrides) -> InferenceApp:
    return build_app(folders[0], Settings.resolve(artifact=",".join(folders), **overrides))
