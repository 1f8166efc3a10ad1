"""The runtime's rooms and the arrows between them, as a test (as tests/functions/test_adapters.py keeps
the adapters thin). Read from the source with `ast`, so nothing is imported:

    core      shared/{errors,config,storage,client}.py     imports no room
    protocol  OIP v2 on the wire                            -> core
    artifact  manifest, loading + checks, fetch, inflate     -> protocol, core
    serving   the model interface, local model, data plane  -> artifact, protocol, core
    remote    remote model, transports, breaker, async      -> serving (its interface) and below
    http      WSGI app, auth, logs, metrics, SageMaker       -> serving and below
    batch     batch core, formats, platform triggers        -> serving and below
    boot      settings -> models (placement) -> app         -> everything above but server: the one place
                                                               that wires remote models in
    server    `slimserve serve`, the endpoint container     -> boot, http, serving and below

functions/* may import boot, http, batch, serving and below, never remote; the optimizer artifact,
protocol, serving and core, never http, server, batch, remote or boot; shared never the optimizer,
functions, infra or the CLI. Every import statement counts (a lazy import inside a function is still an
arrow), so an import cycle anywhere is a failure, as is a private name imported from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400

CORE = "core"
BELOW = {
    CORE: set(),
    "protocol": {CORE},
    "artifact": {"protocol", CORE},
    "serving": {"artifact", "protocol", CORE},
    "remote": {"serving", "artifact", "protocol", CORE},
    "http": {"serving", "artifact", "protocol", CORE},
    "batch": {"serving", "artifact", "protocol", CORE},
    "boot": {"remote", "http", "batch", "serving", "artifact", "protocol", CORE},
    "server": {"boot", "http", "serving", "artifact", "protocol", CORE},
}
OUTSIDE = {  # what the other top-level packages may import of shared
    "functions": {"boot", "http", "batch", "serving", "artifact", "protocol", CORE},
    "optimizer": {"artifact", "protocol", "serving", CORE},
    "slimserve": set(BELOW),  # the CLI: the door to both halves
}


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = {name: path for package in ("shared", "optimizer", "functions", "slimserve") for name, path in _modules(package).items()}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names taken from it, line) for every import statement in the file, lazy ones included."""
    try:
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    except ValueError:  # a file outside the project (the checker's own test)
        module_name = path.stem
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def _target(module: str, names: list[str]) -> list[str]:
    """The project modules an import statement reaches: `from shared.x import y` reaches shared.x.y
    when y is a module, else shared.x."""
    if module in MODULES or any(m.startswith(module + ".") for m in MODULES):
        reached = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        plain = [n for n in names if f"{module}.{n}" not in MODULES]
        return reached + ([module] if plain or not names else [])
    return []


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "shared":
        return None
    if len(parts) == 1 or (len(parts) == 2 and f"shared.{parts[1]}" in MODULES and MODULES[f"shared.{parts[1]}"].name != "__init__.py"):
        return CORE
    return parts[1]


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for module, names, _ in _imports(path):
            for reached in _target(module, names):
                if reached != name:
                    graph[name].add(reached)
    return graph


def test_rooms_import_only_the_rooms_below_them():
    wrong = []
    for name, path in MODULES.items():
        top = name.split(".")[0]
        mine = _room(name)
        allowed = BELOW[mine] | {mine} if top == "shared" else OUTSIDE[top]
        for module, names, line in _imports(path):
            for reached in _target(module, names):
                top_reached = reached.split(".")[0]
                if top == "shared" and top_reached in ("optimizer", "functions", "infra", "slimserve"):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {reached} (shared never imports {top_reached})")
                room = _room(reached)
                if room is not None and room not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {reached} ({mine or top} may not import {room})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _edges()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_no_private_names_imported_across_modules():
    wrong = []
    for name, path in MODULES.items():
        for module, names, line in _imports(path):
            if module.split(".")[0] in ("shared", "optimizer", "functions", "slimserve") and module != name:
                wrong += [
                    f"{path.relative_to(ROOT)}:{line} imports {n} from {module}" for n in names if n.startswith("_") and n != "__version__"
                ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["shared", "optimizer", "functions", "slimserve"])
def test_no_module_is_two_things(package):
    long = {
        str(p.relative_to(ROOT)): n
        for name, p in MODULES.items()
        if name.split(".")[0] == package and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_arrows_catch_a_wrong_import(tmp_path):
    """The checker itself: a serving module importing remote, and a cycle, are found."""
    assert _room("shared.serving.local") == "serving" and _room("shared.errors") == CORE and _room("shared") == CORE
    assert "remote" not in BELOW["serving"] and "remote" not in OUTSIDE["functions"]
    bad = tmp_path / "x.py"
    bad.write_text("from shared.remote.model import RemoteModel\nimport shared.http.app\n")
    assert [m for m, _, _ in _imports(bad)] == ["shared.remote.model", "shared.http.app"]
