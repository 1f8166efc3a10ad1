"""BYTES tensors on the wire: each element a 4-byte little-endian length, then its bytes (Triton's framing,
which tritonclient writes and reads). Counts and lengths are checked against what the bytes can hold before
anything they size is allocated."""

from __future__ import annotations

import struct

import numpy as np

from shared.errors import InvalidTensor, LimitExceeded

_LEN = struct.Struct("<I")


def deserialize_bytes(raw: memoryview | bytes, count: int, name: str = "", max_string_bytes: int | None = None) -> np.ndarray:
    # Every element costs at least its 4-byte length prefix: a count the bytes cannot hold is refused
    # before the object array it would size is allocated.
    if count * 4 > len(raw):
        raise InvalidTensor(
            f"input {name!r}: BYTES data ends after {len(raw) // 4:,} of {count:,} elements at most (each needs a 4-byte length)"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise InvalidTensor(f"input {name!r}: BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if max_string_bytes is not None and n > max_string_bytes:
            raise LimitExceeded(f"tensor {name!r} has a BYTES element of {n:,} bytes, over SLIMSERVE_MAX_STRING_BYTES={max_string_bytes:,}")
        if pos + n > len(raw):
            raise InvalidTensor(f"input {name!r}: BYTES element {i} claims {n} bytes past the end")
        out[i] = bytes(raw[pos : pos + n])
        pos += n
    if pos != len(raw):
        raise InvalidTensor(f"input {name!r}: {len(raw) - pos} bytes left after {count} BYTES elements")
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
