"""The candidate table the CLI prints: rich on a terminal session, plain text under `--quiet`."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from shared.artifact.manifest import Manifest

_METRICS = ("accuracy", "agreement", "cosine", "rel_error", "drop")


def rows(manifest: Manifest) -> tuple[list[str], list[list[str]]]:
    fp32 = next((c.bytes for c in manifest.candidates if c.name == "fp32"), 0)
    names = [m for m in _METRICS if any(m in c.metrics for c in manifest.candidates)]
    # per-candidate sizes and fit, where the optimizer recorded them (optimizer/pipeline.py `_facts`)
    facts = manifest.extra.get("optimizer", {}).get("candidates", {})
    header = ["candidate", "bytes", "vs fp32", "params", *names, "p50 ms", "speed", "ok", "fits", "note"]
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
                "yes" if c.within_tolerance else "no",
                (fact.get("delivery") or "no") if fact else "-",
                c.note,
            ]
        )
    return header, body


def print_plain(manifest: Manifest, folder: Path, stream: TextIO) -> None:
    header, body = rows(manifest)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    for line in [header, *body]:
        stream.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() + "\n")
    stream.write(f"chosen: {manifest.chosen.reason}\nartifact: {folder}\n")


def print_rich(manifest: Manifest, folder: Path) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    header, body = rows(manifest)
    title = f"{manifest.name} {manifest.version} · {manifest.task} · {manifest.target}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # notes are long; they stay in the manifest and the plain table, failures are printed below
    for index, name in enumerate(header[:-1]):
        table.add_column(name, justify="left" if index == 0 else "right", no_wrap=True)
    for line, candidate in zip(body, manifest.candidates):
        chosen = candidate.name == manifest.chosen.candidate
        table.add_row(*line[:-1], style="bold green" if chosen else ("dim" if not candidate.within_tolerance else None))
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # rich assumes 80 columns for pipes and CI logs, which clips the numbers
    console.print(table)
    for candidate in manifest.candidates:
        if candidate.note.startswith("failed"):
            console.print(f"[red]{candidate.name}[/red] {candidate.note}", highlight=False)
    console.print(f"[bold]chosen:[/bold] {manifest.chosen.reason}", highlight=False)
    console.print(f"[bold]artifact:[/bold] {folder}", highlight=False)
