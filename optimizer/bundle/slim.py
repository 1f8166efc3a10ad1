"""Cut what the runtime never loads out of the installed wheels. Each rule says why it is safe to cut.

Nothing here strips symbols: auditwheel has patched numpy's libraries (numpy.libs) with patchelf, and a
stripped copy no longer loads ("ELF load command address/offset not page-aligned").
Licence texts stay (dist-info licences, onnxruntime's ThirdPartyNotices): they are what redistribution asks.

Proof lives elsewhere: the builder imports the handler from the slimmed folder and answers a request
(`probe.py`), and `first_party_uses` refuses to cut a module our own shipped code names.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    pattern: str  # glob under the install folder; a trailing "/" means a folder
    why: str
    module: str | None = None  # the importable module the rule removes, checked against first-party code


RULES: tuple[Rule, ...] = (
    Rule("bin/", "console scripts (f2py, numpy-config): nothing runs them inside a function"),
    Rule("**/__pycache__/", "bytecode of this interpreter, not the target's; the builder compiles for the target"),
    Rule("**/*.pyi", "type stubs: read by type checkers, never imported"),
    Rule("**/tests/", "the packages' own test suites"),
    Rule("numpy/testing/", "numpy's test helpers; `import numpy` loads them lazily only on np.testing", "numpy.testing"),
    Rule("numpy/_pyinstaller/", "PyInstaller hooks", "numpy._pyinstaller"),
    Rule("numpy/f2py/", "Fortran wrapper generator, a build tool", "numpy.f2py"),
    Rule("numpy/_core/include/", "C headers for building extensions"),
    Rule("numpy/_core/lib/", "static npymath and pkg-config files for building extensions"),
    Rule("numpy/_core/_*_tests.*.so", "extension modules only numpy's test suite imports"),
    Rule("numpy/_core/_simd.*.so", "SIMD test module (numpy._core._simd), imported by numpy's tests only"),
    # Lazily loaded by numpy (module __getattr__): `import numpy` and onnxruntime never touch them.
    Rule("numpy/random/", "lazy numpy submodule, unused by onnxruntime and the runtime", "numpy.random"),
    Rule("numpy/fft/", "lazy numpy submodule, unused by onnxruntime and the runtime", "numpy.fft"),
    Rule("numpy/polynomial/", "lazy numpy submodule, unused by onnxruntime and the runtime", "numpy.polynomial"),
    Rule("numpy/ma/", "lazy numpy submodule, unused by onnxruntime and the runtime", "numpy.ma"),
    Rule("onnxruntime/tools/", "model conversion and profiling scripts (need onnx, not shipped)", "onnxruntime.tools"),
    Rule("onnxruntime/transformers/", "offline transformer graph fusion tools (need onnx, torch)", "onnxruntime.transformers"),
    Rule("onnxruntime/quantization/", "offline quantization (the optimizer's job; needs onnx)", "onnxruntime.quantization"),
    Rule("onnxruntime/datasets/", "sample models for onnxruntime's docs", "onnxruntime.datasets"),
    Rule("onnxruntime/backend/", "ONNX backend-test API (imports onnx, not shipped)", "onnxruntime.backend"),
    Rule("tokenizers/tools/", "HTML visualizer; `import tokenizers` does not load it", "tokenizers.tools"),
    Rule(
        "aws_lambda_powertools/event_handler/",
        "powertools' own API Gateway router: HTTP goes through serverless-wsgi to werkzeug here; its other caller "
        "(shared.functions.pydantic_to_dict) takes pydantic models, and pydantic does not ship",
        "aws_lambda_powertools.event_handler",
    ),
)

# dist-info: the METADATA header keeps importlib.metadata.version() answering (werkzeug's dev server and
# markupsafe's __version__ ask); RECORD, INSTALLER, WHEEL, entry points and long descriptions are never read.
_KEEP_IN_DIST_INFO = re.compile(r"^(METADATA|LICEN[CS]E.*|COPYING.*|NOTICE.*|licenses/.*|AUTHORS.*)$", re.I)

# Shared libraries the rules below may drop when no other ELF file in the folder links them. onnxruntime's
# wheel carries libonnxruntime.so.1.* for C API users; its Python extension is linked statically.
UNLINKED_CANDIDATES = ("onnxruntime/capi/libonnxruntime.so.*",)


@dataclass(frozen=True)
class Removed:
    path: str
    bytes: int
    why: str


def slim(site: Path, first_party: list[Path]) -> list[Removed]:
    """Apply RULES, trim dist-info, drop unlinked libraries; returns what went, for the report."""
    used = first_party_uses(first_party)
    removed: list[Removed] = []
    for rule in RULES:
        if rule.module and any(m == rule.module or m.startswith(rule.module + ".") for m in used):
            continue  # our own code uses it: keep
        for path in sorted(site.glob(rule.pattern.rstrip("/"))):
            if path.exists() and (path.is_dir() == rule.pattern.endswith("/")):
                removed.append(_remove(site, path, rule.why))
    removed += _trim_dist_info(site)
    removed += _drop_unlinked(site)
    return removed


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(site: Path, path: Path, why: str) -> Removed:
    entry = Removed(path.relative_to(site).as_posix() + ("/" if path.is_dir() else ""), _size(path), why)
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return entry


def _trim_dist_info(site: Path) -> list[Removed]:
    removed = []
    for dist in sorted(site.glob("*.dist-info")):
        for path in sorted(p for p in dist.rglob("*") if p.is_file()):
            rel = path.relative_to(dist).as_posix()
            if rel == "METADATA":
                header = path.read_text(encoding="utf-8", errors="replace").split("\n\n", 1)[0]
                before = path.stat().st_size
                path.write_text(header + "\n", encoding="utf-8")
                removed.append(
                    Removed(
                        path.relative_to(site).as_posix() + " (description)",
                        before - path.stat().st_size,
                        "long description; importlib.metadata reads the header only",
                    )
                )
            elif not _KEEP_IN_DIST_INFO.match(rel):
                removed.append(_remove(site, path, "installer records, never read at runtime"))
    return removed


def needed_libraries(elf: Path) -> set[str] | None:
    """DT_NEEDED entries of an ELF file, read with binutils' readelf; None when readelf is missing."""
    try:
        out = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def _drop_unlinked(site: Path) -> list[Removed]:
    removed = []
    elves = [p for p in site.rglob("*.so*") if p.is_file()]
    for pattern in UNLINKED_CANDIDATES:
        for lib in sorted(site.glob(pattern)):
            needers = {p for p in elves if p != lib}
            needs = [needed_libraries(p) for p in needers]
            if any(n is None for n in needs):
                continue  # no readelf: keep it rather than guess
            soname = lib.name.split(".so")[0] + ".so"
            if not any(x == soname or x.startswith(soname + ".") for n in needs for x in n):
                removed.append(_remove(site, lib, "no shipped library links it (readelf -d shows no DT_NEEDED entry)"))
    return removed


def first_party_uses(files: list[Path]) -> set[str]:
    """Dotted module names our shipped code imports or reaches as attributes (`np.random.x` -> numpy.random)."""
    used: set[str] = set()
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    used.add(alias.name)
                    top = alias.name.split(".")[0]
                    aliases[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                used.add(node.module)
                used.update(f"{node.module}.{alias.name}" for alias in node.names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain = _dotted(node)
                if chain and chain[0] in aliases:
                    used.add(".".join([aliases[chain[0]], *chain[1:]]))
    return used


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None
