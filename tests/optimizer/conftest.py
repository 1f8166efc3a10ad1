"""Optimizer fixtures: tiny generated projects (model + model.yaml + npz) and the digits example.

`digits_data` and `digits_artifact` are session-scoped: the CNN is trained and optimized once per run.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from optimizer.evaluate import TimingConfig

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"
FAST_TIMING = TimingConfig(warmup=2, runs=10, max_seconds=0.5)


class TinyNet(nn.Module):
    """A conv and a dense layer wide enough that int8 visibly shrinks the file (~130 KB fp32)."""

    def __init__(self, outputs: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.dense = nn.Linear(4 * 8 * 8, 128)
        self.out = nn.Linear(128, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.dense(torch.relu(self.conv(x)).flatten(1))))


def tiny_spec(tmp: Path, *, task: str = "embedding", source: str = "pt", labels: bool = False, **overrides) -> Path:
    """Write a TinyNet project into `tmp` and return its model.yaml; `overrides` replace spec keys."""
    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = TinyNet().eval()
    example = torch.rand(2, 1, 8, 8)
    if source == "pt":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.script, torch 2.13
            torch.jit.script(model).save(str(tmp / "model.pt"))
    elif source == "pt2":
        batch = torch.export.Dim("batch")
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(tmp / "model.pt2"))
    else:
        raise ValueError(source)
    rng = np.random.default_rng(0)
    np.savez(tmp / "calib.npz", input=rng.random((64, 1, 8, 8), dtype=np.float32))
    evaluation = {"input": rng.random((96, 1, 8, 8), dtype=np.float32)}
    if labels:
        with torch.no_grad():
            evaluation["labels"] = model(torch.from_numpy(evaluation["input"])).argmax(1).numpy()
    np.savez(tmp / "eval.npz", **evaluation)
    spec = {
        "name": "tiny",
        "version": "1",
        "source": {"path": f"model.{source}"},
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "out", "dtype": "float32", "shape": [-1, 8]}],
        "task": task,
        "data": {"calibration": "calib.npz", "evaluation": "eval.npz"},
        "tolerance": 0.05,
        "target": "aws-lambda",
        **overrides,
    }
    path = tmp / "model.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """model.yaml of a TinyNet embedding project (TorchScript source)."""
    return tiny_spec(tmp_path / "tiny")


@dataclass(frozen=True)
class DigitsExample:
    spec: Path  # model.yaml, with data/ (model.pt, calib.npz, eval.npz) beside it
    test_accuracy: float  # torch eager accuracy on eval.npz, as train.py measured it
    parameters: int


def _load_train_module():
    module_spec = importlib.util.spec_from_file_location("digits_train", DIGITS / "train.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses resolve string annotations through it
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> DigitsExample:
    """The digits example trained (fixed seeds) into a temporary folder, with the committed model.yaml."""
    folder = tmp_path_factory.mktemp("digits")
    shutil.copyfile(DIGITS / "model.yaml", folder / "model.yaml")
    train = _load_train_module()
    result = train.train(folder / "data", train.TrainConfig(seed=0))
    return DigitsExample(spec=folder / "model.yaml", test_accuracy=result.test_accuracy, parameters=result.parameters)


@pytest.fixture(scope="session")
def digits_artifact(digits_data: DigitsExample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits artifact folder (model.onnx + manifest.json) as `slimserve optimize` writes it."""
    from optimizer.pipeline import optimize

    out = tmp_path_factory.mktemp("digits-artifact") / "digits" / "1"
    return optimize(digits_data.spec, out=out, quiet=True)
