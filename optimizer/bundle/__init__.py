"""Function bundles: `slimserve bundle ARTIFACT --target aws-lambda|gcp-functions|azure-functions`.

Each target module (registered in slimserve/cli.py's BUNDLE_TARGETS, beside sagemaker) exposes
`bundle_command(args) -> int` and a `build(artifact, out, Options) -> dict` that returns the report it also
writes to OUT/bundle.json: pins, what slimming removed and why, sizes by part and by contributor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optimizer.bundle.common import Options


def options(args: argparse.Namespace) -> Options:
    return Options(
        target=args.target,
        arch=getattr(args, "arch", None) or "x86_64",
        python=getattr(args, "python", None) or "3.12",
        wheel_cache=Path(args.wheel_cache) if getattr(args, "wheel_cache", None) else None,
        quiet=bool(getattr(args, "quiet", False)),
        direct_upload=bool(getattr(args, "direct_upload", False)),
        fetch_from=getattr(args, "fetch_from", None) or None,
    )


def out_folder(args: argparse.Namespace) -> Path:
    return Path(args.out or f"dist/{args.target}")
