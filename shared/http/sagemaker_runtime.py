"""SageMaker's runtime API, served by the local endpoint: `POST /endpoints/{name}/invocations` and
`/endpoints/{name}/async-invocations`, so a real boto3 `sagemaker-runtime` client pointed at this server
(`AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`) behaves as it does against AWS.

Shapes follow botocore's model (sagemaker-runtime 2017-05-13, rest-json): an error carries
`x-amzn-ErrorType` and a JSON body with `message`; a container's non-2xx becomes ModelError (424) with
OriginalStatusCode/OriginalMessage, which is how a boto3 caller learns whose fault it was. The async call
answers 202 with Output/FailureLocation and runs the request on a small bounded pool, reading its input
from and writing its answer to S3 under `SLIMSERVE_ASYNC_BUCKET`/`SLIMSERVE_ASYNC_PREFIX` only, as
SageMaker's async front end does for a container; a full queue answers 429 (ThrottlingException).
Requests are not signature-checked: this is a local stand-in, never an AWS front door, and it is mounted
only where asked (`slimserve serve --sagemaker-runtime`, tests), never in a cloud function's app.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from shared.config import Settings
from shared.errors import PayloadTooLarge, SlimserveError, to_status_and_body
from shared.http import sagemaker
from shared.serving.dataplane import DataPlane
from shared.storage import Storage

log = logging.getLogger("slimserve")

ACCOUNT = "000000000000"  # stands in for the account id in the messages SageMaker writes
VARIANT = "AllTraffic"
ASYNC_WORKERS, ASYNC_QUEUE = 2, 32  # requests running, and waiting, at most; more are throttled
MAX_ASYNC_INPUT_BYTES = 1 << 30  # SageMaker's own limit for an asynchronous input


def aws_error(code: str, status: int, message: str, **members) -> Response:
    return Response(
        json.dumps({"message": message, **members}), status=status, mimetype="application/json", headers={"x-amzn-ErrorType": code}
    )


def model_error(status: int, body: bytes | str) -> Response:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = f'Received {"client" if status < 500 else "server"} error ({status}) from primary with message "{text}".'
    return aws_error("ModelError", 424, message, OriginalStatusCode=status, OriginalMessage=text, LogStreamArn="")


class RuntimeStandIn:
    def __init__(self, plane: DataPlane, settings: Settings, storage: Storage | None, body_reader: Callable[[Request], bytes]):
        self.plane = plane
        self.settings = settings
        self.storage = storage or Storage.from_settings(settings)
        self._read_body = body_reader
        self._pool = ThreadPoolExecutor(ASYNC_WORKERS, thread_name_prefix="slimserve-async")
        self._slots = threading.BoundedSemaphore(ASYNC_WORKERS + ASYNC_QUEUE)

    @staticmethod
    def rules() -> list[Rule]:
        # Fresh Rule objects per app: werkzeug binds a Rule to one Map only.
        return [
            Rule("/endpoints/<endpoint_name>/invocations", endpoint="sm_runtime_invoke", methods=["POST"]),
            Rule("/endpoints/<endpoint_name>/async-invocations", endpoint="sm_runtime_invoke_async", methods=["POST"]),
        ]

    def invoke(self, request: Request, endpoint_name: str) -> Response:
        refused = self._unknown_endpoint(endpoint_name)
        if refused is not None:
            return refused
        try:
            body = self._read_body(request)
            payload, headers = sagemaker.invoke(self.plane, sagemaker.Invocation.from_request(request, body))
        except PayloadTooLarge as exc:  # SageMaker's front end refuses these itself, before any container
            return aws_error("ValidationError", 400, exc.message)
        except SlimserveError as exc:
            status, doc = to_status_and_body(exc)
            return model_error(status, json.dumps(doc))
        except Exception:
            log.exception("runtime API invocation failed")
            return model_error(500, json.dumps({"error": "internal server error"}))
        response = Response(payload, status=200, headers=headers)
        response.headers["x-Amzn-Invoked-Production-Variant"] = VARIANT
        return response

    def invoke_async(self, request: Request, endpoint_name: str) -> Response:
        refused = self._unknown_endpoint(endpoint_name)
        if refused is not None:
            return refused
        bucket, prefix = self.settings.async_bucket, self.settings.async_prefix
        if not bucket:
            return aws_error(
                "ValidationError", 400, f"Endpoint {endpoint_name} is not configured for asynchronous inference (SLIMSERVE_ASYNC_BUCKET)."
            )
        input_location = request.headers.get("X-Amzn-SageMaker-InputLocation", "")
        allowed = f"s3://{bucket}/{prefix}"
        if (
            not input_location.startswith(allowed)
            or not re.fullmatch(r"s3://[^/]+/[^\x00-\x1f]+", input_location)
            or "/../" in input_location
        ):
            return aws_error("ValidationError", 400, f"InputLocation must be an object under {allowed}.")
        if not self._slots.acquire(blocking=False):
            return aws_error("ThrottlingException", 429, "Too many asynchronous requests are in progress; retry later.")
        inference_id = request.headers.get("X-Amzn-SageMaker-Inference-Id") or uuid.uuid4().hex
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", inference_id)[:64]
        output, failure = f"{allowed}output/{stem}.out", f"{allowed}failure/{stem}-error.out"
        call = sagemaker.Invocation(
            body=b"",
            content_type=request.headers.get("X-Amzn-SageMaker-Content-Type", ""),
            accept=request.headers.get("X-Amzn-SageMaker-Accept", ""),
            custom_attributes=request.headers.get(sagemaker.CUSTOM_ATTRIBUTES, ""),
        )
        self._pool.submit(self._run_async, input_location, output, failure, call)
        return Response(
            json.dumps({"InferenceId": inference_id}),
            status=202,
            mimetype="application/json",
            headers={"X-Amzn-SageMaker-OutputLocation": output, "X-Amzn-SageMaker-FailureLocation": failure},
        )

    def _run_async(self, input_location: str, output: str, failure: str, call: sagemaker.Invocation) -> None:
        try:
            body = self.storage.read(input_location, max_bytes=MAX_ASYNC_INPUT_BYTES, setting="SageMaker's asynchronous input limit")
            payload, headers = sagemaker.invoke(self.plane, replace(call, body=body), may_defer=False)
            self.storage.write(output, payload, headers["Content-Type"])
        except SlimserveError as exc:
            self._record_failure(failure, json.dumps(to_status_and_body(exc)[1]).encode())
        except Exception as exc:
            log.exception("asynchronous invocation from %s failed", input_location)
            self._record_failure(failure, json.dumps({"error": type(exc).__name__}).encode())
        finally:
            self._slots.release()

    def _record_failure(self, uri: str, body: bytes) -> None:
        try:
            self.storage.write(uri, body, "application/json")
        except Exception:
            log.exception("could not record the failure at %s", uri)

    def _unknown_endpoint(self, endpoint_name: str) -> Response | None:
        known = {n for n in (self.settings.endpoint_name, self.settings.async_endpoint_name) if n}
        if known and endpoint_name not in known:
            return aws_error("ValidationError", 400, f"Endpoint {endpoint_name} of account {ACCOUNT} not found.")
        return None
