"""Object storage behind one small interface, the one way the runtime reads and writes objects (batch
inputs and results, fetched artifacts, asynchronous endpoint requests):

    store = Storage.from_settings(settings)           # once per process
    store.size(uri); store.read(uri, max_bytes=N); store.download(uri, path, expected_bytes)
    store.write(uri, data); store.exists(uri)

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

Every failure leaves as one of ours: `NotFound` for a missing object, `StorageError` for the rest.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shared.errors import LimitExceeded, NotFound, RecordError, StorageError

SCHEMES = ("s3", "gs", "azure", "file")
_AZURE_HOST_SUFFIX = ".blob.core.windows.net"
# Where the Functions host keeps its own storage account; the documented fallback for blob access.
AZURE_CONNECTION_ENV = ("SLIMSERVE_AZURE_CONNECTION", "AzureWebJobsStorage")


@dataclass(frozen=True)
class ObjectUri:
    scheme: str  # s3 | gs | azure | file
    container: str  # bucket or container; "" for file
    key: str  # object key, blob name, or absolute path for file

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file://" + self.key
        return f"{self.scheme}://{self.container}/{self.key}"


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
        raise RecordError(f"{uri!r}: not an object URI; expected one of s3://, gs://, azure://, file://, https://<account>{_AZURE_HOST_SUFFIX}/")
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

    def __init__(self, azure_connection: str = ""):
        self._backends: dict[str, _Backend] = {"file": _File(), "s3": _S3(), "gs": _GCS(), "azure": _Azure(azure_connection)}

    @classmethod
    def from_settings(cls, settings) -> "Storage":
        # The Functions host's own account is the documented default for blob access.
        return cls(settings.azure_connection or os.environ.get("AzureWebJobsStorage", ""))

    @property
    def azure_account(self) -> str:
        """AccountName of the Azure connection string ("" when none or not stated)."""
        parts = dict(p.partition("=")[::2] for p in self._backends["azure"].connection.split(";") if "=" in p)
        return parts.get("AccountName", "")

    def _backend(self, uri: str) -> tuple["_Backend", ObjectUri]:
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
        """Stream the object into `path` (never whole in memory); its sha256. Refuses more than expected."""
        backend, obj = self._backend(uri)
        digest, written = hashlib.sha256(), 0
        with open(path, "wb") as out:
            for chunk in backend.stream(obj):
                written += len(chunk)
                if written > expected_bytes:
                    raise StorageError(f"object {obj} is larger than the {expected_bytes:,} bytes expected")
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def write(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        backend, obj = self._backend(uri)
        backend.write(obj, data, content_type)

    def exists(self, uri: str) -> bool:
        backend, obj = self._backend(uri)
        return backend.exists(obj)

    def reset(self) -> None:
        """Forget every client (their connections and credentials); the next call makes fresh ones."""
        for backend in self._backends.values():
            backend.reset()


# --- backends ------------------------------------------------------------------------------------

_CHUNK = 1 << 20


class _Backend:
    def __init__(self):
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        with self._lock:  # batch reads run on a thread pool; make one client, not one per thread
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def reset(self) -> None:
        with self._lock:
            self._client = None

    def _make_client(self):
        return None

    def read(self, obj: ObjectUri, limit: int | None) -> bytes:
        """At most `limit` bytes (all when None)."""
        parts, total = [], 0
        for chunk in self.stream(obj):
            parts.append(chunk)
            total += len(chunk)
            if limit is not None and total >= limit:
                break
        return b"".join(parts)[: limit if limit is not None else None]

    def read_typed(self, obj: ObjectUri) -> tuple[bytes, str]:
        return self.read(obj, None), ""

    def _guard(self, exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        return exc if isinstance(exc, (StorageError, NotFound)) else self._translate(exc, obj, verb)

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        return StorageError(f"cannot {verb} {obj}: {type(exc).__name__}")


class _File(_Backend):
    def size(self, obj: ObjectUri) -> int:
        try:
            return Path(obj.key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"object {obj} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {obj}: {exc.strerror}") from None

    def stream(self, obj: ObjectUri):
        try:
            with open(obj.key, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise NotFound(f"object {obj} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {obj}: {exc.strerror}") from None

    def write(self, obj: ObjectUri, data: bytes, content_type: str) -> None:
        path = Path(obj.key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a reader (or a redelivered record) never sees half a result.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot write {obj}: {exc.strerror}") from None

    def exists(self, obj: ObjectUri) -> bool:
        return Path(obj.key).is_file()


class _S3(_Backend):
    def _make_client(self):
        import boto3
        from botocore.config import Config

        # boto3 reads AWS_ENDPOINT_URL(_S3) itself; the pool covers the batch core's reader threads.
        return boto3.client("s3", config=Config(max_pool_connections=32, retries={"mode": "standard"}))

    def size(self, obj: ObjectUri) -> int:
        try:
            return int(self.client().head_object(Bucket=obj.container, Key=obj.key)["ContentLength"])
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def stream(self, obj: ObjectUri):
        try:
            body = self.client().get_object(Bucket=obj.container, Key=obj.key)["Body"]
            try:
                while chunk := body.read(_CHUNK):
                    yield chunk
            finally:
                body.close()
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def read_typed(self, obj: ObjectUri) -> tuple[bytes, str]:
        try:
            response = self.client().get_object(Bucket=obj.container, Key=obj.key)
            return response["Body"].read(), response.get("ContentType", "")
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def write(self, obj: ObjectUri, data: bytes, content_type: str) -> None:
        try:
            self.client().put_object(Bucket=obj.container, Key=obj.key, Body=data, ContentType=content_type)
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def exists(self, obj: ObjectUri) -> bool:
        try:
            self.client().head_object(Bucket=obj.container, Key=obj.key)
            return True
        except Exception as exc:
            error = self._guard(exc, obj, "check")
            if isinstance(error, NotFound):
                return False
            raise error from None

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"object {obj} does not exist")
        if code == "NoSuchBucket":
            return NotFound(f"bucket {obj.container!r} of {obj} does not exist")
        return StorageError(f"cannot {verb} {obj}: {code or type(exc).__name__}")


class _GCS(_Backend):
    def _make_client(self):
        from google.cloud import storage

        # With STORAGE_EMULATOR_HOST set the client talks to the emulator with anonymous credentials.
        return storage.Client()

    def _blob(self, obj: ObjectUri):
        return self.client().bucket(obj.container).blob(obj.key)

    def size(self, obj: ObjectUri) -> int:
        try:
            blob = self.client().bucket(obj.container).get_blob(obj.key)
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None
        if blob is None:
            raise NotFound(f"object {obj} does not exist")
        return int(blob.size or 0)

    def stream(self, obj: ObjectUri):
        try:
            with self._blob(obj).open("rb", chunk_size=_CHUNK) as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def write(self, obj: ObjectUri, data: bytes, content_type: str) -> None:
        try:
            self._blob(obj).upload_from_string(data, content_type=content_type)
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def exists(self, obj: ObjectUri) -> bool:
        try:
            return self._blob(obj).exists()
        except Exception as exc:
            raise self._guard(exc, obj, "check") from None

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        if getattr(exc, "code", None) == 404:
            return NotFound(f"object {obj} does not exist")
        return StorageError(f"cannot {verb} {obj}: {type(exc).__name__}")


class _Azure(_Backend):
    def __init__(self, connection: str):
        super().__init__()
        self.connection = connection

    def _make_client(self):
        from azure.storage.blob import BlobServiceClient

        if not self.connection:
            raise StorageError(f"Azure Blob access needs a connection string in {' or '.join(AZURE_CONNECTION_ENV)}")
        return BlobServiceClient.from_connection_string(self.connection)

    def _blob(self, obj: ObjectUri):
        return self.client().get_blob_client(obj.container, obj.key)

    def size(self, obj: ObjectUri) -> int:
        try:
            return int(self._blob(obj).get_blob_properties().size)
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def stream(self, obj: ObjectUri):
        try:
            yield from self._blob(obj).download_blob().chunks()
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def write(self, obj: ObjectUri, data: bytes, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        try:
            self._blob(obj).upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type=content_type))
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def exists(self, obj: ObjectUri) -> bool:
        try:
            return self._blob(obj).exists()
        except Exception as exc:
            raise self._guard(exc, obj, "check") from None

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        if getattr(exc, "status_code", None) == 404:
            return NotFound(f"object {obj} does not exist")
        return StorageError(f"cannot {verb} {obj}: {getattr(exc, 'error_code', None) or type(exc).__name__}")
