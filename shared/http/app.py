"""The one WSGI app: Open Inference Protocol v2 routes over the data plane.

Routes only parse and serialise; every decision lives in `DataPlane`. Every error leaves as
`{"error": ...}` through `to_status_and_body`, so no client input reaches a 500 or a traceback.
Around every route: the API key check when one is configured (shared/http/auth.py), the request id echoed in
`x-request-id`, one access-log line and the metrics (shared/http/observe.py, shared/http/metrics.py).
The OpenAI-compatible embeddings (/v1, shared/http/openai_api.py) are routes of this app like the others;
only their error bodies take OpenAI's shape.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from shared.config import Settings
from shared.errors import Deferred, MalformedRequest, MethodNotAllowed, NotFound, PayloadTooLarge, SlimserveError, to_status_and_body
from shared.http import metrics, openai_api, openapi, sagemaker
from shared.http.auth import ApiKeys
from shared.http.observe import MODEL_KEY, Observer, request_id
from shared.http.sagemaker_runtime import RuntimeStandIn
from shared.protocol import jsontext
from shared.protocol.codec import header_length_from_content_type
from shared.serving.dataplane import DataPlane
from shared.storage import Storage

log = logging.getLogger("slimserve")

_VERSIONED = "/versions/<version>"
_DIGITS = re.compile(r"[0-9]{1,15}")  # ASCII digits only: int() also takes "²", "+5", " 5" and "1_0"


def _rules(sagemaker_runtime: bool) -> list[Rule]:
    rules = [
        Rule("/v2", endpoint="server_metadata", methods=["GET"]),
        Rule("/v2/health/live", endpoint="live", methods=["GET"]),
        Rule("/v2/health/ready", endpoint="ready", methods=["GET"]),
        Rule("/v2/openapi.json", endpoint="openapi", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
    ]
    for suffix in ("", _VERSIONED):
        base = "/v2/models/<name>" + suffix
        rules += [
            Rule(base, endpoint="model_metadata", methods=["GET"]),
            Rule(base + "/ready", endpoint="model_ready", methods=["GET"]),
            Rule(base + "/config", endpoint="model_config", methods=["GET"]),
            Rule(base + "/infer", endpoint="infer", methods=["POST"]),  # POST never gets here; other methods: 405
            Rule(base + "/async/<inference_id>", endpoint="poll", methods=["GET"]),
        ]
    rules += openai_api.rules()  # /v1: OpenAI-compatible embeddings
    # The SageMaker container contract; for local boto3 clients, when asked, the runtime API in front of it.
    return rules + sagemaker.rules() + (RuntimeStandIn.rules() if sagemaker_runtime else [])


def json_response(doc: dict, status: int = 200) -> Response:
    return Response(jsontext.dumps(doc), status=status, mimetype="application/json")


def error_response(exc: BaseException, path: str = "") -> Response:
    status, body = to_status_and_body(exc)
    if openai_api.is_openai_path(path):  # OpenAI's clients read {"error": {"message": ...}}
        body = openai_api.error_body(status, body["error"])
    response = json_response(body, status)
    if isinstance(exc, SlimserveError):
        response.headers.update(exc.headers())
    return response


class InferenceApp:
    """A WSGI callable. Build it once per process; it holds the loaded models."""

    def __init__(self, plane: DataPlane, settings: Settings, storage: Storage | None = None, sagemaker_runtime: bool = False):
        self.plane = plane
        self.settings = settings
        self.auth = ApiKeys.from_settings(self.settings)
        self.observer = Observer()
        self._openapi: bytes | None = None
        self._label_cache: dict[tuple, tuple[str, str]] = {}
        self.url_map = Map(_rules(sagemaker_runtime), strict_slashes=False, merge_slashes=False)
        self.stand_in = RuntimeStandIn(plane, settings, storage, self._read_body) if sagemaker_runtime else None
        self.openai = openai_api.OpenAIRoutes(plane, self._read_body)
        self._views: dict[str, Callable[..., Response]] = {
            "server_metadata": lambda req: json_response(self.plane.server_metadata()),
            "live": lambda req: json_response({"live": True}),
            "ready": self._ready,
            "model_metadata": lambda req, name, version=None: json_response(self.plane.model_metadata(name, version)),
            "model_ready": self._model_ready,
            "model_config": self._model_config,
            "infer": self._infer,
            "poll": self._poll,
            "sm_ping": lambda req: sagemaker.ping(self.plane),
            "sm_invocations": self._invocations,
            "sm_runtime_invoke": lambda req, endpoint_name: self.stand_in.invoke(req, endpoint_name),
            "sm_runtime_invoke_async": lambda req, endpoint_name: self.stand_in.invoke_async(req, endpoint_name),
            "openapi": self._openapi_document,
            # content_type, not mimetype: werkzeug appends "; charset=utf-8" to a text mimetype, a second time here
            "metrics": lambda req: Response(self.metrics.render(), content_type=metrics.CONTENT_TYPE),
            **self.openai.views(),
        }

    @property
    def metrics(self) -> metrics.Metrics:
        return self.observer.metrics

    @metrics.setter
    def metrics(self, value: metrics.Metrics) -> None:
        self.observer.metrics = value

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        start = time.perf_counter()
        rid = request_id(environ)
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        # The infer route is the hot path: served from the raw environ, without werkzeug's request,
        # routing and response objects (about 0.25 ms per call on Lambda-sized CPUs). The rest goes
        # through werkzeug, where clarity beats microseconds.
        target = _infer_target(path) if method == "POST" else None
        try:
            if self.auth is not None:
                self.auth.check(environ)
            if target is not None:
                payload, headers = self._infer_payload(environ, *target)
                status, wsgi_headers, body = "200 OK", [*headers.items(), ("Content-Length", str(len(payload)))], [payload]
            else:
                status, wsgi_headers, body, target = self._routed(environ)
        except Exception as exc:
            body, status, wsgi_headers = self._exception_response(exc, method, path).get_wsgi_response(environ)
        wsgi_headers.append(("x-request-id", rid))
        start_response(status, wsgi_headers)
        model, version = self._labels(environ, target)
        self.observer.done(rid, method, path, int(status[:3]), model, version, start)
        return body

    def _routed(self, environ: dict):
        request = Request(environ)
        args: dict = {}
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            response = self._views[endpoint](request, **args)
        except HTTPException as exc:
            response = error_response(_from_werkzeug(exc, request), request.path)
            if isinstance(exc, WerkzeugMethodNotAllowed) and exc.valid_methods:
                response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        except Exception as exc:
            response = self._exception_response(exc, request.method, request.path)
        body, status, headers = response.get_wsgi_response(environ)
        return status, headers, body, (args.get("name"), args.get("version")) if "name" in args else environ.get(MODEL_KEY)

    def _labels(self, environ: dict, target: tuple | None) -> tuple[str, str]:
        """The served model a request was for, or ("", ""): metric labels never hold unknown names."""
        if target is None and environ.get("PATH_INFO") == "/invocations":
            name, _, version = environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL", "").removesuffix(".tar.gz").partition("/")
            target = (name, version or None) if name else None
            if target is None and len(self.plane.repository) == 1:
                model = next(iter(self.plane.repository))
                return model.name, model.version
        if target is None:
            return "", ""
        labels = self._label_cache.get(target)
        if labels is None:
            try:
                model = self.plane.repository.get(*target)
            except SlimserveError:
                return "", ""
            labels = self._label_cache[target] = (model.name, model.version)  # served names only: bounded
        return labels

    def _openapi_document(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = jsontext.dumps(openapi.build(self.plane.repository, auth=self.auth is not None))
        return Response(self._openapi, mimetype="application/json")

    def _exception_response(self, exc: Exception, method: str, path: str) -> Response:
        """The one mapping from what a view raised to the response (errors, and 202 for deferred requests)."""
        if isinstance(exc, Deferred):  # the request went asynchronous: 202 and where to poll
            response = json_response(exc.body, int(exc.status))
            response.headers["Location"] = exc.location
            return response
        if not isinstance(exc, SlimserveError):  # a bug of ours: log it whole, tell the client nothing internal
            log.exception("unhandled error on %s %s", method, path)
        return error_response(exc, path)

    # --- views -----------------------------------------------------------------------------------

    def _ready(self, request: Request) -> Response:
        ready = self.plane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    def _model_ready(self, request: Request, name: str, version: str | None = None) -> Response:
        return json_response({"name": name, "ready": self.plane.model_ready(name, version)})

    def _model_config(self, request: Request, name: str, version: str | None = None) -> Response:
        # tritonclient's get_model_config expects Triton's config shape; answer with what maps.
        meta = self.plane.model_metadata(name, version)

        def tensor(t: dict) -> dict:
            return {"name": t["name"], "data_type": "TYPE_" + t["datatype"].replace("BYTES", "STRING"), "dims": t["shape"]}

        return json_response(
            {
                "name": meta["name"],
                "platform": meta["platform"],
                "max_batch_size": 0,
                "input": [tensor(t) for t in meta["inputs"]],
                "output": [tensor(t) for t in meta["outputs"]],
            }
        )

    def _infer(self, request: Request, name: str, version: str | None = None) -> Response:
        payload, headers = self._infer_payload(request.environ, name, version)
        return Response(payload, status=200, headers=headers)

    def _infer_payload(self, environ: dict, name: str, version: str | None) -> tuple[bytes, dict]:
        body = read_environ_body(environ, self.settings.max_body_bytes)
        if environ.get("HTTP_CONTENT_ENCODING", "identity") not in ("identity", ""):
            raise MalformedRequest("Content-Encoding is not supported; send the body uncompressed")
        # Proxies that pass only Content-Type on (Vertex AI rawPredict) carry the header length in it.
        header_length = environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH") or header_length_from_content_type(environ.get("CONTENT_TYPE"))
        return self.plane.infer_bytes(name, version, body, header_length)

    def _read_body(self, request: Request) -> bytes:
        return read_body(request, self.settings.max_body_bytes)

    def _invocations(self, request: Request) -> Response:
        call = sagemaker.Invocation.from_request(request, self._read_body(request))
        payload, headers = sagemaker.invoke(self.plane, call)
        return Response(payload, status=200, headers=headers)

    def _poll(self, request: Request, name: str, inference_id: str, version: str | None = None) -> Response:
        status, payload, headers = self.plane.model(name, version).poll(inference_id)
        return Response(payload, status=status, headers=headers)


def read_body(request: Request, limit: int) -> bytes:
    return read_environ_body(request.environ, limit)


def read_environ_body(environ: dict, limit: int) -> bytes:
    """The whole body, refusing anything over `limit` before reading it (or as soon as it passes)."""
    raw_length = environ.get("CONTENT_LENGTH")
    if raw_length and not _DIGITS.fullmatch(raw_length):
        raise MalformedRequest("Content-Length must be a non-negative integer in ASCII digits")
    length = int(raw_length) if raw_length else None
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes, over the limit of {limit} (SLIMSERVE_MAX_BODY_BYTES)")
    stream = environ["wsgi.input"]
    body = stream.read(length) if length is not None else stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes (SLIMSERVE_MAX_BODY_BYTES)")
    return body


def _infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version) when `path` is an OIP infer route, else None."""
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "infer" and parts[2]:
        return parts[2], None
    if len(parts) == 6 and parts[:2] == ["v2", "models"] and parts[3] == "versions" and parts[5] == "infer" and parts[2] and parts[4]:
        return parts[2], parts[4]
    return None


def _from_werkzeug(exc: HTTPException, request: Request) -> SlimserveError:
    if exc.code == 405:
        return MethodNotAllowed(f"method {request.method} is not allowed on {request.path}")
    if exc.code == 404:
        return NotFound(f"no route {request.path}")
    if exc.code == 413:
        return PayloadTooLarge("request body is over the limit")
    return MalformedRequest(exc.description or exc.name)
