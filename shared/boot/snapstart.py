"""Lambda SnapStart: state that every environment restored from one snapshot would otherwise share.

With SnapStart the init phase (imports, model load, onnxruntime session) runs once at publish time and
its memory is snapshotted; every execution environment then starts as a copy of it. What must be unique
or fresh per environment is refreshed in an after-restore hook of the runtime's `snapshot_restore_py`
(provided by Lambda's python3.12+ runtimes only; elsewhere `register` does nothing):

- random generators: copies would draw the same "random" retry jitter and ids in every environment;
- the circuit breakers of endpoint-placed models: their clock is time.monotonic(), which is not
  continuous across a restore, and a breaker opened before the snapshot says nothing about now;
- pooled storage clients: their connections were opened before the snapshot and are dead after it.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np

from shared.boot.build import Runtime
from shared.remote.model import RemoteModel

log = logging.getLogger("slimserve")


def register(runtime: Runtime) -> bool:
    """Hook `after_restore(runtime)` into the runtime; False where this is no SnapStart runtime."""
    try:
        from snapshot_restore_py import register_after_restore
    except ImportError:
        return False
    register_after_restore(after_restore, runtime)
    return True


def after_restore(runtime: Runtime) -> None:
    random.seed(os.urandom(16))
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    runtime.storage.reset()
    for model in runtime.plane.repository:
        if isinstance(model, RemoteModel):
            model.reset_after_restore()
    log.info("snapstart: restored; random generators reseeded, breakers and storage clients reset")
