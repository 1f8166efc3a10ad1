"""What every target's bundle holds besides wheels: our code, the artifact, the out folder, the options."""

from __future__ import annotations

import json
import mmap
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import functions
import shared
from optimizer.errors import CliError, SpecError
from shared.artifact.external_data import external_locations
from shared.artifact.fetch import FETCH_FROM, PIN, is_remote, manifest_digest, pointer, split_pin
from shared.artifact.loading import MANIFEST, load_artifact, read_manifest, resolve_inside
from shared.artifact.manifest import Manifest
from shared.errors import ArtifactError, RecordError
from shared.serving.text import TEXT
from shared.storage import parse

MARKER = "bundle.json"  # written last into --out; its presence is what lets a rebuild clear the folder


@dataclass(frozen=True)
class Options:
    target: str
    arch: str = "x86_64"
    python: str = "3.12"
    wheel_cache: Path | None = None
    quiet: bool = False
    direct_upload: bool = False  # hold the bundle to the limits of a package sent straight to the platform
    fetch_from: str | None = None  # where the function fetches the model from (s3://, gs://, Azure Blob prefix)

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


def shipped_files(manifest: Manifest, folder: Path | None = None, fetched: bool = False) -> list[str]:
    """The artifact files a bundle carries: all listed ones, except weights that never come with the function
    (fetched at cold start, or answered by an endpoint): the model file and the external data it reads, found
    in `folder`. report.md and pareto.png are not listed: not shipped."""
    if not (fetched or manifest.delivery == "fetch" or manifest.placement == "endpoint"):
        return sorted(manifest.files)
    weights = set(manifest.weight_files)
    model = resolve_inside(folder, manifest.model_file) if folder is not None else None
    if model is not None and model.is_file() and model.stat().st_size and not manifest.model_file.endswith((".xz", ".gz")):
        with open(model, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            base = model.resolve().parent.relative_to(folder.resolve())
            weights |= {(base / location).as_posix().removeprefix("./") for location in external_locations(buf)}
    return sorted(set(manifest.files) - weights)


def fetch_location(artifact: Path, manifest: Manifest, fetch_from: str | None) -> str | None:
    """The pinned location the function fetches the model from (`--fetch-from` + `#sha256=<manifest sha256>`),
    None for a bundle that carries its model. One line says what to pass when it is missing or wrong."""
    if manifest.placement == "endpoint":
        if fetch_from:
            raise CliError(f"{artifact} is endpoint-placed: its model runs on the endpoint (model.tar.gz); drop --fetch-from")
        return None
    if not fetch_from:
        if manifest.delivery == "fetch":
            upload = f"slimserve upload {artifact} s3://BUCKET/PREFIX"
            raise CliError(
                f"{artifact} is delivered by fetch (its model does not ride in the bundle): pass --fetch-from "
                f"s3://BUCKET/PREFIX (or gs://, azure://), where `{upload}` puts it"
            )
        return None
    prefix, pin = _split(fetch_from)
    digest = manifest_digest(artifact)
    if pin is not None and pin != digest:
        raise CliError(f"--fetch-from pins {pin[:12]}..., but {artifact}/{MANIFEST} has sha256 {digest[:12]}...")
    return f"{prefix.rstrip('/')}{PIN}{digest}"


def _split(fetch_from: str) -> tuple[str, str | None]:
    try:
        prefix, pin = split_pin(fetch_from.strip())
        if not is_remote(prefix):
            raise RecordError(f"{prefix!r}")
        parse(prefix.rstrip("/") + "/" + MANIFEST)
    except (ArtifactError, RecordError) as exc:
        raise CliError(f"--fetch-from {fetch_from!r}: not a pinnable s3://, gs://, azure:// or Blob prefix ({exc.message})") from None
    return prefix, pin


def copy_artifact(src: Path, dest: Path, fetch_from: str | None = None) -> tuple[Manifest, str | None]:
    """Verify every file's sha256 first (a bundle of a tampered artifact would only fail at cold start). With a
    fetch location, the weights stay behind and fetch.json says where the function finds them."""
    try:
        manifest = read_manifest(src)
        location = fetch_location(src, manifest, fetch_from)
        shipped = shipped_files(manifest, src, fetched=location is not None)
        load_artifact(src, absent_ok=frozenset(manifest.files) - set(shipped))
    except ArtifactError as exc:
        raise SpecError(exc.message) from None
    dest.mkdir(parents=True)
    shutil.copyfile(src / MANIFEST, dest / MANIFEST)
    for name in shipped:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dest / name)
    if location is not None:
        (dest / FETCH_FROM).write_text(json.dumps(pointer(location)) + "\n", encoding="utf-8")
    return manifest, location


def artifact_record(artifact: Path, manifest: Manifest, location: str | None, endpoint_model: str | None = None) -> dict:
    """bundle.json's `artifact`: what was bundled, and where the rest of it is."""
    record = {
        "name": manifest.name,
        "version": manifest.version,
        "manifest_sha256": manifest_digest(artifact),
        "placement": manifest.placement,
        "delivery": "fetch" if location else "bundle",
    }
    if location:
        record["fetch_from"] = location  # what the function's SLIMSERVE_ARTIFACT resolves to (artifact/fetch.json)
    if endpoint_model:
        record["endpoint_model"] = endpoint_model
    return record


def tell_artifact(record: dict) -> None:
    print(f"slimserve: artifact manifest sha256 {record['manifest_sha256']} (the pin of a copy fetched from object storage)")
    if record.get("fetch_from"):
        where = f"{record['fetch_from']} (artifact/fetch.json)"
        print(
            f"slimserve: the function fetches its model at cold start from {where}; upload it there: slimserve upload ARTIFACT_DIR PREFIX"
        )


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
