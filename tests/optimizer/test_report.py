"""report.md, pareto.png and `slimserve report`: the manifest's data, listed and checked like every file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from optimizer import report
from slimserve.cli import main
from optimizer.progress import Bars, progress_for
from shared.artifact.loading import load_artifact, sha256_of


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
    assert out.splitlines()[0].split()[:4] == ["candidate", "bytes", "vs", "fp32"]
    assert all(c.name in out for c in manifest.candidates)
    assert f"placement: {manifest.placement}, delivery: {manifest.delivery}" in out


def test_report_of_a_folder_that_is_no_artifact_is_exit_code_1(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_progress_bars_are_a_no_op_when_quiet_and_count_when_not():
    with progress_for(True) as quiet:
        with quiet.task("x", total=3) as advance:
            advance(1, description="y")
    with progress_for(False) as bars:
        assert isinstance(bars, Bars)
        with bars.task("calibrating", total=2) as advance:
            advance()
            task = bars._bars.tasks[-1]
            assert (task.completed, task.total) == (1, 2)
        assert not bars._bars.tasks  # finished tasks leave the display
