"""A small Sequential-style project (the kind structured pruning and derived students accept), trained briefly.

Four blob-like classes of 8x8 images, so a few epochs reach high accuracy and a pruned or distilled model
has something real to keep; every layer kind the chain code handles at a boundary is in it: Conv2d ->
BatchNorm2d -> ReLU -> Conv2d -> MaxPool2d -> Flatten -> Linear -> Dropout -> Linear.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn


def chain_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 48),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(48, 4),
    )


def blobs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a bright 3x3 blob in quadrant k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    images = rng.random((count, 1, 8, 8), dtype=np.float32) * 0.3
    for i, k in enumerate(labels):
        r, c = (k // 2) * 4 + rng.integers(0, 2), (k % 2) * 4 + rng.integers(0, 2)
        images[i, 0, r : r + 3, c : c + 3] += 0.7
    return images, labels.astype(np.int64)


def write_chain_project(tmp: Path, *, train_labels: bool = True, **overrides) -> Path:
    """model.pt (trained 3 epochs) + calib/train/eval npz + model.yaml; returns the spec path."""
    tmp.mkdir(parents=True, exist_ok=True)
    model = chain_model()
    x, y = blobs(512, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(3):
            for batch in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(32):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(torch.from_numpy(x[batch])), torch.from_numpy(y[batch])).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(previous)
    model.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.script, torch 2.13
        torch.jit.script(model).save(str(tmp / "model.pt"))
    np.savez(tmp / "calib.npz", input=x[:64])
    np.savez(tmp / "train.npz", **({"input": x, "labels": y} if train_labels else {"input": x}))
    ex, ey = blobs(200, 2)
    np.savez(tmp / "eval.npz", input=ex, labels=ey)
    spec = {
        "name": "chain",
        "version": "1",
        "source": {"path": "model.pt"},
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 4]}],
        "task": "classification",
        "data": {"calibration": "calib.npz", "evaluation": "eval.npz", "train": "train.npz"},
        "tolerance": 0.05,
        "prune": {"epochs": 2},
        "distill": {"epochs": 4, "width": 0.5},
        **overrides,
    }
    path = tmp / "model.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chain_project(tmp_path_factory: pytest.TempPathFactory):
    """(spec, fp32 reference ONNX) of the chain project, built once per test session; import it to use it."""
    from optimizer.export import export_fp32
    from optimizer.spec import load_spec

    spec = load_spec(write_chain_project(tmp_path_factory.mktemp("chain")))
    return spec, export_fp32(spec, spec.file.parent / "reference.onnx")
