"""What a compression step is given (`StepContext`) and promises (`Step`), below the registry.

The registry (`candidates`) imports the step modules (`precision`, `sparse`, `torch_steps`) to list their
steps, and those steps take a `StepContext`: defined in the registry, it had `precision` importing its own
importer. Here, both import it and the arrows point one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from optimizer.data import Dataset
from optimizer.progress import QUIET, Progress
from optimizer.spec import Spec


@dataclass(frozen=True)
class StepContext:
    """What a step may read besides its input model: the spec, calibration data, a scratch folder."""

    spec: Spec
    calibration: Dataset
    workdir: Path
    progress: Progress = QUIET  # bars for the slow steps: calibration, fine-tuning


class Step(Protocol):
    def apply(self, src: Path, dst: Path, ctx: StepContext) -> None: ...
