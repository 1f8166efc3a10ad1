from __future__ import annotations

from pathlib import Path

import pytest

from shared.boot.build import start
from shared.serving.dataplane import DataPlane
from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.batch.models import write_lookup_artifact, write_word_count_artifact
from tests.helpers import write_tiny_artifact


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "tiny": write_tiny_artifact(root / "tiny"),
        "words": write_word_count_artifact(root / "words"),
        "lookup": write_lookup_artifact(root / "lookup"),
    }


@pytest.fixture(scope="module")
def plane(models) -> DataPlane:
    """Both models in one process, as a function serving several artifacts holds them."""
    folders = [str(f) for f in models.values()]
    return start(folders[0], artifact=",".join(folders)).plane
