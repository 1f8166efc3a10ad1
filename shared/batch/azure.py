"""Azure Blob and Queue triggers -> batch records.

    Blob trigger (name "container/blob", the bytes)        Record.inline("<blob>", bytes)
    Queue message, one of:
      an object URI or a bare "container/blob"            Record.from_uri(...)  (azure:// when bare)
      an Event Grid / CloudEvents Microsoft.Storage.BlobCreated event
                                                          Record.from_uri(data.url)
      anything else: an inline OIP v2 infer request       Record.inline("queue/<id>.json", body)
                                                          (result: <output>/queue/<id>.json.json)

A queue message is written by whoever may send to the queue, and the app's account key reads every
container of the account: a message may name only objects under the input prefixes (SLIMSERVE_INPUT,
else the container the blob trigger watches), on this account, else it fails alone (400, then the
poison queue). `file://`, other schemes and other accounts are refused the same way.
"""

from __future__ import annotations

import hashlib
import json
import re

from shared.batch.core import Record
from shared.batch.keys import under
from shared.batch.trigger import skip
from shared.config import Settings
from shared.errors import RecordError
from shared.storage import parse

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_ACCOUNT_HOST = re.compile(r"https://([a-z0-9]{3,24})\.blob\.core\.windows\.net/", re.IGNORECASE)


def input_prefixes(settings: Settings) -> tuple[str, ...]:
    """Where queue messages may point: SLIMSERVE_INPUT, else the blob trigger's container."""
    prefixes = [p.strip() for p in settings.input.split(",") if p.strip()]
    if not prefixes and settings.input_container:
        prefixes = [f"azure://{settings.input_container}/"]
    return tuple(prefixes)


def azure_blob(blob, output: str, max_bytes: int) -> Record | None:
    """A Blob trigger's blob (`name` "container/blob", `length`, `read()`): it travels inline under its own
    key; one over `max_bytes` is refused from its length, before its bytes are read."""
    uri = f"azure://{blob.name}"
    if skip(uri, output):
        return None
    key = blob.name.partition("/")[2]
    if blob.length is not None and blob.length > max_bytes:
        return Record.refused(
            key, f"{key[:200]!r} is {blob.length:,} bytes, over SLIMSERVE_BATCH_MAX_OBJECT_BYTES={max_bytes:,}", id=uri, too_large=True
        )
    return Record.inline(key, blob.read(max_bytes + 1), id=uri)


def queue_message(body: bytes, message_id: str, output: str, allowed: tuple[str, ...], account: str = "") -> Record | None:
    text = body.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        uri = text if "://" in text else f"azure://{text}"
        return None if skip(uri, output) else _object(uri, message_id, allowed, account)
    try:
        doc = json.loads(text)
    except ValueError:  # syntax, or a number past int's digit limit: then it is no event, but maybe a request
        doc = None
    if isinstance(doc, dict) and BLOB_CREATED in (doc.get("eventType"), doc.get("type")):
        uri = str((doc.get("data") or {}).get("url", ""))
        return None if skip(uri, output) else _object(uri, message_id, allowed, account)
    request_id = doc.get("id") if isinstance(doc, dict) else None
    if not (isinstance(request_id, str) and _SAFE_ID.fullmatch(request_id)):
        request_id = hashlib.sha256(body).hexdigest()  # same body, same result key, however often it is sent
    return Record.inline(f"queue/{request_id}.json", body, id=message_id)


def _object(uri: str, message_id: str, allowed: tuple[str, ...], account: str) -> Record:
    """The record for an object a message names; one that may not be read fails alone, with why."""
    refusal = _refusal(uri, allowed, account)
    if refusal is None:
        return Record.from_uri(uri, id=message_id)
    return Record.refused(uri[:300], refusal, id=message_id)


def _refusal(uri: str, allowed: tuple[str, ...], account: str) -> str | None:
    try:
        obj = parse(uri)
    except RecordError as exc:
        return exc.message
    if obj.scheme != "azure":
        return f"{uri[:200]!r}: a queue message may name Azure Blob objects only"
    host = _ACCOUNT_HOST.match(uri)
    if host and account and host.group(1).lower() != account.lower():
        return f"{uri[:200]!r}: names storage account {host.group(1)!r}, not this app's"
    if not any(under(uri, prefix) for prefix in allowed):
        where = ", ".join(allowed) or "nothing: set SLIMSERVE_INPUT or SLIMSERVE_INPUT_CONTAINER"
        return f"{uri[:200]!r}: a queue message may name objects under {where}"
    return None
