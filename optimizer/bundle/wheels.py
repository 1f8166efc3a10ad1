"""Wheels for the *target* machine, installed into a folder: `pip --platform ... --only-binary=:all: --target`.

Downloaded wheels are kept in a cache folder (`--wheel-cache`, `SLIMSERVE_WHEEL_CACHE`, default
`~/.cache/slimserve/wheels`), so a second build installs offline (`--no-index --find-links CACHE`) and only a
miss goes to the index. pip is run from this environment (`python -m pip`), the ordinary client, so the
index settings in pip.conf or PIP_* variables apply.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from optimizer.bundle.requirements import Pin
from optimizer.errors import CliError

ARCHES = ("x86_64", "arm64")
_GLIBC_FLOOR = 17  # manylinux2014 == manylinux_2_17: the oldest tag still published for the runtime's wheels


def wheel_cache(explicit: str | os.PathLike | None = None) -> Path:
    """Argument > SLIMSERVE_WHEEL_CACHE > $XDG_CACHE_HOME/slimserve/wheels > ~/.cache/slimserve/wheels."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("SLIMSERVE_WHEEL_CACHE"):
        return Path(os.environ["SLIMSERVE_WHEEL_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "slimserve" / "wheels"


def platform_tags(arch: str, glibc: int = 28) -> list[str]:
    """manylinux_2_{glibc}..2_17 plus the legacy manylinux2014 spelling: pip does not widen `--platform`
    itself, so a lone manylinux_2_28 would miss wheels published only for older glibc (tokenizers, protobuf)."""
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
    return [f"manylinux_2_{minor}_{machine}" for minor in range(glibc, _GLIBC_FLOOR - 1, -1)] + [f"manylinux2014_{machine}"]


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _target_args(arch: str, python: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in platform_tags(arch):
        args += ["--platform", tag]
    return args


def install(pins: list[Pin], dest: Path, *, arch: str, python: str, cache: Path, resolve: bool = False) -> None:
    """Install `pins` for the target into `dest`. `resolve=False`: exactly these wheels (the pinned set is
    complete); `resolve=True`: pip adds their dependencies too, as the platform's own build of a
    requirements.txt would (which cannot say --no-deps)."""
    cache.mkdir(parents=True, exist_ok=True)
    _install_group([str(p) for p in pins], dest, arch=arch, python=python, cache=cache, deps=resolve)


def _install_group(reqs: list[str], dest: Path, *, arch: str, python: str, cache: Path, deps: bool) -> None:
    common = _target_args(arch, python) + ([] if deps else ["--no-deps"])
    offline = [
        "install",
        "--quiet",
        "--no-compile",
        "--no-index",
        "--find-links",
        str(cache),
        "--target",
        str(dest),
        "--upgrade",
        *common,
        *reqs,
    ]
    if _pip(*offline).returncode == 0:
        return
    fetched = _pip("download", "--quiet", "--dest", str(cache), *common, *reqs)
    if fetched.returncode != 0:
        raise CliError(f"could not download wheels for {python} {arch} ({' '.join(reqs)}):\n{fetched.stderr.strip()}")
    done = _pip(*offline)
    if done.returncode != 0:
        raise CliError(f"could not install wheels for {python} {arch}:\n{done.stderr.strip()}")
