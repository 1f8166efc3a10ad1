"""One model served in this process: its onnxruntime session and, for text models, its tokenizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from shared.artifact import inflate
from shared.artifact.files import resolve_inside
from shared.artifact.loading import Artifact
from shared.artifact.manifest import Manifest
from shared.errors import ArtifactError, InvalidTensor, NotFound, translate_onnxruntime_error
from shared.serving.interface import Described
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
class LocalModel(Described):
    manifest: Manifest
    session: ort.InferenceSession
    text: TextEncoder | None = None  # text models: the BYTES input becomes the graph's token tensors

    def __post_init__(self) -> None:
        self._graph_outputs = [o.name for o in self.session.get_outputs()]

    @classmethod
    def load(cls, artifact: Artifact, cache_dir: str, threads: int = 0, providers: str = "") -> LocalModel:
        chosen = choose_providers(providers)
        path = inflate.model_path(artifact, cache_dir)  # the file itself, or its inflated copy when it ships compressed
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)
        model = cls(manifest=artifact.manifest, session=session, text=text_encoder(artifact))
        missing = [o.name for o in artifact.manifest.outputs if o.name not in model.graph_outputs()]
        if missing:
            raise ArtifactError(f"{artifact.folder}: {artifact.manifest.model_file} lacks output(s) {', '.join(missing)} of the signature")
        if model.provider != chosen[0]:
            # onnxruntime-gpu without a usable driver/cuDNN drops to CPU with only its own C++ log line.
            log.warning("model %s asked for %s but onnxruntime runs it on %s", model.name, chosen[0], model.provider)
        log.info("loaded model %s version %s with %s", model.name, model.version, model.provider)
        return model

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def graph_outputs(self) -> list[str]:
        return list(self._graph_outputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on tensors the data plane has checked against the signature."""
        if self.text is not None:
            feed = self.text.encode(inputs[self.text.config.input])
        else:
            feed = {
                spec.name: _onnx_strings(inputs[spec.name], spec.name) if spec.datatype == "BYTES" else inputs[spec.name]
                for spec in self.inputs
            }
        try:
            results = self.session.run(None, feed)
        except Exception as exc:  # onnxruntime raises its own pybind types only
            raise translate_onnxruntime_error(exc) from None
        return dict(zip(self._graph_outputs, results))

    def answer(self, inputs: dict[str, np.ndarray], *, may_defer: bool = False) -> tuple[dict[str, np.ndarray], dict]:
        return self.predict(inputs), {}

    def poll(self, inference_id: str) -> tuple[int, bytes, dict[str, str]]:
        raise NotFound(f"model {self.name!r} runs in this function and takes no asynchronous requests")


def text_encoder(artifact: Artifact) -> TextEncoder | None:
    """The artifact's tokenizer when it is a text model (manifest `extra.text`), else None."""
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
        raise ArtifactError(
            f"model {artifact.manifest.name!r} takes text: the runtime needs the tokenizers package (slimserve[text])"
        ) from None


def _onnx_strings(array: np.ndarray, name: str) -> np.ndarray:
    """ONNX strings are UTF-8 text: onnxruntime would turn a `bytes` element into its repr ("b'...'")."""
    try:
        return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(array)
    except UnicodeDecodeError:
        raise InvalidTensor(f"input {name!r}: BYTES elements must be UTF-8 text for this model") from None
