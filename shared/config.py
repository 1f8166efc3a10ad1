"""Runtime settings: one typed field each, read from `SLIMSERVE_*` at call time, never at import.

Precedence is argument > environment > default, resolved in `Settings.resolve` only.
The README's configuration table lists the same fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

ENV_PREFIX = "SLIMSERVE_"
# Field annotations are strings here (postponed evaluation), so both spellings map to the parser.
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(raw: str) -> bool:
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ValueError(raw)


LOG_FORMATS = ("json", "text")
# Settings with a fixed set of values, refused at resolve time (one line, before anything starts) when not one
CHOICES = {"log_format": LOG_FORMATS}
# Settings bounded on both sides, refused at resolve time too. Fetch parts: under 256 KiB a part is mostly
# request overhead; 64 x 256 MiB is already more memory than most functions have.
RANGES = {"fetch_concurrency": (1, 64), "fetch_part_bytes": (256 << 10, 256 << 20)}

_KINDS = {int: int, "int": int, float: float, "float": float, bool: _bool, "bool": _bool}
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", _bool: "true or false"}


@dataclass(frozen=True)
class Settings:
    artifact: str = ""
    """Artifact folder(s) or object-store prefixes (`s3://`, `gs://`, Azure Blob) to serve, separated by commas.
    A prefix is pinned by its manifest's sha256: `s3://b/p#sha256=<hex>`. Empty: `artifact/` beside the
    adapter code."""

    artifact_sha256: str = ""
    """The pin of a single remote SLIMSERVE_ARTIFACT, as a parameter of its own (serverless.yml's
    `artifactSha256`, the GCP/Azure deploy scripts' ARTIFACT_SHA256): the same as its `#sha256=` suffix."""

    allow_unpinned: bool = False
    """Serve an `s3://`/`gs://`/Blob artifact without a `#sha256=` pin, trusting whoever can write that prefix."""

    max_body_bytes: int = 6 * 1024 * 1024
    """Largest request body accepted (413 above). Default: Lambda's 6 MB synchronous payload."""

    ort_threads: int = 0
    """onnxruntime intra-op threads per session; 0 lets onnxruntime pick (one per physical core)."""

    providers: str = ""
    """Comma-separated onnxruntime execution providers; empty picks CUDA when present, else CPU."""

    log_level: str = "INFO"
    """Log level of the runtime's logger."""

    # --- hardening: who may call, and how much one request may ask (shared/http/auth.py, shared/protocol/limits.py) ---

    api_key: str = field(default="", repr=False)
    """When set, every route but `/v2/health/*` and `/ping` needs `Authorization: Bearer <key>` or
    `x-api-key: <key>` (401 otherwise). Prefer `SLIMSERVE_API_KEY_FILE`: an argument shows in `ps`."""

    api_key_file: str = ""
    """A file holding the accepted API key(s), one per line (two during a rotation); read at start."""

    max_elements: int = 4_194_304
    """Most tensor elements in one request, all inputs together (413 above); checked on the tensor
    headers, before any data is decoded."""

    max_request_batch: int = 1024
    """Largest first dimension (batch) of any input of one request (413 above)."""

    max_string_bytes: int = 65_536
    """Longest element of a BYTES tensor, in bytes (413 above)."""

    max_json_depth: int = 32
    """Deepest nesting of arrays and objects in a JSON body, checked by a scan before it is parsed (400)."""

    max_inputs: int = 64
    """Most tensors in a request's `inputs` (and names in its `outputs`) list (413 above)."""

    nan_policy: str = ""
    """`allow` or `reject` NaN/Inf in floating-point inputs (400); empty follows the manifest's
    `extra.nan_policy`, else `allow`."""

    # --- the server: `slimserve serve` (shared/server/, shared/serving/batcher.py) ---

    workers: int = 0
    """Server processes sharing the listening socket; 0: one per CPU this process may run on."""

    threads: int = 8
    """Requests one server process runs at once (a thread each). Connections are not threads: a slow or
    idle one costs a socket (up to 1,000 per process), and only a request that has fully arrived takes a thread."""

    keepalive_s: float = 5.0
    """Seconds an idle connection is kept open."""

    request_timeout_s: float = 30.0
    """Seconds a request's line, headers and body may take to arrive, from its first byte (then the
    connection is closed, however steadily it trickles)."""

    batcher_max_size: int = 0
    """Dynamic batcher of the server: most rows that concurrent requests share one onnxruntime run with;
    0 follows the manifest's `extra.batching` (`{"max_batch_size": 8, "max_queue_delay_ms": 2}`), else off."""

    batcher_max_delay_ms: float = 1.0
    """How long a run waits for more requests to fill its batch while the model is busy (its recent batches
    held more than one request; a lone client never waits); 0 runs at once with what is queued (the batch
    still grows while a run is in progress). Used with `SLIMSERVE_BATCHER_MAX_SIZE`."""

    log_format: str = "json"
    """`json`: one JSON object per log line (request id, model, version, status, latency); `text`."""

    # --- placement: where a model runs (shared/boot/placement.py, shared/remote/model.py) ---------------------

    placement: str = ""
    """`function` or `endpoint` forces where every model runs; empty follows each manifest's `placement`."""

    fallback: str = "auto"
    """`auto`: an endpoint-placed model answers degraded from the manifest's `extra.fallback` file, or from
    its own `model_file` when `SLIMSERVE_PLACEMENT=endpoint` forced it off the function; `off`: never."""

    endpoint_name: str = ""
    """The SageMaker endpoint that serves endpoint-placed models (boto3 honours
    `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`, which points it at a local server)."""

    endpoint_transport: str = "sagemaker"
    """`sagemaker` (boto3 `invoke_endpoint`) or `http` (OIP v2 to `SLIMSERVE_ENDPOINT_URL`: Vertex AI,
    Azure ML online endpoints running this same server)."""

    endpoint_url: str = ""
    """Base URL of the `http` transport; `{model}` in it is replaced by the model name, otherwise
    `/v2/models/<model>/infer` is appended."""

    endpoint_token_env: str = "SLIMSERVE_ENDPOINT_TOKEN"
    """Name of the environment variable holding the `http` transport's bearer token (read per request,
    so a rotated token is picked up); no token, no Authorization header."""

    endpoint_connect_timeout_s: float = 2.0
    """Seconds to open a connection to the endpoint."""

    endpoint_read_timeout_s: float = 10.0
    """Seconds to wait for the endpoint's answer, per attempt."""

    endpoint_deadline_s: float = 25.0
    """Budget for all attempts of one request, below the caller's limit (API Gateway: 30 s, the function's
    timeout: 29 s); a retry that could not finish inside it is not started. Must cover one connect+read."""

    endpoint_retries: int = 2
    """Retries after the first attempt, for throttling (429/ThrottlingException) and 5xx only, never a 4xx."""

    endpoint_backoff_s: float = 0.1
    """Base of the exponential backoff; each wait is uniform in [0, min(cap, base * 2**retry)] (full jitter)."""

    endpoint_backoff_cap_s: float = 2.0
    """Longest single backoff wait."""

    breaker_failures: int = 5
    """Consecutive failed requests that open the circuit breaker (then the endpoint is not called)."""

    breaker_cooldown_s: float = 30.0
    """Seconds the breaker stays open before one half-open probe request may reach the endpoint."""

    endpoint_max_sync_bytes: int = 6 * 1024 * 1024
    """Largest request sent synchronously (SageMaker's InvokeEndpoint limit); larger ones go asynchronous
    when `SLIMSERVE_ASYNC_BUCKET` is set, else 413."""

    async_bucket: str = ""
    """S3 bucket for asynchronous requests (inputs, and the pointer a poll reads); empty: no async path."""

    async_prefix: str = "slimserve-async/"
    """Key prefix under `SLIMSERVE_ASYNC_BUCKET`."""

    async_endpoint_name: str = ""
    """The asynchronous endpoint (SageMaker serves a config either real-time or async, never both);
    empty: `SLIMSERVE_ENDPOINT_NAME`, which suits only the local server."""

    # --- batch: event-triggered inference over stored objects (shared/batch/core.py) ---------------------

    output: str = ""
    """Prefix that batch results are written under: `s3://bucket/prefix`, `gs://...`, `azure://container/...`
    (or the https Blob URL), `file:///path`. Each result's key is the input's key plus a suffix."""

    batch_max_size: int = 64
    """Most rows (first-axis entries) in one onnxruntime run; records are concatenated up to it when the
    model's first axis is dynamic. A record larger than this runs alone."""

    batch_max_wait_ms: int = 50
    """How long a partial micro-batch waits for more records to finish reading before it runs anyway."""

    batch_model: str = ""
    """`name` or `name/version` that batch records run on; empty: the only model served, else the name of
    the input object's parent folder (`incoming/<model>/x.npy`)."""

    batch_output_format: str = "json"
    """`json`: an OIP v2 response body per input (`<key>.json`); `npz`: the outputs by name (`<key>.npz`)."""

    batch_io_threads: int = 8
    """Threads reading inputs and writing results concurrently (object storage is latency-bound)."""

    batch_max_object_bytes: int = 64 * 1024 * 1024
    """Largest batch input object, known from its size before it is downloaded (413 above)."""

    batch_max_elements: int = 16_777_216
    """Most tensor elements in one batch input, all tensors together, checked on the headers (.npy/.npz
    headers, JSON shapes) before any data is decoded or inflated (413 above). The HTTP limits apply to
    batch otherwise, but for the batch axis: a record of any length runs in SLIMSERVE_BATCH_MAX_SIZE rows."""

    input: str = ""
    """Batch: prefixes (comma-separated) that objects named in queue messages must lie under; empty: the
    container of SLIMSERVE_INPUT_CONTAINER on the configured account (Azure). A message naming anything
    else fails alone (400)."""

    input_container: str = ""
    """Azure: the container the blob trigger watches (the binding reads the same app setting)."""

    cache_dir: str = "/tmp/slimserve"
    """Where artifacts fetched from `s3://`, `gs://` or Azure Blob are kept, one folder per manifest sha256."""

    fetch_concurrency: int = 8
    """Ranged reads in flight at once when a fetched artifact file is larger than one part (1..64); 1: one
    streamed GET per file. Memory held by a fetch stays under concurrency x SLIMSERVE_FETCH_PART_BYTES."""

    fetch_part_bytes: int = 16 * 1024 * 1024
    """Bytes of one ranged read of a fetched artifact file (256 KiB..256 MiB); a file of at most one part is one GET."""

    azure_connection: str = ""
    """Connection string of the storage account behind `azure://` and Blob URLs; empty: the Functions host's
    own `AzureWebJobsStorage`."""

    @classmethod
    def resolve(cls, environ: os._Environ | dict | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = _KINDS.get(f.type, str)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not {_KIND_NAMES[kind]}") from None
        for name, allowed in CHOICES.items():
            if name in values and values[name] not in allowed:
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={values[name]!r} must be one of {', '.join(allowed)}")
        for name, (low, high) in RANGES.items():
            if name in values and not low <= values[name] <= high:
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={values[name]!r} must be between {low:,} and {high:,}")
        return cls(**values)
