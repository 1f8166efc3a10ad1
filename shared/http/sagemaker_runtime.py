"""SageMaker's runtime API, served by the local endpoint: `POST /endpoints/{name}/invocations` and
`/endpoints/{name}/async-invocations`, so a real boto3 `sagemaker-runtime` client pointed at this server
(`AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`) behaves as it does against AWS.

Shapes follow botocore's model (sagemaker-runtime 2017-05-13, rest-json): an error carries
`x-amzn-ErrorType` and a JSON body with `message`; a container's non-2xx becomes ModelError (424) with
OriginalStatusCode/OriginalMessage, which is how a boto3 caller learns whose fault it was. The async call
answers 202 with Output/FailureLocation and runs the request on a thread, reading its input from and
writing its answer to S3 (`SLIMSERVE_ASYNC_BUCKET`), as SageMaker's async front end does for a container.
Requests are not signature-checked: this is a local stand-in, never an AWS front door.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from dataclasses import replace

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from shared.http import sagemaker
from shared.config import Settings
from shared.errors import PayloadTooLarge, SlimserveError, to_status_and_body

log = logging.getLogger("slimserve")

ACCOUNT = "000000000000"  # stands in for the account id in the messages SageMaker writes
VARIANT = "AllTraffic"

def rules() -> list[Rule]:
    # Fresh Rule objects per app: werkzeug binds a Rule to one Map only.
    return [
        Rule("/endpoints/<endpoint_name>/invocations", endpoint="sm_runtime_invoke", methods=["POST"]),
        Rule("/endpoints/<endpoint_name>/async-invocations", endpoint="sm_runtime_invoke_async", methods=["POST"]),
    ]


def aws_error(code: str, status: int, message: str, **members) -> Response:
    return Response(json.dumps({"message": message, **members}), status=status, mimetype="application/json", headers={"x-amzn-ErrorType": code})


def model_error(status: int, body: bytes | str) -> Response:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = f"Received {'client' if status < 500 else 'server'} error ({status}) from primary with message \"{text}\"."
    return aws_error("ModelError", 424, message, OriginalStatusCode=status, OriginalMessage=text, LogStreamArn="")


def invoke(plane, settings: Settings, request: Request, endpoint_name: str, body_reader) -> Response:
    refused = _unknown_endpoint(settings, endpoint_name)
    if refused is not None:
        return refused
    try:
        body = body_reader(request)
        payload, headers = sagemaker.invoke(plane, sagemaker.Invocation.from_request(request, body))
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


def invoke_async(plane, settings: Settings, request: Request, endpoint_name: str) -> Response:
    refused = _unknown_endpoint(settings, endpoint_name)
    if refused is not None:
        return refused
    if not settings.async_bucket:
        return aws_error("ValidationError", 400, f"Endpoint {endpoint_name} is not configured for asynchronous inference (SLIMSERVE_ASYNC_BUCKET).")
    input_location = request.headers.get("X-Amzn-SageMaker-InputLocation", "")
    if not re.match(r"^s3://[^/]+/.+", input_location):
        return aws_error("ValidationError", 400, "InputLocation must be an s3:// URI of an object.")
    inference_id = request.headers.get("X-Amzn-SageMaker-Inference-Id") or uuid.uuid4().hex
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", inference_id)
    output_key = f"{settings.async_prefix}output/{stem}.out"
    failure_key = f"{settings.async_prefix}failure/{stem}-error.out"
    call = sagemaker.Invocation(
        body=b"",
        content_type=request.headers.get("X-Amzn-SageMaker-Content-Type", ""),
        accept=request.headers.get("X-Amzn-SageMaker-Accept", ""),
        custom_attributes=request.headers.get(sagemaker.CUSTOM_ATTRIBUTES, ""),
    )
    job = (plane, settings.async_bucket, input_location, output_key, failure_key, call)
    threading.Thread(target=_run_async, args=job, name=f"async-{stem[:12]}", daemon=True).start()
    bucket = settings.async_bucket
    return Response(
        json.dumps({"InferenceId": inference_id}),
        status=202,
        mimetype="application/json",
        headers={"X-Amzn-SageMaker-OutputLocation": f"s3://{bucket}/{output_key}", "X-Amzn-SageMaker-FailureLocation": f"s3://{bucket}/{failure_key}"},
    )


def _run_async(plane, bucket: str, input_location: str, output_key: str, failure_key: str, call: sagemaker.Invocation) -> None:
    import boto3

    s3 = boto3.client("s3")
    try:
        source_bucket, source_key = input_location[5:].split("/", 1)
        body = s3.get_object(Bucket=source_bucket, Key=source_key)["Body"].read()
        # No body limit here: asynchronous inputs may be far larger than a synchronous call's 6 MB.
        payload, headers = sagemaker.invoke(plane, replace(call, body=body))
        s3.put_object(Bucket=bucket, Key=output_key, Body=payload, ContentType=headers["Content-Type"])
    except SlimserveError as exc:
        s3.put_object(Bucket=bucket, Key=failure_key, Body=json.dumps(to_status_and_body(exc)[1]).encode(), ContentType="application/json")
    except Exception as exc:
        log.exception("asynchronous invocation from %s failed", input_location)
        try:
            s3.put_object(Bucket=bucket, Key=failure_key, Body=json.dumps({"error": type(exc).__name__}).encode(), ContentType="application/json")
        except Exception:
            log.exception("could not record the failure at s3://%s/%s", bucket, failure_key)


def _unknown_endpoint(settings: Settings, endpoint_name: str) -> Response | None:
    known = {n for n in (settings.endpoint_name, settings.async_endpoint_name) if n}
    if known and endpoint_name not in known:
        return aws_error("ValidationError", 400, f"Endpoint {endpoint_name} of account {ACCOUNT} not found.")
    return None
