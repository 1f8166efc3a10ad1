"""The candidate table the CLI prints, every figure whole, with a legend that says what each column means.

Piped (CI logs, `| tee`) or under `--quiet`: plain columns as wide as their widest cell, notes included.
On a terminal: rich when the table fits its width; otherwise the same plain columns, wrapped into blocks
that fit (the candidate's name heads every block), as pandas prints a wide frame. A cell is never cut.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import TextIO

from shared.artifact.manifest import Manifest

_METRICS = ("accuracy", "agreement", "cosine", "rel_error", "drop")
_GAP = "  "

_MEANS = {
    "accuracy": "share of the evaluation labels it predicts",
    "agreement": "share of evaluation inputs whose top class is fp32's",
    "cosine": "mean cosine similarity of its embeddings to fp32's",
    "rel_error": "mean relative distance of its outputs from fp32's (lower is better)",
}


def rows(manifest: Manifest) -> tuple[list[str], list[list[str]]]:
    fp32 = next((c.bytes for c in manifest.candidates if c.name == "fp32"), 0)
    names = [m for m in _METRICS if any(m in c.metrics for c in manifest.candidates)]
    # per-candidate sizes and fit, where the optimizer recorded them (optimizer/pipeline.py `_facts`)
    facts = manifest.extra.get("optimizer", {}).get("candidates", {})
    header = [
        "candidate",
        "model bytes",
        "x smaller",
        "params",
        *names,
        "p50 ms",
        "x faster",
        "peak RSS MiB",
        "memory MB",
        "$/M req",
        "within tol",
        "ships as",
        "note",
    ]
    body = []
    for c in manifest.candidates:
        mark = "*" if c.name == manifest.chosen.candidate else " "
        fact = facts.get(c.name, {})
        body.append(
            [
                f"{mark} {c.name}",
                f"{c.bytes:,}" if c.bytes else "-",
                f"{fp32 / c.bytes:.2f}x" if c.bytes and fp32 else "-",
                f"{fact['parameters']:,}" if "parameters" in fact else "-",
                *(f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in names),
                f"{c.latency_ms:.3f}" if c.latency_ms else "-",
                f"{fact['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in fact else "-",
                f"{fact['peak_rss_bytes'] / 2**20:,.0f}" if "peak_rss_bytes" in fact else "-",
                f"{fact['recommended_memory_mb']:,}" if fact.get("recommended_memory_mb") else "-",
                f"{fact['cost_per_million_usd']:.4f}" if "cost_per_million_usd" in fact else "-",
                "yes" if c.within_tolerance else "no",
                (fact.get("delivery") or "no") if fact else "-",
                c.note,
            ]
        )
    return header, body


def legend(manifest: Manifest) -> list[str]:
    """One line per column group: what a reader needs to read the figures."""
    info = manifest.extra.get("optimizer", {})
    metric = info.get("metric", "the metric")
    present = [m for m in _MEANS if any(m in c.metrics for c in manifest.candidates)]
    return [
        "* chosen; model bytes: the model file as shipped; x smaller: fp32's bytes / these; params: weights in the graph",
        *(f"{m}: {_MEANS[m]}" for m in present),
        f"drop: how much worse than fp32 on {metric}; within tol: drop <= the tolerance {info.get('tolerance', '?')}",
        "p50 ms: median onnxruntime latency at batch 1; x faster: fp32's p50 / this one's, timed in alternation",
        "peak RSS MiB: a fresh runtime process's peak with the session made and one run at the largest batch the request "
        "limits allow; memory MB: that x the headroom, at the target's next memory setting (what the deploy sets)",
        "$/M req: dollars per million requests at that memory, the p50 scaled to the CPU share it buys, list prices (infra/prices.py)",
        f"ships as: bundle = inside the {manifest.target} package; fetch = from object storage into /tmp at cold "
        "start; no = fits no function (endpoint)",
    ]


def plain_lines(header: list[str], body: list[list[str]], width: int | None = None) -> list[str]:
    """Aligned columns; with `width`, wrapped into blocks of whole columns that fit it."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for block in _blocks(widths, width):
        if lines:
            lines.append("")
        for row in [header, *body]:
            lines.append(_GAP.join(row[i].ljust(widths[i]) for i in block).rstrip())
    return lines


def _blocks(widths: list[int], width: int | None) -> list[list[int]]:
    """Column indexes per block; the first (the candidate) starts every block. A column wider than `width`
    alone still gets its block: the terminal wraps it, nothing is cut."""
    if width is None:
        return [list(range(len(widths)))]
    blocks, current, used = [], [0], widths[0]
    for index in range(1, len(widths)):
        if len(current) > 1 and used + len(_GAP) + widths[index] > width:
            blocks.append(current)
            current, used = [0], widths[0]
        current.append(index)
        used += len(_GAP) + widths[index]
    return [*blocks, current]


def print_table(manifest: Manifest, folder: Path, quiet: bool = False) -> None:
    """What `optimize` and `report` print: plain when quiet or piped, else fitted to the terminal."""
    if quiet or not sys.stdout.isatty():
        print_plain(manifest, folder, sys.stdout)
    else:
        print_rich(manifest, folder)


def print_plain(manifest: Manifest, folder: Path, stream: TextIO, width: int | None = None) -> None:
    header, body = rows(manifest)
    if width is not None:  # a terminal: notes are long, the manifest and report.md keep them
        header, body = header[:-1], [row[:-1] for row in body]
    for line in plain_lines(header, body, width):
        stream.write(line + "\n")
    for line in legend(manifest):
        stream.write(textwrap.fill(line, width=width or 120, subsequent_indent="    ") + "\n")
    if width is not None:  # the notes column is not shown: its failures are
        for candidate in manifest.candidates:
            if candidate.note.startswith("failed"):
                stream.write(textwrap.fill(f"{candidate.name} {candidate.note}", width=width, subsequent_indent="    ") + "\n")
    stream.write(f"chosen: {manifest.chosen.reason}\nartifact: {folder}\n")


def print_rich(manifest: Manifest, folder: Path, console=None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    header, body = rows(manifest)
    title = f"{manifest.name} {manifest.version} · {manifest.task} · {manifest.target}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # notes are long; they stay in the manifest, report.md and the plain table; failures are printed below
    for index, name in enumerate(header[:-1]):
        table.add_column(name, justify="left" if index == 0 else "right", no_wrap=True)
    for line, candidate in zip(body, manifest.candidates):
        chosen = candidate.name == manifest.chosen.candidate
        table.add_row(*line[:-1], style="bold green" if chosen else ("dim" if not candidate.within_tolerance else None))
    console = console or Console()
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if natural > console.width:  # rich would cut figures to fit: wrap whole columns instead
        print_plain(manifest, folder, console.file, width=console.width)
        return
    console.print(table)
    for line in legend(manifest):
        console.print(line, highlight=False, style="dim")
    for candidate in manifest.candidates:
        if candidate.note.startswith("failed"):
            console.print(f"[red]{candidate.name}[/red] {candidate.note}", highlight=False)
    console.print(f"[bold]chosen:[/bold] {manifest.chosen.reason}", highlight=False)
    console.print(f"[bold]artifact:[/bold] {folder}", highlight=False)
