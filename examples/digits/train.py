"""Train the digits CNN (scikit-learn's 8x8 digits, offline) and write what `model.yaml` points at.

    python examples/digits/train.py [--out DIR] [--epochs N] [--seed S]

writes into DIR (default: data/ beside this file): `model.pt` (TorchScript), `calib.npz` (a subset of
the training split, key `input`), `train.npz` (the whole training split with `labels`, for the optimizer's
fine-tune and distillation), `eval.npz` (the held-out test split: `input` and `labels`).

The dense layer is deliberately wide (2048 -> 256, about half a million weights): it is what int8 has
to shrink, as in real models where most bytes sit in a few large matrices.
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    test_size: float = 0.25
    calibration_samples: int = 256
    threads: int = 1  # a model this small loses more to thread hand-offs than it gains, worse on a busy CPU


@dataclass(frozen=True)
class TrainResult:
    folder: Path
    test_accuracy: float
    parameters: int
    seconds: float


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(32 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_split(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    # pixel values are 0..16; [0, 1] is what the served model expects, documented in model.yaml
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=config.test_size, random_state=config.seed, stratify=labels)


def train(out: Path = HERE / "data", config: TrainConfig = TrainConfig()) -> TrainResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(out, config)
    finally:
        torch.set_num_threads(threads)  # callers (a test session) keep their own setting


def _train(out: Path, config: TrainConfig) -> TrainResult:
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    x_train, x_test, y_train, y_test = load_split(config)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for batch in order.split(config.batch_size):
            optimizer.zero_grad()
            loss_fn(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit.script deprecated; TorchScript is still the format the spec names
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.script(model).save(str(out / "model.pt"))
    rng = np.random.default_rng(config.seed)
    calibration = rng.choice(len(x_train), size=min(config.calibration_samples, len(x_train)), replace=False)
    np.savez(out / "calib.npz", input=x_train[np.sort(calibration)])
    np.savez(out / "train.npz", input=x_train, labels=y_train)  # what pruning's fine-tune and distillation learn from
    np.savez(out / "eval.npz", input=x_test, labels=y_test)
    parameters = sum(p.numel() for p in model.parameters())
    return TrainResult(out, accuracy, parameters, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    args = parser.parse_args()
    result = train(args.out, TrainConfig(epochs=args.epochs, seed=args.seed))
    print(
        f"digits CNN: {result.parameters:,} parameters, test accuracy {result.test_accuracy:.4f}, {result.seconds:.1f} s -> {result.folder}"
    )


if __name__ == "__main__":
    main()
