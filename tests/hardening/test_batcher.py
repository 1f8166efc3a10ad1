"""The dynamic batcher: concurrent requests share onnxruntime runs and each gets exactly its own rows back;
requests that cannot share a run (other trailing shape) do not; a request that breaks a batch fails alone;
a model whose outputs drop the batch axis falls back to one run per request; nothing batches by default."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.artifact.loading import load_artifact
from shared.boot.build import build_app
from shared.config import Settings
from shared.http.metrics import Metrics
from shared.serving.batcher import BatchingModel, batching_config, install
from shared.serving.local import LocalModel
from tests.hardening.models import with_extra
from tests.helpers import write_tiny_artifact


class SlowModel:
    """Wraps a real model: each run takes a while (so requests pile up) and is recorded."""

    def __init__(self, model, delay_s: float = 0.01, fail_on=None, run=None):
        self.model, self.delay_s, self.fail_on, self._run = model, delay_s, fail_on, run or model.predict
        self.manifest, self.provider = model.manifest, model.provider
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def predict(self, inputs):
        rows = next(iter(inputs.values())).shape[0]
        with self._lock:
            self.batches.append(rows)
        threading.Event().wait(self.delay_s)
        if self.fail_on is not None and any(np.any(v == self.fail_on) for v in inputs.values()):
            raise ValueError("poisoned row")
        return self._run(inputs)


@pytest.fixture
def model(tmp_path) -> LocalModel:
    return LocalModel.load(load_artifact(write_tiny_artifact(tmp_path / "tiny")), str(tmp_path / "cache"), threads=1)


def rows(i: int, n: int = 1) -> np.ndarray:
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) + i) / 7


def concurrently(fn, count: int) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(fn, range(count)))


def test_concurrent_requests_share_runs_and_get_their_own_rows(model):
    reference = {i: model.predict({"input": rows(i, 1 + i % 3)}) for i in range(24)}
    slow = SlowModel(model)
    batching = BatchingModel(slow, max_rows=8)
    answers = concurrently(lambda i: batching.predict({"input": rows(i, 1 + i % 3)}), 24)
    for i, answer in enumerate(answers):
        for name in ("logits", "probs"):
            np.testing.assert_allclose(answer[name], reference[i][name], rtol=1e-6, atol=1e-6)
    assert sum(slow.batches) == sum(1 + i % 3 for i in range(24))
    assert max(slow.batches) > 1 and max(slow.batches) <= 8 and len(slow.batches) < 24


def test_different_trailing_shapes_never_share_a_run(tmp_path, caplog):
    folder = write_tiny_artifact(tmp_path / "wide", in_features=4)
    model = LocalModel.load(load_artifact(folder), str(tmp_path / "cache"), threads=1)
    seen = []

    def record(inputs):
        seen.append({k: v.shape for k, v in inputs.items()})
        return {"logits": np.zeros((inputs["input"].shape[0], 3), np.float32), "probs": np.zeros((inputs["input"].shape[0], 3), np.float32)}

    batching = BatchingModel(SlowModel(model, run=record), max_rows=16)
    feeds = [{"input": np.zeros((1, 4 if i % 2 else 5), np.float32)} for i in range(12)]
    with caplog.at_level("INFO", logger="slimserve"):
        concurrently(lambda i: batching.predict(feeds[i]), 12)
    assert sum(s["input"][0] for s in seen) == 12 and len(seen) < 12  # batched, and
    assert "failed" not in caplog.text  # never a concatenation of 4- and 5-wide rows that had to be retried


def test_a_request_that_breaks_a_batch_fails_alone(model):
    batching = BatchingModel(SlowModel(model, fail_on=99.0), max_rows=8)

    def call(i):
        x = rows(i)
        if i == 5:
            x[0, 0] = 99.0
        try:
            return batching.predict({"input": x})["probs"]
        except Exception as exc:
            return exc

    answers = concurrently(call, 12)
    failed = [i for i, a in enumerate(answers) if isinstance(a, Exception)]
    assert failed == [5]
    assert all(np.allclose(a.sum(axis=1), 1.0, atol=1e-5) for i, a in enumerate(answers) if i != 5)


def test_outputs_without_the_batch_axis_fall_back_to_one_run_per_request(model):
    def pooled(inputs):
        """A model that sums over the batch: its outputs cannot be cut back into requests."""
        total = inputs["input"].sum(axis=0, keepdims=True)
        return {"logits": total, "probs": total}

    slow = SlowModel(model, run=pooled)
    batching = BatchingModel(slow, max_rows=8)
    answers = concurrently(lambda i: batching.predict({"input": rows(i)}), 8)
    assert all(np.allclose(a["logits"], rows(i).sum(axis=0, keepdims=True)) for i, a in enumerate(answers))
    assert max(slow.batches) > 1 and not batching._splittable  # a batch did form, and was found unsplittable


def test_queue_delay_lets_a_batch_fill_while_the_model_is_busy(model):
    slow = SlowModel(model, delay_s=0.0)
    batching = BatchingModel(slow, max_rows=4, max_delay_s=30.0)  # the wait ends when 4 are in, not at 30 s
    batching._recent = 4.0  # as after a run of full batches: busy

    def call(i):
        start.wait()
        return batching.predict({"input": rows(i)})

    start = threading.Barrier(4)
    concurrently(call, 4)
    assert slow.batches == [4]  # filled, then ran at once as one batch


def test_a_lone_client_never_waits_for_a_batch(model):
    slow = SlowModel(model, delay_s=0.0)
    batching = BatchingModel(slow, max_rows=8, max_delay_s=2.0)
    started = __import__("time").perf_counter()
    for i in range(5):
        batching.predict({"input": rows(i)})
    assert __import__("time").perf_counter() - started < 1.0 and slow.batches == [1] * 5


def test_batching_follows_the_manifest_or_the_setting_and_is_off_otherwise(tmp_path):
    plain = write_tiny_artifact(tmp_path / "plain", name="plain")
    asking = with_extra(write_tiny_artifact(tmp_path / "asking", name="asking"), batching={"max_batch_size": 4, "max_queue_delay_ms": 2})
    app = build_app(plain, Settings.resolve(artifact=f"{plain},{asking}"))
    assert install(app.plane.repository, app.settings, Metrics().observe_batch) == ["asking/1"]
    assert isinstance(app.plane.repository.get("asking"), BatchingModel)
    assert isinstance(app.plane.repository.get("plain"), LocalModel)
    assert batching_config(Settings.resolve(batcher_max_size=8, batcher_max_delay_ms=1.5), app.plane.repository.get("plain").manifest) == (
        8,
        0.0015,
    )
    assert batching_config(Settings.resolve(), app.plane.repository.get("asking").model.manifest) == (4, 0.002)
    # build_app alone (what every function calls) never batches
    assert not any(isinstance(m, BatchingModel) for m in build_app(asking).plane.repository)


def test_batch_sizes_reach_the_metrics(model):
    metrics = Metrics()
    batching = BatchingModel(SlowModel(model), max_rows=8, on_batch=lambda n: metrics.observe_batch("tiny", "1", n))
    concurrently(lambda i: batching.predict({"input": rows(i)}), 16)
    text = metrics.render()
    assert 'slimserve_batch_size_count{model="tiny",version="1"}' in text
    count = int(next(line for line in text.splitlines() if line.startswith("slimserve_batch_size_count")).split()[-1])
    assert count < 16  # fewer runs than requests
