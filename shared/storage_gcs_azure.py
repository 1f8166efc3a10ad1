"""The Google Cloud Storage and Azure Blob backends behind `shared.storage.Storage` (the base class, the disk
and S3 are in shared/storage_backends.py), each turning its SDK's calls and errors into ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from shared.errors import NotFound, StorageError
from shared.storage_backends import CHUNK, Backend, ObjectUri, changed, whole

# Where the Functions host keeps its own storage account; the documented fallback for blob access.
AZURE_CONNECTION_ENV = ("SLIMSERVE_AZURE_CONNECTION", "AzureWebJobsStorage")


class GCSBackend(Backend):
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
            with self._blob(obj).open("rb", chunk_size=CHUNK) as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def version(self, obj: ObjectUri) -> tuple[int, object]:
        try:
            blob = self.client().bucket(obj.container).get_blob(obj.key)
            if blob is None:
                raise NotFound(f"object {obj} does not exist")
            return int(blob.size or 0), blob.generation
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def read_into(self, obj: ObjectUri, start: int, length: int | None, version: object, sink) -> None:
        end = None if length is None else start + length - 1
        try:
            # raw: a gzip-encoded object is not inflated on the way, so ranges and sizes are the stored bytes.
            blob = self._blob(obj)
            ranged = {} if whole(start, length) else {"start": start, "end": end}
            blob.download_to_file(sink, raw_download=True, if_generation_match=version, checksum=None, **ranged)
            served = blob.generation  # from the response's x-goog-generation, where the server sends it
            if version is not None and served is not None and int(served) != int(version):
                raise changed(obj)
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def write(self, obj: ObjectUri, data: bytes, content_type: str) -> None:
        try:
            self._blob(obj).upload_from_string(data, content_type=content_type)
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def upload(self, obj: ObjectUri, path: Path) -> None:
        try:
            self._blob(obj).upload_from_filename(str(path), content_type="application/octet-stream")
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def exists(self, obj: ObjectUri) -> bool:
        try:
            return self._blob(obj).exists()
        except Exception as exc:
            raise self._guard(exc, obj, "check") from None

    def list(self, obj: ObjectUri, page_size: int) -> Iterator[tuple[str, int, datetime | None]]:
        try:
            for blob in self.client().list_blobs(obj.container, prefix=obj.key or None, page_size=page_size):
                yield blob.name, int(blob.size or 0), blob.updated
        except Exception as exc:
            raise self._guard(exc, obj, "list") from None

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        if getattr(exc, "code", None) == 404:
            return NotFound(f"object {obj} does not exist")
        if getattr(exc, "code", None) == 412:
            return changed(obj)
        return StorageError(f"cannot {verb} {obj}: {type(exc).__name__}")


class AzureBackend(Backend):
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

    def version(self, obj: ObjectUri) -> tuple[int, object]:
        try:
            properties = self._blob(obj).get_blob_properties()
            return int(properties.size), properties.etag
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def read_into(self, obj: ObjectUri, start: int, length: int | None, version: object, sink) -> None:
        from azure.core import MatchConditions

        pinned = {"etag": version, "match_condition": MatchConditions.IfNotModified} if version is not None else {}
        try:
            ranged = {} if whole(start, length) else {"offset": start, "length": length}
            for chunk in self._blob(obj).download_blob(**pinned, **ranged).chunks():
                sink.write(chunk)
        except Exception as exc:
            raise self._guard(exc, obj, "read") from None

    def write(self, obj: ObjectUri, data: bytes, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        try:
            self._blob(obj).upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type=content_type))
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def upload(self, obj: ObjectUri, path: Path) -> None:
        try:
            with open(path, "rb") as fh:
                self._blob(obj).upload_blob(fh, overwrite=True)
        except Exception as exc:
            raise self._guard(exc, obj, "write") from None

    def exists(self, obj: ObjectUri) -> bool:
        try:
            return self._blob(obj).exists()
        except Exception as exc:
            raise self._guard(exc, obj, "check") from None

    def list(self, obj: ObjectUri, page_size: int) -> Iterator[tuple[str, int, datetime | None]]:
        try:
            container = self.client().get_container_client(obj.container)
            for blob in container.list_blobs(name_starts_with=obj.key or None, results_per_page=page_size):
                yield blob.name, int(blob.size or 0), blob.last_modified
        except Exception as exc:
            raise self._guard(exc, obj, "list") from None

    @staticmethod
    def _translate(exc: Exception, obj: ObjectUri, verb: str) -> Exception:
        if getattr(exc, "status_code", None) == 404:
            return NotFound(f"object {obj} does not exist")
        if getattr(exc, "status_code", None) == 412:
            return changed(obj)
        if getattr(exc, "status_code", None) == 416:
            return StorageError(f"object {obj} is shorter than the bytes asked for")
        return StorageError(f"cannot {verb} {obj}: {getattr(exc, 'error_code', None) or type(exc).__name__}")
