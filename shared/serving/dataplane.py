"""The one data plane: every door (HTTP, SageMaker's routes, batch records of every format, storage and
queue events) reaches a model through here, so every request passes the same checks before it runs:

    decode       OIP v2 bodies (JSON or binary) ┐
    from_arrays  .npy/.npz/.jsonl, x-npy bodies ┴─> check: signature, limits, NaN policy, outputs
    run          the model, in chunks of `max_rows` when a request is longer (memory stays bounded)
    respond      the outputs asked for, each once

Limits differ by door only where the door differs: batch inputs are files, bigger and of any length
(`Limits.for_batch`); everything else is the same object.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import numpy as np
import onnxruntime as ort

from shared.errors import InvalidTensor
from shared.protocol import codec
from shared.protocol.codec import InferenceRequest, InferenceResponse, RequestedOutput
from shared.protocol.datatypes import oip_datatype
from shared.protocol.limits import Limits, nan_policy, reject_non_finite
from shared.serving import signature
from shared.serving.interface import ServedModel
from shared.serving.repository import ModelRepository

EXTENSIONS = ["binary_tensor_data"]


def _slimserve_version() -> str:
    try:
        return package_version("slimserve")
    except PackageNotFoundError:  # inside a bundle, where no dist-info ships
        return "bundled"


class DataPlane:
    def __init__(self, repository: ModelRepository, limits: Limits | None = None, nan_setting: str = ""):
        self.repository = repository
        self.limits = limits or Limits()
        # Resolved once per model at start, so a bad policy fails the cold start, not a request.
        self._reject_nan = {(m.name, m.version) for m in repository if nan_policy(nan_setting, m.manifest.extra, m.name) == "reject"}
        self._server_metadata = {
            "name": "slimserve",
            "version": _slimserve_version(),
            "extensions": EXTENSIONS,
            "onnxruntime": ort.__version__,
            "providers": sorted({m.provider for m in repository}),
        }

    # --- what the server and its models are -------------------------------------------------------

    def server_metadata(self) -> dict:
        return self._server_metadata

    def ready(self) -> bool:
        return len(self.repository) > 0

    def model(self, name: str, version: str | None = None) -> ServedModel:
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        model = self.repository.get(name, version)
        m = model.manifest
        return {
            "name": m.name,
            "versions": [m.version],
            "platform": "onnxruntime_onnx",
            "inputs": [t.to_dict() for t in m.inputs],
            "outputs": [t.to_dict() for t in m.outputs],
            "parameters": {"task": m.task, "variant": m.chosen.candidate, "provider": model.provider, "placement": m.placement},
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.repository.get(name, version)
        return True

    # --- requests in ---------------------------------------------------------------------------------

    def decode(self, model: ServedModel, body: bytes, header_length: str | None, limits: Limits | None = None) -> InferenceRequest:
        """An OIP v2 infer body; each tensor's header is checked before its data is read."""
        limits = limits or self.limits
        request = codec.decode_request(body, header_length, lambda n, d, s: signature.check_input(model.manifest, n, d, s), limits)
        self.check(model, request, limits)
        return request

    def from_arrays(
        self,
        model: ServedModel,
        arrays: dict[str, np.ndarray],
        limits: Limits | None = None,
        outputs: list[RequestedOutput] | None = None,
        id: str | None = None,
    ) -> InferenceRequest:
        """Tensors some other door decoded (.npy, .npz, .jsonl, an x-npy body), as a checked request."""
        limits = limits or self.limits
        limits.check_count(len(arrays), "inputs")
        for name, value in arrays.items():
            try:
                datatype = oip_datatype(value)
            except InvalidTensor:
                raise InvalidTensor(f"input {name[:64]!r} has numpy dtype {value.dtype}, which no model input can take") from None
            signature.check_input(model.manifest, name, datatype, value.shape)
            if datatype == "BYTES":
                for item in value.reshape(-1):
                    limits.check_string(name, len(item))
        request = InferenceRequest(inputs=dict(arrays), outputs=outputs, id=id)
        self.check(model, request, limits)
        return request

    def check(self, model: ServedModel, request: InferenceRequest, limits: Limits | None = None) -> None:
        """What every request passes, whatever door it came through."""
        limits = limits or self.limits
        signature.check_complete(model.manifest, list(request.inputs))
        limits.check_tensors(request.inputs)
        if request.outputs is not None:
            limits.check_count(len(request.outputs), "outputs")
        signature.select_outputs(model.manifest, request.outputs, request.binary_output)
        if (model.name, model.version) in self._reject_nan:
            reject_non_finite(model.name, request.inputs)

    # --- running and answering ---------------------------------------------------------------------

    def run(
        self, model: ServedModel, inputs: dict[str, np.ndarray], *, max_rows: int | None = None, may_defer: bool = False
    ) -> tuple[dict, dict]:
        """Every output of `model` on checked `inputs`; longer than `max_rows`, in runs of that many rows."""
        rows = _rows(model, inputs)
        if max_rows is None or rows is None or rows <= max_rows:
            return model.answer(inputs, may_defer=may_defer)
        parts, parameters = [], {}
        for start in range(0, rows, max_rows):
            outputs, params = model.answer({n: v[start : start + max_rows] for n, v in inputs.items()})
            if any(v.ndim == 0 or v.shape[0] != min(max_rows, rows - start) for v in outputs.values()):
                return model.answer(inputs)  # outputs not batch-major: the rows cannot be cut apart
            parts.append(outputs)
            parameters.update(params)  # a degraded chunk marks the whole answer degraded
        return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}, parameters

    def respond(self, model: ServedModel, request: InferenceRequest, outputs: dict[str, np.ndarray], parameters: dict) -> InferenceResponse:
        wanted = signature.select_outputs(model.manifest, request.outputs, request.binary_output)
        return InferenceResponse(
            model_name=model.name,
            model_version=model.version,
            outputs=[(n, outputs[n], binary) for n, binary in wanted],
            id=request.id,
            parameters=parameters,
        )

    def infer(self, model: ServedModel, request: InferenceRequest, *, may_defer: bool = False) -> InferenceResponse:
        outputs, parameters = self.run(model, request.inputs, may_defer=may_defer)
        return self.respond(model, request, outputs, parameters)

    def tokens_fed(self, model: ServedModel, texts: np.ndarray) -> list[int]:
        """How many tokens each text reaches a text model as, by its own tokenizer (after truncation)."""
        if model.text is None:
            raise InvalidTensor(f"model {model.name!r} takes no text: it has no tokenizer to count tokens with")
        return model.text.lengths(texts)

    def infer_bytes(self, name: str, version: str | None, body: bytes, header_length: str | None) -> tuple[bytes, dict]:
        """The HTTP infer route: body in, body and headers out (a large request to an endpoint may defer)."""
        model = self.repository.get(name, version)
        return codec.encode_response(self.infer(model, self.decode(model, body, header_length), may_defer=True))


def _rows(model: ServedModel, inputs: dict[str, np.ndarray]) -> int | None:
    """The shared first dimension when the model's first axis is dynamic (so rows may run apart), else None."""
    if not all(spec.shape and spec.shape[0] == -1 for spec in model.manifest.inputs):
        return None
    rows = {v.shape[0] for v in inputs.values() if v.ndim}
    return rows.pop() if len(rows) == 1 else None
