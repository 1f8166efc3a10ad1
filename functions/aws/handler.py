"""AWS Lambda adapter: API Gateway HTTP API (payload 2.0) -> the shared WSGI app, SQS-delivered S3
notifications -> the shared batch core.

The model loads here, at import, i.e. in Lambda's init phase: once per execution environment, never per
request (with SnapStart, once per published version: shared/boot/snapstart.py refreshes what must not be
shared). A failure to load (no artifact, sha256 mismatch, bad manifest) propagates, so Lambda reports
an init error instead of serving a broken function.

Where the artifact is: `SLIMSERVE_ARTIFACT` (folders or pinned s3:// prefixes, comma-separated) or, by
default, `artifact/` at the bundle root, the folder that holds `functions/` and `shared/` (/var/task/artifact).
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import serverless_wsgi
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared.batch.core import BatchRunner
from shared.batch.s3_sqs import partial_response, unwrap_sqs
from shared.boot import snapstart
from shared.boot.build import start

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACT = BUNDLE_ROOT / "artifact"

# Same name as the runtime's logger, so shared's own log lines come out as structured JSON too.
logger = Logger(service="slimserve")
metrics = Metrics(namespace="slimserve", service="slimserve")

try:
    runtime = start(DEFAULT_ARTIFACT)
except ValueError as exc:  # a setting that cannot work (SLIMSERVE_...): its one line says which and why
    logger.error(f"cold start failed: {exc}")
    raise
except Exception:
    logger.exception("cold start failed: the artifact did not load")
    raise
app = runtime.app

snapstart.register(runtime)
logger.info("cold start: models loaded", extra={"models": [f"{m.name}/{m.version}" for m in runtime.plane.repository]})


@metrics.log_metrics
def http(event: dict, context) -> dict:
    """API Gateway HTTP API (payload 2.0) -> OIP v2 response; binary bodies travel base64 both ways."""
    start_s = time.perf_counter()
    response = serverless_wsgi.handle_request(app, event, context)
    status = response["statusCode"]
    # All in the one EMF line log_metrics prints per invocation: errors by status as their own metric
    # (Error413...), the request id as a property to find the request's log lines by.
    metrics.add_metric(name="Failed" if status >= 400 else "Succeeded", unit=MetricUnit.Count, value=1)
    if status >= 400:
        metrics.add_metric(name=f"Error{status}", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - start_s) * 1000)
    metrics.add_metadata(key="request_id", value=(response.get("headers") or {}).get("x-request-id", ""))
    return response


@cache
def runner() -> BatchRunner:
    return BatchRunner(runtime.plane, runtime.settings, runtime.storage)  # SLIMSERVE_OUTPUT unset: fails loudly


@metrics.log_metrics
def batch(event: dict, context) -> dict:
    """SQS messages carrying S3 ObjectCreated notifications -> one result object per S3 object; messages
    with a failed object come back in `batchItemFailures` (SQS retries them, then the DLQ). All failed is
    still a partial response, not an invocation error: the function's error rate measures our own faults."""
    unwrapped = unwrap_sqs(event, runtime.settings.output)
    report = runner().run(unwrapped.records)  # one run over the whole SQS batch: micro-batches span messages
    failed = unwrapped.failures(report)
    logger.info(
        "batch done",
        extra={
            "objects": len(report.outcomes),
            "failed_messages": failed,
            "runs": report.runs,
            "test_events": len(unwrapped.acknowledged),
            "skipped_results": unwrapped.skipped,
        },
    )
    metrics.add_metric(name="Succeeded", unit=MetricUnit.Count, value=len(report.succeeded))
    metrics.add_metric(name="Failed", unit=MetricUnit.Count, value=len(report.failed) + len(unwrapped.rejected))
    metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds, value=report.inference_s * 1000)
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=len(report.outcomes))
    metrics.add_metric(name="Runs", unit=MetricUnit.Count, value=report.runs)
    return partial_response(failed)
