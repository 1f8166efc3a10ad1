"""Train a smaller model to do what the fp32 teacher does: the fine-tune after pruning, and distillation.

Classification: `L = alpha·CE(y, s) + (1-alpha)·T²·KL(softmax(t/T) ‖ softmax(s/T))` where labels exist,
the KD term alone where they do not (T² keeps the soft term's gradients on the scale of the hard one,
Hinton et al. 2015). Embedding and regression: mean squared error to the teacher's outputs.
The teacher's outputs come from the fp32 reference ONNX model, so the student learns the model that is
being served, whatever the source format.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optimizer.data import Dataset
from optimizer.training_spec import FineTune

THREADS = 1  # the optimizer shares its machine (CI, other jobs); tiny batches gain nothing from more


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None, task: str, config: FineTune
) -> torch.Tensor:
    if task != "classification":
        return F.mse_loss(student, teacher)
    t = config.temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean") * t * t
    if labels is None:
        return soft
    return config.alpha * F.cross_entropy(student, labels) + (1 - config.alpha) * soft


def train(
    student: nn.Module,
    data: Dataset,
    teacher_outputs: np.ndarray,
    task: str,
    config: FineTune,
    on_epoch: Callable[[int, float], None] = lambda epoch, loss: None,
) -> float:
    """Train `student` in place on `data` (one input) toward the teacher; returns the last epoch's mean loss."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _train(student, data, teacher_outputs, task, config, on_epoch)
    finally:
        torch.set_num_threads(previous)


def _train(student, data: Dataset, teacher_outputs: np.ndarray, task: str, config: FineTune, on_epoch) -> float:
    torch.manual_seed(config.seed)
    inputs = torch.from_numpy(np.ascontiguousarray(next(iter(data.inputs.values()))))
    teacher = torch.from_numpy(np.ascontiguousarray(teacher_outputs, dtype=np.float32))
    labels = None
    if task == "classification" and data.labels is not None:
        labels = torch.from_numpy(data.labels.astype(np.int64))
    optimizer = torch.optim.Adam(student.parameters(), lr=config.learning_rate)
    # cosine decay: the last epochs settle instead of bouncing, which is what a short fine-tune needs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    generator = torch.Generator().manual_seed(config.seed)
    mean = 0.0
    student.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for batch in torch.randperm(len(inputs), generator=generator).split(config.batch_size):
            optimizer.zero_grad()
            loss = distillation_loss(student(inputs[batch]), teacher[batch], None if labels is None else labels[batch], task, config)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        schedule.step()
        mean = total / max(count, 1)
        on_epoch(epoch + 1, mean)
    student.eval()
    return mean
