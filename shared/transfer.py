"""Large objects to a local file: parallel ranged reads, hashed while they stream, never held whole.

    transfer = Transfer(concurrency=8, part_bytes=16 << 20)         # SLIMSERVE_FETCH_CONCURRENCY / _PART_BYTES
    sha256 = download_parts(path, size, read_part, transfer)         # read_part(start, length) -> bytes

One object of `size` bytes is cut into parts of `part_bytes`; `concurrency` threads each read one part (a
ranged GET pinned to the object version the caller saw) and write it at its offset (`os.pwrite`), while this
thread feeds sha256 the parts strictly in file order. A part waits in memory until the parts before it are
hashed, and no new part starts while `concurrency` parts are unhashed: memory stays under
concurrency x part_bytes whatever the object's size, and a slow part stalls the others rather than letting
finished ones pile up. A part that comes back short or long, or a read that fails, stops the whole download.

Why parallel: one S3 GET stream carries ~85 MB/s (infra/limits.py, S3_GET_PER_CONNECTION); a cold start that
fetches a 600 MB model needs several at once to fit Lambda's 10 s init.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared.config import RANGES
from shared.errors import StorageError

MiB = 1 << 20


@dataclass(frozen=True)
class Transfer:
    """How an object is downloaded: `concurrency` ranged reads at once, `part_bytes` each; concurrency 1 (or an
    object of at most one part) is one plain streamed GET."""

    concurrency: int = 8
    part_bytes: int = 16 * MiB

    def __post_init__(self):
        for name, value in (("fetch_concurrency", self.concurrency), ("fetch_part_bytes", self.part_bytes)):
            low, high = RANGES[name]
            if not low <= value <= high:
                raise ValueError(f"SLIMSERVE_{name.upper()}={value!r} must be between {low:,} and {high:,}")

    @classmethod
    def from_settings(cls, settings) -> Transfer:
        return cls(settings.fetch_concurrency, settings.fetch_part_bytes)

    def in_parts(self, size: int) -> bool:
        return self.concurrency > 1 and size > self.part_bytes


def download_parts(path: Path, size: int, read_part: Callable[[int, int], bytes], transfer: Transfer) -> str:
    """Write `size` bytes to `path` from `read_part(start, length)`, which must return exactly `length` bytes
    of one object version; the sha256 of the whole, in file order."""
    offsets = iter(range(0, size, transfer.part_bytes))
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    pool = ThreadPoolExecutor(max_workers=transfer.concurrency, thread_name_prefix="slimserve-fetch")
    done = False
    try:
        os.ftruncate(fd, size)  # the parts land anywhere in it

        def part(start: int) -> bytes:
            length = min(transfer.part_bytes, size - start)
            data = read_part(start, length)
            if len(data) != length:
                raise StorageError(f"a ranged read at byte {start:,} returned {len(data):,} bytes, not {length:,}")
            view = memoryview(data)
            while view:
                view = view[os.pwrite(fd, view, start + len(data) - len(view)) :]
            return data

        def submit() -> Future | None:
            start = next(offsets, None)
            return None if start is None else pool.submit(part, start)

        window = deque(f for f in (submit() for _ in range(transfer.concurrency)) if f is not None)
        while window:
            data = window.popleft().result()
            digest.update(data)
            del data  # the window's bound on memory holds only if a hashed part is let go at once
            if (nxt := submit()) is not None:
                window.append(nxt)
        done = True
    except OSError as exc:  # the local disk (full, or a file too large for it), not the object
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)
        if not done:  # a file of the right size but holes or old bytes must not outlive the failure
            path.unlink(missing_ok=True)
    return digest.hexdigest()
