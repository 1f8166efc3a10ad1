"""Object storage behind one small interface, the one way the runtime reads and writes objects (batch
inputs and results, fetched artifacts, asynchronous endpoint requests):

    store = Storage.from_settings(settings)           # once per process
    store.size(uri); store.read(uri, max_bytes=N); store.download(uri, path, expected_bytes)
    store.write(uri, data); store.upload(uri, path); store.exists(uri)
    for item in store.list("s3://bucket/prefix/"): item.uri, item.size, item.modified   # paginated

    s3://bucket/key                                 boto3 (honours AWS_ENDPOINT_URL: moto locally)
    gs://bucket/name                                google-cloud-storage (honours STORAGE_EMULATOR_HOST)
    azure://container/blob                          azure-storage-blob, account from the connection string
    https://<account>.blob.core.windows.net/c/blob  the same, in the URL form Azure itself prints
    file:///abs/path                                the local disk (tests, `slimserve` runs on a laptop)

Cloud SDKs are imported on first use, never at module import: a Lambda bundle has boto3 only, a GCF one
google-cloud-storage only, and cold start pays for neither. Clients are made once per process and kept
(they are thread-safe and pool their connections); `reset()` drops them (after a SnapStart restore).
Reads are bounded: `read` refuses an object over `max_bytes` from its size before downloading it, and
stops reading there should it have grown since; `download` streams to a file, never holding it whole.

The backends, one per scheme, live in shared/storage_backends.py and shared/storage_gcs_azure.py; large
objects download in parallel ranged parts (shared/transfer.py).
Every failure leaves as one of ours: `NotFound` for a missing object, `StorageError` for the rest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from shared.errors import LimitExceeded, RecordError, StorageError
from shared.storage_backends import Backend, FileBackend, Listed, ObjectUri, S3Backend
from shared.storage_gcs_azure import AZURE_CONNECTION_ENV, AzureBackend, GCSBackend
from shared.transfer import Transfer, download_parts

__all__ = ["AZURE_CONNECTION_ENV", "Listed", "ObjectUri", "Storage", "check_key", "join", "parse", "relative_key"]

SCHEMES = ("s3", "gs", "azure", "file")
_AZURE_HOST_SUFFIX = ".blob.core.windows.net"


def parse(uri: str) -> ObjectUri:
    """Split an object URI; `RecordError` names what is wrong with one that is not."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and (parts.hostname or "").endswith(_AZURE_HOST_SUFFIX):
        container, _, blob = unquote(parts.path).lstrip("/").partition("/")
        return _checked(ObjectUri("azure", container, blob), uri)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise RecordError(f"{uri!r}: a file:// URI must be absolute (file:///path)")
        return _checked(ObjectUri("file", "", unquote(parts.path)), uri)
    if scheme not in SCHEMES:
        raise RecordError(
            f"{uri!r}: not an object URI; expected one of s3://, gs://, azure://, file://, https://<account>{_AZURE_HOST_SUFFIX}/"
        )
    # Split by hand: object keys may hold '?', '#' and '%', which are no query, fragment or escape here.
    container, _, key = uri.partition("://")[2].partition("/")
    return _checked(ObjectUri(scheme, container, key), uri)


def _checked(obj: ObjectUri, uri: str) -> ObjectUri:
    if obj.scheme != "file" and not obj.container:
        raise RecordError(f"{uri!r}: no bucket or container")
    check_key(obj.key if obj.scheme != "file" else obj.key.lstrip("/"), uri)
    return obj


def check_key(key: str, where: str = "") -> str:
    """Refuse keys that would leave their prefix once written to a disk: `..`, `.`, NUL, backslashes."""
    segments = key.split("/")
    if "\x00" in key or "\\" in key or any(s in (".", "..") for s in segments):
        raise RecordError(f"{where or key!r}: key {key!r} has a '.'/'..' segment, a backslash or a NUL")
    return key


def join(prefix: str, key: str) -> str:
    """`prefix` + `/` + `key`, the key checked so it stays under the prefix on every backend."""
    check_key(key.lstrip("/"), prefix)
    return prefix.rstrip("/") + "/" + key.lstrip("/")


def relative_key(uri: str) -> str:
    """The part of an object URI that a result key is derived from: the key without bucket/container."""
    obj = parse(uri)
    return obj.key.lstrip("/")


