"""Runtime settings: one typed field each, read from `SLIMSERVE_*` at call time, never at import.

Precedence is argument > environment > default, resolved in `Settings.resolve` only.
The README's configuration table lists the same fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

ENV_PREFIX = "SLIMSERVE_"


@dataclass(frozen=True)
class Settings:
    artifact: str = ""
    """Artifact folder(s) to serve, separated by os.pathsep. Empty: `artifact/` beside the adapter code."""

    max_body_bytes: int = 6 * 1024 * 1024
    """Largest request body accepted (413 above). Default: Lambda's 6 MB synchronous payload."""

    ort_threads: int = 0
    """onnxruntime intra-op threads per session; 0 lets onnxruntime pick (one per physical core)."""

    providers: str = ""
    """Comma-separated onnxruntime execution providers; empty picks CUDA when present, else CPU."""

    log_level: str = "INFO"
    """Log level of the runtime's logger."""

    @classmethod
    def resolve(cls, environ: os._Environ | dict | None = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else raw
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not an integer") from None
        return cls(**values)
