"""The AWS Lambda zip: runtime wheels for the target machine + functions/aws + shared + artifact/, slimmed,
precompiled for the target interpreter, zipped deterministically, checked against Lambda's limits.

Layout at the zip root, which Lambda puts on sys.path as /var/task: the wheels' packages, `functions/`,
`shared/`, `artifact/` (where the handler looks by default) and a `slimserve-<v>.dist-info` so the server
metadata reports the version. Handlers: functions/aws/handler.http and functions/aws/handler.batch.
"""

from __future__ import annotations

import hashlib
import json
import platform as host
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from infra.limits import platform
from optimizer import bundle_sagemaker
from optimizer.bundle import pack, probe, reuse, sizes, wheels
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
from optimizer.bundle.slim import slim
from optimizer.bundle.wheels import wheel_cache
from optimizer.errors import CliError

TARGET = "aws-lambda"
ZIP_NAME = "slimserve.zip"
TASK_ROOT = "/var/task"
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def build(artifact: Path, out: Path, opts: Options) -> dict:
    limits = platform(TARGET)
    with tempfile.TemporaryDirectory(prefix="slimserve-bundle-") as tmp_name:
        tmp = Path(tmp_name)
        stage, site = tmp / "stage", tmp / "site"
        manifest, location = copy_artifact(artifact, stage / "artifact", opts.fetch_from)
        copy_code(stage, "aws")
        _write_own_metadata(stage)
        pins = runtime_pins(TARGET, opts.python, opts.arch, tokenizer=needs_tokenizer(manifest))
        python = pack.find_python(opts.python)
        inputs_sha256 = reuse.inputs_digest(stage, pins, opts, precompiled=python is not None)
        previous = reuse.previous_build(out, ZIP_NAME, inputs_sha256)
        if previous is not None:
            return _reused(out, previous, opts)
        opts.say(f"installing {len(pins)} wheels for cp{opts.python.replace('.', '')} manylinux {opts.arch}: " + ", ".join(map(str, pins)))
        wheels.install(pins, site, arch=opts.arch, python=opts.python, cache=wheel_cache(opts.wheel_cache))
        removed = slim(site, sorted(stage.rglob("*.py")))
        part_of = {sizes.contributor(n): "code" for n, _ in pack.files_of(stage)}
        part_of.update({sizes.contributor(f"artifact/{n}"): "model" for n, _ in pack.files_of(stage / "artifact")})
        part_of["__pycache__/"] = "runtime wheels"  # bytecode of the wheels' top-level modules (typing_extensions...)
        for entry in sorted(site.iterdir()):
            part_of[entry.name + ("/" if entry.is_dir() else "")] = "runtime wheels"
            shutil.move(str(entry), stage / entry.name)

        if python is None:
            opts.warn(f"no python{opts.python} here: no precompiled .pyc (slower cold start), and no probe")
        else:
            pack.compile_tree(python, stage, TASK_ROOT)
        # A bundle whose model is fetched answers its probe from the artifact folder here, not from storage.
        answer = _probe(python, stage, manifest, opts, local_artifact=artifact if location else None)

        zipped = tmp / ZIP_NAME
        cache = wheel_cache(opts.wheel_cache)
        pack.write_zip(stage, zipped, cache.parent / "deflate", lambda n: part_of[sizes.contributor(n)] == "runtime wheels")
        measured = sizes.measure_zip(zipped, part_of)
        opts.say(sizes.table(measured, limits, opts.direct_upload))
        sizes.check(measured, limits, opts.direct_upload)  # DoesNotFit: nothing is written to --out
        warnings = [] if opts.direct_upload else sizes.direct_upload_warnings(measured, limits)

        prepare_out(out)
        shutil.move(str(zipped), out / ZIP_NAME)
    endpoint_model = _endpoint_model(artifact, manifest, out, opts)
    report = {
        "target": TARGET,
        "arch": opts.arch,
        "python": opts.python,
        "zip": ZIP_NAME,
        "sha256": hashlib.sha256((out / ZIP_NAME).read_bytes()).hexdigest(),
        "inputs_sha256": inputs_sha256,  # what optimizer/bundle/reuse.py compares to skip an identical rebuild
        "direct_upload": opts.direct_upload,
        "direct_upload_limit_bytes": min((x.bytes for x in limits.direct_upload_limits()), default=None),
        "warnings": warnings,
        "artifact": artifact_record(artifact, manifest, location, endpoint_model),
        "tokenizer": needs_tokenizer(manifest),
        "precompiled": python is not None,
        "probe": answer,
        "pins": [str(p) for p in pins],
        "sizes": measured.to_dict(),
        "removed": [vars(r) for r in removed],
    }
    (out / MARKER).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    opts.say(f"wrote {out / ZIP_NAME} (sha256 {report['sha256'][:16]}...)")
    _tell(report, opts)
    return report


