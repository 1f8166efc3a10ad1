"""`infra.limits` (the table of platform limits) wherever the project runs from.

pyproject.toml's packages.find lists shared*, functions*, optimizer*: an editable install maps only those, so
the `slimserve` console script cannot import `infra` until infra* joins the list. Until then the table is
loaded from the checkout, beside optimizer/, under its own name, so every reader shares one module object.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

try:
    from infra import limits
except ModuleNotFoundError:
    _path = Path(__file__).resolve().parents[2] / "infra" / "limits.py"
    _spec = importlib.util.spec_from_file_location("infra.limits", _path)
    limits = importlib.util.module_from_spec(_spec)
    sys.modules["infra.limits"] = limits  # dataclasses look their module up while the class is built
    _spec.loader.exec_module(limits)


def platform(name: str):
    return limits.platform(name)
