"""Scrapes answered while the snapshot thread writes: under `--workers N` both write this process's snapshot
file, and a scrape that raced the thread once answered 500 (one rename took the other's temporary file)."""

from __future__ import annotations

import os
import threading

from shared.http.metrics import Metrics


def test_concurrent_scrapes_and_snapshots_never_fail(tmp_path):
    metrics = Metrics(tmp_path)  # starts the snapshot thread
    metrics.observe_request("m", "1", 200, 0.001)
    failures: list[BaseException] = []

    def scrape() -> None:
        for _ in range(300):
            try:
                assert 'slimserve_requests_total{model="m",version="1",code="200"} 1' in metrics.render()
            except BaseException as exc:  # collected, asserted below: a thread's exception is otherwise lost
                failures.append(exc)
                return

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert [p.name for p in tmp_path.iterdir()] == [f"{os.getpid()}.json"]
