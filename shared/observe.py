"""Per-request observability: the request id, one structured access-log line, the metrics.

The request id is the caller's `x-request-id` (or `x-amzn-requestid`, or API Gateway's own id when
serverless-wsgi passed the event on), else a fresh one; it is echoed in the response's `x-request-id`
so a client can quote it. An id that is not a short token is replaced, never logged: the header is
client input and would otherwise forge log lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

from shared.metrics import Metrics

access_log = logging.getLogger("slimserve.access")
_TOKEN = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_RECORD_FIELDS = ("request_id", "method", "path", "status", "model", "version", "duration_ms")


def request_id(environ: dict) -> str:
    for key in ("HTTP_X_REQUEST_ID", "HTTP_X_AMZN_REQUESTID"):
        value = environ.get(key)
        if value and _TOKEN.match(value):
            return value
    event = environ.get("serverless.event")
    if isinstance(event, dict):
        value = (event.get("requestContext") or {}).get("requestId")
        if isinstance(value, str) and _TOKEN.match(value):
            return value
    return os.urandom(8).hex()


class Observer:
    """What every request leaves behind: a metrics sample and, at INFO, one access-log line."""

    def __init__(self, metrics: Metrics | None = None):
        self.metrics = metrics or Metrics()

    def done(self, rid: str, method: str, path: str, status: int, model: str, version: str, start: float) -> None:
        seconds = time.perf_counter() - start
        self.metrics.observe_request(model, version, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            # JSON escapes whatever the client put in the path, so it cannot forge a line; it is only cut short.
            access_log.info(
                "request",
                extra={"request_id": rid, "method": method, "path": path[:200], "status": status, "model": model, "version": version, "duration_ms": round(seconds * 1000, 3)},
            )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields when present, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _RECORD_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"), default=str)

    converter = time.gmtime
