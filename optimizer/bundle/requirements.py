"""What the runtime needs on a target, pinned to what this environment runs (so a bundle is reproducible).

The set is read from slimserve's own metadata: the base dependencies plus the target's extra (`aws`, `gcp`,
`azure`), followed through their requirements with the markers evaluated for the *target* interpreter and
machine, not this one. Two kinds of requirement are cut with their whole subtree:

- what the platform already provides (Lambda's python runtime ships boto3/botocore/s3transfer);
- what a dependency declares but the runtime never imports: onnxruntime lists flatbuffers, packaging and
  protobuf for its converters and quantization tools (removed from the bundle as well), not for
  `InferenceSession`; tokenizers lists huggingface_hub (and through it hf_xet, httpx...) for
  `Tokenizer.from_pretrained`, which downloads, while the runtime only calls `Tokenizer.from_file`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import metadata

from packaging.markers import Marker
from packaging.requirements import Requirement

from optimizer.errors import CliError

PROJECT = "slimserve"

# Each target's platform adapter extra (pyproject.toml) and what its platform already has installed.
EXTRAS = {"aws-lambda": "aws", "gcp-functions": "gcp", "azure-functions": "azure"}
PROVIDED_BY_PLATFORM = {"aws-lambda": frozenset({"boto3", "botocore", "s3transfer"})}

NEVER_IMPORTED = frozenset({"flatbuffers", "packaging", "protobuf", "sympy", "coloredlogs", "huggingface-hub"})
# `slimserve serve`'s HTTP server (base dependencies, so a plain install serves): a function is served by its
# platform, so neither these nor shared/server/ enter a function bundle (optimizer/bundle/common.py).
SERVER_ONLY = frozenset({"gunicorn", "waitress"})

# tokenizers joins the runtime only for text models (issue 3 ships `tokenizer.json` in the artifact); when this
# environment has it installed, its version wins. The fallback is the version the runtime weight was measured with.
TOKENIZERS = "tokenizers"
FALLBACK_PINS = {TOKENIZERS: "0.23.3"}


@dataclass(frozen=True)
class Pin:
    name: str  # normalized distribution name
    version: str
    with_deps: bool = True  # False: its declared dependencies are not followed into the bundle (never imported)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def target_environment(python: str, arch: str) -> dict[str, str]:
    """PEP 508 marker variables of the target (Linux, CPython `python`, `arch`), not of this interpreter."""
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
    }


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _applies(req: Requirement, env: dict[str, str], extra: str = "") -> bool:
    return req.marker is None or Marker(str(req.marker)).evaluate({**env, "extra": extra})


def top_level(target: str, python: str, arch: str) -> list[Requirement]:
    """slimserve's base dependencies plus the target's extra, as declared (not yet pinned)."""
    declared = metadata.requires(PROJECT) or []
    env = target_environment(python, arch)
    return [r for r in map(Requirement, declared) if _applies(r, env, EXTRAS[target])]


def runtime_pins(target: str, python: str, arch: str, *, tokenizer: bool, follow: bool = True) -> list[Pin]:
    """The pinned runtime set for `target`. `follow=False` stops at the top level (a requirements.txt that the
    platform resolves itself); `follow=True` walks the whole tree (wheels we install ourselves)."""
    env = target_environment(python, arch)
    cut = PROVIDED_BY_PLATFORM.get(target, frozenset()) | NEVER_IMPORTED | SERVER_ONLY
    pins: dict[str, Pin] = {}
    queue = top_level(target, python, arch)
    if tokenizer:
        pins[TOKENIZERS] = Pin(TOKENIZERS, _version_of(TOKENIZERS), with_deps=False)
    while queue:
        req = queue.pop(0)
        name = normalize(req.name)
        if name in pins or name in cut:
            continue
        version = _version_of(name)
        if not req.specifier.contains(version, prereleases=True):
            raise CliError(f"{name} {version} is installed here but {req} is required; reinstall the environment")
        pins[name] = Pin(name, version)
        if follow:
            # `req.extras` (e.g. tritonclient[http]) would pull more in; the runtime declares none.
            queue += [r for r in map(Requirement, metadata.requires(name) or []) if _applies(r, env)]
    return sorted(pins.values(), key=lambda p: p.name)


def _version_of(name: str) -> str:
    version = installed_version(name) or FALLBACK_PINS.get(name)
    if version is None:
        raise CliError(f"{name} is part of the runtime but not installed in {sys.prefix}; install the project's extras")
    return version
