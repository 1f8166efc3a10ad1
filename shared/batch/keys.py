"""Where a batch input's result goes, one pure function of the input's key, shared by the batch core (which
writes results) and the backfill (which skips inputs that have one):

    <SLIMSERVE_OUTPUT>/<input key without bucket or container><.json | .npz>

The bucket is not part of the key, so equal keys in two input buckets share a result. Imports nothing
but the storage core: the backfill reads it without loading onnxruntime.
"""

from __future__ import annotations

from shared.errors import RecordError
from shared.storage import join, parse, relative_key

OUTPUT_FORMATS = {"json": ("application/json", ".json"), "npz": ("application/octet-stream", ".npz")}


def output_uri(output: str, fmt: str, key: str) -> str:
    """The result of the input whose key (no bucket) is `key`, under `output` in format `fmt`."""
    return join(output, key + OUTPUT_FORMATS[fmt][1])


def result_of(output: str, fmt: str, input_uri: str) -> str:
    """The result of the object at `input_uri`."""
    return output_uri(output, fmt, relative_key(input_uri))


def results_prefix(output: str, input_prefix: str) -> str:
    """The prefix every result of an input under `input_prefix` lies under (a key prefix, as listed)."""
    return join(output, relative_key(input_prefix))


def under(uri: str, prefix: str) -> bool:
    """True when `uri` lies under `prefix` (same scheme and bucket, key prefix); False for what cannot be parsed."""
    try:
        obj, out = parse(uri), parse(prefix.rstrip("/") + "/")
    except RecordError:
        return False  # not a URI we can place: let the batch core say what is wrong with it
    return (obj.scheme, obj.container) == (out.scheme, out.container) and obj.key.startswith(out.key)
