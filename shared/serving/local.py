"""One served model: its onnxruntime session, its signature, and the checks every request passes."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from shared.artifact import inflate
from shared.artifact.loading import Artifact, resolve_inside
from shared.protocol.datatypes import OIP_TO_NUMPY
from shared.errors import ArtifactError, InvalidTensor, translate_onnxruntime_error
from shared.artifact.manifest import Manifest, TensorSpec
from shared.serving.text import TextConfig, TextEncoder

log = logging.getLogger("slimserve")


def choose_providers(requested: str = "") -> list[str]:
    """CUDA when onnxruntime has it (the endpoint container), else CPU; an explicit list wins."""
    available = ort.get_available_providers()
    if requested:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        missing = [p for p in wanted if p not in available]
        if missing:
            log.warning("execution providers %s are not available here; using %s", missing, available)
        chosen = [p for p in wanted if p in available]
        return chosen or ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


@dataclass
class Model:
    manifest: Manifest
    session: ort.InferenceSession
    text: TextEncoder | None = None  # text models: the BYTES input becomes the graph's token tensors

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, providers: str = "") -> "Model":
        chosen = choose_providers(providers)
        path = inflate.model_path(artifact)  # the file itself, or its inflated copy when it ships compressed
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)
        model = cls(manifest=artifact.manifest, session=session, text=_text_encoder(artifact))
        if model.provider != chosen[0]:
            # onnxruntime-gpu without a usable driver/cuDNN drops to CPU with only its own C++ log line.
            log.warning("model %s asked for %s but onnxruntime runs it on %s", model.name, chosen[0], model.provider)
        log.info("loaded model %s version %s with %s", model.name, model.version, model.provider)
        return model

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

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on already-decoded tensors checked against the signature."""
        if self.text is not None:
            feed = self.text.encode(inputs[self.text.config.input])
        else:
            feed = {spec.name: _onnx_strings(inputs[spec.name], spec.name) if spec.datatype == "BYTES" else inputs[spec.name] for spec in self.inputs}
        try:
            results = self.session.run(None, feed)
        except Exception as exc:  # onnxruntime raises its own pybind types only
            raise translate_onnxruntime_error(exc) from None
        return {out.name: value for out, value in zip(self.session.get_outputs(), results)}

    def answer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        """Outputs plus the response's `parameters`: none here; a remote model marks degraded answers."""
        return self.predict(inputs), {}

    def check_input(self, name: str, datatype: str, shape: list[int]) -> TensorSpec:
        """Check a tensor's header (before its data is decoded, so a wrong one costs nothing)."""
        spec = next((s for s in self.inputs if s.name == name), None)
        if spec is None:
            expected = ", ".join(s.name for s in self.inputs)
            raise InvalidTensor(f"input {name!r} is not an input of model {self.name!r}; expected {expected}")
        if datatype != spec.datatype:
            raise InvalidTensor(f"input {name!r} has datatype {datatype}, model {self.name!r} expects {spec.datatype}")
        if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
            raise InvalidTensor(f"input {name!r} has shape {list(shape)}, model {self.name!r} expects {list(spec.shape)} (-1 = any)")
        if math.prod(shape) == 0:
            raise InvalidTensor(f"input {name!r} has shape {list(shape)}: an empty tensor")
        return spec

    def check_complete(self, names: list[str]) -> None:
        missing = [s.name for s in self.inputs if s.name not in names]
        if missing:
            raise InvalidTensor(f"model {self.name!r} needs input(s) {', '.join(missing)}")
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise InvalidTensor(f"input(s) {', '.join(sorted(duplicates))} given more than once")

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


def _text_encoder(artifact: Artifact) -> TextEncoder | None:
    config = TextConfig.from_extra(artifact.manifest.extra)
    if config is None:
        return None
    if config.tokenizer not in artifact.manifest.files:  # listed means sha256-checked by load_artifact
        raise ArtifactError(f"manifest: extra.text.tokenizer {config.tokenizer!r} is not listed in files")
    if not any(s.name == config.input and s.datatype == "BYTES" for s in artifact.manifest.inputs):
        raise ArtifactError(f"manifest: extra.text.input {config.input!r} is not a BYTES input of the model")
    try:
        return TextEncoder.load(config, resolve_inside(artifact.folder, config.tokenizer))
    except ImportError:
        raise ArtifactError(f"model {artifact.manifest.name!r} takes text: the runtime needs the tokenizers package (slimserve[text])") from None


def numpy_for(spec: TensorSpec) -> np.dtype:
    return OIP_TO_NUMPY[spec.datatype]


def _onnx_strings(array: np.ndarray, name: str) -> np.ndarray:
    """ONNX strings are UTF-8 text: onnxruntime would turn a `bytes` element into its repr ("b'...'")."""
    try:
        return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(array)
    except UnicodeDecodeError:
        raise InvalidTensor(f"input {name!r}: BYTES elements must be UTF-8 text for this model") from None
