"""SnapStart: the handler registers its after-restore hook with the runtime's snapshot_restore_py, and the
hook refreshes what a restored copy must not share (random state, breakers, pooled storage clients)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from shared.boot import snapstart
from shared import storage
from shared.remote.breaker import CircuitBreaker
from tests.helpers import write_tiny_artifact


def test_handler_registers_the_after_restore_hook(load_handler, tmp_path):
    hooks = pytest.importorskip("snapshot_restore_py", reason="Lambda's runtime provides it; pip install snapshot-restore-py")
    handler = load_handler(SLIMSERVE_ARTIFACT=str(write_tiny_artifact(tmp_path / "tiny")))
    func, args, kwargs = hooks.get_after_restore()[-1]
    assert func is snapstart.after_restore and args == (handler.app,) and kwargs == {}
    func(*args, **kwargs)  # as the runtime runs it after a restore: the function still answers
    assert handler.app.plane.ready()


def test_register_is_a_no_op_outside_a_snapstart_runtime(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # None in sys.modules: ImportError
    assert snapstart.register(SimpleNamespace()) is False


def test_after_restore_refreshes_what_copies_would_share():
    breaker = CircuitBreaker(1, 30.0)
    breaker.record_failure()
    assert breaker.state == "open"
    remote = SimpleNamespace(breaker=breaker, _rng=random.Random(0))
    app = SimpleNamespace(plane=SimpleNamespace(repository=[remote, SimpleNamespace()]))
    storage._BACKENDS["file"]._client = object()
    np.random.seed(0)
    twin = np.random.RandomState(0).random_sample()

    snapstart.after_restore(app)

    assert remote.breaker is not breaker and remote.breaker.state == "closed" and remote.breaker.threshold == 1
    assert remote._rng.random() != random.Random(0).random()
    assert np.random.random_sample() != twin
    assert storage._BACKENDS["file"]._client is None
