"""Reading a data set's `.npz` file, for both loaders: arrays per input (`data`) or texts (`text_data`).

Kept apart from both so that `data`, which hands a transformers source's data to `text_data`, is the only
one of the two that imports the other.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from optimizer.spec import Where

LABELS = "labels"  # the key under which a data file may hold the samples' labels, beside the inputs


def read_npz(path: Path, where: Where) -> dict[str, np.ndarray]:
    """Every array in the file by key; an unreadable file is a SpecError at `where`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise where.error(f"{path.name!r} is not a readable .npz file ({exc})") from None
