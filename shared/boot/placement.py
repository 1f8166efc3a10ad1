"""Where a model runs, decided once at cold start: in this process, or on a remote endpoint. The one
place that wires remote models in.

    SLIMSERVE_PLACEMENT (function|endpoint)  >  manifest.placement (the optimizer's verdict)

An endpoint-placed model becomes a `RemoteModel`; its local fallback, the variant that answers degraded
when the endpoint cannot, is (with SLIMSERVE_FALLBACK=auto):

  1. the manifest's `extra.fallback` = {"model_file": "small.onnx", "candidate": "int4-b32"} (or just the
     file name): a compressed variant the optimizer shipped beside the endpoint model, listed in `files`
     and sha256-checked like every file, with the same signature;
  2. else, when the operator forced a function-placed artifact onto the endpoint, its own `model_file`;
  3. else none: failures answer 503 + Retry-After.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from shared.artifact.files import resolve_inside
from shared.artifact.loading import Artifact, load_artifact, read_manifest
from shared.artifact.manifest import PLACEMENTS, Choice, Manifest
from shared.config import Settings
from shared.errors import ArtifactError
from shared.remote.async_invoke import AsyncInvoker
from shared.remote.breaker import CircuitBreaker
from shared.remote.model import RemoteModel, RetryPolicy
from shared.remote.transports import make_transport
from shared.serving.interface import ServedModel
from shared.serving.local import LocalModel, text_encoder
from shared.storage import Storage

log = logging.getLogger("slimserve")


def load_model(folder: str | Path, settings: Settings, storage: Storage | None = None) -> ServedModel:
    manifest = read_manifest(folder)
    placement = settings.placement or manifest.placement
    if placement not in PLACEMENTS:
        raise ArtifactError(f"SLIMSERVE_PLACEMENT={settings.placement!r} must be one of {', '.join(PLACEMENTS)} or empty")
    if placement == "function":
        artifact = load_artifact(folder)
        if manifest.placement != "function":  # the endpoint's own server: report where the model runs
            artifact = Artifact(artifact.folder, replace(artifact.manifest, placement="function"))
        return LocalModel.load(artifact, settings.cache_dir, settings.ort_threads, settings.providers)

    artifact = load_artifact(folder, absent_ok=frozenset(manifest.weight_files))
    fallback = _load_fallback(artifact, settings, forced=manifest.placement == "function")
    transport = make_transport(settings)
    deferrer = None
    if settings.async_bucket:
        deferrer = AsyncInvoker(settings.async_bucket, settings.async_prefix, transport, storage or Storage.from_settings(settings))
    model = RemoteModel(
        replace(manifest, placement="endpoint"),
        transport,
        CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s),
        RetryPolicy.from_settings(settings),
        fallback=fallback,
        max_sync_bytes=settings.endpoint_max_sync_bytes,
        deferrer=deferrer,
        text=None if fallback else text_encoder(artifact),  # a fallback brings its own
    )
    local = fallback.manifest.model_file if fallback else "none"
    log.info("model %s version %s placed on endpoint %s; local fallback: %s", model.name, model.version, transport.name, local)
    return model


def fallback_file(manifest: Manifest, settings: Settings, forced: bool) -> str | None:
    if settings.fallback == "off":
        return None
    if settings.fallback != "auto":
        raise ArtifactError(f"SLIMSERVE_FALLBACK={settings.fallback!r} must be auto or off")
    return manifest.fallback_file or (manifest.model_file if forced else None)


def _load_fallback(artifact: Artifact, settings: Settings, forced: bool) -> LocalModel | None:
    manifest = artifact.manifest
    name = fallback_file(manifest, settings, forced)
    if name is None:
        return None
    if not resolve_inside(artifact.folder, name).is_file():
        if name == manifest.model_file:  # the weights stayed on the endpoint's side; nothing to fall back on
            return None
        raise ArtifactError(f"{artifact.folder}: fallback {name} is missing")
    entry = manifest.extra.get("fallback")
    candidate = entry.get("candidate", name) if isinstance(entry, dict) else manifest.chosen.candidate
    local = replace(manifest, model_file=name, placement="function", chosen=Choice(candidate, "local fallback of an endpoint-placed model"))
    return LocalModel.load(Artifact(artifact.folder, local), settings.cache_dir, settings.ort_threads, settings.providers)
