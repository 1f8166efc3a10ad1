"""What every target's bundle holds besides wheels: our code, the artifact, the out folder, the options."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import functions
import shared
from optimizer.errors import CliError, SpecError
from shared.artifact.loading import MANIFEST, load_artifact, read_manifest
from shared.errors import ArtifactError
from shared.artifact.manifest import Manifest
from shared.serving.text import TEXT

MARKER = "bundle.json"  # written last into --out; its presence is what lets a rebuild clear the folder


@dataclass(frozen=True)
class Options:
    target: str
    arch: str = "x86_64"
    python: str = "3.12"
    wheel_cache: Path | None = None
    quiet: bool = False
    direct_upload: bool = False  # hold the bundle to the limits of a package sent straight to the platform

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        print(f"slimserve: warning: {text}", file=sys.stderr, flush=True)  # even with --quiet


def needs_tokenizer(manifest: Manifest) -> bool:
    """Text models name their tokenizer under extra.text.tokenizer (shared/serving/text.py) and ship it in the
    artifact; either sign adds `tokenizers` to the runtime. Other models never carry it."""
    text = manifest.extra.get(TEXT)
    named = isinstance(text, dict) and bool(text.get("tokenizer"))
    return named or any(Path(name).name == "tokenizer.json" for name in manifest.files)


def shipped_files(manifest: Manifest) -> list[str]:
    """The artifact files a bundle carries: all listed ones, except weights that never run in the function
    (fetched at cold start, or answered by an endpoint). report.md and pareto.png are not listed: not shipped."""
    skip = {manifest.model_file} if manifest.delivery == "fetch" or manifest.placement == "endpoint" else set()
    return sorted(set(manifest.files) - skip)


def copy_artifact(src: Path, dest: Path) -> Manifest:
    """Verify every file's sha256 first (a bundle of a tampered artifact would only fail at cold start)."""
    try:
        manifest = read_manifest(src)
        load_artifact(src, absent_ok=frozenset(manifest.files) - set(shipped_files(manifest)))
    except ArtifactError as exc:
        raise SpecError(exc.message) from None
    dest.mkdir(parents=True)
    shutil.copyfile(src / MANIFEST, dest / MANIFEST)
    for name in shipped_files(manifest):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dest / name)
    return manifest


def _copy_package(src: Path, dest: Path, *skip: str) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", *skip))


def copy_code(dest: Path, adapter: str) -> None:
    """`functions/__init__.py`, `functions/<adapter>/` and `shared/` (without `shared/server/`: the platform
    serves a function), from the installed project."""
    functions_dir = Path(functions.__file__).parent
    adapter_dir = functions_dir / adapter
    if not adapter_dir.is_dir():
        raise CliError(f"{adapter_dir} is missing: this checkout has no {adapter} adapter yet")
    (dest / "functions").mkdir(parents=True)
    shutil.copyfile(functions_dir / "__init__.py", dest / "functions" / "__init__.py")
    _copy_package(adapter_dir, dest / "functions" / adapter)
    _copy_package(Path(shared.__file__).parent, dest / "shared", "server")


def prepare_out(out: Path) -> None:
    """Empty `out` for a new bundle, but only if it is empty or one of ours: never wipe a user's folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise CliError(f"{out} is not empty and holds no {MARKER}; choose an empty or new --out folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
