"""How long the JSON door takes to refuse the attack bodies of tests/hardening/test_attacks.py, in process
(werkzeug's test client on the app `slimserve serve` runs), one call each. Not part of `make test`.

    .venv/bin/python bench/attacks.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from werkzeug.test import Client  # noqa: E402

from shared.boot.build import build_app  # noqa: E402
from tests.hardening.test_attacks import INFER, PRESCAN  # noqa: E402
from tests.helpers import write_tiny_artifact  # noqa: E402


def integer(digits: int) -> bytes:
    return b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1' + b"0" * (digits - 1) + b",0,0,0]}]}"


def main() -> None:
    client = Client(build_app(write_tiny_artifact(Path(tempfile.mkdtemp()) / "tiny")))
    cases = {**PRESCAN, "an integer of 5,000 digits": integer(5_000), "an integer of 1,000,000 digits": integer(1_000_000)}
    for name, body in cases.items():
        started = time.perf_counter()
        response = client.post(INFER, data=body, content_type="application/json")
        took = time.perf_counter() - started
        print(f"{name}: {len(body):,} B -> {response.status_code} in {took * 1000:.1f} ms ({response.json['error'][:60]}...)")


if __name__ == "__main__":
    main()
