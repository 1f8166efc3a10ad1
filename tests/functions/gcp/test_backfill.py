"""`slimserve backfill gs://BUCKET/PREFIX --function-url URL` against gcp-storage-emulator and the real
functions-framework server on the `on_storage_event` target: one binary-mode CloudEvent per object, as
Eventarc posts them. The function's answer is the verdict: 2xx done (a corrupt input answers 2xx and
leaves `<name>.error.json`), 5xx retried by the backfill, then counted as failed (exit 1)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from slimserve.cli import main
from tests.conftest import free_port

IN, OUT = "bf-in", "bf-out"
OUTPUT = f"gs://{OUT}/results"


@pytest.fixture(scope="module")
def gcs(gcs_emulator):
    client = storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_emulator})
    for name in (IN, OUT):
        client.create_bucket(name)
    return client


@pytest.fixture(scope="module")
def server(start_function, gcs_emulator, gcs):
    return start_function("on_storage_event", "cloudevent", STORAGE_EMULATOR_HOST=gcs_emulator, SLIMSERVE_OUTPUT=OUTPUT)


@pytest.fixture
def env(gcs_emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def backfill(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["backfill", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_backfill_a_bucket_prefix_through_the_storage_event_function(server, gcs, env, capsys):
    bucket = gcs.bucket(IN)
    for i in range(8):
        bucket.blob(f"bf/a {i}.npy").upload_from_string(npy(np.full((2, 4), i, np.float32)))
    bucket.blob("bf/broken.npy").upload_from_string(b"\x93NUMPY no")
    bucket.blob("bf/wide.npy").upload_from_string(npy(np.zeros((1, 5), np.float32)))
    bucket.blob("elsewhere/c.npy").upload_from_string(npy(np.zeros((1, 4), np.float32)))

    code, out, err = backfill(capsys, f"gs://{IN}/bf/", "--function-url", f"http://{server.url}/", "--output", OUTPUT, "--quiet")
    assert code == 0, err + server.output()
    assert "listed 10, skipped 0, enqueued 10, failed 0" in out, out
    written = {b.name for b in gcs.list_blobs(OUT, prefix="results/")}
    assert written == {f"results/bf/a {i}.npy.json" for i in range(8)} | {
        "results/bf/broken.npy.error.json",
        "results/bf/wide.npy.error.json",
    }

    code, out, _ = backfill(capsys, f"gs://{IN}/bf/", "--function-url", f"http://{server.url}/", "--output", OUTPUT, "--quiet")
    assert code == 0 and "listed 10, skipped 8 (8 with a result), enqueued 2, failed 0" in out, out  # error files are no result


def test_a_function_that_keeps_failing_is_retried_then_exit_1(start_function, gcs_emulator, gcs, env, capsys):
    """The model's endpoint is down: the function answers 500 (Eventarc would redeliver); so does the backfill,
    `--retries` times, then it stops and says so."""
    down = start_function(
        "on_storage_event",
        "cloudevent",
        STORAGE_EMULATOR_HOST=gcs_emulator,
        SLIMSERVE_OUTPUT=OUTPUT,
        SLIMSERVE_PLACEMENT="endpoint",
        SLIMSERVE_FALLBACK="off",
        SLIMSERVE_ENDPOINT_TRANSPORT="http",
        SLIMSERVE_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        SLIMSERVE_ENDPOINT_RETRIES="0",
    )
    gcs.bucket(IN).blob("later/x.npy").upload_from_string(npy(np.ones((1, 4), np.float32)))

    code, out, err = backfill(
        capsys, f"gs://{IN}/later/", "--function-url", f"http://{down.url}/", "--output", OUTPUT, "--retries", "1", "--quiet"
    )

    assert code == 1 and "enqueued 0, failed 1" in out
    assert re.search(r"slimserve: error: backfill stopped: 1 message\(s\) still failing after 1 retries: the function answered 500", err), (
        err
    )
