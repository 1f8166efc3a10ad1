"""`slimserve bundle ARTIFACT --target sagemaker`: the `model.tar.gz` SageMaker unpacks into /opt/ml/model.

The artifact's files sit at the archive root (manifest.json and every file it lists, nothing else), so the
endpoint container loads /opt/ml/model as the artifact it is, sha256 checks included. The archive is the
same bytes for the same artifact: sorted entries, mtime 0, uid/gid 0 and no owner names, a gzip header
without a file name or time. Upload it and pass its s3:// URL as `ModelDataUrl` to infra/sagemaker/endpoint.yaml.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from optimizer.errors import SpecError
from shared.artifact.loading import MANIFEST, load_artifact, resolve_inside
from shared.errors import ArtifactError

ARCHIVE = "model.tar.gz"


def build(artifact_dir: str | Path, out_dir: str | Path) -> Path:
    try:
        artifact = load_artifact(artifact_dir)  # a broken artifact must fail here, not on the endpoint
    except ArtifactError as exc:
        raise SpecError(exc.message) from None
    names = sorted({MANIFEST, *artifact.manifest.files})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / ARCHIVE
    partial = dest.with_name(dest.name + ".partial")
    with open(partial, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in names:
                    _add(tar, name, resolve_inside(artifact.folder, name))
    partial.replace(dest)
    return dest


def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    data = path.read_bytes()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def bundle_command(args) -> int:
    dest = build(args.artifact, args.out or "dist/sagemaker")
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    print(f"slimserve: wrote {dest} ({dest.stat().st_size} bytes, sha256 {digest[:16]}...)")
    print(
        f"slimserve: upload it (aws s3 cp {dest} s3://BUCKET/KEY) and deploy infra/sagemaker/endpoint.yaml with ModelDataUrl=s3://BUCKET/KEY"
    )
    return 0
