"""The artifact's `report.md` and `pareto.png`, from the manifest alone (so `slimserve report` can redo them).

The plot: deployed bytes (log) against the task metric, marker area by p50 latency, hollow markers for
candidates outside the tolerance, the chosen one ringed, the budget drawn as a vertical line (the model's
room in the bundle, or --max-bytes) and the tolerance as a horizontal one.
"""

from __future__ import annotations

from pathlib import Path

from optimizer.serving_report import serving_lines
from optimizer.table import print_table
from shared.artifact.loading import read_manifest
from shared.artifact.manifest import Manifest
from shared.errors import ArtifactError

REPORT, PARETO = "report.md", "pareto.png"


def facts(manifest: Manifest) -> dict[str, dict]:
    return manifest.extra.get("optimizer", {}).get("candidates", {})


def write(folder: Path, manifest: Manifest) -> list[str]:
    """Write both files into `folder`; returns their names for the manifest's `files`."""
    (folder / REPORT).write_text(markdown(manifest), encoding="utf-8")
    plot(manifest, folder / PARETO)
    return [REPORT, PARETO]


def markdown(manifest: Manifest) -> str:
    info = manifest.extra.get("optimizer", {})
    metric = info.get("metric", "metric")
    lines = [
        f"# {manifest.name} {manifest.version}: optimization report",
        "",
        f"target `{manifest.target}` · task {manifest.task} · metric {metric} · tolerance {info.get('tolerance', '?')} "
        f"· objective {info.get('objective', 'size')}",
        "",
        f"**Chosen: {manifest.chosen.candidate}**, placement `{manifest.placement}`, delivery `{manifest.delivery}`.",
        "",
        manifest.chosen.reason,
        "",
        "| candidate | deployed bytes | inflated bytes | parameters | " + f"{metric} | drop | p50 ms | speed vs fp32 | peak RSS bytes | "
        "memory MB | $ per million requests | within tolerance | fits | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---|---|",
    ]
    for c in manifest.candidates:
        f = facts(manifest).get(c.name, {})
        name = f"**{c.name}**" if c.name == manifest.chosen.candidate else c.name
        cells = [
            name,
            _n(c.bytes or None),
            _n(f.get("inflated_bytes")),
            _n(f.get("parameters")),
            _f(c.metrics.get(metric), ".4f"),
            _f(c.metrics.get("drop"), ".4f"),
            _f(c.latency_ms or None, ".3f"),
            _f(f.get("speedup_vs_fp32"), ".2f", "x"),
            _n(f.get("peak_rss_bytes")),
            _n(f.get("recommended_memory_mb")),
            _f(f.get("cost_per_million_usd"), ".4f"),
            "yes" if c.within_tolerance else "no",
            f.get("delivery") or ("no" if f else "-"),
            c.note.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sizes: *deployed* is the model file as the artifact ships it; a compressed candidate (`.gz`/`.xz`) is",
        "inflated into /tmp at cold start, so /tmp and memory hold its *inflated* size.",
        "",
    ]
    lines += _budget_lines(manifest)
    lines += serving_lines(manifest.extra.get("serving"))
    lines += ["", f"![size vs {metric}]({PARETO})", ""]
    return "\n".join(lines)


def _budget_lines(manifest: Manifest) -> list[str]:
    budget = manifest.budget
    if not budget:
        return []
    lines = ["## Budget", ""]
    for room in budget.get("rooms", []):
        lines.append(
            f"- {room['measure']} limit {_n(room['limit'])} bytes ({room['what']}) − runtime {_n(room['runtime'])} "
            f"= **{_n(room['model'])}** bytes for the model"
        )
    if budget.get("direct_upload"):
        lines.append("- upload: direct (`--direct-upload`): the limits of a package sent straight to the platform apply too")
    elif "direct_upload" in budget:
        lines.append(
            "- upload: through object storage (`serverless deploy`); limits that bind only direct uploads "
            "are left out (`--direct-upload` keeps them)"
        )
    if budget.get("max_model_bytes") is not None:
        lines.append(f"- `--max-bytes`: at most **{_n(budget['max_model_bytes'])}** model bytes, whatever the delivery")
    lines.append(
        f"- memory {_n(budget.get('memory_bytes'))} bytes, /tmp {_n(budget.get('tmp_bytes'))} bytes, "
        f"cold start {budget.get('cold_start_s')} s"
    )
    lines.append(f"- runtime weight: {budget.get('runtime_source', '?')}")
    a = budget.get("assumptions", {})
    if a:
        lines.append("- estimates assume: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:g}" for k, v in a.items()))
    chosen = budget.get("chosen")
    if chosen:
        lines.append(
            f"- chosen: ~{_n(chosen.get('memory_bytes'))} bytes of memory, ~{chosen.get('cold_start_s', 0):.2f} s cold start "
            f"({'memory measured' if chosen.get('measured') else 'estimates'})"
        )
    return lines


