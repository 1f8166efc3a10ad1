"""`.npy` and `.npz` from strangers: every header read and checked before a byte of data is decoded, or a
member inflated.

`np.load` trusts the file: an `.npz` member of 2 MB that inflates to 2 GB is inflated whole, and an
`.npy` header may claim any shape or dtype. Here, before any data:

- an `.npz` archive's central directory is bounded from its end record (member count, directory size)
  before `zipfile` parses it, since a 6 MB directory is 120,000 entries to build;
- every header (numpy's own `read_magic` and `read_array_header_*`) gives dtype and shape, which must be
  a tensor (no objects, no records), have non-negative dimensions, pass `Limits.check_shape` (elements) and
  the caller's `check` (the model's signature);
- a text dtype's item may be no longer than SLIMSERVE_MAX_STRING_BYTES allows (an `|S268435456` item is
  256 MB of one element), and all members together no larger than 8 bytes an allowed element;
- the bytes a header needs must be exactly the bytes there are (an `.npz` member: its declared uncompressed
  size, which `zipfile` never reads past).

Only then is the data read, once. Text arrays (numpy `U`/`S`) become BYTES tensors: object arrays of UTF-8
`bytes`.
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
import zlib
from collections.abc import Callable

import numpy as np
from numpy.lib import format as npformat

from shared.errors import InvalidTensor, LimitExceeded, MalformedRequest
from shared.protocol.datatypes import oip_datatype
from shared.protocol.limits import Limits

_MAX_HEADER = 10_000  # numpy's own default for max_header_size
_MAX_DIM = 2**62
_BYTES_PER_ELEMENT = 8  # what all arrays of a request may weigh: as many float64s as elements are allowed
_DIRECTORY_ENTRY = 1024  # bytes a central-directory entry may take (46 + a short name + extras)
# Whatever numpy, zipfile, zlib or lzma raise on bytes that are no array or archive.
_BROKEN = (ValueError, EOFError, OSError, SyntaxError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError)

Check = Callable[[str, str, tuple[int, ...]], object]  # (name, OIP datatype, shape): raises when it does not fit


def read_npy(data: bytes, limits: Limits, name: str = "body", check: Check | None = None) -> np.ndarray:
    """One array from `.npy` bytes, checked as described above; MalformedRequest/LimitExceeded/InvalidTensor."""
    stream = io.BytesIO(data)
    dtype, shape, fortran = _header(stream, name, limits, check)
    limits.check_shape(name, shape)
    _check_weight(_needed(dtype, shape), limits, name)
    return _body(stream, dtype, shape, fortran, len(data) - stream.tell(), limits, name)


def read_npz(data: bytes, limits: Limits, name: str = "body", check: Check | None = None) -> dict[str, np.ndarray]:
    """Arrays of an `.npz` archive by member name (`x.npy` -> `x`), every header checked before any data."""
    _check_directory(data, limits, name)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _BROKEN:
        raise MalformedRequest(f"{name} is not a readable .npz archive") from None
    with archive:
        members = archive.infolist()
        limits.check_count(len(members), "arrays")
        planned, elements, weight = [], 0, 0
        for info in members:
            key = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy") or not key:
                raise MalformedRequest(f"{name}: member {info.filename[:80]!r} is not an .npy array")
            with _open(archive, info, name) as stream:
                dtype, shape, fortran = _header(stream, f"{name}:{key}", limits, check, key)
                header_bytes = stream.tell()
            elements = limits.check_shape(key, shape, elements)
            weight += _needed(dtype, shape)
            _check_weight(weight, limits, name)
            planned.append((info, key, dtype, shape, fortran, info.file_size - header_bytes, header_bytes))
        arrays = {}
        for info, key, dtype, shape, fortran, size, header_bytes in planned:
            with _open(archive, info, name) as stream:
                try:
                    stream.read(header_bytes)
                except _BROKEN as exc:
                    raise MalformedRequest(f"{name}:{key} cannot be read ({type(exc).__name__})") from None
                arrays[key] = _body(stream, dtype, shape, fortran, size, limits, f"{name}:{key}")
        return arrays


def _check_directory(data: bytes, limits: Limits, name: str) -> None:
    """The archive's member count and central-directory size, read off its end record, within bounds."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        raise MalformedRequest(f"{name} is not a readable .npz archive (no end of central directory)")
    count, size = struct.unpack_from("<HI", data, end + 10)
    if count == 0xFFFF or size == 0xFFFFFFFF:  # ZIP64: the real figures sit in the ZIP64 end record
        locator = data.rfind(b"PK\x06\x07", max(0, end - 20), end)
        record = struct.unpack_from("<Q", data, locator + 8)[0] if locator >= 0 else -1
        if not 0 <= record <= len(data) - 56 or data[record : record + 4] != b"PK\x06\x06":
            raise MalformedRequest(f"{name} is not a readable .npz archive (bad ZIP64 end record)")
        count, size = struct.unpack_from("<QQ", data, record + 32)
    limits.check_count(count, "arrays")
    if size > limits.max_inputs * _DIRECTORY_ENTRY:
        raise LimitExceeded(f"{name}: its central directory is {size:,} bytes, more than {limits.max_inputs:,} arrays need")


