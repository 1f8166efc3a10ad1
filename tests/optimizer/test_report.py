"""report.md, pareto.png and `slimserve report`: the manifest's data, listed and checked like every file."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from optimizer import report, table
from optimizer.progress import Bars, counted, progress_for
from shared.artifact.loading import load_artifact, sha256_of
from slimserve.cli import main


@pytest.fixture(scope="module")
def artifact(digits_artifact: Path) -> Path:
    return digits_artifact


def test_report_and_plot_are_listed_with_their_sha256(artifact: Path):
    manifest = load_artifact(artifact).manifest  # verifies every listed file
    for name in (report.REPORT, report.PARETO):
        assert manifest.files[name].sha256 == sha256_of(artifact / name)
    assert (artifact / report.PARETO).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_holds_every_candidate_the_choice_and_the_budget(artifact: Path):
    manifest = load_artifact(artifact).manifest
    text = (artifact / report.REPORT).read_text()
    assert f"**Chosen: {manifest.chosen.candidate}**" in text and manifest.chosen.reason in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| candidate")]
    assert len(rows) == len(manifest.candidates)
    assert f"| **{manifest.chosen.candidate}** |" in text
    assert "## Budget" in text and f"{manifest.budget['rooms'][0]['model']:,}" in text
    assert "runtime weight: measured with `slimserve bundle`" in text and "DESIGN.md" not in text  # cites what is in the repository
    assert "upload: through object storage" in text
    assert report.markdown(manifest) == text  # regenerated from the manifest alone


def test_plot_survives_a_manifest_without_budget_or_measurements(artifact: Path, tmp_path: Path):
    manifest = load_artifact(artifact).manifest
    bare = dataclasses.replace(manifest, budget={}, candidates=manifest.candidates[:1])
    report.plot(bare, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "## Budget" not in report.markdown(bare)


def test_report_command_prints_the_table_and_placement(artifact: Path, capsys):
    assert main(["report", str(artifact), "--quiet"]) == 0
    out = capsys.readouterr().out
    manifest = load_artifact(artifact).manifest
    header = out.splitlines()[0]
    assert header.startswith("candidate") and "model bytes" in header and "within tol" in header and "ships as" in header
    assert all(c.name in out for c in manifest.candidates)
    assert f"placement: {manifest.placement}, delivery: {manifest.delivery}" in out
    # the legend says what the columns mean
    assert "agreement: share of evaluation inputs whose top class is fp32's" in out
    assert f"within tol: drop <= the tolerance {manifest.extra['optimizer']['tolerance']}" in out
    assert "ships as: bundle = inside the aws-lambda package; fetch = from object storage" in out


def _figures(manifest) -> list[str]:
    """Every cell of the table but the notes: what must appear whole."""
    _, body = table.rows(manifest)
    return [cell.strip("* ").strip() for row in body for cell in row[:-1]]


def test_piped_output_cuts_no_cell(artifact: Path, capsys):
    """Not a terminal (CI logs, `| tee`): plain columns, every cell whole, however wide."""
    assert main(["report", str(artifact)]) == 0  # capsys is not a terminal
    out = capsys.readouterr().out
    manifest = load_artifact(artifact).manifest
    assert "…" not in out
    rows = {line.split()[0] if not line.startswith("*") else line.split()[1]: line for line in out.splitlines()[1:]}
    for candidate, cells in zip(manifest.candidates, table.rows(manifest)[1]):
        assert all(cell.strip("* ") in rows[candidate.name] for cell in cells)


@pytest.mark.parametrize("width", [80, 100])
def test_a_narrow_terminal_gets_whole_columns_in_blocks(artifact: Path, width: int):
    """rich would squeeze the 11 columns into 80 with ellipses: the figures are wrapped by column instead."""
    from rich.console import Console

    manifest = load_artifact(artifact).manifest
    screen = io.StringIO()
    table.print_rich(manifest, artifact, console=Console(file=screen, width=width, force_terminal=True))
    out = screen.getvalue()
    lines = out.splitlines()
    assert "…" not in out and all(len(line) <= width for line in lines if not line.startswith(("chosen:", "artifact:")))
    assert sum(line.startswith("candidate") for line in lines) >= 2  # more than one block, each headed by the names
    for figure in _figures(manifest):
        assert figure in out


def test_a_wide_terminal_gets_the_rich_table(artifact: Path):
    from rich.console import Console

    manifest = load_artifact(artifact).manifest
    screen = io.StringIO()
    table.print_rich(manifest, artifact, console=Console(file=screen, width=400, force_terminal=True, color_system=None))
    out = screen.getvalue()
    assert "…" not in out and sum(line.lstrip().startswith("candidate") for line in out.splitlines()) == 1
    assert all(figure in out for figure in _figures(manifest))


def test_report_of_a_folder_that_is_no_artifact_is_exit_code_1(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_a_run_that_adds_candidates_never_counts_past_its_total():
    """The fallback's repaired candidates join after the plan: the total grows with them (never 19/18)."""
    with progress_for(False) as bars:
        with bars.task("candidates", total=2) as advance:
            seen = []
            for item in counted(iter("abc"), advance, planned=2):
                task = bars._bars.tasks[-1]
                assert task.completed <= task.total
                seen.append((item, task.completed, task.total))
            task = bars._bars.tasks[-1]
            assert (task.completed, task.total) == (3, 3)
    assert seen == [("a", 0, 2), ("b", 1, 2), ("c", 2, 3)]


def test_progress_bars_are_a_no_op_when_quiet_and_count_when_not(capsys):
    with progress_for(True) as quiet:
        with quiet.task("x", total=3) as advance:
            advance(1, description="y")
    assert not isinstance(quiet, Bars) and capsys.readouterr() == ("", "")  # quiet means nothing on either stream
    with progress_for(False) as bars:
        assert isinstance(bars, Bars)
        with bars.task("calibrating", total=2) as advance:
            advance()
            task = bars._bars.tasks[-1]
            assert (task.completed, task.total) == (1, 2)
        assert not bars._bars.tasks  # finished tasks leave the display
