"""Dynamic batching: concurrent requests to one model in one server process share one run.

`BatchingModel` wraps a `LocalModel`. Requests whose inputs agree in names, dtypes and every dimension
but the first are concatenated along the first axis, run once through the model's `predict` (so a text
model tokenizes them together, padded to the longest), and the outputs are cut back into each request's
rows.

No batching thread: the first request to find the model idle leads, runs what is queued and, when it is
done, hands the lead to the oldest request still waiting (leader/follower). So an idle server adds no
delay and no thread hand-off to a lone request, and under load the next batch gathers while the current
one runs, which is where the throughput comes from: one run of 8 rows costs far less than 8 runs of 1.
`max_delay_s` > 0 makes a leader wait up to that long for the batch to fill first (Triton's
max_queue_delay), but only while the model is busy: when its recent batches held more than one request,
the next ones are on their way (clients of a busy server send again as soon as they are answered), while
a lone client's batches are single and it never waits. 0 never waits.

A batch whose run fails is retried request by request, so a request that breaks a run fails alone. A
model whose outputs do not keep the batch axis is run request by request from then on.

Only the server installs it (`install`), for models that ask for it (manifest `extra.batching`) or for
all with `--max-batch-size`; a function serves one request at a time, so there it would only cost.
"""

from __future__ import annotations

import logging
import threading
import time
from _thread import allocate_lock
from collections.abc import Callable

import numpy as np

from shared.serving.interface import Described
from shared.serving.local import LocalModel
from shared.serving.repository import ModelRepository
from shared.serving.text import TextEncoder

log = logging.getLogger("slimserve")


class _Pending:
    __slots__ = ("inputs", "rows", "signature", "gate", "result", "error", "done")

    def __init__(self, inputs: dict, rows: int, signature: tuple):
        self.inputs, self.rows, self.signature = inputs, rows, signature
        self.gate = allocate_lock()
        self.gate.acquire()  # released once: with a result, or with the lead
        self.result = self.error = None
        self.done = False


class BatchingModel(Described):
    def __init__(self, model: LocalModel, max_rows: int, max_delay_s: float = 0.0, on_batch: Callable[[int], None] | None = None):
        self.model = model
        self.manifest = model.manifest
        self.max_rows = max(1, int(max_rows))
        self.max_delay_s = max(0.0, float(max_delay_s))
        self._on_batch = on_batch or (lambda rows: None)
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)
        self._queue: list[_Pending] = []
        self._busy = False
        self._splittable = True
        self._recent = 1.0  # requests per batch, a moving average: above 1.5 the model counts as busy

    @property
    def provider(self) -> str:
        return self.model.provider

    @property
    def text(self) -> TextEncoder | None:
        return self.model.text

    def poll(self, inference_id: str):
        return self.model.poll(inference_id)

    def answer(self, inputs: dict[str, np.ndarray], *, may_defer: bool = False) -> tuple[dict[str, np.ndarray], dict]:
        return self.predict(inputs), {}

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, signature = _shape_of(inputs)
        if rows is None or rows >= self.max_rows or not self._splittable:
            self._on_batch(rows or 1)
            return self.model.predict(inputs)
        item = _Pending(inputs, rows, signature)
        with self._lock:
            self._queue.append(item)
            leads = not self._busy
            self._busy = True
            if not leads and self.max_delay_s:
                self._filled.notify()
        if not leads:
            item.gate.acquire()
            if item.done:
                return _outcome(item)
        return self._lead(item)

    # --- the leader -------------------------------------------------------------------------------

    def _lead(self, mine: _Pending):
        """Run batches starting with `mine` (the oldest queued request), then pass the lead on."""
        with self._lock:
            if self.max_delay_s and self._recent > 1.5:
                deadline = time.monotonic() + self.max_delay_s
                while self._compatible_rows(mine) < self.max_rows and (left := deadline - time.monotonic()) > 0:
                    self._filled.wait(left)
            batch, total = [], 0
            for item in self._queue:
                if item.signature == mine.signature and total + item.rows <= self.max_rows:
                    batch.append(item)
                    total += item.rows
            taken = set(map(id, batch))
            self._queue = [item for item in self._queue if id(item) not in taken]
            self._recent = 0.8 * self._recent + 0.2 * len(batch)
        self._run(batch, total)
        with self._lock:
            successor = self._queue[0] if self._queue else None
            self._busy = successor is not None
        for item in batch:
            if item is not mine:
                item.gate.release()
        if successor is not None:
            successor.gate.release()  # not done: it wakes as the leader
        return _outcome(mine)

    def _compatible_rows(self, mine: _Pending) -> int:
        return sum(item.rows for item in self._queue if item.signature == mine.signature)

    def _run(self, batch: list[_Pending], total: int) -> None:
        if len(batch) > 1:
            try:
                self._on_batch(total)
                outputs = self.model.predict({name: np.concatenate([i.inputs[name] for i in batch]) for name in batch[0].inputs})
                if all(o.shape[:1] == (total,) for o in outputs.values()):
                    start = 0
                    for item in batch:
                        item.result = {n: o[start : start + item.rows] for n, o in outputs.items()}
                        item.done = True
                        start += item.rows
                    return
                self._splittable = False
                log.warning("batcher: outputs of model %s do not keep the batch axis; requests run one by one from now on", self.name)
            except Exception as exc:  # the run failed for one of them, maybe: each runs alone below
                log.info("batcher: a batch of %d requests failed (%s); running them one by one", len(batch), str(exc)[:200])
        for item in batch:
            try:
                self._on_batch(item.rows)
                item.result = self.model.predict(item.inputs)
            except Exception as exc:
                item.error = exc
            item.done = True


def _outcome(item: _Pending):
    if item.error is not None:
        raise item.error
    return item.result


def _shape_of(inputs: dict) -> tuple[int | None, tuple]:
    """Rows (the shared first dimension) and what a batch-mate must match; rows None: cannot batch."""
    signature, rows = [], set()
    for name, value in inputs.items():
        if not isinstance(value, np.ndarray) or value.ndim == 0:
            return None, ()
        rows.add(value.shape[0])
        signature.append((name, value.dtype.str, value.shape[1:]))
    if len(rows) != 1:
        return None, ()
    return rows.pop(), tuple(signature)


def batching_config(settings, manifest) -> tuple[int, float] | None:
    """(max rows, max delay in seconds) for a model, or None: `--max-batch-size` for all, else the manifest's."""
    if settings.batcher_max_size > 0:
        return settings.batcher_max_size, settings.batcher_max_delay_ms / 1000
    extra = manifest.extra.get("batching")
    if isinstance(extra, dict) and int(extra.get("max_batch_size", 0) or 0) > 0:
        return int(extra["max_batch_size"]), float(extra.get("max_queue_delay_ms", settings.batcher_max_delay_ms) or 0) / 1000
    return None


def install(repository: ModelRepository, settings, on_batch: Callable[[str, str, int], None] | None = None) -> list[str]:
    """Put a BatchingModel in front of every local model that batching applies to; returns their names."""
    installed = []
    for model in list(repository):
        config = batching_config(settings, model.manifest)
        if config is None or not isinstance(model, LocalModel):
            continue
        if not all(spec.shape and spec.shape[0] == -1 for spec in model.inputs):
            log.info("batcher: model %s has a fixed first axis; not batched", model.name)
            continue
        observe = (lambda rows, m=model: on_batch(m.name, m.version, rows)) if on_batch else None
        repository.replace(BatchingModel(model, config[0], config[1], observe))
        installed.append(f"{model.name}/{model.version}")
    return installed
