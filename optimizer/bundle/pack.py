"""Bytecode for the target interpreter and a zip that is the same bytes every time it is built.

Precompiled `.pyc` matter on Lambda: /var/task is read-only, so whatever ships without bytecode is compiled
again at every cold start. Checked-hash pycs stay valid whatever the file times are after unzipping, and
they are reproducible (no timestamps inside), which the deterministic zip needs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

from optimizer.errors import CliError

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def find_python(version: str) -> Path | None:
    """An interpreter of exactly `version` (major.minor): `pythonX.Y` on PATH, else one of pyenv's."""
    candidates = []
    if found := shutil.which(f"python{version}"):
        candidates.append(Path(found))
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted((root / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def compile_tree(python: Path, folder: Path, prefix: str) -> None:
    """Compile every .py under `folder` with `python`; recorded paths start at `prefix` (e.g. /var/task), not
    at the temporary build folder, so the bytes do not depend on where the build ran."""
    cmd = [str(python), "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "checked-hash",
           "-s", str(folder), "-p", prefix, str(folder)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CliError(f"compiling the bundle with {python} failed:\n{(done.stdout + done.stderr).strip()[-2000:]}")


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644


def files_of(folder: Path) -> list[tuple[str, Path]]:
    """(archive name, path) of every file under `folder`, in the order the zip stores them."""
    return sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())


def write_zip(folder: Path, dest: Path) -> None:
    """Sorted entries, fixed times and permissions, deflate level 9: same tree in, same bytes out."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, path in files_of(folder):
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3  # unix, so external_attr carries the mode below
            info.external_attr = (stat.S_IFREG | _mode(path)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tmp.replace(dest)
