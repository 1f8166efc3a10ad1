"""The endpoint container's entry point: SageMaker starts the image as `docker run IMAGE serve`.

Same runtime as the functions, with every model run here (placement forced to `function`: this *is* the
endpoint, it must never forward), artifacts from /opt/ml/model (where SageMaker unpacks model.tar.gz;
SLIMSERVE_ARTIFACT overrides), on 0.0.0.0:8080 (SAGEMAKER_BIND_TO_PORT overrides, as SageMaker sets it
for multi-container endpoints). CUDA is used when onnxruntime-gpu finds a GPU, else CPU; the choice is
logged and reported in GET /v2.
"""

from __future__ import annotations

import argparse
import os
import sys

from shared.errors import ArtifactError
from shared.server.serve import ServeError, serve

MODEL_DIR = "/opt/ml/model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"], help="SageMaker passes `serve` (training images get `train`)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    args = parser.parse_args(argv)
    folders = [a for a in os.environ.get("SLIMSERVE_ARTIFACT", "").split(",") if a.strip()] or [MODEL_DIR]
    try:
        serve(folders, args.host, args.port, placement="function")
    except ArtifactError as exc:
        print(f"serve: error: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, ServeError) as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
