"""model.yaml and its data: every bad spec is one SpecError line naming the key; the CLI exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from optimizer.data import load_dataset
from optimizer.errors import SpecError
from optimizer.spec import load_spec
from slimserve.cli import main
from tests.optimizer.conftest import ROOT


def _rewrite(spec_path: Path, change) -> Path:
    raw = yaml.safe_load(spec_path.read_text())
    change(raw)
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec_path


def test_valid_spec_parses_into_typed_fields(tiny: Path):
    spec = load_spec(tiny)
    assert (spec.name, spec.version, spec.task, spec.target) == ("tiny", "1", "embedding", "aws-lambda")
    assert spec.source.path == tiny.parent / "model.pt" and spec.source.kind == "torchscript"
    assert spec.inputs[0].shape == (-1, 1, 8, 8) and spec.inputs[0].oip.datatype == "FP32"
    assert spec.data.evaluation == tiny.parent / "eval.npz"
    assert spec.tolerance == 0.05


def test_integer_version_is_read_as_text(tiny: Path):
    assert load_spec(_rewrite(tiny, lambda r: r.update(version=3))).version == "3"


def _delete(key):
    return lambda raw: raw.pop(key)


def _set(key, value):
    return lambda raw: raw.update({key: value})


def _input(key, value):
    return lambda raw: raw["inputs"][0].update({key: value})


BAD = {
    "missing key": (_delete("task"), "task is missing"),
    "unknown key": (_set("tolerence", 0.1), "tolerence is not a known key; did you mean 'tolerance'?"),
    "unknown dtype": (_input("dtype", "float33"), "inputs[0].dtype 'float33' is not one of bool,"),
    "source not found": (_set("source", {"path": "nope.pt"}), "source.path 'nope.pt': file not found"),
    "source suffix": (_set("source", {"path": "model.yaml"}), "source.path 'model.yaml' must end in .pt or .pt2 or .onnx"),
    "bad name": (_set("name", "Tiny Model"), "name 'Tiny Model' must match"),
    "version type": (_set("version", 1.5), "version must be a string"),
    "tolerance type": (_set("tolerance", "small"), "tolerance must be a number"),
    "tolerance negative": (_set("tolerance", -0.1), "tolerance -0.1 must be a finite number >= 0"),
    "unknown task": (_set("task", "ranking"), "task 'ranking' is not one of classification, embedding, regression"),
    "unknown target": (_set("target", "aws"), "target 'aws' is not one of aws-lambda"),
    "shape type": (_input("shape", "1x8x8"), "inputs[0].shape must be a list"),
    "shape axis": (_input("shape", [-1, 0, 8, 8]), "inputs[0].shape[1] 0 must be a positive integer or -1"),
    "inputs empty": (_set("inputs", []), "inputs must be a non-empty list"),
    "duplicate input": (lambda r: r["inputs"].append(dict(r["inputs"][0])), "inputs[1].name 'input' is listed twice"),
    "data not a mapping": (_set("data", "eval.npz"), "data must be a mapping"),
    "evaluation missing": (lambda r: r["data"].pop("evaluation"), "data.evaluation is missing"),
    "unknown source key": (_set("source", {"path": "model.pt", "url": "x"}), "source.url is not a known key"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_spec_is_one_line_naming_the_key(tiny: Path, case: str):
    change, expected = BAD[case]
    with pytest.raises(SpecError) as info:
        load_spec(_rewrite(tiny, change))
    message = info.value.message
    assert message.startswith(f"{tiny}: ")
    assert expected in message
    assert "\n" not in message


def test_spec_that_is_not_yaml_or_absent(tmp_path: Path):
    broken = tmp_path / "model.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"is not valid YAML at line \d+"):
        load_spec(broken)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")


def _npz(path: Path, **arrays) -> None:
    np.savez(path, **arrays)


def test_npz_lacking_an_input_names_the_file_and_key(tiny: Path):
    _npz(tiny.parent / "eval.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(SpecError, match=r"data\.evaluation 'eval\.npz' lacks input 'input' \(it holds: x\)"):
        load_dataset(load_spec(tiny), "evaluation")


def test_npz_with_the_wrong_shape_or_labels(tiny: Path):
    _npz(tiny.parent / "calib.npz", input=np.zeros((4, 1, 8, 9), np.float32))
    with pytest.raises(SpecError, match=r"data\.calibration .* has shape \[4, 1, 8, 9\], the spec's inputs say \[-1, 1, 8, 8\]"):
        load_dataset(load_spec(tiny), "calibration")
    _npz(tiny.parent / "eval.npz", input=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(3, np.int64))
    with pytest.raises(SpecError, match=r"holds 3 labels for 4 samples"):
        load_dataset(load_spec(tiny), "evaluation")


def test_npz_is_cast_to_the_spec_dtype(tiny: Path):
    _npz(tiny.parent / "eval.npz", input=np.ones((4, 1, 8, 8), np.float64))
    data = load_dataset(load_spec(tiny), "evaluation")
    assert data.inputs["input"].dtype == np.float32 and len(data) == 4 and data.labels is None


def test_cli_bad_spec_exits_2_with_one_line(tiny: Path, capsys):
    _rewrite(tiny, _input("dtype", "float33"))
    assert main(["optimize", str(tiny), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "inputs[0].dtype 'float33'" in captured.err
    assert captured.out == ""


def test_cli_subprocess_bad_spec_has_no_traceback(tiny: Path):
    _rewrite(tiny, _delete("outputs"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "slimserve", "optimize", str(tiny)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"slimserve: error: {tiny}: outputs is missing"]
    assert "Traceback" not in done.stderr + done.stdout
