"""The batch core on the local disk (file://): formats, per-record failures, micro-batching, determinism.

Real models run (onnxruntime), real files are read and written; nothing is mocked.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from shared.batch.core import BatchRunner, Record
from shared.config import Settings
from shared.storage import Storage


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "in").mkdir()
    return tmp_path / "in", tmp_path / "out"


def runner(plane, out: Path, **settings) -> BatchRunner:
    return BatchRunner(plane, Settings(output=f"file://{out}", **settings), Storage())


def reference(models, name: str):
    session = ort.InferenceSession(str(models[name] / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda feed: dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def result(outcome) -> dict:
    return json.loads(Path(outcome.output.removeprefix("file://")).read_bytes())


def tensors(doc: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}


# --- formats ---------------------------------------------------------------------------------------


def test_npy_npz_and_json_inputs_answer_like_onnxruntime(plane, models, folders):
    src, out = folders
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    (src / "a.npy").write_bytes(npy(x))
    np.savez(src / "b.npz", input=x)
    request = {
        "id": "req-7",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}],
        "outputs": [{"name": "probs"}],
    }
    (src / "c.json").write_text(json.dumps(request))
    records = [Record.from_uri(f"file://{src}/{n}", id=n, model="tiny") for n in ("a.npy", "b.npz", "c.json")]

    report = runner(plane, out).run(records)

    assert [o.error for o in report.outcomes] == [None, None, None]
    want = reference(models, "tiny")({"input": x})
    a, b, c = (result(o) for o in report.outcomes)
    for doc in (a, b):
        np.testing.assert_allclose(tensors(doc)["probs"], want["probs"], rtol=1e-6)
        np.testing.assert_allclose(tensors(doc)["logits"], want["logits"], rtol=1e-6)
    assert a["model_name"] == "tiny" and a["parameters"]["source"] == f"file://{src}/a.npy"
    assert [t["name"] for t in c["outputs"]] == ["probs"] and c["id"] == "req-7"  # the request's own choices
    assert report.outcomes[0].output == f"file://{out}{src}/a.npy.json"  # input key + suffix


def test_jsonl_texts_feed_a_bytes_input(plane, folders):
    src, out = folders
    lines = ['"hello world"', '{"text": "one"}', "", '"a b c d"']
    record = Record.inline("incoming/texts.jsonl", "\n".join(lines).encode(), id="t", model="words")

    report = runner(plane, out).run([record])

    assert report.outcomes[0].error is None
    assert tensors(result(report.outcomes[0]))["count"].tolist() == [2, 1, 4]
    assert report.outcomes[0].output == f"file://{out}/incoming/texts.jsonl.json"


def test_npz_output_format_is_deterministic(plane, models, folders):
    src, out = folders
    x = np.ones((2, 4), np.float32)
    record = Record.inline("x.npy", npy(x), model="tiny")
    run = runner(plane, out, batch_output_format="npz")

    first = Path(run.run([record]).outcomes[0].output.removeprefix("file://")).read_bytes()
    second = Path(run.run([record]).outcomes[0].output.removeprefix("file://")).read_bytes()

    assert first == second
    with np.load(io.BytesIO(first)) as archive:
        np.testing.assert_allclose(archive["probs"], reference(models, "tiny")({"input": x})["probs"], rtol=1e-6)


# --- failures: each record alone -------------------------------------------------------------------


def test_each_bad_record_fails_alone_with_its_reason(plane, folders):
    src, out = folders
    good = np.zeros((1, 4), np.float32)
    cases = {
        "good.npy": (npy(good), 200, None),
        "junk.npy": (b"not numpy at all", 400, "is not a readable .npy array"),
        "shape.npy": (npy(np.zeros((1, 5), np.float32)), 400, "has shape [1, 5], model 'tiny' expects [-1, 4]"),
        "dtype.npy": (npy(np.zeros((1, 4), np.float64)), 400, "has datatype FP64, model 'tiny' expects FP32"),
        "names.npz": (None, 400, "is not an input of model 'tiny'"),
        "body.json": (b'{"inputs": [', 400, "not valid JSON"),
        "texts.jsonl": (b'"a"\n', 400, "a .jsonl input holds texts; input 'input' of model 'tiny' takes FP32"),
        "table.csv": (b"1,2,3,4", 400, "unsupported input format"),
    }
    np.savez(src / "names.npz", wrong=good)
    for name, (data, _, _) in cases.items():
        if data is not None:
            (src / name).write_bytes(data)
    records = [Record.from_uri(f"file://{src}/{n}", id=n, model="tiny") for n in cases]
    records.append(Record.from_uri(f"file://{src}/missing.npy", id="missing.npy", model="tiny"))

    report = runner(plane, out).run(records)

    assert report.failed_ids() == set(cases) - {"good.npy"} | {"missing.npy"}
    by_id = {o.record.id: o for o in report.outcomes}
    assert by_id["good.npy"].ok and Path(by_id["good.npy"].output.removeprefix("file://")).is_file()
    for name, (_, status, message) in cases.items():
        if message:
            assert by_id[name].status == status and message in by_id[name].error, (name, by_id[name].error)
    assert by_id["missing.npy"].status == 404 and "does not exist" in by_id["missing.npy"].error
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["good.npy.json"]


def test_keys_that_would_leave_the_output_prefix_are_refused(plane, folders):
    src, out = folders
    report = runner(plane, out).run([Record.inline("../../etc/x.npy", npy(np.zeros((1, 4), np.float32)), id="evil", model="tiny")])
    assert report.failed_ids() == {"evil"} and "'..' segment" in report.outcomes[0].error
    assert not out.exists()


# --- micro-batching --------------------------------------------------------------------------------


def test_compatible_records_share_one_run_and_split_back(plane, models, folders):
    src, out = folders
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 2, 3, 1, 2)]
    records = [Record.inline(f"in/{i}.npy", npy(x), id=str(i), model="tiny") for i, x in enumerate(xs)]

    report = runner(plane, out, batch_max_size=64, batch_max_wait_ms=1000).run(records)

    assert report.runs == 1 and not report.failed
    ref = reference(models, "tiny")
    for outcome, x in zip(report.outcomes, xs):
        np.testing.assert_allclose(tensors(result(outcome))["probs"], ref({"input": x})["probs"], rtol=1e-6)


def test_max_size_bounds_the_rows_of_a_run(plane, folders):
    src, out = folders
    records = [Record.inline(f"in/{i}.npy", npy(np.zeros((2, 4), np.float32)), model="tiny") for i in range(5)]
    report = runner(plane, out, batch_max_size=4, batch_max_wait_ms=1000).run(records)
    assert report.runs == 3 and not report.failed  # 2+2 | 2+2 | 2


def test_a_record_that_breaks_a_concatenated_run_fails_alone(plane, models, folders):
    src, out = folders
    indices = [[[1]], [[2], [3]], [[99]], [[4]]]  # 99: past the table; only onnxruntime notices
    records = [Record.inline(f"in/{i}.npy", npy(np.array(v, np.int64)), id=str(i), model="lookup") for i, v in enumerate(indices)]

    report = runner(plane, out, batch_max_wait_ms=1000).run(records)

    assert report.failed_ids() == {"2"}
    assert report.outcomes[2].status == 400 and "model rejected the input" in report.outcomes[2].error
    assert report.runs == 1 + len(records)  # the shared run, then one per record
    ref = reference(models, "lookup")
    for i in (0, 1, 3):
        want = ref({"idx": np.array(indices[i], np.int64)})["emb"]
        np.testing.assert_array_equal(tensors(result(report.outcomes[i]))["emb"], want)


def test_records_of_different_models_or_shapes_do_not_mix(plane, folders):
    src, out = folders
    records = [
        Record.inline("a.npy", npy(np.zeros((1, 4), np.float32)), model="tiny"),
        Record.inline("b.npy", npy(np.zeros((1, 1), np.int64)), model="lookup"),
        Record.inline("c.npy", npy(np.zeros((2, 4), np.float32)), model="tiny"),
        Record.inline("d.jsonl", b'"x y"', model="words"),
    ]
    report = runner(plane, out, batch_max_wait_ms=1000).run(records)
    assert not report.failed and report.runs == 3


def test_a_record_longer_than_a_micro_batch_runs_in_chunks_and_answers_whole(plane, models, folders):
    src, out = folders
    x = np.random.default_rng(2).normal(size=(1000, 4)).astype(np.float32)
    report = runner(plane, out, batch_max_size=64).run([Record.inline("in/long.npy", npy(x), model="tiny")])
    assert not report.failed and report.runs == 16  # ceil(1000 / 64)
    np.testing.assert_allclose(
        tensors(result(report.outcomes[0]))["probs"], reference(models, "tiny")({"input": x})["probs"], rtol=1e-5, atol=1e-6
    )


def zip_bomb(rows: int) -> bytes:
    """An .npz whose one member is `rows` x 4 float32 zeros: it deflates to a thousandth of that."""
    import zipfile

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (rows, 4)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("input.npy", "w", force_zip64=True) as fh:
        fh.write(member.getvalue())
        chunk = bytes(1 << 20)
        for _ in range(rows * 16 // len(chunk)):
            fh.write(chunk)
    return buffer.getvalue()


def test_an_npz_bomb_is_refused_from_its_header_before_inflating(plane, folders):
    """A 64 MiB member in a ~64 KiB archive: refused from the .npy header inside it, not inflated."""
    import tracemalloc

    bomb = zip_bomb(4 << 20)
    assert len(bomb) < 200_000
    tracemalloc.start()
    report = runner(plane, folders[1], batch_max_elements=1_000_000).run([Record.inline("in/bomb.npz", bomb, model="tiny")])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (
        report.outcomes[0].status == 413 and "16,777,216 elements, over SLIMSERVE_BATCH_MAX_ELEMENTS=1,000,000" in report.outcomes[0].error
    )
    assert peak < 8 << 20


@pytest.mark.parametrize(
    "name, body, status, message",
    [
        ("big.npy", npy(np.zeros((10, 4), np.float32)), 413, "over SLIMSERVE_BATCH_MAX_OBJECT_BYTES=100"),
        ("nan.npy", npy(np.array([[np.nan, 0, 0, 0]], np.float32)), 200, None),
        ("deep.json", b'{"inputs":' + b"[" * 100 + b"]" * 100 + b"}", 400, "over SLIMSERVE_MAX_JSON_DEPTH=32"),
        ("huge.json", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1' + b"0" * 5000 + b",0,0,0]}]}", 400, "number"),
        (
            "twice.json",
            json.dumps(
                {
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}],
                    "outputs": [{"name": "probs"}, {"name": "probs"}],
                }
            ).encode(),
            400,
            "requested more than once",
        ),
    ],
)
def test_batch_records_pass_the_same_checks_as_http(plane, folders, name, body, status, message):
    limit = 100 if name == "big.npy" else 64 << 20
    report = runner(plane, folders[1], batch_max_object_bytes=limit).run([Record.inline(f"in/{name}", body, model="tiny")])
    outcome = report.outcomes[0]
    assert outcome.status == status and (message is None or message in outcome.error), outcome.error


def test_the_object_size_is_known_before_it_is_read(plane, folders, monkeypatch):
    src, out = folders
    (src / "big.npy").write_bytes(npy(np.zeros((100, 4), np.float32)))
    storage = Storage()
    reads = []
    monkeypatch.setattr(storage, "read", lambda uri, **kw: reads.append(uri) or Storage.read(storage, uri, **kw))
    monkeypatch.setattr(type(storage._backends["file"]), "stream", lambda self, obj: (_ for _ in ()).throw(AssertionError("downloaded")))
    report = BatchRunner(plane, Settings(output=f"file://{out}", batch_max_object_bytes=1000), storage).run(
        [Record.from_uri(f"file://{src}/big.npy", model="tiny")]
    )
    assert report.outcomes[0].status == 413 and "is 1,728 bytes, over SLIMSERVE_BATCH_MAX_OBJECT_BYTES=1,000" in report.outcomes[0].error


# --- which model -----------------------------------------------------------------------------------


def test_model_comes_from_setting_else_parent_folder(plane, folders):
    src, out = folders
    x = npy(np.zeros((1, 4), np.float32))
    by_folder = runner(plane, out).run(
        [Record.inline("incoming/tiny/a.npy", x), Record.inline("incoming/nope/b.npy", x), Record.inline("flat.npy", x)]
    )
    assert [o.ok for o in by_folder.outcomes] == [True, False, False]
    assert "unknown model 'nope'" in by_folder.outcomes[1].error
    assert "SLIMSERVE_BATCH_MODEL" in by_folder.outcomes[2].error

    by_setting = runner(plane, out, batch_model="tiny/1").run([Record.inline("flat.npy", x)])
    assert by_setting.outcomes[0].ok


def test_runner_refuses_a_missing_output_or_format(plane):
    with pytest.raises(ValueError, match="SLIMSERVE_OUTPUT"):
        BatchRunner(plane, Settings(), Storage())
    with pytest.raises(ValueError, match="json or npz"):
        BatchRunner(plane, Settings(output="file:///tmp/x", batch_output_format="csv"), Storage())
