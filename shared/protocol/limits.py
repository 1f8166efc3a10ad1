"""How much one request may ask for, checked before the runtime allocates it.

A model server's memory is the attacker's lever: a header claiming shape [10**9] of BYTES, a body of
nested brackets that json.loads recurses through, a BYTES element of a gigabyte. Each check here runs on
what is already in hand (the body's length, a tensor's header, a length prefix) before anything sized
by the claim is built, and each message names the setting that bounds it, so an operator knows which
knob to turn and a client knows what it did:

    body bytes        SLIMSERVE_MAX_BODY_BYTES      413  (shared/http/app.py, before the body is read)
    JSON depth        SLIMSERVE_MAX_JSON_DEPTH      400  (a scan of the raw bytes, before json.loads)
    inputs, outputs   SLIMSERVE_MAX_INPUTS          413  (the lists' lengths, before any is decoded)
    elements          SLIMSERVE_MAX_ELEMENTS        413  (each tensor's shape, summed over the request)
    batch             SLIMSERVE_MAX_REQUEST_BATCH   413  (each tensor's first dimension)
    string length     SLIMSERVE_MAX_STRING_BYTES    413  (each BYTES element's length prefix)
    NaN / Inf         SLIMSERVE_NAN_POLICY          400  (per model: manifest `extra.nan_policy`)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from shared.errors import ArtifactError, InvalidTensor, LimitExceeded
from shared.protocol import jsontext

NAN_POLICIES = ("allow", "reject")


@dataclass(frozen=True)
class Limits:
    max_elements: int = 4_194_304
    max_request_batch: int = 1024
    max_string_bytes: int = 65_536
    max_json_depth: int = 32
    max_inputs: int = 64

    elements_setting: str = "SLIMSERVE_MAX_ELEMENTS"

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(
            max_elements=settings.max_elements,
            max_request_batch=settings.max_request_batch,
            max_string_bytes=settings.max_string_bytes,
            max_json_depth=settings.max_json_depth,
            max_inputs=settings.max_inputs,
        )

    @classmethod
    def for_batch(cls, settings) -> Limits:
        """Batch inputs are files: larger, and of any length (they run in chunks of rows); the rest as HTTP."""
        return replace(
            cls.from_settings(settings),
            max_elements=settings.batch_max_elements,
            max_request_batch=2**62,
            elements_setting="SLIMSERVE_BATCH_MAX_ELEMENTS",
        )

    def check_json_depth(self, raw: bytes) -> None:
        jsontext.check_depth(raw, self.max_json_depth)

    def check_count(self, count: int, what: str) -> None:
        if count > self.max_inputs:
            raise LimitExceeded(f"request has {count:,} {what}, over SLIMSERVE_MAX_INPUTS={self.max_inputs:,}")

    def check_shape(self, name: str, shape: list[int] | tuple[int, ...], elements_so_far: int = 0) -> int:
        """Elements of the request so far including this tensor; raises when a limit is passed."""
        if shape and shape[0] > self.max_request_batch:
            raise LimitExceeded(f"tensor {name!r} has a batch of {shape[0]:,}, over SLIMSERVE_MAX_REQUEST_BATCH={self.max_request_batch:,}")
        count = math.prod(shape)
        if count > self.max_elements:
            raise LimitExceeded(f"tensor {name!r} has {count:,} elements, over {self.elements_setting}={self.max_elements:,}")
        total = elements_so_far + count
        if total > self.max_elements:
            raise LimitExceeded(
                f"tensor {name!r} brings the request to {total:,} elements, over {self.elements_setting}={self.max_elements:,}"
            )
        return total

    def check_tensors(self, inputs: dict[str, np.ndarray]) -> None:
        """The same bounds on tensors decoded elsewhere (an .npy body), whose size the body already bounded."""
        total = 0
        for name, value in inputs.items():
            total = self.check_shape(name, value.shape, total)

    def check_string(self, name: str, length: int) -> None:
        if length > self.max_string_bytes:
            raise LimitExceeded(
                f"tensor {name!r} has a BYTES element of {length:,} bytes, over SLIMSERVE_MAX_STRING_BYTES={self.max_string_bytes:,}"
            )


def nan_policy(setting: str, extra: dict, model_name: str) -> str:
    """The setting when given, else the manifest's `extra.nan_policy`, else `allow`."""
    policy = setting or extra.get("nan_policy") or "allow"
    if policy not in NAN_POLICIES:
        source = "SLIMSERVE_NAN_POLICY" if setting else f"model {model_name!r}: manifest extra.nan_policy"
        raise ArtifactError(f"{source}={policy!r} must be one of {', '.join(NAN_POLICIES)}")
    return policy


def reject_non_finite(model_name: str, inputs: dict[str, np.ndarray]) -> None:
    for name, value in inputs.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InvalidTensor(
                f"input {name!r} holds NaN or Inf, which model {model_name!r} rejects "
                "(nan_policy reject: SLIMSERVE_NAN_POLICY or the manifest's extra.nan_policy)"
            )
