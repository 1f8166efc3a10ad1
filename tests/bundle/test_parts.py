"""The builder's parts without a build: the pinned runtime set, the tokenizer switch, the guard that keeps
what our code uses, the limit check's message, the table of limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from infra.limits import PLATFORMS, platform
from optimizer.bundle.common import needs_tokenizer, shipped_files
from optimizer.bundle.requirements import runtime_pins
from optimizer.bundle.sizes import Item, Sizes, check, contributor, direct_upload_warnings
from optimizer.bundle.slim import first_party_uses
from optimizer.bundle.wheels import platform_tags
from optimizer.errors import DoesNotFit
from shared.artifact.manifest import Choice, FileEntry, Manifest, TensorSpec


def manifest(**changes) -> Manifest:
    base = Manifest(
        name="m",
        version="1",
        task="embedding",
        model_file="model.onnx",
        files={"model.onnx": FileEntry("0" * 64, 1)},
        inputs=(TensorSpec("text", "BYTES", (-1,)),),
        outputs=(TensorSpec("emb", "FP32", (-1, 384)),),
        chosen=Choice("int8", "test"),
    )
    return dataclasses.replace(base, **changes)


def test_lambda_runtime_is_pinned_to_this_environment_without_what_lambda_provides():
    pins = {p.name: p for p in runtime_pins("aws-lambda", "3.12", "x86_64", tokenizer=False)}
    assert {"onnxruntime", "numpy", "werkzeug", "markupsafe", "serverless-wsgi", "aws-lambda-powertools", "jmespath"} <= set(pins)
    assert not set(pins) & {"boto3", "botocore", "s3transfer", "torch", "protobuf", "flatbuffers", "tokenizers"}
    from importlib.metadata import version

    assert pins["numpy"].version == version("numpy") and pins["onnxruntime"].version == version("onnxruntime")


def test_a_text_model_adds_tokenizers_alone():
    text = manifest(files={"model.onnx": FileEntry("0" * 64, 1), "tokenizer.json": FileEntry("1" * 64, 2)})
    assert needs_tokenizer(text) and needs_tokenizer(manifest(extra={"text": {"tokenizer": "vocab/tok.json"}}))
    assert not needs_tokenizer(manifest())
    pins = {p.name: p for p in runtime_pins("aws-lambda", "3.12", "arm64", tokenizer=True)}
    assert pins["tokenizers"].with_deps is False  # huggingface_hub, hf_xet, httpx... never ship
    assert "huggingface-hub" not in pins


def test_gcp_and_azure_requirements_are_the_top_level_runtime_plus_the_adapter():
    gcp = {p.name for p in runtime_pins("gcp-functions", "3.12", "x86_64", tokenizer=False, follow=False)}
    azure = {p.name for p in runtime_pins("azure-functions", "3.12", "x86_64", tokenizer=False, follow=False)}
    assert {"onnxruntime", "numpy", "werkzeug", "functions-framework"} <= gcp and "azure-functions" not in gcp
    assert {"onnxruntime", "numpy", "werkzeug", "azure-functions"} <= azure and "functions-framework" not in azure


def test_weights_that_never_run_in_the_function_are_not_shipped():
    assert shipped_files(manifest()) == ["model.onnx"]
    assert shipped_files(manifest(delivery="fetch")) == []
    assert shipped_files(manifest(placement="endpoint")) == []


def test_slimming_keeps_a_module_our_code_reaches(tmp_path: Path):
    code = tmp_path / "snap.py"
    code.write_text("import numpy as np\nfrom onnxruntime import quantization\n\ndef f():\n    np.random.seed(1)\n")
    used = first_party_uses([code])
    assert {"numpy.random.seed", "onnxruntime.quantization", "numpy"} <= used
    assert not any(u.startswith("numpy.fft") for u in used)


def test_platform_tags_widen_to_older_glibc():
    tags = platform_tags("arm64")
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags and tags[-1] == "manylinux2014_aarch64"


def test_over_the_limit_names_the_numbers_and_the_three_largest():
    sizes = Sizes(
        items=(
            Item("onnxruntime/", "runtime wheels", 10, 40_000_000, 14_000_000),
            Item("artifact/model.onnx", "model", 1, 200_000_000, 180_000_000),
            Item("numpy/", "runtime wheels", 10, 20_000_000, 7_000_000),
            Item("shared/", "code", 10, 300_000, 100_000),
        ),
        zipped_total=201_200_000,
        unzipped_total=260_300_000,
    )
    check(sizes, platform("aws-lambda"))  # through S3 (`serverless deploy`): only the unzipped limit binds, and it fits
    assert "over aws-lambda's 50.0 MiB zipped limit" in direct_upload_warnings(sizes, platform("aws-lambda"))[0]
    with pytest.raises(DoesNotFit) as caught:
        check(sizes, platform("aws-lambda"), direct_upload=True)
    message = caught.value.message
    assert caught.value.exit_code == 1
    assert "201,200,000 bytes" in message and "52,428,800 bytes" in message  # zipped: over
    assert "260,300,000" not in message  # unzipped 260,300,000 <= 262,144,000: fits
    assert message.index("artifact/model.onnx") < message.index("onnxruntime/") < message.index("numpy/")
    assert "shared/" not in message


def test_contributors_group_by_what_one_would_remove():
    assert contributor("numpy/_core/x.so") == "numpy/" and contributor("typing_extensions.py") == "typing_extensions.py"
    assert contributor("artifact/model.onnx") == "artifact/model.onnx"


def test_every_platform_limit_cites_its_source():
    for plat in PLATFORMS.values():
        assert plat.package and all(limit.source.startswith("https://") and limit.bytes > 0 for limit in plat.package)
    lam = platform("aws-lambda")
    assert {limit.bytes for limit in lam.package} == {52_428_800, 262_144_000}
    # AWS's own words: the zipped limit is the direct upload's, S3 takes larger zips
    assert [limit.bytes for limit in lam.package_limits()] == [262_144_000]
    (direct,) = lam.direct_upload_limits()
    assert "uploaded directly to Lambda. Use Amazon S3 for larger files." in direct.quote
    assert all(limit.quote for limit in lam.package)
    assert lam.memory_bytes == lam.tmp_bytes == 10_240 * 2**20 and lam.request_bytes == 6 * 2**20
