"""`slimserve optimize` end to end: the digits acceptance, the manifest contract, the --out folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optimizer import candidates as registry
from optimizer.errors import CliError, SpecError
from optimizer.pipeline import optimize
from shared.artifact.loading import load_artifact
from slimserve.cli import main
from tests.optimizer.conftest import FAST_TIMING


def test_digits_chosen_is_3x_smaller_and_within_half_a_point(digits_data, digits_artifact: Path):
    manifest = load_artifact(digits_artifact).manifest
    by_name = {c.name: c for c in manifest.candidates}
    fp32, chosen = by_name["fp32"], by_name[manifest.chosen.candidate]
    assert fp32.metrics["accuracy"] >= 0.97
    assert fp32.bytes / chosen.bytes >= 3.0
    assert chosen.metrics["accuracy"] >= fp32.metrics["accuracy"] - 0.005
    # the fp32 ONNX model is the torch model: same test accuracy as train.py measured in eager mode
    assert fp32.metrics["accuracy"] == pytest.approx(digits_data.test_accuracy, abs=1e-9)


def test_digits_artifact_answers_as_its_manifest_says(digits_data, digits_artifact: Path):
    artifact = load_artifact(digits_artifact)
    manifest = artifact.manifest
    evaluation = np.load(digits_data.spec.parent / "data" / "eval.npz")
    session = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": evaluation["input"]})[0]
    accuracy = float(np.mean(logits.argmax(1) == evaluation["labels"]))
    chosen = next(c for c in manifest.candidates if c.name == manifest.chosen.candidate)
    assert accuracy == pytest.approx(chosen.metrics["accuracy"], abs=1e-9)
    assert manifest.files["model.onnx"].bytes == chosen.bytes == artifact.model_path.stat().st_size


def test_digits_manifest_contract(digits_artifact: Path):
    manifest = load_artifact(digits_artifact).manifest
    assert (manifest.name, manifest.version, manifest.task) == ("digits", "1", "classification")
    assert (manifest.target, manifest.placement, manifest.delivery) == ("aws-lambda", "function", "bundle")
    assert [t.to_dict() for t in manifest.inputs] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [t.to_dict() for t in manifest.outputs] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert [c.name for c in manifest.candidates if not c.name.endswith("+fallback")] == list(registry.REGISTRY)
    for c in manifest.candidates:
        assert c.bytes > 0 and c.latency_ms > 0 and {"accuracy", "agreement", "drop"} <= set(c.metrics)
        assert c.within_tolerance == (c.metrics["drop"] <= 0.005 + 1e-7)
    assert manifest.chosen.reason.startswith(f"smallest within tolerance 0.005: {manifest.chosen.candidate}")
    assert manifest.extra["optimizer"]["metric"] == "accuracy"
    assert sorted(p.name for p in digits_artifact.iterdir()) == ["manifest.json", "model.onnx", "pareto.png", "report.md"]


def test_cli_overrides_and_prints_the_table(tiny: Path, tmp_path: Path, capsys):
    out = tmp_path / "art"
    code = main(["optimize", str(tiny), "--out", str(out), "--target", "gcp-functions", "--tolerance", "0.2"])
    assert code == 0
    manifest = load_artifact(out).manifest
    assert manifest.target == "gcp-functions" and manifest.extra["optimizer"]["tolerance"] == 0.2
    printed = capsys.readouterr().out
    for c in manifest.candidates:
        assert c.name in printed
    assert f"chosen: {manifest.chosen.reason}" in " ".join(printed.split())  # rich may wrap the line


def test_quiet_prints_a_plain_table_with_notes(tiny: Path, tmp_path: Path, capsys):
    optimize(tiny, out=tmp_path / "art", quiet=True, timing=FAST_TIMING)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["candidate", "model", "bytes"]
    assert any("ConvInteger" in line for line in lines)  # the dynamic candidate's note names its kernels
    digest = __import__("hashlib").sha256((tmp_path / "art" / "manifest.json").read_bytes()).hexdigest()
    serving = manifest_extra(tmp_path / "art")["serving"]
    memory = (
        f"slimserve: recommended memory {serving['recommended_memory_mb']} MB (peak RSS {serving['peak_rss_bytes'] / 2**20:,.0f} MiB "
        f"at 1024 rows x 1.25); ${serving['cost']['x86_64']['per_million_usd']:.4f} per million requests on aws-lambda x86_64"
    )
    assert lines[-3:-1] == [f"artifact: {tmp_path / 'art'}", f"{memory}; cold start ~{serving['cold_start']['total_s']:.2f} s"]
    pinned = f"slimserve: manifest sha256 {digest}; a copy in object storage is pinned as SLIMSERVE_ARTIFACT=PREFIX#sha256={digest}"
    assert lines[-1] == pinned


def manifest_extra(folder: Path) -> dict:
    return __import__("json").loads((folder / "manifest.json").read_text())["extra"]


def test_out_replaces_an_artifact_but_never_a_foreign_folder(tiny: Path, tmp_path: Path):
    out = tmp_path / "art"
    optimize(tiny, out=out, quiet=True, timing=FAST_TIMING)
    (out / "stale.txt").write_text("from an older run")
    optimize(tiny, out=out, quiet=True, timing=FAST_TIMING)
    assert not (out / "stale.txt").exists()
    load_artifact(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art")], "staging folders left behind"

    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(CliError, match="is not an artifact folder"):
        optimize(tiny, out=foreign, quiet=True, timing=FAST_TIMING)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_bad_overrides_are_spec_errors(tiny: Path, tmp_path: Path):
    with pytest.raises(SpecError, match=r"--tolerance: -1.0 must be a finite number >= 0|--tolerance -1.0 must be"):
        optimize(tiny, out=tmp_path / "a", tolerance=-1.0, quiet=True)
    with pytest.raises(CliError, match="unknown candidate"):
        optimize(tiny, out=tmp_path / "a", candidates=("int3",), quiet=True)


def test_default_out_is_artifacts_name_version(tiny: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = optimize(tiny, quiet=True, timing=FAST_TIMING)
    assert folder == Path("artifacts") / "tiny" / "1"
    assert load_artifact(tmp_path / folder).manifest.name == "tiny"
