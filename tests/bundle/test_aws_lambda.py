"""The Lambda bundle of the tiny artifact: it answers from an empty folder under a clean interpreter, it
holds no torch and nothing slimming cut, it is the same bytes when built again, and it is refused (exit 1,
with the numbers and the three largest contributors) when over the limit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

import infra.limits
from optimizer.bundle import aws_lambda, probe
from optimizer.bundle.common import Options
from slimserve.cli import main
from tests.bundle.builds import PYTHON312, tiny_artifact, tiny_lambda_bundle
from tests.eventlib import load_event
from tests.tools import need_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> tuple[Path, dict]:
    return tiny_lambda_bundle()


def names_in(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


@pytest.mark.usefixtures("python312")
def test_unpacked_bundle_answers_an_api_gateway_event_under_a_clean_interpreter(bundle, tmp_path):
    out, _ = bundle
    task_root = tmp_path / "task"
    task_root.mkdir()
    with zipfile.ZipFile(out / "slimserve.zip") as zf:
        zf.extractall(task_root)

    answer = probe.run(PYTHON312, task_root, load_event("apigw-v2-post-json"))

    assert answer["response"]["statusCode"] == 200, answer["response"]
    body = json.loads(answer["response"]["body"])
    assert body["model_name"] == "tiny" and [o["name"] for o in body["outputs"]] == ["logits", "probs"]
    assert Path(answer["handler_file"]) == task_root / "functions/aws/handler.py"
    # Only the bundle and the interpreter's own stdlib: no project checkout, no site-packages, no torch.
    assert [Path(p) for p in answer["path"] if "site-packages" in p or str(ROOT) in p] == []
    assert not any(m == "torch" or m.startswith("torch.") for m in answer["modules"])
    assert {"onnxruntime", "numpy", "serverless_wsgi", "aws_lambda_powertools"} <= set(answer["modules"])


def test_bundle_holds_the_runtime_and_nothing_slimming_cut(bundle):
    out, report = bundle
    names = names_in(out / "slimserve.zip")
    tops = {n.split("/")[0] for n in names}
    assert {"functions", "shared", "artifact", "onnxruntime", "numpy", "numpy.libs", "werkzeug", "aws_lambda_powertools"} <= tops
    assert {"artifact/manifest.json", "artifact/model.onnx", "functions/aws/handler.py", "functions/__init__.py"} <= set(names)
    assert not tops & {"torch", "boto3", "botocore", "optimizer", "tests", "examples", "bin", "tokenizers"}
    assert not any(n.endswith(".pyi") or "/tests/" in n or n.endswith("/RECORD") for n in names)
    assert not any(n.startswith(("onnxruntime/tools/", "onnxruntime/quantization/", "onnxruntime/transformers/")) for n in names)
    assert not any(n.startswith("onnxruntime/capi/libonnxruntime.so") for n in names)  # readelf: nothing links it
    if report["precompiled"]:
        assert "shared/http/__pycache__/app.cpython-312.pyc" in names and "numpy/__pycache__/__init__.cpython-312.pyc" in names
    assert report["sizes"]["unzipped_bytes"] < 100 * 2**20 and report["sizes"]["zipped_bytes"] < 35 * 2**20
    assert set(report["sizes"]["parts"]) == {"runtime wheels", "code", "model"}


def test_zip_entries_are_sorted_with_fixed_times_and_modes(bundle):
    out, _ = bundle
    with zipfile.ZipFile(out / "slimserve.zip") as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {(i.external_attr >> 16) & 0o777 for i in infos} <= {0o644, 0o755}
    assert zipfile.ZipFile(out / "slimserve.zip").testzip() is None


def test_building_again_gives_the_same_bytes(tmp_path):
    """Two builds back to back (not against the session's earlier one: a checkout being edited meanwhile
    would differ for a good reason), through the CLI, in different temporary folders."""
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        assert main(["bundle", str(tiny_artifact()), "--target", "aws-lambda", "--out", str(out), "--quiet"]) == 0
    first, second = (hashlib.sha256((out / "slimserve.zip").read_bytes()).hexdigest() for out in outs)
    assert first == second, f"entries that differ: {differing_entries(*outs)}"
    assert json.loads((outs[0] / "bundle.json").read_text())["sha256"] == first


def test_an_unchanged_rebuild_reuses_the_zip_and_a_touched_zip_is_rebuilt(bundle, tmp_path, capsys):
    """`serverless package` runs the builder every time: same inputs, same zip, so it is reused as it is."""
    built, report = bundle
    out = tmp_path / "out"
    shutil.copytree(built, out)
    args = ["bundle", str(tiny_artifact()), "--target", "aws-lambda", "--out", str(out)]
    assert main(args) == 0
    assert "reusing " in capsys.readouterr().out
    assert json.loads((out / "bundle.json").read_text())["inputs_sha256"] == report["inputs_sha256"]

    (out / "slimserve.zip").write_bytes(b"not the zip bundle.json describes")
    assert main([*args, "--quiet"]) == 0
    assert "reusing" not in capsys.readouterr().out
    assert hashlib.sha256((out / "slimserve.zip").read_bytes()).hexdigest() == report["sha256"]  # rebuilt, same bytes


def differing_entries(one: Path, other: Path) -> list[str]:
    def table(folder: Path) -> dict[str, tuple]:
        with zipfile.ZipFile(folder / "slimserve.zip") as zf:
            return {i.filename: (i.CRC, i.external_attr, i.compress_size) for i in zf.infolist()}

    a, b = table(one), table(other)
    return sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))[:20]


def test_over_the_limit_exits_1_with_the_numbers_and_the_three_largest(monkeypatch, tmp_path, capsys):
    lam = infra.limits.PLATFORMS["aws-lambda"]
    tight = tuple(dataclasses.replace(limit, bytes=2**20) for limit in lam.package)  # 1 MiB: the wheels alone pass it
    monkeypatch.setitem(infra.limits.PLATFORMS, "aws-lambda", dataclasses.replace(lam, package=tight))
    out = tmp_path / "out"

    code = main(["bundle", str(tiny_artifact()), "--target", "aws-lambda", "--out", str(out), "--quiet"])

    err = capsys.readouterr().err
    assert code == 1
    assert "does not fit" in err and "1,048,576 bytes" in err
    assert "unzipped size" in err and "zipped size" not in err.replace("unzipped size", "")  # S3 upload: unzipped only
    for biggest in ("onnxruntime/", "numpy.libs/", "numpy/"):
        assert biggest in err
    assert not out.exists()  # nothing over the limit is left where `osls package` would pick it up

    direct = main(["bundle", str(tiny_artifact()), "--target", "aws-lambda", "--out", str(out), "--quiet", "--direct-upload"])
    err = capsys.readouterr().err
    assert direct == 1 and "zipped size" in err.replace("unzipped size", "") and "unzipped size" in err


def test_a_zip_over_the_direct_upload_limit_is_built_with_a_warning(monkeypatch, tmp_path, capsys):
    """Under the S3 rule a zip over 50 MiB is fine for `serverless deploy`, but `deploy function` would fail."""
    lam = infra.limits.PLATFORMS["aws-lambda"]
    tight = tuple(dataclasses.replace(limit, bytes=2**20) if limit.direct_upload_only else limit for limit in lam.package)
    monkeypatch.setitem(infra.limits.PLATFORMS, "aws-lambda", dataclasses.replace(lam, package=tight))
    out = tmp_path / "out"

    assert main(["bundle", str(tiny_artifact()), "--target", "aws-lambda", "--out", str(out), "--quiet"]) == 0

    err = capsys.readouterr().err
    assert "slimserve: warning: the zip is" in err and "over aws-lambda's 1.0 MiB zipped limit" in err
    assert "`serverless deploy function` and the console would not" in err
    report = json.loads((out / "bundle.json").read_text())
    assert report["warnings"] and report["direct_upload_limit_bytes"] == 2**20 and not report["direct_upload"]


@pytest.mark.usefixtures("python312")
def test_a_text_model_bundle_carries_tokenizers_alone_and_tokenizes_from_it(tmp_path):
    need_module("tokenizers", "install the text extra (make test does)")
    from tests.bundle.builds import write_text_artifact

    out = tmp_path / "out"
    report = aws_lambda.build(write_text_artifact(tmp_path / "words"), out, Options(target="aws-lambda", quiet=True))
    assert report["tokenizer"] and report["probe"]["status"] == 200  # the builder's own probe sent one text
    names = names_in(out / "slimserve.zip")
    tops = {n.split("/")[0] for n in names}
    assert "tokenizers" in tops and not tops & {"huggingface_hub", "hf_xet", "httpx", "requests"}
    assert not any(n.startswith("tokenizers/tools/") or n.endswith(".pyi") for n in names)
    task_root = tmp_path / "task"
    with zipfile.ZipFile(out / "slimserve.zip") as zf:
        zf.extractall(task_root)
    event = probe.api_event(
        "POST",
        "/v2/models/words/infer",
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hello world", "world"]}]},
    )

    answer = probe.run(PYTHON312, task_root, event)

    assert answer["response"]["statusCode"] == 200, answer["response"]
    (output,) = json.loads(answer["response"]["body"])["outputs"]
    assert output["data"] == [2.5, 1.5]  # [2, 3] and [3, PAD=0]: the tokenizer ran, padding to the longest text
