"""What an attack review of the runtime core sent after the first round of fixes, each answered in bounded
time and memory with a clear error: an `.npz` member of one 256 MB text item, negative and huge shapes, a
corrupt deflate stream, a zip central directory of 120,000 entries, a lone surrogate in BYTES JSON, SQS
bodies of the wrong shape, an x-npy body the model cannot take, and a model planted in the artifact cache."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from werkzeug.test import Client

from shared.batch.s3_sqs import unwrap_sqs
from shared.boot.build import build_app
from shared.errors import ArtifactError, InvalidTensor, LimitExceeded, MalformedRequest
from shared.protocol import codec
from shared.protocol.limits import Limits
from shared.protocol.npy import read_npy, read_npz
from tests.helpers import write_tiny_artifact

LIMITS = Limits()


def npy_header(descr: str, shape: tuple) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npz(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def bounded(call) -> tuple[BaseException, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
    except Exception as exc:  # the error is the result
        error = exc
    else:
        error = None
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, seconds, peak


def test_a_text_member_of_one_huge_item_is_refused_from_its_header():
    body = npz({"x.npy": npy_header("|S268435456", (1,)) + bytes(1 << 20)})  # claims 256 MB; deflates to little
    error, seconds, peak = bounded(lambda: read_npz(body, LIMITS))
    assert isinstance(error, LimitExceeded) and "text items of 268,435,456 bytes" in str(error)
    assert seconds < 2 and peak < 16 << 20


def test_all_members_together_are_bounded_in_bytes():
    limits = Limits(max_elements=1000)
    body = npz({f"m{i}.npy": npy_header("<c16", (1000,)) + bytes(16_000) for i in range(1)})  # 16 bytes an element
    with pytest.raises(LimitExceeded, match="its arrays take 16,000 bytes, over 8 bytes for each of SLIMSERVE_MAX_ELEMENTS=1,000"):
        read_npz(body, limits)


@pytest.mark.parametrize("shape", [(-1, -1), (0, 2**62), (-5,)])
def test_a_negative_or_huge_shape_is_a_4xx(shape):
    with pytest.raises((InvalidTensor, LimitExceeded, MalformedRequest)):
        read_npy(npy_header("<f4", shape), LIMITS)


def test_a_corrupt_deflate_stream_is_a_4xx():
    good = npz({"x.npy": npy_header("<f4", (256,)) + bytes(1024)})
    at = good.index(b"x.npy") + 5 + 2  # inside the deflated data of the first (only) member
    corrupt = good[:at] + bytes(b ^ 0xFF for b in good[at : at + 8]) + good[at + 8 :]
    with pytest.raises(MalformedRequest):
        read_npz(corrupt, LIMITS)


def test_a_huge_central_directory_is_refused_before_it_is_parsed():
    """120,000 directory entries, all pointing at one member: 6 MB that `zipfile` would build 120,000 objects from."""
    member = npz({"x.npy": npy_header("<f4", (1,)) + bytes(4)}, zipfile.ZIP_STORED)
    end = member.rindex(b"PK\x05\x06")
    cd_start = struct.unpack_from("<I", member, end + 16)[0]
    entry = member[cd_start:end]
    count = 120_000
    directory = entry * count
    eocd = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, len(directory), cd_start, 0)
    body = member[:cd_start] + directory + eocd
    error, seconds, peak = bounded(lambda: read_npz(body, LIMITS))
    assert isinstance(error, (LimitExceeded, MalformedRequest)) and seconds < 1 and peak < 32 << 20


@pytest.mark.parametrize("body", [b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}'])
def test_a_lone_surrogate_in_bytes_json_is_a_400(body):
    with pytest.raises(InvalidTensor, match="not valid Unicode"):
        codec.decode_request(body, None, lambda *a: None)


@pytest.mark.parametrize(
    "body",
    [
        '{"Records":[1]}',
        '{"detail-type":"Object Created","detail":"x"}',
        '{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":"b"}}]}',
        '{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":7}}]}',
    ],
)
def test_an_sqs_body_of_the_wrong_shape_fails_alone(body):
    event = {
        "Records": [
            {"messageId": "bad", "body": body},
            {
                "messageId": "good",
                "body": json.dumps(
                    {
                        "Records": [
                            {
                                "eventSource": "aws:s3",
                                "eventName": "ObjectCreated:Put",
                                "s3": {"bucket": {"name": "b"}, "object": {"key": "k.npy"}},
                            }
                        ]
                    }
                ),
            },
        ]
    }
    unwrapped = unwrap_sqs(event)
    assert list(unwrapped.rejected) == ["bad"] and [r.id for r in unwrapped.records] == ["good"]


def test_an_x_npy_body_the_model_cannot_take_is_refused_from_its_header(tmp_path):
    client = Client(build_app(write_tiny_artifact(tmp_path / "tiny")))
    text = npy_header("|S2", (1024, 2900)) + bytes(2 * 1024 * 2900)  # 6 MB of text for an FP32 model
    tracemalloc.start()
    response = client.post("/invocations", data=text, content_type="application/x-npy")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert response.status_code == 400 and "has datatype BYTES, model 'tiny' expects FP32" in response.json["error"]
    assert peak < 24 << 20  # the body, not a decoded copy of it


def test_a_model_planted_in_the_cache_is_not_served(tmp_path):
    """A folder named after the pinned manifest's sha256, holding another self-consistent artifact."""
    from shared.artifact.fetch import fetch_artifact
    from shared.storage import Storage

    remote = write_tiny_artifact(tmp_path / "remote")
    digest = hashlib.sha256((remote / "manifest.json").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    write_tiny_artifact(cache / digest, classes=5)  # the planted one
    folder = fetch_artifact(f"file://{remote}", cache, Storage(), pin=digest)
    assert (folder / "manifest.json").read_bytes() == (remote / "manifest.json").read_bytes()  # fetched again


def test_a_cache_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    from shared.artifact import fetch

    monkeypatch.setattr(fetch.os, "getuid", lambda: 4242)  # as if this process ran as another user
    with pytest.raises(ArtifactError, match="belongs to user"):
        fetch.private_dir(tmp_path / "cache")
