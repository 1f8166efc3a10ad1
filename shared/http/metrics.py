"""Request metrics of the server, exposed as Prometheus text (`GET /metrics`), without a client library.

    slimserve_requests_total{model,version,code}           counter    every request; model "" off model routes
    slimserve_errors_total{code}                           counter    requests answered 4xx/5xx
    slimserve_request_duration_seconds{model,version}      histogram  request in -> response out
    slimserve_batch_size{model,version}                    histogram  rows per onnxruntime run (dynamic batcher)

Labels hold only names a manifest allowed (unknown models count under model=""), so a client cannot grow
the series without bound. Under `--workers N` each process counts its own and writes a snapshot into a
folder the supervisor made (every second, and whenever it answers a scrape); the process answering a
scrape sums them all. Files of exited workers stay, so totals never go backwards.
(In Lambda the same figures go out as CloudWatch EMF through powertools, functions/aws/handler.py.)
"""

from __future__ import annotations

import json
import os
import threading
from bisect import bisect_left
from pathlib import Path

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SNAPSHOT_EVERY_S = 1.0


class Metrics:
    def __init__(self, folder: str | Path | None = None):
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # the snapshot thread and a scrape write the same file
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], list] = {}  # bucket counts..., +Inf count, sum
        self._batch: dict[tuple[str, str], list] = {}
        self._folder = Path(folder) if folder else None
        if self._folder is not None:
            threading.Thread(target=self._write_forever, name="slimserve-metrics", daemon=True).start()

    def observe_request(self, model: str, version: str, code: int, seconds: float) -> None:
        with self._lock:
            key = (model, version, str(code))
            self._requests[key] = self._requests.get(key, 0) + 1
            _observe(self._latency, (model, version), LATENCY_BUCKETS, seconds)

    def observe_batch(self, model: str, version: str, rows: int) -> None:
        with self._lock:
            _observe(self._batch, (model, version), BATCH_BUCKETS, rows)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests": [[*k, v] for k, v in self._requests.items()],
                "latency": [[*k, list(v)] for k, v in self._latency.items()],
                "batch": [[*k, list(v)] for k, v in self._batch.items()],
            }

    def render(self) -> str:
        """This process's figures, plus every other worker's last snapshot when there are workers."""
        snapshots = [self.snapshot()]
        if self._folder is not None:
            self._write(snapshots[0])
            snapshots = _read_all(self._folder)
        return render(snapshots)

    def _write(self, snapshot: dict) -> None:
        target = self._folder / f"{os.getpid()}.json"
        temporary = target.with_suffix(".tmp")
        with self._write_lock:  # else one thread's rename takes the other's half-written file, or finds none
            temporary.write_text(json.dumps(snapshot), encoding="utf-8")
            os.replace(temporary, target)  # readers see the old file or the new one, never half of one

    def _write_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(_SNAPSHOT_EVERY_S):
            try:
                self._write(self.snapshot())
            except FileNotFoundError:  # the supervisor removed the folder: the server is stopping
                return
            except OSError:  # a full disk, say: this snapshot is lost, the next may not be
                continue


def _observe(table: dict, key: tuple, buckets: tuple, value: float) -> None:
    counts = table.get(key)
    if counts is None:
        counts = table[key] = [0] * (len(buckets) + 1) + [0.0]
    counts[bisect_left(buckets, value)] += 1
    counts[-1] += value


def _read_all(folder: Path) -> list[dict]:
    snapshots = []
    for path in folder.glob("*.json"):
        try:
            snapshots.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a worker's file vanishing mid-read loses one scrape's share, not the scrape
    return snapshots


def render(snapshots: list[dict]) -> str:
    requests: dict[tuple, int] = {}
    latency: dict[tuple, list] = {}
    batch: dict[tuple, list] = {}
    for snap in snapshots:
        for *key, value in snap.get("requests", []):
            requests[tuple(key)] = requests.get(tuple(key), 0) + value
        for table, rows in ((latency, snap.get("latency", [])), (batch, snap.get("batch", []))):
            for *key, counts in rows:
                mine = table.setdefault(tuple(key), [0] * len(counts))
                table[tuple(key)] = [a + b for a, b in zip(mine, counts)]
    errors: dict[str, int] = {}
    for (_, _, code), value in requests.items():
        if code >= "400":
            errors[code] = errors.get(code, 0) + value
    lines = [
        "# HELP slimserve_requests_total Requests answered, by model, version and HTTP status.",
        "# TYPE slimserve_requests_total counter",
    ]
    lines += [f"slimserve_requests_total{_labels(model=m, version=v, code=c)} {n}" for (m, v, c), n in sorted(requests.items())]
    lines += [
        "# HELP slimserve_errors_total Requests answered with a 4xx or 5xx status, by status.",
        "# TYPE slimserve_errors_total counter",
    ]
    lines += [f"slimserve_errors_total{_labels(code=c)} {n}" for c, n in sorted(errors.items())]
    lines += _histogram("slimserve_request_duration_seconds", "Seconds from request to response.", latency, LATENCY_BUCKETS)
    lines += _histogram("slimserve_batch_size", "Rows per onnxruntime run of the dynamic batcher.", batch, BATCH_BUCKETS)
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, table: dict, buckets: tuple) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for (model, version), counts in sorted(table.items()):
        cumulative = 0
        for bound, count in zip((*buckets, "+Inf"), counts[:-1]):
            cumulative += count
            lines.append(f"{name}_bucket{_labels(model=model, version=version, le=str(bound))} {cumulative}")
        lines.append(f"{name}_sum{_labels(model=model, version=version)} {counts[-1]:.6f}")
        lines.append(f"{name}_count{_labels(model=model, version=version)} {cumulative}")
    return lines


def _labels(**labels: str) -> str:
    escaped = (
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"
