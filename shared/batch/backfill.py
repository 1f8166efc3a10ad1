"""Backfill: send every object already under a prefix down the event path, as if it had just been created.

    sink = SqsSink(queue_url)                                   # shared/batch/backfill_sinks.py
    tally = Backfill(storage, sink, "s3://in/incoming/", output="s3://in/results").run()
    tally.listed, tally.skipped, tally.enqueued, tally.failed

The objects are listed page by page (any size of bucket, bounded memory) and each becomes one message of
the shape the platform itself sends (an S3 notification through SQS, a blob URI on the Azure queue, a GCS
CloudEvent posted to the function), so it takes exactly the event path: the same handler, its partial
failures, its dead-letter queue, its idempotent result keys. Skipped, never sent: folder placeholders,
objects under the output prefix (results), objects last modified before `since`, and objects whose result
already exists, so a stopped backfill resumes and a rerun sends only what still has no result.

What already has a result is read by listing the results once (a thousand keys a request, instead of a
HEAD per object) into a sorted array of 16-byte digests: 16 bytes per result in memory. An object whose
result appears after that listing is sent anyway: its result key is idempotent, so that costs one
inference, never a duplicate.

Sending runs on `concurrency` threads, at most twice that many batches in flight; a batch that fails is
retried with full-jitter backoff, only its failed entries, up to `retries` times. A destination that
refuses for good (a missing queue, a 403) stops the run at once; so does a batch still failing after
its retries. Either way the tally says what was sent, and a rerun (once the queue has drained) resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from shared.batch import keys
from shared.errors import QueueError, RecordError
from shared.storage import Listed, Storage, parse


@dataclass(frozen=True)
class Failure:
    item: Listed
    reason: str
    retryable: bool


class Sink(Protocol):
    """Where a backfill sends its messages: one per object, `batch_size` objects per call of `send`."""

    scheme: str  # the storage scheme whose objects it can announce: s3 | azure | gs
    batch_size: int

    def check(self) -> None:
        """Raise `QueueError` when the destination cannot take messages (missing, forbidden)."""

    def send(self, items: list[Listed]) -> list[Failure]:
        """Send one message per item; the items that were not taken. Raises `QueueError` for a refusal
        that retrying cannot change, any other exception for one it might (the whole batch is retried)."""


@dataclass
class Tally:
    listed: int = 0
    has_result: int = 0
    results: int = 0  # objects that are themselves results (under the output prefix)
    folders: int = 0
    older: int = 0  # last modified before `since`
    to_send: int = 0  # what was (or, in a dry run, would be) sent
    enqueued: int = 0
    failed: int = 0
    results_indexed: int = 0
    stopped: str = ""  # why the run ended early; "" when it went through
    elapsed_s: float = 0.0
    failures: list[str] = field(default_factory=list)  # the first few reasons, for the user

    @property
    def skipped(self) -> int:
        return self.has_result + self.results + self.folders + self.older

    def summary(self, dry_run: bool = False) -> str:
        why = [
            f"{n} {what}"
            for n, what in ((self.has_result, "with a result"), (self.results, "results"), (self.folders, "folders"), (self.older, "older"))
            if n
        ]
        skipped = f"skipped {self.skipped:,}" + (f" ({', '.join(why)})" if why else "")
        if dry_run:
            return f"listed {self.listed:,}, {skipped}, would enqueue {self.to_send:,} (dry run)"
        rate = f", {self.enqueued / self.elapsed_s:,.0f} messages/s" if self.elapsed_s > 0 and self.enqueued else ""
        return f"listed {self.listed:,}, {skipped}, enqueued {self.enqueued:,}, failed {self.failed:,} in {self.elapsed_s:.1f} s{rate}"


class ResultIndex:
    """Which result URIs exist, as sorted 16-byte BLAKE2b digests (a collision is 2**-64-ish unlikely)."""

    def __init__(self, uris: Iterable[str]):
        digests = bytearray()
        for uri in uris:
            digests += _digest(uri)
        self._sorted = np.sort(np.frombuffer(bytes(digests), dtype="S16")) if digests else np.empty(0, "S16")

    def __len__(self) -> int:
        return len(self._sorted)

    def __contains__(self, uri: str) -> bool:
        wanted = np.frombuffer(_digest(uri), dtype="S16")[0]
        at = int(np.searchsorted(self._sorted, wanted))
        return at < len(self._sorted) and self._sorted[at] == wanted


def _digest(uri: str) -> bytes:
    return hashlib.blake2b(uri.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Backfill:
    def __init__(
        self,
        storage: Storage,
        sink: Sink,
        source: str,
        *,
        output: str,
        output_format: str = "json",
        since: datetime | None = None,
        limit: int | None = None,
        concurrency: int = 8,
        retries: int = 5,
        backoff_s: float = 0.2,
        backoff_cap_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[Tally], None] | None = None,
    ):
        if not output:
            raise RecordError("no output prefix (SLIMSERVE_OUTPUT or --output): cannot tell which objects already have a result")
        if output_format not in keys.OUTPUT_FORMATS:
            raise RecordError(f"output format {output_format!r} must be one of {', '.join(keys.OUTPUT_FORMATS)}")
        src, out = parse(source), parse(output.rstrip("/") + "/")
        if src.scheme != sink.scheme:
            raise RecordError(f"{source!r}: this destination takes {sink.scheme}:// objects")
        if keys.under(source, output) or (src.scheme, src.container, src.key) == (out.scheme, out.container, out.key.rstrip("/")):
            raise RecordError(f"{source!r} lies under the output prefix {output!r}: everything there is a result")
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        self.storage, self.sink, self.source = storage, sink, source
        self.output, self.output_format, self.since, self.limit = output, output_format, since, limit
        self.concurrency, self.retries = max(1, concurrency), max(0, retries)
        self.backoff_s, self.backoff_cap_s, self.sleep = backoff_s, backoff_cap_s, sleep
        self.progress = progress or (lambda tally: None)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, dry_run: bool = False) -> Tally:
        start = time.perf_counter()
        tally = Tally()
        if not dry_run:
            self.sink.check()
        results = ResultIndex(item.uri for item in self.storage.list(keys.results_prefix(self.output, self.source)))
        tally.results_indexed = len(results)
        in_flight = threading.BoundedSemaphore(2 * self.concurrency)
        # Leaving the block waits for every send; no future is kept, so memory stays flat however many objects.
        with cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="slimserve-backfill") as pool:
            batch: list[Listed] = []
            for item in self._wanted(results, tally):
                if dry_run:
                    continue
                batch.append(item)
                if len(batch) == self.sink.batch_size:
                    self._submit(pool, in_flight, batch, tally)
                    batch = []
                if self._stop.is_set():
                    break
            if batch and not self._stop.is_set():
                self._submit(pool, in_flight, batch, tally)
        tally.elapsed_s = time.perf_counter() - start
        self.progress(tally)
        return tally

    def _wanted(self, results: ResultIndex, tally: Tally):
        """The listed objects that need sending, counting the rest; stops at `limit` or when told to."""
        for item in self.storage.list(self.source):
            if self._stop.is_set():
                return
            reason = self._skip_reason(item, results)
            with self._lock:  # never held across the yield: senders take it too
                tally.listed += 1
                if reason:
                    setattr(tally, reason, getattr(tally, reason) + 1)
                else:
                    tally.to_send += 1
                last = self.limit is not None and tally.to_send >= self.limit
            if tally.listed % 1000 == 0:
                self.progress(tally)
            if not reason:
                yield item
                if last:
                    return

    def _skip_reason(self, item: Listed, results: ResultIndex) -> str:
        """The Tally field an object that needs no message counts under; "" for one that does."""
        if item.uri.endswith("/"):
            return "folders"
        if keys.under(item.uri, self.output):
            return "results"
        if self.since is not None and item.modified is not None and item.modified < self.since:
            return "older"
        if keys.result_of(self.output, self.output_format, item.uri) in results:
            return "has_result"
        return ""

    def _submit(self, pool, in_flight: threading.BoundedSemaphore, batch: list[Listed], tally: Tally) -> None:
        in_flight.acquire()  # bounded: listing waits while the senders are behind

        def done(future: cf.Future) -> None:
            in_flight.release()
            if future.exception() is not None:  # a bug in a sink, not a refusal: count the batch, stop, say so
                with self._lock:
                    tally.failed += len(batch)
                self._halt(tally, f"{type(future.exception()).__name__} while sending: {future.exception()}")

        pool.submit(self._deliver, batch, tally).add_done_callback(done)

    def _deliver(self, batch: list[Listed], tally: Tally) -> None:
        pending, lost = batch, []
        for attempt in range(self.retries + 1):
            if self._stop.is_set():
                lost += [Failure(item, "not sent: the backfill stopped", False) for item in pending]
                break
            if attempt:
                self.sleep(random.uniform(0, min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 1))))
            try:
                failures = self.sink.send(pending)
            except QueueError as exc:
                failures = [Failure(item, exc.message, False) for item in pending]
                self._halt(tally, exc.message)
            except Exception as exc:  # throttled, a connection reset: worth another try
                failures = [Failure(item, f"{type(exc).__name__}: {str(exc)[:200]}", True) for item in pending]
            with self._lock:
                tally.enqueued += len(pending) - len(failures)
            lost += [f for f in failures if not f.retryable]
            pending = [f.item for f in failures if f.retryable]
            if not pending:
                break
            if attempt == self.retries:
                lost += [f for f in failures if f.retryable]
        if lost:
            with self._lock:
                tally.failed += len(lost)
                tally.failures += [f"{f.item.uri[:300]}: {f.reason}" for f in lost[: max(0, 5 - len(tally.failures))]]
            self._halt(tally, f"{len(lost)} message(s) still failing after {self.retries} retries: {lost[0].reason}")
        self.progress(tally)

    def _halt(self, tally: Tally, why: str) -> None:
        with self._lock:
            if not tally.stopped:
                tally.stopped = why
        self._stop.set()