class Storage:
    """One per process (boot), passed to whoever reads or writes objects."""

    def __init__(self, azure_connection: str = "", transfer: Transfer | None = None):
        self._backends: dict[str, Backend] = {
            "file": FileBackend(),
            "s3": S3Backend(),
            "gs": GCSBackend(),
            "azure": AzureBackend(azure_connection),
        }
        self.transfer = transfer or Transfer()

    @classmethod
    def from_settings(cls, settings) -> Storage:
        # The Functions host's own account is the documented default for blob access.
        return cls(settings.azure_connection or os.environ.get("AzureWebJobsStorage", ""), Transfer.from_settings(settings))

    @property
    def azure_connection(self) -> str:
        """The Azure connection string in use ("" when none): queues of the same account take it too."""
        return self._backends["azure"].connection

    @property
    def azure_account(self) -> str:
        """AccountName of the Azure connection string ("" when none or not stated)."""
        parts = dict(p.partition("=")[::2] for p in self._backends["azure"].connection.split(";") if "=" in p)
        return parts.get("AccountName", "")

    def _backend(self, uri: str) -> tuple[Backend, ObjectUri]:
        obj = parse(uri)
        return self._backends[obj.scheme], obj

    def size(self, uri: str) -> int:
        backend, obj = self._backend(uri)
        return backend.size(obj)

    def read(self, uri: str, max_bytes: int | None = None, setting: str = "") -> bytes:
        """The object's bytes; over `max_bytes` it is refused from its size, before any is downloaded."""
        backend, obj = self._backend(uri)
        if max_bytes is None:
            return backend.read(obj, None)
        size = backend.size(obj)
        if size > max_bytes:
            raise LimitExceeded(f"object {obj} is {size:,} bytes, over {setting or 'the limit'}={max_bytes:,}")
        data = backend.read(obj, max_bytes + 1)
        if len(data) > max_bytes:  # it grew between the size and the read
            raise LimitExceeded(f"object {obj} is over {setting or 'the limit'}={max_bytes:,} bytes")
        return data

    def read_typed(self, uri: str) -> tuple[bytes, str]:
        """A small object with the Content-Type it was stored with ("" where the backend keeps none)."""
        backend, obj = self._backend(uri)
        return backend.read_typed(obj)

    def download(self, uri: str, path: Path, expected_bytes: int) -> str:
        """Stream the object into `path` (never whole in memory); its sha256. An object of other than
        `expected_bytes` is refused without reading past them: over one part, in parallel ranged parts pinned
        to one version (`self.transfer`); else one GET of at most expected_bytes + 1 (the one tells "longer")."""
        backend, obj = self._backend(uri)
        if not self.transfer.in_parts(expected_bytes):
            sink = _HashingFile(path, obj, expected_bytes)
            try:
                with sink:
                    backend.read_into(obj, 0, expected_bytes + 1 if expected_bytes else None, None, sink)
                return sink.finish()
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        size, version = backend.version(obj)
        if size != expected_bytes:
            than = "larger" if size > expected_bytes else "smaller"
            raise StorageError(f"object {obj} is {size:,} bytes, {than} than the {expected_bytes:,} bytes expected")

        def read_part(start: int, length: int) -> bytearray:
            part = _Part(obj, length)
            backend.read_into(obj, start, length, version, part)
            if part.filled != length:
                raise StorageError(f"a ranged read of {obj} at byte {start:,} returned {part.filled:,} bytes, not {length:,}")
            return part.data

        return download_parts(path, size, read_part, self.transfer)

    def write(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        backend, obj = self._backend(uri)
        backend.write(obj, data, content_type)

    def upload(self, uri: str, path: Path) -> None:
        """The file at `path` as the object at `uri`, streamed (an artifact's weights can be gigabytes)."""
        backend, obj = self._backend(uri)
        backend.upload(obj, Path(path))

    def exists(self, uri: str) -> bool:
        backend, obj = self._backend(uri)
        return backend.exists(obj)

    def list(self, prefix: str, page_size: int = 1000) -> Iterator[Listed]:
        """Every object whose URI starts with `prefix` (a key prefix, as S3 means it: `s3://b/in` also
        lists `s3://b/input/x`; end it with `/` for a folder), one page of `page_size` at a time, so a
        bucket of any size streams through in bounded memory. No order is promised."""
        backend, obj = self._backend(prefix)
        for key, size, modified in backend.list(obj, max(1, min(page_size, 1000))):
            # A path is unquoted when a file:// URI is parsed ('%', '?' and '#' included): quote it back.
            uri = "file://" + quote(key, safe="/") if obj.scheme == "file" else str(ObjectUri(obj.scheme, obj.container, key))
            yield Listed(uri, size, modified)

    def reset(self) -> None:
        """Forget every client (their connections and credentials); the next call makes fresh ones."""
        for backend in self._backends.values():
            backend.reset()


class _HashingFile:
    """The sink of a one-GET download: written to disk and hashed chunk by chunk, refused past `expected`."""

    def __init__(self, path: Path, obj: ObjectUri, expected: int):
        self.obj, self.expected, self.written = obj, expected, 0
        self.digest = hashlib.sha256()
        try:
            self.out = open(path, "wb")
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}") from None

    def __enter__(self) -> _HashingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.out.close()

    def write(self, chunk: bytes) -> int:
        self.written += len(chunk)
        if self.written > self.expected:
            raise StorageError(f"object {self.obj} is larger than the {self.expected:,} bytes expected")
        self.digest.update(chunk)
        try:
            return self.out.write(chunk)
        except OSError as exc:  # the local disk, not the object: said so, not as a failed read
            raise StorageError(f"cannot write {self.out.name}: {exc.strerror}") from None

    def finish(self) -> str:
        if self.written != self.expected:
            raise StorageError(f"object {self.obj} is {self.written:,} bytes, smaller than the {self.expected:,} bytes expected")
        return self.digest.hexdigest()


class _Part:
    """The sink of one ranged read: exactly `length` bytes, in one buffer allocated once."""

    def __init__(self, obj: ObjectUri, length: int):
        self.obj, self.data, self.filled = obj, bytearray(length), 0

    def write(self, chunk: bytes) -> int:
        end = self.filled + len(chunk)
        if end > len(self.data):
            raise StorageError(f"a ranged read of {self.obj} returned more than the {len(self.data):,} bytes asked for")
        self.data[self.filled : end] = chunk
        self.filled = end
        return len(chunk)
