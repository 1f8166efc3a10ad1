"""Bytecode for the target interpreter and a zip that is the same bytes every time it is built.

Precompiled `.pyc` matter on Lambda: /var/task is read-only, so whatever ships without bytecode is compiled
again at every cold start. Checked-hash pycs stay valid whatever the file times are after unzipping, and
they are reproducible (no timestamps inside), which the deterministic zip needs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import subprocess
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from optimizer.errors import CliError


def find_python(version: str) -> Path | None:
    """An interpreter of exactly `version` (major.minor): `pythonX.Y` on PATH, else one of pyenv's."""
    candidates = []
    if found := shutil.which(f"python{version}"):
        candidates.append(Path(found))
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted((root / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def compile_tree(python: Path, folder: Path, prefix: str) -> None:
    """Compile every .py under `folder` with `python`; recorded paths start at `prefix` (e.g. /var/task), not
    at the temporary build folder, so the bytes do not depend on where the build ran.

    One process, fixed hash seed, no -I (it would drop PYTHONHASHSEED): marshal flags an object for reuse
    by its reference count, which depends on what the process compiled before, so `-j` workers that get a
    different share of files each run write different bytes; a set constant's order follows the hash seed.
    """
    cmd = [str(python), "-s", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", "-s", str(folder), "-p", prefix, str(folder)]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise CliError(f"compiling the bundle with {python} failed:\n{(done.stdout + done.stderr).strip()[-2000:]}")


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644


def files_of(folder: Path) -> list[tuple[str, Path]]:
    """(archive name, path) of every file under `folder`, in the order the zip stores them."""
    return sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, as zip stores it
    return packer.compress(data) + packer.flush()


def _deflate_cached(data: bytes, cache: Path | None) -> bytes:
    """Wheels' files are the same bytes build after build: their deflated form is kept by content hash."""
    if cache is None:
        return _deflate(data)
    key = cache / f"{hashlib.sha256(data).hexdigest()}-{LEVEL}-{zlib.ZLIB_RUNTIME_VERSION}"
    if key.is_file():
        return key.read_bytes()
    packed = _deflate(data)
    cache.mkdir(parents=True, exist_ok=True)
    partial = key.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(packed)
    partial.replace(key)
    return packed


def write_zip(folder: Path, dest: Path, cache: Path | None = None, cacheable=lambda name: False) -> None:
    """Sorted entries, fixed times (1980-01-01) and permissions (0644/0755), deflate level 9: the same tree
    gives the same bytes. Entries are deflated on a thread pool (zlib releases the GIL), then written in
    order; `cacheable(name)` entries reuse `cache`. zipfile cannot take pre-deflated data, hence the writer."""
    entries = files_of(folder)

    def pack_one(item: tuple[str, Path]) -> tuple[str, int, bytes, int, int]:
        name, path = item
        data = path.read_bytes()
        packed = _deflate_cached(data, cache if cacheable(name) else None)
        return name, _mode(path), packed, len(data), zlib.crc32(data)

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, open(partial, "wb") as fh:
        central = []
        for name, mode, packed, size, crc in pool.map(pack_one, entries):
            if len(packed) >= size:  # incompressible (random weights): stored is smaller and faster to read
                packed, method = (folder / name).read_bytes(), zipfile.ZIP_STORED
            else:
                method = zipfile.ZIP_DEFLATED
            encoded = name.encode("utf-8")
            offset = fh.tell()
            fh.write(_LOCAL.pack(_LOCAL_SIG, 20, _UTF8, method, _DOS_TIME, _DOS_DATE, crc, len(packed), size, len(encoded), 0))
            fh.write(encoded)
            fh.write(packed)
            central.append(
                _CENTRAL.pack(
                    _CENTRAL_SIG,
                    (3 << 8) | 20,
                    20,
                    _UTF8,
                    method,
                    _DOS_TIME,
                    _DOS_DATE,
                    crc,
                    len(packed),
                    size,
                    len(encoded),
                    0,
                    0,
                    0,
                    0,
                    (stat.S_IFREG | mode) << 16,
                    offset,
                )
                + encoded
            )
        start = fh.tell()
        for record in central:
            fh.write(record)
        if len(central) > 0xFFFF or fh.tell() > 0xFFFFFFFF:
            raise CliError("bundle too large for a plain zip (zip64 would be needed); no function accepts that anyway")
        fh.write(_END.pack(_END_SIG, 0, 0, len(central), len(central), fh.tell() - start, start, 0))
    partial.replace(dest)


LEVEL = 9
_UTF8 = 0x800  # general purpose flag: names are UTF-8
_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00:00, the zip epoch
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
