"""`slimserve backfill SOURCE ...`: the command around shared/batch/backfill.py (imported when it runs).

    s3://BUCKET/PREFIX     --queue QUEUE_URL      S3 notifications on the batch function's SQS queue
    azure://CONTAINER/P    --queue QUEUE_NAME     blob URIs on the queue function's queue
    gs://BUCKET/PREFIX     --function-url URL     CloudEvents posted to the storage-event function

The output prefix (what already has a result) is `--output`, else SLIMSERVE_OUTPUT; the result format
SLIMSERVE_BATCH_OUTPUT_FORMAT. One summary line on stdout; a progress line on stderr when it is a terminal.
Exit 0 when everything listed was sent or skipped, 1 when a send still failed after its retries (or the
destination refused), 2 for arguments that cannot work.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime

from optimizer.errors import CliError, SpecError
from shared.batch.backfill import Backfill, Tally
from shared.batch.backfill_sinks import AzureQueueSink, CloudEventSink, SqsSink
from shared.batch.keys import under
from shared.config import Settings
from shared.errors import NotFound, QueueError, RecordError, StorageError
from shared.storage import Storage, parse


class Progress:
    """One line on stderr, rewritten at most five times a second; nothing when stderr is no terminal."""

    def __init__(self, enabled: bool, stream=None):
        stream = stream or sys.stderr
        self.enabled, self.stream = enabled and stream.isatty(), stream
        self._lock, self._shown, self._start = threading.Lock(), 0.0, time.monotonic()

    def __call__(self, tally: Tally) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._shown < 0.2:
            return
        with self._lock:
            self._shown = now
            rate = tally.enqueued / max(now - self._start, 1e-9)
            self.stream.write(
                f"\r  listed {tally.listed:,} | skipped {tally.skipped:,} | enqueued {tally.enqueued:,} "
                f"| failed {tally.failed:,} | {rate:,.0f}/s "
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"--since {text!r} is no date: use ISO 8601, e.g. 2024-01-31 or 2024-01-31T12:00:00Z") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def sink_for(args, settings: Settings):
    try:
        scheme = parse(args.source).scheme
    except RecordError as exc:
        raise SpecError(exc.message) from None
    if scheme == "gs":
        if not args.function_url:
            raise SpecError("a gs:// prefix is posted to the storage-event function: give --function-url, not --queue")
        return CloudEventSink(args.function_url, args.bearer or "")
    if args.bearer:
        raise SpecError("--bearer goes with --function-url only")
    if scheme not in ("s3", "azure"):
        raise SpecError(f"{args.source!r}: backfill reads s3://, azure:// (or the Blob https URL) and gs:// prefixes")
    if not args.queue:
        raise SpecError(f"a {scheme}:// prefix is sent to a queue: give --queue")
    if scheme == "s3":
        return SqsSink(args.queue)
    from shared.batch.azure import input_prefixes  # the queue function's own rule for what a message may name

    allowed = input_prefixes(settings)
    if allowed and not any(under(args.source.rstrip("/") + "/", prefix) for prefix in allowed):
        raise SpecError(f"the queue function takes objects under {', '.join(allowed)} only (SLIMSERVE_INPUT / SLIMSERVE_INPUT_CONTAINER)")
    return AzureQueueSink(Storage.from_settings(settings).azure_connection, args.queue)


def backfill_command(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise SpecError("--limit must be 1 or more")
    if args.concurrency < 1 or args.retries < 0:
        raise SpecError("--concurrency must be 1 or more and --retries 0 or more")
    try:
        settings = Settings.resolve(output=args.output)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    since = parse_since(args.since)
    sink = sink_for(args, settings)
    progress = Progress(not args.quiet)
    try:
        job = Backfill(
            Storage.from_settings(settings),
            sink,
            args.source,
            output=settings.output,
            output_format=settings.batch_output_format,
            since=since,
            limit=args.limit,
            concurrency=args.concurrency,
            retries=args.retries,
            progress=progress,
        )
        tally = job.run(dry_run=args.dry_run)
    except RecordError as exc:
        raise SpecError(exc.message) from None
    except (QueueError, StorageError, NotFound) as exc:
        raise CliError(exc.message) from None
    finally:
        progress.close()
    print(f"backfill {args.source} -> {args.queue or args.function_url}: {tally.summary(args.dry_run)}", flush=True)
    for reason in tally.failures:
        print(f"  failed: {reason}", file=sys.stderr)
    if tally.stopped or tally.failed:
        raise CliError(
            f"backfill stopped: {tally.stopped or f'{tally.failed} message(s) not sent'}; rerun to send what still has no result"
        )
    return 0