def _n(value) -> str:
    return "-" if value is None else f"{value:,}"


def _f(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def plot(manifest: Manifest, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine or in a function
    import matplotlib.pyplot as plt

    info = manifest.extra.get("optimizer", {})
    metric = info.get("metric", "metric")
    measured = [c for c in manifest.candidates if c.bytes and metric in c.metrics]
    higher_better = metric != "rel_error"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=80)
    slowest = max((c.latency_ms for c in measured), default=1.0) or 1.0
    labels: dict[tuple, list[str]] = {}  # candidates on the same spot (same bytes and metric) share one label
    for c in measured:
        size = 30 + 400 * (c.latency_ms / slowest)
        style = {"facecolor": "tab:blue" if c.within_tolerance else "none", "edgecolor": "tab:blue"}
        ax.scatter(c.bytes, c.metrics[metric], s=size, alpha=0.7, **style)
        labels.setdefault((round(c.bytes, -2), round(c.metrics[metric], 4)), []).append(c.name)
        if c.name == manifest.chosen.candidate:
            ax.scatter(
                c.bytes,
                c.metrics[metric],
                s=size + 250,
                facecolor="none",
                edgecolor="tab:red",
                linewidth=2,
                label=f"chosen: {c.name} ({manifest.placement}, {manifest.delivery})",
            )
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = _front([(c.bytes, c.metrics[metric]) for c in measured], higher_better)
    if len(front) > 1:
        ax.step(*zip(*front), where="post", color="tab:gray", linewidth=0.8, alpha=0.6, label="Pareto front")
    room = _budget_bytes(manifest.budget)
    if room:
        ax.axvline(room, color="tab:red", linestyle="--", linewidth=1, label=f"model budget {room / 1e6:,.2f} MB")
    reference = info.get("reference_metrics", {}).get(metric)
    if reference is not None and "tolerance" in info:
        line = reference - info["tolerance"] if higher_better else reference + info["tolerance"]
        sign = "−" if higher_better else "+"
        ax.axhline(line, color="tab:gray", linestyle=":", linewidth=1, label=f"fp32 {metric} {sign} tolerance")
    ax.set_xscale("log")
    ax.set_xlabel("deployed model bytes (log)")
    ax.set_ylabel(metric)
    ax.set_title(f"{manifest.name} {manifest.version} on {manifest.target}: size vs {metric} (area: p50 latency)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _front(points: list[tuple[int, float]], higher_better: bool) -> list[tuple[int, float]]:
    """The points no other point beats on both size and metric, smallest first."""
    front, best = [], None
    for size, value in sorted(points, key=lambda p: (p[0], -p[1] if higher_better else p[1])):
        if best is None or (value > best if higher_better else value < best):
            front.append((size, value))
            best = value
    return front


def _budget_bytes(budget: dict) -> int | None:
    rooms = [r["model"] for r in budget.get("rooms", [])]
    if budget.get("max_model_bytes") is not None:
        rooms.append(budget["max_model_bytes"])
    return min(rooms) if rooms else None


def report_command(args) -> int:
    """`slimserve report ARTIFACT`: the candidate table, the choice and the placement, from the manifest."""
    from optimizer.errors import CliError

    try:
        manifest = read_manifest(args.artifact)
    except ArtifactError as exc:
        raise CliError(exc.message) from None
    print_table(manifest, Path(args.artifact), getattr(args, "quiet", False))
    print(f"placement: {manifest.placement}, delivery: {manifest.delivery}")
    return 0