def _reused(out: Path, report: dict, opts: Options) -> dict:
    opts.say(f"reusing {out / ZIP_NAME}: its artifact, code, wheels and options are unchanged (bundle.json inputs_sha256)")
    _tell(report, opts)
    return report


def _endpoint_model(artifact: Path, manifest, out: Path, opts: Options) -> str | None:
    """An endpoint-placed artifact: SageMaker's model.tar.gz beside the zip (the function answers degraded from
    its local fallback, if any)."""
    if manifest.placement != "endpoint":
        return None
    tarball = bundle_sagemaker.build(artifact, out)
    opts.say(f"wrote {tarball} for the SageMaker endpoint (infra/sagemaker/endpoint.yaml, ModelDataUrl)")
    return tarball.name


def _tell(report: dict, opts: Options) -> None:
    for warning in report.get("warnings", []):
        opts.warn(warning)
    tell_artifact(report["artifact"])


def _write_own_metadata(stage: Path) -> None:
    """A one-header dist-info, so `importlib.metadata.version("slimserve")` answers inside the bundle."""
    try:
        version = metadata.version("slimserve")
    except metadata.PackageNotFoundError:
        return
    dist = stage / f"slimserve-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: slimserve\nVersion: {version}\n", encoding="utf-8")


def _probe(python: Path | None, stage: Path, manifest, opts: Options, local_artifact: Path | None = None) -> dict | None:
    """Import the handler from the slimmed folder and answer one request, where this machine can run the
    target's binaries; otherwise say that the bundle went unproven."""
    if python is None or _HOST_ARCH.get(host.machine()) != opts.arch:
        opts.warn(f"cannot run {opts.arch} python{opts.python} here; the bundle was not probed")
        return None
    try:
        env = {"SLIMSERVE_ARTIFACT": str(local_artifact.resolve())} if local_artifact is not None else {}
        runtime = ()
        if manifest.placement == "endpoint":  # readiness only: the endpoint is named, never called
            env.update(SLIMSERVE_ENDPOINT_NAME="slimserve-probe", AWS_DEFAULT_REGION="us-east-1")
            provided = probe.lambda_runtime_path(stage.parent / "var-runtime")  # boto3, which Lambda provides
            if provided is None:
                opts.warn("no boto3 here to stand in for Lambda's; the endpoint-placed bundle was not probed")
                return None
            runtime = (str(provided),)
        out = probe.run(python, stage, probe.infer_event(manifest), env=env, extra_path=runtime)
    except RuntimeError as exc:
        last = [line for line in str(exc).splitlines() if line.strip()][-1]  # the exception, not its traceback
        raise CliError(f"the slimmed bundle does not answer: {last.strip()}") from None
    status = out["response"]["statusCode"]
    if status != 200:
        raise CliError(f"the slimmed bundle answered {status}: {out['response'].get('body', '')[:500]}")
    opts.say(f"probe: a clean python{opts.python} answered 200 in {out['first_answer_s'] * 1000:.0f} ms from the slimmed folder")
    return {"status": status, "first_answer_s": round(out["first_answer_s"], 3)}


def bundle_command(args) -> int:
    from optimizer.bundle import options, out_folder

    build(Path(args.artifact), out_folder(args), options(args))
    return 0
