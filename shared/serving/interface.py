"""What every served model is to the doors: a manifest (name, version, signature) and `answer`.

    LocalModel     onnxruntime in this process (serving/local.py)
    BatchingModel  a LocalModel whose concurrent requests share runs (serving/batcher.py; the server only)
    RemoteModel    the same signature answered by an endpoint, degraded by a local variant (remote/model.py)

The data plane checks every request against the manifest before it reaches `answer`, so a model only
runs tensors that fit its signature; it never decodes, validates or encodes anything itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from shared.artifact.manifest import Manifest, TensorSpec
from shared.serving.text import TextEncoder


@runtime_checkable
class ServedModel(Protocol):
    manifest: Manifest
    text: TextEncoder | None  # text models: the tokenizer their BYTES input goes through (it counts tokens too)

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def provider(self) -> str:
        """Where it runs: an onnxruntime execution provider, or `remote:<endpoint>`."""
        ...

    def answer(self, inputs: dict[str, np.ndarray], *, may_defer: bool = False) -> tuple[dict[str, np.ndarray], dict]:
        """Every output by name, and the response's `parameters` (a degraded answer says so there).
        `may_defer`: a request too large to answer now may go asynchronous (raises `Deferred`)."""
        ...

    def poll(self, inference_id: str) -> tuple[int, bytes, dict[str, str]]:
        """An asynchronous request's status, body and headers; NotFound for models that take none."""
        ...


class Described:
    """Name, version and signature read off `self.manifest`: what every model shares."""

    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.outputs
