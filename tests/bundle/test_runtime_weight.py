"""The runtime weight the budget subtracts before any model byte (optimizer/budget.py `RUNTIME`) against
what the bundle builder measures when it packs the wheels and our code.

Too low, and the optimizer picks a candidate for the bundle that the builder then refuses as over the
limit; far too high, and it sends models to cold-start fetch that would have fit. So the figure must cover
the largest runtime a target carries (a text model's, with tokenizers) and stay within a few percent of it.
"""

from __future__ import annotations

import pytest

from optimizer.budget import RUNTIME
from optimizer.bundle.common import Options
from optimizer.bundle.source import build
from tests.bundle.builds import text_lambda_bundle, write_text_artifact
from tests.tools import need_module

SLACK = 0.08  # the budget may round up this much past the measured runtime, no more


def runtime_part(report: dict, measure: str) -> int:
    parts = report["sizes"]["parts"]
    return parts["runtime wheels"][f"{measure}_bytes"] + parts["code"][f"{measure}_bytes"]


@pytest.fixture(scope="module")
def text_reports(tmp_path_factory) -> dict[str, dict]:
    need_module("tokenizers", "install the text extra (make test does)")
    folder = tmp_path_factory.mktemp("runtime-weight")
    words = write_text_artifact(folder / "words")
    reports = {"aws-lambda": text_lambda_bundle()[1]}
    for target in ("gcp-functions", "azure-functions"):
        reports[target] = build(words, folder / target, Options(target=target, quiet=True))
    return reports


@pytest.mark.parametrize("target", ["aws-lambda", "gcp-functions", "azure-functions"])
def test_the_budget_counts_at_least_the_runtime_the_builder_packs_and_not_much_more(text_reports, target):
    report, weight = text_reports[target], RUNTIME[target]
    measured = runtime_part(report, "unzipped")
    assert measured <= weight.unzipped <= measured * (1 + SLACK), (target, measured, weight.unzipped)
    if weight.zipped:  # only Lambda uploads the runtime; GCF and Azure install it themselves
        zipped = runtime_part(report, "zipped")
        assert zipped <= weight.zipped <= zipped * (1 + SLACK), (target, zipped, weight.zipped)
    else:
        assert report["sizes"]["parts"]["runtime wheels"]["zipped_bytes"] == 0
