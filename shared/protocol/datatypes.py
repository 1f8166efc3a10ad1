"""Tensor datatypes: the Open Inference Protocol names, numpy dtypes and the spec's names, in one table."""

from __future__ import annotations

import numpy as np

from shared.errors import InvalidTensor

# OIP datatype -> numpy dtype. BYTES travels as numpy object arrays of `bytes`.
OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# The spec (model.yaml) speaks numpy's names; `string` is the spec's name for BYTES.
SPEC_TO_OIP: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}

# onnxruntime's NodeArg.type strings -> OIP datatype.
ORT_TO_OIP: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return OIP_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InvalidTensor(f"unknown datatype {datatype!r}; expected one of {', '.join(OIP_TO_NUMPY)}") from None


def oip_datatype(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    for name, dtype in OIP_TO_NUMPY.items():
        if dtype == array.dtype:
            return name
    raise InvalidTensor(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")
