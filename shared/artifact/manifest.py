"""The artifact contract: `manifest.json` beside `model.onnx`, written offline, read by every function.

Plain dataclasses, not pydantic: this module ships inside every bundle, where each megabyte counts.
`Manifest.from_dict` is the schema check; it names the first key that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.errors import ArtifactError
from shared.protocol.datatypes import OIP_TO_NUMPY

SCHEMA_VERSION = 1
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Used with fullmatch: `$` alone also matches before a trailing newline, and names travel into URLs and logs.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TASKS = ("classification", "embedding", "regression")
PLACEMENTS = ("function", "endpoint")
DELIVERIES = ("bundle", "fetch")
INFLATED = "inflated"  # extra key: sha256 and bytes of the ONNX file a compressed model_file inflates to
EXTERNAL_DATA = "external_data"  # extra key: the files model_file reads its weights from (a model past 2 GB)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Open Inference Protocol name: FP32, INT64, BYTES...
    shape: tuple[int, ...]  # -1 marks a dynamic axis

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class CandidateResult:
    """One compression the optimizer tried, as measured against the fp32 reference."""

    name: str
    bytes: int
    metrics: dict[str, float]  # e.g. accuracy, agreement, cosine, drop
    latency_ms: float  # p50, batch 1, onnxruntime CPU, on the machine that optimized
    within_tolerance: bool
    note: str = ""


@dataclass(frozen=True)
class Choice:
    candidate: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    model_file: str
    files: dict[str, FileEntry]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    chosen: Choice
    candidates: tuple[CandidateResult, ...] = ()
    target: str = "aws-lambda"
    placement: str = "function"
    delivery: str = "bundle"
    budget: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # room for later issues (tokenizer, reports)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        out = asdict(self)
        out["inputs"] = [t.to_dict() for t in self.inputs]
        out["outputs"] = [t.to_dict() for t in self.outputs]
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Manifest:
        if not isinstance(raw, dict):
            raise ArtifactError("manifest: expected a JSON object")
        schema = raw.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise ArtifactError(f"manifest: schema_version {schema!r} is not supported (expected {SCHEMA_VERSION})")
        name = _str(raw, "name")
        if not NAME_PATTERN.fullmatch(name):
            raise ArtifactError(f"manifest: name {name!r} must match {NAME_PATTERN.pattern}")
        version = _str(raw, "version")
        if not VERSION_PATTERN.fullmatch(version):
            raise ArtifactError(f"manifest: version {version!r} must match {VERSION_PATTERN.pattern}")
        task = _choice(raw, "task", TASKS)
        files = {}
        for path, entry in _get(raw, "files", dict).items():
            files[path] = _file_entry(entry, f"files[{path!r}]")
        model_file = _str(raw, "model_file")
        if model_file not in files:
            raise ArtifactError(f"manifest: model_file {model_file!r} is not listed in files")
        chosen = _get(raw, "chosen", dict)
        extra = _get(raw, "extra", dict) if "extra" in raw else {}
        if INFLATED in extra:
            _file_entry(extra[INFLATED], f"extra.{INFLATED}")  # its sha256 becomes a cache path: hex only
        external = extra.get(EXTERNAL_DATA, [])
        if not isinstance(external, list) or any(not isinstance(name, str) or name not in files for name in external):
            raise ArtifactError(f"manifest: extra.{EXTERNAL_DATA} must list files named in files, not {repr(external)[:200]}")
        fallback = extra.get("fallback")
        if fallback:
            fallback_file = fallback.get("model_file") if isinstance(fallback, dict) else fallback
            if not isinstance(fallback_file, str) or fallback_file not in files:
                raise ArtifactError(f"manifest: extra.fallback names {fallback_file!r}, which is not listed in files")
        return cls(
            name=name,
            version=version,
            task=task,
            model_file=model_file,
            files=files,
            inputs=_tensors(raw, "inputs"),
            outputs=_tensors(raw, "outputs"),
            chosen=Choice(candidate=_str(chosen, "candidate", "chosen."), reason=_str(chosen, "reason", "chosen.")),
            candidates=tuple(_candidate(c, i) for i, c in enumerate(raw.get("candidates", []))),
            target=raw.get("target", "aws-lambda"),
            placement=_choice(raw, "placement", PLACEMENTS, "function"),
            delivery=_choice(raw, "delivery", DELIVERIES, "bundle"),
            budget=dict(raw.get("budget") or {}),
            extra=dict(extra),
        )

    @property
    def fallback_file(self) -> str | None:
        """The small local variant an endpoint-placed model answers degraded from (`extra.fallback`)."""
        entry = self.extra.get("fallback")
        if not entry:
            return None
        return entry.get("model_file") if isinstance(entry, dict) else entry

    @property
    def model_files(self) -> tuple[str, ...]:
        """Every file onnxruntime may load as a model, whatever its suffix."""
        return tuple(dict.fromkeys(f for f in (self.model_file, self.fallback_file) if f))

    @property
    def weight_files(self) -> tuple[str, ...]:
        """`model_file` and the external data it reads: what stays off a function when the model does."""
        return (self.model_file, *self.extra.get(EXTERNAL_DATA, ()))


def _file_entry(entry: Any, where: str) -> FileEntry:
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _is_count(entry.get("bytes")):
        raise ArtifactError(f"manifest: {where} needs a sha256 string and a bytes integer")
    if not SHA256_PATTERN.fullmatch(entry["sha256"]):
        raise ArtifactError(f"manifest: {where}.sha256 must be 64 lowercase hex digits")
    return FileEntry(sha256=entry["sha256"], bytes=entry["bytes"])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _get(raw: dict, key: str, kind: type, prefix: str = ""):
    if key not in raw:
        raise ArtifactError(f"manifest: {prefix}{key} is missing")
    value = raw[key]
    if not isinstance(value, kind):
        raise ArtifactError(f"manifest: {prefix}{key} must be a {kind.__name__}")
    return value


def _str(raw: dict, key: str, prefix: str = "") -> str:
    return _get(raw, key, str, prefix)


def _choice(raw: dict, key: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise ArtifactError(f"manifest: {key} {value!r} must be one of {', '.join(allowed)}")
    return value


def _tensors(raw: dict, key: str) -> tuple[TensorSpec, ...]:
    items = _get(raw, key, list)
    if not items:
        raise ArtifactError(f"manifest: {key} must list at least one tensor")
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ArtifactError(f"manifest: {where} must be an object")
        name = _str(item, "name", where + ".")
        datatype = _str(item, "datatype", where + ".")
        if datatype not in OIP_TO_NUMPY:
            raise ArtifactError(f"manifest: {where}.datatype {datatype!r} is unknown")
        shape = _get(item, "shape", list, where + ".")
        if not all(isinstance(d, int) and (d == -1 or d > 0) for d in shape):
            raise ArtifactError(f"manifest: {where}.shape must hold positive integers or -1")
        out.append(TensorSpec(name=name, datatype=datatype, shape=tuple(shape)))
    return tuple(out)


def _candidate(raw: Any, index: int) -> CandidateResult:
    if not isinstance(raw, dict):
        raise ArtifactError(f"manifest: candidates[{index}] must be an object")
    return CandidateResult(
        name=str(raw.get("name", "")),
        bytes=int(raw.get("bytes", 0)),
        metrics={str(k): float(v) for k, v in (raw.get("metrics") or {}).items()},
        latency_ms=float(raw.get("latency_ms", 0.0)),
        within_tolerance=bool(raw.get("within_tolerance", False)),
        note=str(raw.get("note", "")),
    )
