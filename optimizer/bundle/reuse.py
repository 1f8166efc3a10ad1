"""Skip a rebuild that would write the same zip: `serverless package` runs the builder every time.

A build is deterministic (the same inputs give the same bytes), so its inputs name it: the artifact's
manifest (which holds the sha256 of every artifact file, checked before this runs), the code staged into
the bundle, the builder's own modules (what slimming removes), the pinned wheels, the target machine and
interpreter, whether .pyc files are precompiled, and the upload rule. Their digest is recorded in
bundle.json; a later build with the same digest, whose zip still has the recorded sha256, is reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from optimizer.bundle.common import MARKER, Options
from shared.artifact.fetch import FETCH_FROM
from shared.artifact.loading import MANIFEST

BUILDER = Path(__file__).resolve().parent


def inputs_digest(stage: Path, pins: Iterable[object], opts: Options, *, precompiled: bool) -> str:
    """The digest of what decides the zip's bytes; `stage` holds the code and artifact/manifest.json."""
    digest = hashlib.sha256()
    settings = {
        "target": opts.target,
        "arch": opts.arch,
        "python": opts.python,
        "direct_upload": opts.direct_upload,
        "precompiled": precompiled,
        "pins": sorted(map(str, pins)),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    code = [p for p in stage.rglob("*") if p.is_file() and p.parts[len(stage.parts)] != "artifact"]
    files = [(p.relative_to(stage).as_posix(), p) for p in code]
    files.append((f"artifact/{MANIFEST}", stage / "artifact" / MANIFEST))
    if (stage / "artifact" / FETCH_FROM).is_file():  # where the weights come from is part of what the zip is
        files.append((f"artifact/{FETCH_FROM}", stage / "artifact" / FETCH_FROM))
    files += [(f"builder/{p.name}", p) for p in BUILDER.glob("*.py")]
    for name, path in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def previous_build(out: Path, zip_name: str, inputs_sha256: str) -> dict | None:
    """The report of the build in `out` when it was made from the same inputs and its zip is untouched."""
    try:
        report = json.loads((out / MARKER).read_text(encoding="utf-8"))
        if not isinstance(report, dict) or report.get("inputs_sha256") != inputs_sha256:
            return None
        with open(out / zip_name, "rb") as fh:
            zipped = hashlib.file_digest(fh, "sha256").hexdigest()
    except (OSError, ValueError):
        return None
    return report if zipped == report.get("sha256") else None
