"""GCP and Azure: the source folder the platform builds itself (its own `pip install -r requirements.txt`).

    gcp-functions    main.py (the entry module GCF loads from the source root: re-exports `http` and
                     `on_storage_event` of functions/gcp/main.py), requirements.txt, functions/, shared/, artifact/
    azure-functions  function_app.py (the v2 programming model's entry at the app root: re-exports `app` of
                     functions/azure/function_app.py), host.json, requirements.txt, functions/, shared/, artifact/

Deploy: `gcloud functions deploy NAME --gen2 --runtime python312 --source DIR --entry-point http ...`;
`func azure functionapp publish APP --python` from DIR (remote build). The size check adds to the sources
what the platform will install: the requirements resolved for the target (manylinux, the target Python),
unslimmed, because the platform installs them as they are.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from infra.limits import platform
from optimizer.bundle import pack, sizes, wheels
from optimizer.bundle.common import (
    MARKER,
    Options,
    artifact_record,
    copy_artifact,
    copy_code,
    needs_tokenizer,
    prepare_out,
    tell_artifact,
)
from optimizer.bundle.requirements import runtime_pins
from optimizer.bundle.wheels import wheel_cache
from optimizer.errors import CliError

SHIMS = {
    "gcp-functions": (
        "gcp",
        "main.py",
        '"""GCF loads `main.py` from the source root; the adapter lives in functions/gcp/main.py."""\n\n'
        "from functions.gcp.main import http, on_storage_event  # noqa: F401\n",
    ),
    "azure-functions": (
        "azure",
        "function_app.py",
        '"""The Python v2 model indexes `function_app.py` at the app root; the adapter is functions/azure/function_app.py."""\n\n'
        "from functions.azure.function_app import app  # noqa: F401\n",
    ),
}
MODULES_PART = "runtime wheels"


def build(artifact: Path, out: Path, opts: Options) -> dict:
    adapter, entry, shim = SHIMS[opts.target]
    limits = platform(opts.target)
    with tempfile.TemporaryDirectory(prefix="slimserve-source-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "source"
        manifest, location = copy_artifact(artifact, source / "artifact", opts.fetch_from)
        copy_code(source, adapter)
        (source / entry).write_text(shim, encoding="utf-8")
        if adapter == "azure":
            host_json = source / "functions" / "azure" / "host.json"
            if not host_json.is_file():
                raise CliError("functions/azure/host.json is missing: Azure Functions needs host.json at the app root")
            shutil.copyfile(host_json, source / "host.json")
        pins = runtime_pins(opts.target, opts.python, opts.arch, tokenizer=needs_tokenizer(manifest), follow=False)
        requirements = "".join(f"{p}\n" for p in pins)
        (source / "requirements.txt").write_text(requirements, encoding="utf-8")

        opts.say(f"measuring what the platform installs from requirements.txt ({', '.join(map(str, pins))})")
        modules = tmp / "modules"
        wheels.install(pins, modules, arch=opts.arch, python=opts.python, cache=wheel_cache(opts.wheel_cache), resolve=True)
        installed = [_item(entry_path) for entry_path in sorted(modules.iterdir()) if entry_path.name != "bin"]

        zipped = tmp / "source.zip"
        pack.write_zip(source, zipped)  # what gcloud / func upload; measured, not kept
        part_of = {sizes.contributor(n): "code" for n, _ in pack.files_of(source)}
        part_of.update({sizes.contributor(f"artifact/{n}"): "model" for n, _ in pack.files_of(source / "artifact")})
        measured = sizes.measure_zip(zipped, part_of, extra=installed)
        opts.say(sizes.table(measured, limits, opts.direct_upload))
        sizes.check(measured, limits, opts.direct_upload)

        prepare_out(out)
        for item in sorted(source.iterdir()):
            shutil.move(str(item), out / item.name)
        digest = hashlib.sha256(zipped.read_bytes()).hexdigest()
    report = {
        "target": opts.target,
        "arch": opts.arch,
        "python": opts.python,
        "entry": entry,
        "source_zip_sha256": digest,
        "artifact": artifact_record(artifact, manifest, location),
        "tokenizer": needs_tokenizer(manifest),
        "requirements": [str(p) for p in pins],
        "sizes": measured.to_dict(),
    }
    (out / MARKER).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    opts.say(f"wrote {out} ({entry}, requirements.txt, functions/, shared/, artifact/)")
    tell_artifact(report["artifact"])
    return report


def _item(path: Path) -> sizes.Item:
    """An installed distribution folder (or module) as one contributor; not in the source zip, so zipped 0."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    name = path.name + ("/" if path.is_dir() else "")
    return sizes.Item(f"{name} (installed by the platform)", MODULES_PART, len(files), sum(p.stat().st_size for p in files), 0)


def bundle_command(args) -> int:
    from optimizer.bundle import options, out_folder

    build(Path(args.artifact), out_folder(args), options(args))
    return 0