def _open(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
    try:
        return archive.open(info)
    except _BROKEN as exc:
        raise MalformedRequest(f"{name}: member {info.filename[:80]!r} cannot be read ({type(exc).__name__})") from None


def _header(stream, name: str, limits: Limits, check: Check | None, key: str | None = None) -> tuple[np.dtype, tuple[int, ...], bool]:
    try:
        version = npformat.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(stream, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(stream, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"format version {version}")
    except _BROKEN as exc:
        raise MalformedRequest(f"{name} is not a readable .npy array ({str(exc)[:80]})") from None
    if dtype.hasobject or dtype.kind not in "biufcUS" or dtype.names is not None or dtype.subdtype is not None:
        raise InvalidTensor(f"{name}: numpy dtype {dtype} holds no tensor (object arrays would need pickle)")
    if not all(isinstance(d, int) and 0 <= d < _MAX_DIM for d in shape):
        raise InvalidTensor(f"{name}: shape {list(shape)[:8]} must hold non-negative dimensions")
    # One text element may take up to 4 bytes a character in UTF-8 (numpy's `U` stores 4 a character).
    if dtype.kind in "US" and dtype.itemsize > limits.max_string_bytes * (4 if dtype.kind == "U" else 1):
        raise LimitExceeded(f"{name}: text items of {dtype.itemsize:,} bytes, over SLIMSERVE_MAX_STRING_BYTES={limits.max_string_bytes:,}")
    shape = tuple(int(d) for d in shape)
    if check is not None:
        datatype = oip_datatype(np.empty(0, dtype=dtype))
        check(key if key is not None else name, datatype, shape)
    return dtype, shape, bool(fortran)


def _needed(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def _check_weight(weight: int, limits: Limits, name: str) -> None:
    if weight > limits.max_elements * _BYTES_PER_ELEMENT:
        raise LimitExceeded(
            f"{name}: its arrays take {weight:,} bytes, "
            f"over {_BYTES_PER_ELEMENT} bytes for each of {limits.elements_setting}={limits.max_elements:,}"
        )


def _body(stream, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, available: int, limits: Limits, name: str) -> np.ndarray:
    needed = _needed(dtype, shape)
    if needed != available:
        raise MalformedRequest(f"{name}: the header's shape {list(shape)} of {dtype} needs {needed:,} bytes, the file holds {available:,}")
    try:
        raw = stream.read(needed)
    except _BROKEN as exc:  # a bad CRC, a truncated deflate stream
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
    try:
        flat = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()]
    except UnicodeEncodeError:  # a lone surrogate in a `U` array
        raise InvalidTensor("text elements must be valid Unicode (no lone surrogates)") from None
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)
