"""Protocol-neutral data plane: what every transport (WSGI, batch, endpoint) asks of the models."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as package_version

import onnxruntime as ort

from shared.protocol import codec
from shared.protocol.codec import InferenceRequest, InferenceResponse
from shared.errors import InvalidTensor
from shared.protocol.limits import Limits, nan_policy, reject_non_finite
from shared.serving.local import Model
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

    def server_metadata(self) -> dict:
        return self._server_metadata

    def ready(self) -> bool:
        return len(self.repository) > 0

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

    def decode(self, model: Model, body: bytes, header_length: str | None) -> InferenceRequest:
        request = codec.decode_request(body, header_length, model.check_input, self.limits)
        model.check_complete(list(request.inputs))
        return request

    def infer(self, model: Model, request: InferenceRequest) -> InferenceResponse:
        known = model.output_names()
        if request.outputs is None:
            wanted = [(n, request.binary_output) for n in known]
        else:
            wanted = [(o.name, o.binary or request.binary_output) for o in request.outputs]
            unknown = [n for n, _ in wanted if n not in known]
            if unknown:
                raise InvalidTensor(f"unknown output(s) {', '.join(unknown)}; model {model.name!r} has {', '.join(known)}")
        self.limits.check_tensors(request.inputs)  # again for bodies decoded elsewhere (.npy); cheap
        if (model.name, model.version) in self._reject_nan:
            reject_non_finite(model.name, request.inputs)
        results, parameters = model.answer(request.inputs)
        return InferenceResponse(
            model_name=model.name,
            model_version=model.version,
            outputs=[(n, results[n], binary) for n, binary in wanted],
            id=request.id,
            parameters=parameters,
        )

    def infer_bytes(self, name: str, version: str | None, body: bytes, header_length: str | None) -> tuple[bytes, dict]:
        model = self.repository.get(name, version)
        return codec.encode_response(self.infer(model, self.decode(model, body, header_length)))
