"""The spec's training keys (`prune:`, `distill:`, `data.train`) and the optimize options that go with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optimizer.errors import SpecError
from optimizer.spec import load_spec
from optimizer.training_spec import Distill, FineTune
from slimserve.cli import main


def _with(spec_path: Path, **keys) -> Path:
    raw = yaml.safe_load(spec_path.read_text())
    for key, value in keys.items():
        if key == "train":
            raw["data"]["train"] = value
        else:
            raw[key] = value
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec_path


def test_defaults_and_typed_settings(tiny: Path):
    spec = load_spec(tiny)
    assert (spec.prune, spec.distill, spec.data.train) == (FineTune(), Distill(), None)
    (tiny.parent / "student.pt").write_bytes(b"")
    spec = load_spec(
        _with(tiny, prune={"epochs": 3, "alpha": 1}, distill={"width": 0.3, "temperature": 4, "student": "student.pt"}, train="calib.npz")
    )
    assert spec.prune == FineTune(epochs=3, alpha=1.0)
    assert spec.distill.width == 0.3 and spec.distill.training.temperature == 4.0 and spec.distill.training.epochs == 30
    assert spec.distill.student == tiny.parent / "student.pt" and spec.data.train == tiny.parent / "calib.npz"
    assert load_spec(_with(tiny, prune=None)).prune == FineTune()  # `prune:` with nothing under it


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"prune": {"epochs": 0}}, r"prune.epochs 0 must be >= 1"),
        ({"prune": {"epochs": 2.5}}, r"prune.epochs must be an integer, not a float \(2.5\)"),
        ({"prune": {"epoch": 3}}, r"prune.epoch is not a known key; did you mean 'epochs'\?"),
        ({"prune": {"alpha": 1.5}}, r"prune.alpha 1.5 must be >= 0 and <= 1"),
        ({"prune": {"learning_rate": 0}}, r"prune.learning_rate 0 must be > 0"),
        ({"prune": "fast"}, r"prune must be a mapping"),
        ({"distill": {"width": 0}}, r"distill.width 0 must be > 0 and <= 1"),
        ({"distill": {"width": 2}}, r"distill.width 2 must be > 0"),
        ({"distill": {"temperature": "hot"}}, r"distill.temperature must be a number, not a str"),
        ({"distill": {"alpha": True}}, r"distill.alpha must be a number, not a bool"),
        ({"distill": {"student": "nowhere.pt"}}, r"distill.student 'nowhere.pt': file not found"),
        ({"distill": {"student": "student.onnx"}}, r"distill.student 'student.onnx' must end in .pt"),
        ({"train": "train.csv"}, r"data.train 'train.csv' must end in .npz"),
        ({"train": "missing.npz"}, r"data.train 'missing.npz': file not found"),
    ],
)
def test_bad_training_keys_are_one_line_naming_the_key(tiny: Path, keys: dict, message: str):
    with pytest.raises(SpecError, match=message):
        load_spec(_with(tiny, **keys))


def test_cli_exit_codes_for_the_new_options(tiny: Path, tmp_path: Path, capsys):
    out = str(tmp_path / "art")
    assert main(["optimize", str(_with(tiny, distill={"width": 7})), "--out", out]) == 2
    assert "distill.width 7 must be" in capsys.readouterr().err
    assert main(["optimize", str(_with(tiny, distill={})), "--out", out, "--distill", "wide"]) == 2
    assert "--distill 'wide' is neither a width" in capsys.readouterr().err
    assert main(["optimize", str(tiny), "--out", out, "--candidates", "fp32,int3"]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(tiny), "--objective", "carbon"])
    assert exc.value.code == 2  # argparse: not one of size, latency, accuracy, cost
