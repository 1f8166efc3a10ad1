"""What a bundle weighs, by part and by contributor, and whether it fits the platform (infra.limits)."""

from __future__ import annotations

import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from optimizer.errors import DoesNotFit

if TYPE_CHECKING:
    from infra.limits import Platform, SizeLimit

PARTS = ("runtime wheels", "code", "model")


@dataclass(frozen=True)
class Item:
    """One contributor: a top-level package of the wheels, a code folder, an artifact file."""

    name: str
    part: str
    files: int
    unzipped: int
    zipped: int


@dataclass(frozen=True)
class Sizes:
    items: tuple[Item, ...]
    zipped_total: int  # the archive's own size, headers included
    unzipped_total: int

    def part(self, part: str) -> tuple[int, int, int]:
        chosen = [i for i in self.items if i.part == part]
        return sum(i.files for i in chosen), sum(i.unzipped for i in chosen), sum(i.zipped for i in chosen)

    def to_dict(self) -> dict:
        return {
            "zipped_bytes": self.zipped_total,
            "unzipped_bytes": self.unzipped_total,
            "parts": {p: dict(zip(("files", "unzipped_bytes", "zipped_bytes"), self.part(p), strict=True)) for p in PARTS},
            "contributors": [vars(i) for i in sorted(self.items, key=lambda i: -i.unzipped)],
        }


def contributor(name: str) -> str:
    """Group an archive name under what a person would remove: `numpy/_core/x.so` -> `numpy/`."""
    head, sep, _ = name.partition("/")
    if head == "artifact":
        return name
    return head + "/" if sep else head


def measure_zip(zip_path: Path, part_of: dict[str, str], extra: list[Item] = ()) -> Sizes:
    """Sizes of a written zip; `part_of` maps each contributor to its part. `extra`: bytes that are not in
    the zip but count against the unzipped limit (modules the platform installs from requirements.txt)."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            g = groups[contributor(info.filename)]
            g[0] += 1
            g[1] += info.file_size
            g[2] += info.compress_size
    items = [Item(name, part_of[name], *g) for name, g in groups.items()] + list(extra)
    return Sizes(tuple(items), zip_path.stat().st_size, sum(i.unzipped for i in items))


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def table(sizes: Sizes, platform: Platform, direct_upload: bool = False) -> str:
    rows = [f"{'part':<16}{'files':>7}{'unzipped':>14}{'zipped':>14}"]
    for part in PARTS:
        files, unzipped, zipped = sizes.part(part)
        rows.append(f"{part:<16}{files:>7}{mib(unzipped):>14}{mib(zipped):>14}")
    files = sum(i.files for i in sizes.items)
    rows.append(f"{'total':<16}{files:>7}{mib(sizes.unzipped_total):>14}{mib(sizes.zipped_total):>14}")
    binding = platform.package_limits(direct_upload)
    for limit in platform.package:
        used = _used(sizes, limit)
        verdict = "ok" if used <= limit.bytes else "OVER" if limit in binding else "over: direct uploads only"
        rows.append(f"limit {limit.measure} {limit.what}: {used:,} of {limit.bytes:,} bytes ({used / limit.bytes:.0%}) {verdict}")
    rows.append("largest: " + ", ".join(f"{i.name} {mib(i.unzipped)} ({mib(i.zipped)} zipped)" for i in largest(sizes, "unzipped")))
    return "\n".join(rows)


def _used(sizes: Sizes, limit: SizeLimit) -> int:
    return sizes.zipped_total if limit.measure == "zipped" else sizes.unzipped_total


def largest(sizes: Sizes, measure: str, n: int = 3) -> list[Item]:
    return sorted(sizes.items, key=lambda i: (-getattr(i, measure), i.name))[:n]


def check(sizes: Sizes, platform: Platform, direct_upload: bool = False) -> None:
    """DoesNotFit (exit code 1) naming every binding limit passed, the numbers, and the three largest contributors.
    The limits of a direct upload bind only with `direct_upload` (else `direct_upload_warnings` tells)."""
    problems = []
    for limit in platform.package_limits(direct_upload):
        used = _used(sizes, limit)
        if used > limit.bytes:
            top = ", ".join(f"{i.name} {getattr(i, limit.measure):,} bytes" for i in largest(sizes, limit.measure))
            note = f" [{limit.note}]" if limit.note else ""
            problems.append(
                f"{limit.measure} size {used:,} bytes ({mib(used)}) is over {platform.name}'s {limit.what} limit of "
                f"{limit.bytes:,} bytes ({mib(limit.bytes)}) by {used - limit.bytes:,}{note}; "
                f"largest contributors: {top}"
            )
    if problems:
        raise DoesNotFit("bundle does not fit: " + "; ".join(problems))


def direct_upload_warnings(sizes: Sizes, platform: Platform) -> list[str]:
    """What a bundle that fits the storage upload path would break if it were uploaded directly."""
    return [
        f"the zip is {mib(_used(sizes, limit))}, over {platform.name}'s {mib(limit.bytes)} {limit.measure} limit of a "
        f"{limit.what}: `serverless deploy` (through S3) takes it, `serverless deploy function` and the console would not"
        for limit in platform.direct_upload_limits()
        if _used(sizes, limit) > limit.bytes
    ]
