"""What the spec says about training steps (fine-tune after structured pruning, distillation).

Torch-free on purpose: `spec.py` parses these for every run, also where no step trains anything.
The loss both steps minimise is `L = alpha·CE(y, s) + (1-alpha)·T²·KL(softmax(t/T) ‖ softmax(s/T))`
(t: the fp32 teacher's logits, s: the student's), with `alpha` ignored when the data has no labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FineTune:
    """`prune:` in model.yaml; also the training part of `distill:`."""

    epochs: int = 8
    learning_rate: float = 1e-3
    batch_size: int = 64
    alpha: float = 0.5  # weight of the label loss; the rest goes to matching the teacher
    temperature: float = 2.0  # softens both distributions so the teacher's near-misses carry signal
    seed: int = 0


# a fresh student learns from scratch: more epochs and a higher rate than a fine-tune of pruned weights
_DISTILL_TRAINING = FineTune(epochs=30, learning_rate=2e-3)


@dataclass(frozen=True)
class Distill:
    """`distill:` in model.yaml (or `--distill`): which student, and how it is trained."""

    student: Path | None = None  # a TorchScript .pt student; None: derive one from the teacher's layers
    # derived students keep this fraction of every hidden layer's channels/neurons; parameters go with
    # width² where hidden×hidden matrices dominate, so 0.45 keeps about a fifth of them
    width: float = 0.45
    training: FineTune = field(default=_DISTILL_TRAINING)


FINE_TUNE_KEYS = ("epochs", "learning_rate", "batch_size", "alpha", "temperature", "seed")
DISTILL_KEYS = ("student", "width", *FINE_TUNE_KEYS)
