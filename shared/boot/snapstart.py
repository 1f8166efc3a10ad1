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

from shared import storage

log = logging.getLogger("slimserve")


def register(app) -> bool:
    """Hook `after_restore(app)` into the runtime; False where this is no SnapStart runtime."""
    try:
        from snapshot_restore_py import register_after_restore
    except ImportError:
        return False
    register_after_restore(after_restore, app)
    return True


def after_restore(app) -> None:
    random.seed(os.urandom(16))
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    storage.reset()
    for model in app.plane.repository:
        breaker = getattr(model, "breaker", None)
        if breaker is not None:
            model.breaker = type(breaker)(breaker.threshold, breaker.cooldown_s)
        rng = getattr(model, "_rng", None)  # the router's backoff jitter
        if isinstance(rng, random.Random):
            rng.seed(os.urandom(16))
    log.info("snapstart: restored; random generators reseeded, breakers and storage clients reset")
