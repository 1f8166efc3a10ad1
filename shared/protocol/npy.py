"""`.npy` and `.npz` from strangers: every header read and its shape checked against the limits before a
byte of data is decoded, or a member inflated.

`np.load` trusts the file: an `.npz` member of 2 MB that inflates to 2 GB is inflated whole, and an
`.npy` header may claim any shape. Here an `.npy` header (numpy's own `read_magic` and
`read_array_header_*`) gives dtype and shape; `Limits.check_shape` bounds the elements; the bytes the
header needs must be exactly the bytes there are (an `.npz` member: its declared uncompressed size,
which `zipfile` never reads past). Only then is the data read, once. Object arrays (pickles) are refused.
Text arrays (numpy `U`/`S`) become BYTES tensors: object arrays of UTF-8 `bytes`.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from numpy.lib import format as npformat

from shared.errors import InvalidTensor, MalformedRequest
from shared.protocol.limits import Limits

_MAX_HEADER = 10_000  # numpy's own default for max_header_size


def read_npy(data: bytes, limits: Limits, name: str = "body") -> np.ndarray:
    """One array from `.npy` bytes, checked as described above; MalformedRequest/LimitExceeded otherwise."""
    stream = io.BytesIO(data)
    dtype, shape, fortran = _header(stream, name)
    limits.check_shape(name, shape)
    return _body(stream, dtype, shape, fortran, len(data) - stream.tell(), limits, name)


def read_npz(data: bytes, limits: Limits, name: str = "body") -> dict[str, np.ndarray]:
    """Arrays of an `.npz` archive by member name (`x.npy` -> `x`), every header checked before any data."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise MalformedRequest(f"{name} is not a readable .npz archive") from None
    with archive:
        members = archive.infolist()
        limits.check_count(len(members), "arrays")
        planned, total = [], 0
        for info in members:
            key = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy") or not key:
                raise MalformedRequest(f"{name}: member {info.filename[:80]!r} is not an .npy array")
            with _open(archive, info, name) as stream:
                dtype, shape, fortran = _header(stream, f"{name}:{key}")
                header_bytes = stream.tell()
            total = limits.check_shape(key, shape, total)
            planned.append((info, key, dtype, shape, fortran, info.file_size - header_bytes, header_bytes))
        arrays = {}
        for info, key, dtype, shape, fortran, size, header_bytes in planned:
            with _open(archive, info, name) as stream:
                stream.read(header_bytes)
                arrays[key] = _body(stream, dtype, shape, fortran, size, limits, f"{name}:{key}")
        return arrays


def _open(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
    try:
        return archive.open(info)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, RuntimeError) as exc:
        raise MalformedRequest(f"{name}: member {info.filename[:80]!r} cannot be read ({type(exc).__name__})") from None


def _header(stream, name: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    try:
        version = npformat.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(stream, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(stream, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, zipfile.BadZipFile) as exc:
        raise MalformedRequest(f"{name} is not a readable .npy array ({str(exc)[:80]})") from None
    if dtype.hasobject or dtype.kind not in "biufcUS" or dtype.names is not None:
        raise InvalidTensor(f"{name}: numpy dtype {dtype} holds no tensor (object arrays would need pickle)")
    return dtype, tuple(int(d) for d in shape), bool(fortran)


def _body(stream, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, available: int, limits: Limits, name: str) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    needed = count * dtype.itemsize
    if needed != available:
        raise MalformedRequest(f"{name}: the header's shape {list(shape)} of {dtype} needs {needed:,} bytes, the file holds {available:,}")
    try:
        raw = stream.read(needed)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # a bad CRC, a truncated deflate stream
        raise MalformedRequest(f"{name}: the array data cannot be read ({type(exc).__name__})") from None
    if len(raw) != needed:
        raise MalformedRequest(f"{name}: the array data ends after {len(raw):,} of {needed:,} bytes")
    array = np.frombuffer(raw, dtype=dtype)
    array = array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
    if dtype.kind in "US":
        if dtype.itemsize > limits.max_string_bytes:  # an element may be this long: check the real ones
            for item in array.reshape(-1):
                limits.check_string(name, len(item.encode("utf-8") if isinstance(item, str) else item))
        return as_bytes(array)
    return array


def as_bytes(array: np.ndarray) -> np.ndarray:
    """numpy text (fixed-width `U`/`S`) as a BYTES tensor: an object array of UTF-8 `bytes`."""
    flat = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)
