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

from shared.http.metrics import Metrics

access_log = logging.getLogger("slimserve.access")
_TOKEN = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # fullmatch: `$` would let a trailing newline through
_RECORD_FIELDS = ("request_id", "method", "path", "status", "model", "version", "duration_ms", "pid")
# A view whose model is named in the body, not the path (/v1/embeddings), leaves (name, version) here.
MODEL_KEY = "slimserve.model"


def request_id(environ: dict) -> str:
    for key in ("HTTP_X_REQUEST_ID", "HTTP_X_AMZN_REQUESTID"):
        value = environ.get(key)
        if value and _TOKEN.fullmatch(value):
            return value
    event = environ.get("serverless.event")
    if isinstance(event, dict):
        value = (event.get("requestContext") or {}).get("requestId")
        if isinstance(value, str) and _TOKEN.fullmatch(value):
            return value
    return os.urandom(8).hex()


class Observer:
    """What every request leaves behind: a metrics sample and, at INFO, one access-log line.

    The line goes through `logging` (so powertools formats it in Lambda), about 70 us of CPU on a small
    machine; the server, which owns its stderr and writes JSON, sets `direct_fd` and writes the same line
    itself with one `os.write` (atomic below PIPE_BUF, so workers' lines never interleave).
    """

    def __init__(self, metrics: Metrics | None = None):
        self.metrics = metrics or Metrics()
        self.direct_fd: int | None = None

    def done(self, rid: str, method: str, path: str, status: int, model: str, version: str, start: float) -> None:
        seconds = time.perf_counter() - start
        self.metrics.observe_request(model, version, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            # JSON escapes whatever the client put in the path, so it cannot forge a line; it is only cut short.
            fields = {
                "request_id": rid,
                "method": method,
                "path": path[:200],
                "status": status,
                "model": model,
                "version": version,
                "duration_ms": round(seconds * 1000, 3),
                "pid": os.getpid(),
            }  # pid: which worker answered
            if self.direct_fd is None:
                # The fields ride along for JSON logs; the message reads on its own in text logs, the path escaped
                # (ascii()) so a client cannot start a log line of its own.
                access_log.info(
                    "%s %s %d %s/%s %.3f ms id=%s",
                    method,
                    ascii(fields["path"])[1:-1],
                    status,
                    model or "-",
                    version or "-",
                    fields["duration_ms"],
                    rid,
                    extra=fields,
                )
                return
            now = time.time()
            line = {"time": _timestamp(now), "level": "INFO", "logger": access_log.name, "message": "request", **fields}
            try:
                os.write(self.direct_fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
            except OSError:  # a full non-blocking pipe: the line is lost, the request is not
                pass


_second = [-1, ""]


def _timestamp(created: float) -> str:
    second = int(created)
    if _second[0] != second:  # strftime once a second, not once a line
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields when present, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": _timestamp(record.created),
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
