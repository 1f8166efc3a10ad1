"""SnapStart: the handler registers its after-restore hook with the runtime's snapshot_restore_py, and the
hook refreshes what a restored copy must not share (random state, pooled storage clients; the breakers of
endpoint-placed models: tests/endpoint/test_snapstart_restore.py runs that against a real endpoint)."""

from __future__ import annotations

import random
import sys

import numpy as np

from shared.boot import snapstart
from shared.boot.build import start
from tests.helpers import write_tiny_artifact
from tests.tools import need_module


def test_handler_registers_the_after_restore_hook(load_handler, tmp_path):
    hooks = need_module("snapshot_restore_py", "Lambda's runtime provides it; the dev extra installs snapshot-restore-py")
    handler = load_handler(SLIMSERVE_ARTIFACT=str(write_tiny_artifact(tmp_path / "tiny")))
    func, args, kwargs = hooks.get_after_restore()[-1]
    assert func is snapstart.after_restore and args == (handler.runtime,) and kwargs == {}
    func(*args, **kwargs)  # as the runtime runs it after a restore: the function still answers
    assert handler.app.plane.ready()


def test_register_is_a_no_op_outside_a_snapstart_runtime(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # None in sys.modules: ImportError
    assert snapstart.register(start(write_tiny_artifact(tmp_path / "tiny"))) is False


def test_after_restore_reseeds_and_drops_pooled_clients(tmp_path):
    runtime = start(write_tiny_artifact(tmp_path / "tiny"))
    s3 = runtime.storage._backends["s3"]
    s3._client = client = object()  # a pooled client, opened before the snapshot
    random.seed(0)
    np.random.seed(0)
    twins = random.Random(0).random(), np.random.RandomState(0).random_sample()

    snapstart.after_restore(runtime)

    assert (random.random(), np.random.random_sample()) != twins
    assert s3._client is None and s3._client is not client
