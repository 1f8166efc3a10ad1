"""The one batch core: records in, one result object per record out, a verdict per record.

    runner = BatchRunner(app.plane)                          # once per process, beside the HTTP app
    report = runner.run([Record.from_uri("s3://in/incoming/a.npy", id="msg-1"),
                         Record.inline("incoming/b.json", body, id="evt-2")])
    report.failed_ids()                                      # {"msg-7", ...}: what the platform retries

Adapters only unwrap their platform's event into `Record`s and turn the report into the platform's
partial-failure answer. Here:

- **reading** runs on a thread pool (object storage is latency-bound); an object's size is known before it
  is downloaded and refused over SLIMSERVE_BATCH_MAX_OBJECT_BYTES; each record is decoded through the data
  plane with the batch limits (shared/batch/formats.py) as it arrives, so a record that cannot be served
  fails alone;
- **micro-batching** concatenates records of the same model whose inputs agree in names, datatypes and
  trailing shape, along axis 0 when the model's first axis is dynamic, up to SLIMSERVE_BATCH_MAX_SIZE
  rows; a partial batch runs once SLIMSERVE_BATCH_MAX_WAIT_MS passed without it filling. Results are
  split back by row counts. A concatenated run that fails is retried record by record, so a record that
  breaks the run fails alone. A record longer than SLIMSERVE_BATCH_MAX_SIZE rows runs alone, in runs of
  that many rows, so a run's memory stays bounded whatever the record's length;
- **writing**: `<SLIMSERVE_OUTPUT>/<input key><.json|.npz>`. The key is a pure function of the input key
  and the content a pure function of input and model, so a redelivered record overwrites its result.

Which model: `Record.model`, else SLIMSERVE_BATCH_MODEL, else the only model served, else the model named
by the input's parent folder (`incoming/<model>/a.npy`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from shared.batch import formats, keys
from shared.config import Settings
from shared.errors import LimitExceeded, NotFound, RecordError, SlimserveError, to_status_and_body
from shared.protocol.codec import InferenceRequest
from shared.protocol.limits import Limits
from shared.serving.dataplane import DataPlane
from shared.serving.interface import ServedModel
from shared.storage import Storage, check_key, parse, relative_key

log = logging.getLogger("slimserve")

HELD_BYTES = 256 << 20  # decoded records waiting for their micro-batch; past this they run at once


@dataclass(frozen=True)
class Record:
    """One input: an object URI (`data` None), or an inline payload named by `key` (`incoming/b.npy`)."""

    key: str
    data: bytes | None = None
    id: str | None = None  # the platform's handle (SQS messageId, CloudEvent id), echoed in the outcome
    model: str | None = None  # `name` or `name/version`; None: see the module docstring
    refusal: str | None = None  # why this record may not be read at all (it fails alone, with this)
    too_large: bool = False  # the refusal is its size (413), not what it names (400)

    @classmethod
    def from_uri(cls, uri: str, id: str | None = None, model: str | None = None) -> Record:
        return cls(uri, None, id, model)

    @classmethod
    def inline(cls, name: str, data: bytes, id: str | None = None, model: str | None = None) -> Record:
        return cls(name, data, id, model)

    @classmethod
    def refused(cls, key: str, reason: str, id: str | None = None, too_large: bool = False) -> Record:
        return cls(key, None, id, refusal=reason, too_large=too_large)

    @property
    def relative_key(self) -> str:
        """What the result key derives from: the object key (no bucket), or the inline name."""
        if self.data is None:
            return relative_key(self.key)
        return check_key(self.key.lstrip("/"))


@dataclass(frozen=True)
class Outcome:
    record: Record
    output: str | None = None  # the result's URI when it was written
    error: str | None = None  # why it failed: the same message an HTTP caller would read
    status: int = 200  # HTTP status of the failure: 4xx = the input's fault, 5xx = ours or storage's

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchReport:
    outcomes: list[Outcome]  # in the order the records were given
    runs: int = 0  # onnxruntime runs (micro-batches + per-record retries)
    inference_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def failed_ids(self) -> set[str]:
        """Ids of the records that failed; a platform message holding several records fails if any does."""
        return {o.record.id for o in self.failed if o.record.id is not None}


@dataclass
class _Item:
    index: int
    record: Record
    model: ServedModel
    request: InferenceRequest
    rows: int
    group: tuple | None  # records with equal groups may share a run; None runs alone


@dataclass
class _Group:
    items: list[_Item] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for item in self.items for v in item.request.inputs.values())


class BatchRunner:
    def __init__(self, plane: DataPlane, settings: Settings, storage: Storage):
        if not settings.output:
            raise ValueError("SLIMSERVE_OUTPUT is not set: batch results need a prefix to go to")
        if settings.batch_output_format not in keys.OUTPUT_FORMATS:
            raise ValueError(f"SLIMSERVE_BATCH_OUTPUT_FORMAT={settings.batch_output_format!r} must be json or npz")
        parse(settings.output.rstrip("/") + "/x")  # a bad prefix fails at cold start, not per record
        self.plane = plane
        self.settings = settings
        self.storage = storage
        self.limits = Limits.for_batch(settings)
        self.max_rows = max(1, settings.batch_max_size)
        self.max_wait_s = max(0, settings.batch_max_wait_ms) / 1000
        self._threads: cf.ThreadPoolExecutor | None = None

    def _pool(self) -> cf.ThreadPoolExecutor:
        if self._threads is None:
            self._threads = cf.ThreadPoolExecutor(max(1, self.settings.batch_io_threads), thread_name_prefix="slimserve-batch")
        return self._threads

    def output_uri(self, record: Record) -> str:
        return keys.output_uri(self.settings.output, self.settings.batch_output_format, record.relative_key)

    def run(self, records: Iterable[Record]) -> BatchReport:
        records = list(records)
        start = time.perf_counter()
        report = BatchReport(outcomes=[Outcome(r) for r in records])
        threads = max(1, self.settings.batch_io_threads)
        pool = self._pool()
        # One pool for the runner's life: a warm Lambda reuses its threads across invocations.
        # Reads start as threads free up, not all at once, and decoded records waiting for their
        # micro-batch are bounded in bytes: memory follows the threads, not the number of records.
        queue = collections.deque(enumerate(records))
        reads: dict[cf.Future, int] = {}
        writes: list[cf.Future] = []
        pending: dict[tuple, _Group] = {}
        while queue or reads or pending:
            while queue and len(reads) < threads:
                index, record = queue.popleft()
                reads[pool.submit(self._prepare, index, record)] = index
            timeout = self._next_deadline(pending)
            done, _ = cf.wait(reads, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            for future in done:
                index = reads.pop(future)
                try:
                    item = future.result()
                except Exception as exc:
                    report.outcomes[index] = self._failure(records[index], exc)
                    continue
                self._add(item, pending, report, pool, writes)
            now = time.monotonic()
            crowded = sum(g.nbytes for g in pending.values()) > HELD_BYTES
            for key in [k for k, g in pending.items() if crowded or not (reads or queue) or now - g.since >= self.max_wait_s]:
                self._flush(pending.pop(key), report, pool, writes)
        for future in writes:
            index, outcome = future.result()
            report.outcomes[index] = outcome
        report.elapsed_s = time.perf_counter() - start
        return report

    # --- reading -----------------------------------------------------------------------------------

    def _prepare(self, index: int, record: Record) -> _Item:
        if record.refusal is not None:
            raise (LimitExceeded if record.too_large else RecordError)(record.refusal)
        model = self._model_for(record)
        limit = self.settings.batch_max_object_bytes
        if record.data is None:
            data = self.storage.read(record.key, max_bytes=limit, setting="SLIMSERVE_BATCH_MAX_OBJECT_BYTES")
        elif len(record.data) > limit:
            raise LimitExceeded(f"{record.key[:200]!r} is {len(record.data):,} bytes, over SLIMSERVE_BATCH_MAX_OBJECT_BYTES={limit:,}")
        else:
            data = record.data
        request = formats.decode(record.key, data, model, self.plane, self.limits)
        rows = {v.shape[0] if v.ndim else 0 for v in request.inputs.values()}
        batchable = len(rows) == 1 and all(s.shape and s.shape[0] == -1 for s in model.manifest.inputs)
        group = None
        if batchable:
            signature = tuple(sorted((n, v.dtype.str, v.shape[1:]) for n, v in request.inputs.items()))
            group = (model.name, model.version, signature)
        return _Item(index, record, model, request, rows.pop() if len(rows) == 1 else 0, group)

    def _model_for(self, record: Record) -> ServedModel:
        wanted = record.model or self.settings.batch_model
        repository = self.plane.repository
        if not wanted:
            only = repository.only()
            if only is not None:
                return only
            parts = record.relative_key.split("/")
            if len(parts) < 2:
                raise RecordError(
                    f"{record.key!r}: several models are served; name one with SLIMSERVE_BATCH_MODEL "
                    "or put the input under a folder named after it"
                )
            wanted = parts[-2]
        name, _, version = wanted.partition("/")
        try:
            return repository.get(name, version or None)
        except NotFound as exc:
            raise RecordError(f"{record.key!r}: {exc.message}") from None

    # --- micro-batching ----------------------------------------------------------------------------

    def _next_deadline(self, pending: dict[tuple, _Group]) -> float | None:
        if not pending:
            return None
        oldest = min(g.since for g in pending.values())
        return max(0.0, oldest + self.max_wait_s - time.monotonic())

    def _add(self, item: _Item, pending: dict, report: BatchReport, pool, writes: list) -> None:
        if item.group is None or item.rows >= self.max_rows:
            self._flush(_Group([item], item.rows), report, pool, writes)
            return
        group = pending.get(item.group)
        if group is not None and group.rows + item.rows > self.max_rows:
            self._flush(pending.pop(item.group), report, pool, writes)
            group = None
        if group is None:
            group = pending[item.group] = _Group(since=time.monotonic())
        group.items.append(item)
        group.rows += item.rows
        if group.rows >= self.max_rows:
            self._flush(pending.pop(item.group), report, pool, writes)

    def _flush(self, group: _Group, report: BatchReport, pool, writes: list) -> None:
        items = group.items
        if len(items) > 1:
            try:
                outputs = self._run(items[0].model, _concat([i.request.inputs for i in items]), report)
                parts = _split(outputs, [i.rows for i in items])
            except Exception as exc:
                log.warning("a micro-batch of %d records failed (%s); retrying them one by one", len(items), exc)
            else:
                for item, (results, parameters) in zip(items, parts):
                    writes.append(pool.submit(self._write, item, results, parameters))
                return
        for item in items:
            try:
                results, parameters = self._run(item.model, item.request.inputs, report)
            except Exception as exc:
                report.outcomes[item.index] = self._failure(item.record, exc)
                continue
            writes.append(pool.submit(self._write, item, results, parameters))

    def _run(self, model: ServedModel, inputs: dict[str, np.ndarray], report: BatchReport) -> tuple[dict, dict]:
        start = time.perf_counter()
        try:
            # Never deferred: nothing would poll an asynchronous job, and each redelivery would start another.
            return self.plane.run(model, inputs, max_rows=self.max_rows, may_defer=False)
        finally:
            report.runs += -(-max(1, _rows(inputs)) // self.max_rows)
            report.inference_s += time.perf_counter() - start

    # --- writing -----------------------------------------------------------------------------------

    def _write(self, item: _Item, results: dict[str, np.ndarray], parameters: dict) -> tuple[int, Outcome]:
        try:
            fmt = self.settings.batch_output_format
            response = self.plane.respond(item.model, item.request, results, parameters)
            body = formats.encode(fmt, response, item.record.key)
            uri = self.output_uri(item.record)
            self.storage.write(uri, body, keys.OUTPUT_FORMATS[fmt][0])
        except Exception as exc:
            return item.index, self._failure(item.record, exc)
        return item.index, Outcome(item.record, output=uri)

    @staticmethod
    def _failure(record: Record, exc: BaseException) -> Outcome:
        status, body = to_status_and_body(exc)
        if isinstance(exc, SlimserveError):
            log.warning("batch record %s failed: %s", record.key[:300], body["error"])
        else:  # a bug, not an input: keep the traceback in the log, never in the outcome
            log.error("batch record %s failed unexpectedly", record.key[:300], exc_info=exc)
        return Outcome(record, error=body["error"], status=status)


def _rows(inputs: dict[str, np.ndarray]) -> int:
    return max((v.shape[0] for v in inputs.values() if v.ndim), default=1)


def _concat(inputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([i[name] for i in inputs], axis=0) for name in inputs[0]}


def _split(outputs: tuple[dict, dict], rows: list[int]) -> list[tuple[dict, dict]]:
    """Per-record outputs of a concatenated run; only outputs that are batch-major can be split."""
    results, parameters = outputs
    total = sum(rows)
    bad = [n for n, v in results.items() if v.ndim == 0 or v.shape[0] != total]
    if bad:
        raise RecordError(f"output(s) {', '.join(bad)} are not batch-major; records must run one by one")
    bounds = np.cumsum([0, *rows])
    return [({n: v[a:b] for n, v in results.items()}, parameters) for a, b in zip(bounds[:-1], bounds[1:])]
