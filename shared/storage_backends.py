"""The backends behind `shared.storage.Storage`, one class per scheme, each turning its SDK's calls and
errors into ours (`NotFound`, `StorageError`). Only `Storage` makes them; nothing else imports an SDK for
object storage. Split from shared/storage.py so that each stays one thing: the URI rules and the one
interface there, what each cloud's SDK needs here (the disk and S3; GCS and Azure Blob in
shared/storage_gcs_azure.py).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import NotFound, StorageError

CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectUri:
    scheme: str  # s3 | gs | azure | file
    container: str  # bucket or container; "" for file
    key: str  # object key, blob name, or absolute path for file

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file://" + self.key
        return f"{self.scheme}://{self.container}/{self.key}"


@dataclass(frozen=True)
class Listed:
    """One object of a listing."""

    uri: str
    size: int
    modified: datetime | None  # last modified, timezone-aware (UTC); None where the backend keeps none


class Backend:
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

    def version(self, obj: ObjectUri) -> tuple[int, object]:
        """(size, version): what a ranged read is pinned to (ETag, generation), so parts of two objects never mix."""
        raise NotImplementedError

    def upload(self, obj: ObjectUri, path: Path) -> None:
        """The file at `path` as the object, streamed from disk (never whole in memory)."""
        raise NotImplementedError

    def read_into(self, obj: ObjectUri, start: int, length: int | None, version: object, sink) -> None:
        """`sink.write(chunk)` for the bytes from `start`, `length` of them (to the end when None), of the object
        `version` names (whichever is there when None): one GET, streamed."""
        raise NotImplementedError

    def _guard(self, exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        return exc if isinstance(exc, (StorageError, NotFound)) else self._translate(exc, obj, verb)

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        return StorageError(f"cannot {verb} {obj}: {type(exc).__name__}")


def changed(obj: ObjectUri) -> StorageError:
    return StorageError(f"object {obj} changed while it was being read (another version was written); fetch again")


def http_range(start: int, length: int | None) -> str:
    return f"bytes={start}-{'' if length is None else start + length - 1}"


def whole(start: int, length: int | None) -> bool:
    """A read of the whole object goes without a Range: a range of an empty object is 416 on S3 (and moto)."""
    return start == 0 and length is None


class FileBackend(Backend):
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
                while chunk := fh.read(CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise NotFound(f"object {obj} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {obj}: {exc.strerror}") from None

    def version(self, obj: ObjectUri) -> tuple[int, object]:
        try:
            st = Path(obj.key).stat()
        except FileNotFoundError:
            raise NotFound(f"object {obj} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {obj}: {exc.strerror}") from None
        return st.st_size, (st.st_ino, st.st_size, st.st_mtime_ns)

    def read_into(self, obj: ObjectUri, start: int, length: int | None, version: object, sink) -> None:
        try:
            with open(obj.key, "rb") as fh:
                fh.seek(start)
                left = length
                while chunk := fh.read(CHUNK if left is None else min(CHUNK, left)):
                    sink.write(chunk)
                    left = None if left is None else left - len(chunk)
                    if left == 0:
                        break
        except FileNotFoundError:
            raise NotFound(f"object {obj} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {obj}: {exc.strerror}") from None
        if version is not None and self.version(obj)[1] != version:  # a file replaced (rename) or rewritten meanwhile
            raise changed(obj)

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

    def upload(self, obj: ObjectUri, path: Path) -> None:
        target = Path(obj.key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise StorageError(f"cannot write {obj}: {exc.strerror}") from None

    def exists(self, obj: ObjectUri) -> bool:
        return Path(obj.key).is_file()

    def list(self, obj: ObjectUri, page_size: int) -> Iterator[tuple[str, int, datetime | None]]:
        folder, _, start = obj.key.rpartition("/")
        for root, dirs, files in os.walk(folder or "/", onerror=None):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                if not path.startswith(obj.key) or (name.startswith(".") and name.endswith(".tmp")):
                    continue  # outside the prefix, or a result still being written (see `write`)
                try:
                    stat = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue  # removed since the folder was read
                if os.path.isfile(path) and not os.path.islink(path):
                    yield path, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)
            if root == (folder or "/") and start:
                dirs[:] = [d for d in dirs if d.startswith(start)]  # only folders that can hold a match


class S3Backend(Backend):
    def _make_client(self):
        import boto3
        from botocore.config import Config

        # boto3 reads AWS_ENDPOINT_URL(S3Backend) itself; the pool covers the batch core's reader threads.
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
                while chunk := body.read(CHUNK):
                    yield chunk
            finally:
                body.close()
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def version(self, obj: ObjectUri) -> tuple[int, object]:
        try:  # the reply's fields too: a store that leaves one out is a failed read, not a KeyError
            head = self.client().head_object(Bucket=obj.container, Key=obj.key)
            return int(head["ContentLength"]), head["ETag"]
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def read_into(self, obj: ObjectUri, start: int, length: int | None, version: object, sink) -> None:
        pinned = {"IfMatch": version} if version is not None else {}
        if not whole(start, length):
            pinned["Range"] = http_range(start, length)
        try:
            body = self.client().get_object(Bucket=obj.container, Key=obj.key, **pinned)["Body"]
            try:
                while chunk := body.read(CHUNK):
                    sink.write(chunk)
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

    def upload(self, obj: ObjectUri, path: Path) -> None:
        try:  # s3transfer: multipart in parallel above 8 MB, each part read from the file as it is sent
            self.client().upload_file(str(path), obj.container, obj.key)
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

    def list(self, obj: ObjectUri, page_size: int) -> Iterator[tuple[str, int, datetime | None]]:
        try:
            pages = (
                self.client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=obj.container, Prefix=obj.key, PaginationConfig={"PageSize": page_size})
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"], int(item["Size"]), item.get("LastModified")
        except Exception as exc:
            raise self._guard(exc, obj, "list") from None

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"object {obj} does not exist")
        if code == "NoSuchBucket":
            return NotFound(f"bucket {obj.container!r} of {obj} does not exist")
        if code in ("PreconditionFailed", "412"):
            return changed(obj)
        if code == "InvalidRange":  # a range that starts past the end: the object is shorter than asked
            return StorageError(f"object {obj} is shorter than the bytes asked for")
        return StorageError(f"cannot {verb} {obj}: {code or type(exc).__name__}")
