"""AWS Lambda adapter: API Gateway HTTP API (payload 2.0) events -> serverless-wsgi -> the shared WSGI app.

The model loads here, at import, i.e. in Lambda's init phase: once per execution environment, never per
request. A failure to load (no artifact, sha256 mismatch, bad manifest) propagates, so Lambda reports an
init error instead of serving a broken function.

Where the artifact is: `SLIMSERVE_ARTIFACT` (folder(s), os.pathsep-separated) or, by default, `artifact/`
at the bundle root, the folder that holds `functions/` and `shared/` (/var/task/artifact on Lambda).
"""

from __future__ import annotations

from pathlib import Path

import serverless_wsgi
from aws_lambda_powertools import Logger

from shared.runtime import build_app

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACT = BUNDLE_ROOT / "artifact"

# Same name as the runtime's logger, so shared's own log lines come out as structured JSON too.
logger = Logger(service="slimserve")

try:
    app = build_app(DEFAULT_ARTIFACT)
except Exception:
    logger.exception("cold start failed: the artifact did not load")
    raise

logger.info("cold start: models loaded", extra={"models": [f"{m.name}/{m.version}" for m in app.plane.repository]})


def http(event: dict, context) -> dict:
    """API Gateway HTTP API (payload 2.0) -> OIP v2 response; binary bodies travel base64 both ways."""
    return serverless_wsgi.handle_request(app, event, context)
