"""`slimserve`: optimize a model into an artifact, serve artifacts locally, bundle them, invoke a deployment,
backfill what is already in storage through a deployment's batch path."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from infra.limits import PLATFORMS
from optimizer.errors import CliError

TARGETS = tuple(PLATFORMS)
OWN_PACKAGES = {"shared", "optimizer", "functions", "infra", "slimserve"}

# `slimserve bundle --target T`: T -> the module whose `bundle_command(args) -> int` builds it (imported on use).
BUNDLE_TARGETS = {
    "sagemaker": "optimizer.bundle_sagemaker",
    "aws-lambda": "optimizer.bundle.aws_lambda",
    "gcp-functions": "optimizer.bundle.source",
    "azure-functions": "optimizer.bundle.source",
}

DIRECT_UPLOAD_HELP = (
    "hold the bundle to the limits of a package uploaded straight to the platform (AWS Lambda: 50 MiB zipped, "
    "what `serverless deploy function` and the console send); default: through object storage, as `serverless deploy` "
    "does (250 MiB unzipped)"
)


def _version() -> str:
    try:
        return metadata.version("slimserve")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    opt = sub.add_parser("optimize", help="export, compress and evaluate a model; write the artifact")
    opt.add_argument("spec", help="model.yaml")
    opt.add_argument("--target", choices=TARGETS, help="platform whose budget applies (default: the spec's)")
    opt.add_argument("--out", help="artifact folder to write (default: artifacts/<name>/<version>)")
    opt.add_argument("--tolerance", type=float, help="largest allowed metric drop (default: the spec's)")
    opt.add_argument(
        "--objective",
        choices=("size", "latency", "accuracy", "cost"),
        help="what to optimize among the candidates within tolerance that fit the budget: size, latency, accuracy, "
        "or cost per million requests at the measured memory (default: the spec's objective, else size)",
    )
    opt.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help="at most N bytes of model file, whatever the delivery (default: what the target's package limits leave after the runtime)",
    )
    opt.add_argument("--candidates", metavar="A,B,...", help="only these candidates (fp32 is always kept)")
    opt.add_argument(
        "--distill",
        metavar="STUDENT",
        help="distillation student: a TorchScript .pt file, or a width in "
        "(0, 1] to derive one from the model's layers (default: the spec's distill:)",
    )
    opt.add_argument("--direct-upload", action="store_true", help=DIRECT_UPLOAD_HELP)
    opt.add_argument("--quiet", action="store_true", help="no progress output")

    rep = sub.add_parser("report", help="print an artifact's candidate table, choice and placement")
    rep.add_argument("artifact", metavar="ARTIFACT_DIR")
    rep.add_argument("--quiet", action="store_true", help="plain text table")

    srv = sub.add_parser("serve", help="serve artifact folders over the Open Inference Protocol v2")
    srv.add_argument("artifacts", nargs="+", metavar="ARTIFACT_DIR")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--api-key", help="require this key (Bearer or x-api-key); visible in ps: prefer SLIMSERVE_API_KEY_FILE")
    srv.add_argument("--workers", type=int, help="server processes (default: one per CPU)")
    srv.add_argument("--threads", type=int, help="requests run at once per process (default 8; connections are not threads)")
    srv.add_argument(
        "--sagemaker-runtime",
        action="store_true",
        help="also answer SageMaker's runtime API (/endpoints/NAME/invocations), for boto3 clients of a local endpoint",
    )
    srv.add_argument("--ort-threads", type=int, help="onnxruntime intra-op threads per session (default: CPUs / workers)")
    srv.add_argument(
        "--max-batch-size", type=int, help="dynamic batching: rows concurrent requests share per run (default: the manifest's, else off)"
    )
    srv.add_argument(
        "--max-queue-delay-ms",
        type=float,
        help="dynamic batching: while the model is busy, wait this long for a batch to fill (default 1; 0: never)",
    )

    bnd = sub.add_parser(
        "bundle",
        help="package an artifact for a target: a function bundle checked against the "
        "platform's limits (exit 1 when over), or sagemaker's model.tar.gz",
    )
    bnd.add_argument("artifact", metavar="ARTIFACT_DIR")
    bnd.add_argument("--target", required=True, choices=sorted(BUNDLE_TARGETS))
    bnd.add_argument("--out", help="folder to write into (default: dist/<target>)")
    bnd.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="function targets: machine of the wheels")
    bnd.add_argument("--python", default="3.12", help="function targets: interpreter major.minor (default 3.12)")
    bnd.add_argument("--wheel-cache", help="downloaded wheels (default $SLIMSERVE_WHEEL_CACHE, ~/.cache/slimserve/wheels)")
    bnd.add_argument("--direct-upload", action="store_true", help=DIRECT_UPLOAD_HELP)
    bnd.add_argument(
        "--fetch-from",
        metavar="PREFIX",
        help="function targets: leave the model out; the function fetches it at cold "
        "start from PREFIX (s3://, gs://, azure://), pinned by the manifest's sha256. Needed for `delivery: fetch`",
    )
    bnd.add_argument("--quiet", action="store_true", help="function targets: no progress output or size table")

    upl = sub.add_parser("upload", help="copy an artifact (verified first) to object storage, where a function fetches it")
    upl.add_argument("artifact", metavar="ARTIFACT_DIR")
    upl.add_argument("prefix", metavar="PREFIX", help="s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or azure://CONTAINER/PREFIX")
    upl.add_argument("--quiet", action="store_true", help="no progress output")
    upl.add_argument("--replace", action="store_true", help="overwrite another artifact at PREFIX (functions pinned to it stop loading)")

    inv = sub.add_parser("invoke", help="call a deployed model over the Open Inference Protocol v2 and print its outputs")
    inv.add_argument("url", help="the deployment's base URL (API Gateway, Cloud Functions, Azure Functions, slimserve serve)")
    inv.add_argument("model")
    what = inv.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", action="append", help="a text for a text model's input (repeat for a batch)")
    what.add_argument("--npy", metavar="FILE", help="a .npy array for the model's single input")
    what.add_argument("--json", metavar="FILE", dest="json_file", help="an OIP v2 request body, sent as it is")
    auth = inv.add_mutually_exclusive_group()
    auth.add_argument("--api-key", help="sent in --api-key-header")
    auth.add_argument("--bearer", metavar="TOKEN", help="sent as Authorization: Bearer TOKEN (GCF: an identity token)")
    inv.add_argument("--api-key-header", default="x-api-key", help="x-api-key (default); x-functions-key for Azure")
    inv.add_argument("--version", help="model version (default: the highest served)")
    inv.add_argument("--retries", type=int, default=3, help="retries on 429/503, honouring Retry-After (default 3)")
    inv.add_argument("--timeout", type=float, default=30.0, help="seconds per attempt (default 30)")

    bf = sub.add_parser("backfill", help="send every object already under a prefix through the batch function's event path")
    bf.add_argument("source", metavar="PREFIX", help="s3://BUCKET/PREFIX, azure://CONTAINER/PREFIX or gs://BUCKET/PREFIX")
    to = bf.add_mutually_exclusive_group(required=True)
    to.add_argument("--queue", help="s3://: the batch queue's URL; azure://: the queue function's queue name")
    to.add_argument("--function-url", help="gs://: the storage-event function's URL (CloudEvents are posted to it)")
    bf.add_argument("--output", help="where results go (default: $SLIMSERVE_OUTPUT): objects with a result there are skipped")
    bf.add_argument("--since", metavar="DATE", help="only objects last modified at or after DATE (ISO 8601; UTC unless it says)")
    bf.add_argument("--limit", type=int, metavar="N", help="send at most N objects")
    bf.add_argument("--dry-run", action="store_true", help="list and count only; send nothing")
    bf.add_argument("--concurrency", type=int, default=8, help="sends in flight at once (default 8)")
    bf.add_argument("--retries", type=int, default=5, help="retries of a failed send, with backoff (default 5)")
    bf.add_argument("--bearer", metavar="TOKEN", help="--function-url: sent as Authorization: Bearer TOKEN (an identity token)")
    bf.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "optimize":
            from optimizer.pipeline import optimize_command

            return optimize_command(args)
        if args.command == "report":
            from optimizer.report import report_command

            return report_command(args)
        if args.command == "serve":
            from shared.errors import ArtifactError
            from shared.server.serve import ServeError, serve

            try:
                serve(
                    args.artifacts,
                    host=args.host,
                    port=args.port,
                    sagemaker_runtime=args.sagemaker_runtime,
                    api_key=args.api_key,
                    workers=args.workers,
                    threads=args.threads,
                    ort_threads=args.ort_threads,
                    batcher_max_size=args.max_batch_size,
                    batcher_max_delay_ms=args.max_queue_delay_ms,
                )
            except ArtifactError as exc:
                raise CliError(exc.message) from None
            except (ValueError, ServeError) as exc:  # a setting that cannot work, a port in use, workers that cannot start
                raise CliError(str(exc)) from None
            return 0
        if args.command == "bundle":
            if args.fetch_from and args.target == "sagemaker":
                raise CliError("--fetch-from is for function targets; the SageMaker model.tar.gz always holds the model")
            return importlib.import_module(BUNDLE_TARGETS[args.target]).bundle_command(args)
        if args.command == "upload":
            from slimserve.upload import upload_command

            return upload_command(args)
        if args.command == "backfill":
            from slimserve.backfill import backfill_command

            return backfill_command(args)
        if args.command == "invoke":
            from shared.client import InvokeError, invoke_command

            try:
                print(
                    invoke_command(
                        args.url,
                        args.model,
                        text=args.text,
                        npy=args.npy,
                        json_file=args.json_file,
                        api_key=args.api_key,
                        api_key_header=args.api_key_header,
                        bearer=args.bearer,
                        version=args.version,
                        retries=args.retries,
                        timeout_s=args.timeout,
                    )
                )
            except InvokeError as exc:
                raise CliError(exc.message) from None
            return 0
    except CliError as exc:
        print(f"slimserve: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:  # a runtime-only install asked for what an extra brings
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in OWN_PACKAGES:
            raise
        extra = "text" if missing == "tokenizers" else "optimizer"
        needs = f"`slimserve {args.command}` needs {missing}, which is not installed: pip install 'slimserve[{extra}]'"
        print(f"slimserve: error: {needs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
