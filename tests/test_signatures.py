"""The SavedModel's serving signatures (pipeline/training/signatures.py), checked by real clients:
`saved_model_cli show` and `run` on both signatures, and a fresh Python process that imports nothing
of the project, whose predictions equal EvaluateEstimator's (evaluation/evaluate.py `predict`) on the
same validation examples. For the sine, the image demo (small generated PNGs) and a table with a
text column and missing values, each trained for a few steps.

Images: the client sends the source files' bytes. They are PNGs at the training size (16 x 16), so
the served probabilities equal the evaluation's within the same 1e-5 as the others. Files of another
size and format (JPEG, BMP, GIF, PNG at 40 x 30) are decoded and resized in the graph to the pixels
the ETL makes of them (image_decoding.py, tests/test_image_decoding.py): the served probabilities
equal the model's on those pixels, within the same 1e-5.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from luigi.task_register import Register
from PIL import Image

import pipeline
from pipeline import layout, schema
from pipeline.etl import columns
from pipeline.etl.sources import load_image
from pipeline.evaluation import evaluate
from pipeline.training import signatures
from tests.conftest import SMALL_TRAINING, VENV_BIN, Config, build, make_root
from tests.test_images import TINY_TRAINING, make_folder

TOLERANCE = 1e-5  # absolute, between the served predictions and the evaluation's
CLASSES = ["circle", "square", "star"]
# A table: a numeric column whose name is no identifier (with a missing value), a text column with
# a missing token, a plain numeric one, and the label.
TABLE_HEADER = ["Bill Length (mm)", "island", "depth", "species"]


def _table_rows() -> list[list[Any]]:
    rng = np.random.default_rng(3)
    rows: list[list[Any]] = []
    for i in range(90):
        species = ["adelie", "gentoo", "chinstrap"][i % 3]
        length = round(float(rng.normal(40 + 5 * (i % 3), 1.5)), 2)
        island = ["Biscoe", "Dream", "Torgersen"][(i + (i // 7)) % 3]
        depth = round(float(rng.normal(18 - (i % 3), 1.0)), 2)
        rows.append([length, island, depth, species])
    rows[4][0] = "NA"  # missing cells, in the train split or the validation one
    rows[5][1] = "NA"
    rows[10][0] = ""
    rows[11][1] = " ? "
    rows[16][0] = "?"
    return rows


def _train(folder: Path, settings: dict[tuple[str, str], Any]) -> dict[str, Path]:
    """Train (and evaluate) in an artifact root of its own with `settings`; return its folders."""
    config = Config()
    config.set("paths", "root", folder)
    for (section, option), value in settings.items():
        config.set(section, option, value)
    Register.clear_instance_cache()
    try:
        build(pipeline.EvaluateEstimator())
        return {
            "root": folder,
            "shards": pipeline.CreateShards().output_dir(),
            "model": pipeline.TrainEstimator().output_dir(),
        }
    finally:
        config.restore()
        Register.clear_instance_cache()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Path]]]:
    base = tmp_path_factory.mktemp("signatures")
    training = {("TrainEstimator", option): value for option, value in SMALL_TRAINING.items()}
    sine = _train(make_root(base / "sine"), training)
    images = make_folder(base / "image" / "pictures", {name: 6 for name in CLASSES})
    image = _train(
        make_root(base / "image"),
        {
            ("CreateShards", "image_dir"): images,
            ("CreateShards", "image_size"): 16,
            **{("TrainEstimator", option): value for option, value in TINY_TRAINING.items()},
        },
    )
    image["images"] = images
    csv_path = base / "table" / "penguins.csv"
    csv_path.parent.mkdir(parents=True)
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([TABLE_HEADER, *_table_rows()])
    table = _train(
        make_root(base / "table"),
        {
            ("CreateShards", "csv"): csv_path,
            ("CreateShards", "label_column"): "species",
            **training,
            ("TrainEstimator", "batch_size"): 16,  # of 60 train rows
        },
    )
    table["csv"] = csv_path
    yield {"sine": sine, "image": image, "table": table}


def _saved_model(run: dict[str, Path]) -> Path:
    return run["model"] / layout.SAVED_MODEL


def _cli(*args: str) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "saved_model_cli"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _signature_defs(shown: str) -> dict[str, dict[str, dict[str, tuple[str, str]]]]:
    """`saved_model_cli show --all`'s signatures: name -> {"inputs"/"outputs": key -> (dtype, shape)}."""
    found: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
    pattern = r"signature_def\['([^']+)'\]:(.*?)Method name is"
    for name, body in re.findall(pattern, shown, re.S):
        entry: dict[str, dict[str, tuple[str, str]]] = {"inputs": {}, "outputs": {}}
        for side, key, dtype, shape in re.findall(
            r"(inputs|outputs)\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", body
        ):
            entry[side][key] = (dtype, shape)
        found[name] = entry
    return found


def _run_outputs(printed: str) -> dict[str, str]:
    """`saved_model_cli run`'s printed results: output key -> the printed array."""
    parts = re.split(r"Result for output key (\w+):\n", printed)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def _numbers(text: str) -> np.ndarray:
    return np.array([float(v) for v in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", text)])


def _strings(text: str) -> list[str]:
    return re.findall(r"b'([^']*)'", text)


CLASSIFICATION = {
    "probabilities": ("DT_FLOAT", "(-1, 3)"),
    "class_ids": ("DT_INT64", "(-1)"),
    "classes": ("DT_STRING", "(-1)"),
}
EXPECTED_INPUTS = {
    "sine": {"x": ("DT_FLOAT", "(-1)")},
    "image": {"image_bytes": ("DT_STRING", "(-1)")},
    "table": {"bill_length_mm": ("DT_FLOAT", "(-1)"), "island": ("DT_STRING", "(-1)"), "depth": ("DT_FLOAT", "(-1)")},
}


@pytest.mark.parametrize("problem", ["sine", "image", "table"])
def test_saved_model_cli_shows_both_signatures_with_the_contracts_names(
    runs: dict[str, dict[str, Path]], problem: str
) -> None:
    shown = _cli("show", "--dir", str(_saved_model(runs[problem])), "--all")
    defs = _signature_defs(shown)
    outputs = {"predictions": ("DT_FLOAT", "(-1)")} if problem == "sine" else CLASSIFICATION
    assert defs[signatures.DEFAULT] == {"inputs": {"examples": ("DT_STRING", "(-1)")}, "outputs": outputs}
    assert defs[signatures.RAW] == {"inputs": EXPECTED_INPUTS[problem], "outputs": outputs}


def test_saved_model_cli_runs_the_sine_on_both_signatures(runs: dict[str, dict[str, Path]]) -> None:
    saved = str(_saved_model(runs["sine"]))
    model = evaluate.load_model(runs["sine"]["model"])
    expected = np.asarray(model(np.array([[0.5], [2.0], [-1.0]], np.float32)))[:, 0]
    raw = _run_outputs(_cli("run", "--dir", saved, "--tag_set", "serve", "--signature_def", "raw",
                            "--input_exprs", "x=[0.5, 2.0, -1.0]"))  # fmt: skip
    examples = 'examples=[{"x": [0.5]}, {"x": [2.0]}, {"x": [-1.0]}]'
    default = _run_outputs(_cli("run", "--dir", saved, "--tag_set", "serve", "--signature_def", "serving_default",
                                "--input_examples", examples))  # fmt: skip
    for printed in (raw, default):
        assert list(printed) == ["predictions"]
        np.testing.assert_allclose(_numbers(printed["predictions"]), expected, atol=1e-4)  # printed to 4 digits+
    assert abs(expected[0] - (math.sin(0.5) + 1)) < 0.3  # a trained sine, not a constant


def test_saved_model_cli_runs_a_table_by_column_names_with_missing_cells(runs: dict[str, dict[str, Path]]) -> None:
    saved = str(_saved_model(runs["table"]))
    raw = _run_outputs(_cli(
        "run", "--dir", saved, "--tag_set", "serve", "--signature_def", "raw", "--input_exprs",
        'bill_length_mm=[40.1, 50.3, 1e999];island=["Biscoe", "NA", "Dream"];depth=[18.2, 16.0, 17.0]',
    ))  # fmt: skip  # a literal has no NaN: inf, which is no finite number, is missing as in the ETL
    examples = (
        '[{"Bill Length (mm)": [40.1], "island": ["Biscoe"], "depth": [18.2]},'
        ' {"Bill Length (mm)": [50.3], "island": ["NA"], "depth": [16.0]},'
        ' {"island": ["Dream"], "depth": [17.0]}]'  # the length absent: missing
    )
    default = _run_outputs(_cli("run", "--dir", saved, "--tag_set", "serve", "--signature_def", "serving_default",
                                "--input_examples", f"examples={examples}"))  # fmt: skip
    for printed in (raw, default):
        assert sorted(printed) == ["class_ids", "classes", "probabilities"]
        probabilities = _numbers(printed["probabilities"]).reshape(3, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
        ids = _numbers(printed["class_ids"]).astype(int)
        assert ids.tolist() == probabilities.argmax(axis=1).tolist()
        names = schema.read_manifest(runs["table"]["shards"])["class_names"]
        assert _strings(printed["classes"]) == [names[i] for i in ids]
    np.testing.assert_allclose(_numbers(raw["probabilities"]), _numbers(default["probabilities"]), atol=1e-6)


def test_saved_model_cli_runs_an_image_file_on_both_signatures(
    runs: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    import tensorflow as tf

    saved = str(_saved_model(runs["image"]))
    files = sorted(runs["image"]["images"].glob("*/*.png"))[:2]
    data = [p.read_bytes() for p in files]
    np.save(tmp_path / "raw.npy", np.array(data))  # bytes ("S"): a PNG never ends in a NUL
    examples = [
        tf.train.Example(
            features=tf.train.Features(feature={"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[d]))})
        ).SerializeToString()
        for d in data
    ]
    np.save(tmp_path / "examples.npy", np.array(examples))
    assert all(not e.endswith(b"\0") for e in examples)
    raw = _run_outputs(_cli("run", "--dir", saved, "--tag_set", "serve", "--signature_def", "raw",
                            "--inputs", f"image_bytes={tmp_path / 'raw.npy'}"))  # fmt: skip
    default = _run_outputs(_cli("run", "--dir", saved, "--tag_set", "serve", "--signature_def", "serving_default",
                                "--inputs", f"examples={tmp_path / 'examples.npy'}"))  # fmt: skip
    for printed in (raw, default):
        probabilities = _numbers(printed["probabilities"]).reshape(2, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
        assert _strings(printed["classes"]) == [CLASSES[i] for i in probabilities.argmax(axis=1)]


# --- a client that imports nothing of the project --------------------------------------------

CLIENT = r"""
import base64, json, math, sys
import tensorflow as tf

saved, request = sys.argv[1], json.load(open(sys.argv[2]))
model = tf.saved_model.load(saved)
info = json.load(open(saved + "/assets.extra/serving.json"))

def example(values):
    feature = {}
    for entry in info["inputs"]:
        value = values.get(entry["example_key"])
        if value is None:
            continue  # absent: missing
        if entry["dtype"] == "string":
            feature[entry["example_key"]] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        else:
            feature[entry["example_key"]] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

rows = request["rows"]  # per example: example_key -> a float, a base64 string (bytes), or null
for row in rows:
    for entry in info["inputs"]:
        if entry["dtype"] == "string" and row.get(entry["example_key"]) is not None:
            row[entry["example_key"]] = base64.b64decode(row[entry["example_key"]])
raw = {}
for entry in info["inputs"]:
    values = [row.get(entry["example_key"]) for row in rows]
    if entry["dtype"] == "string":
        raw[entry["raw_name"]] = tf.constant([b"" if v is None else v for v in values])
    else:
        raw[entry["raw_name"]] = tf.constant([math.nan if v is None else v for v in values], tf.float32)
out = {
    "raw": {k: v.numpy().tolist() for k, v in model.signatures["raw"](**raw).items()},
    "serving_default": {
        k: v.numpy().tolist()
        for k, v in model.signatures["serving_default"](examples=tf.constant([example(r) for r in rows])).items()
    },
    "pipeline_imported": any(name == "pipeline" or name.startswith("pipeline.") for name in sys.modules),
}
for signature in out.values():
    if isinstance(signature, dict) and "classes" in signature:
        signature["classes"] = [c.decode() for c in signature["classes"]]
print(json.dumps(out))
"""


def _client(saved: Path, rows: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """Run CLIENT in a fresh process, in `folder` (not the project's): the outputs of both signatures."""
    import base64

    encoded = [{k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in r.items()} for r in rows]
    (folder / "request.json").write_text(json.dumps({"rows": encoded}))
    (folder / "client.py").write_text(CLIENT)
    done = subprocess.run(
        [sys.executable, "-I", "client.py", str(saved), "request.json"],  # -I: no project on sys.path
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("pipeline_imported") is False
    return out


def _check_equal(out: dict[str, Any], predictions: np.ndarray, class_names: list[str]) -> None:
    for name in ("raw", "serving_default"):
        served = out[name]
        if class_names:
            np.testing.assert_allclose(np.array(served["probabilities"]), predictions, atol=TOLERANCE, rtol=0)
            assert served["class_ids"] == predictions.argmax(axis=1).tolist()
            assert served["classes"] == [class_names[i] for i in predictions.argmax(axis=1)]
        else:
            np.testing.assert_allclose(np.array(served["predictions"]), predictions[:, 0], atol=TOLERANCE, rtol=0)


def test_a_fresh_client_of_the_sine_predicts_as_the_evaluation(
    runs: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    run = runs["sine"]
    p = evaluate.predict(run["model"], run["shards"], "validation")
    rows = [{"x": float(x)} for x in p["inputs"][:, 0]]
    out = _client(_saved_model(run), rows, tmp_path)
    _check_equal(out, p["predictions"], [])
    assert len(out["raw"]["predictions"]) == len(p["labels"]) > 50


def test_a_fresh_client_of_images_sends_the_files_and_predicts_as_the_evaluation(
    runs: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    run = runs["image"]
    p = evaluate.predict(run["model"], run["shards"], "validation", keep_inputs=False)
    rows = [{"image": (run["images"] / rel).read_bytes()} for rel in p["ids"]]
    out = _client(_saved_model(run), rows, tmp_path)
    _check_equal(out, p["predictions"], CLASSES)
    assert len(rows) == 6

    # Another size and format: decoded and resized in the graph to the pixels the ETL makes of the same
    # file (sources.load_image, Pillow), so the served probabilities equal the model's on those pixels.
    image = Image.open(run["images"] / p["ids"][0]).convert("RGB").resize((40, 30))
    others = []
    for fmt in ("JPEG", "BMP", "GIF", "PNG"):
        encoded = io.BytesIO()
        image.save(encoded, format=fmt)
        others.append({"image": encoded.getvalue()})
    served = _client(_saved_model(run), others, tmp_path)
    size = json.loads((run["shards"] / "manifest.json").read_text())["image_shape"][0]
    pixels = np.stack([np.asarray(load_image(other["image"], size)) for other in others]).astype("float32") / 255
    expected = np.asarray(evaluate.load_model(run["model"])(pixels, training=False))
    for name in ("raw", "serving_default"):
        np.testing.assert_allclose(np.array(served[name]["probabilities"]), expected, atol=TOLERANCE, rtol=0)
        assert len(served[name]["classes"]) == 4


def test_a_fresh_client_of_a_table_sends_the_csv_rows_and_predicts_as_the_evaluation(
    runs: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    run = runs["table"]
    manifest = schema.read_manifest(run["shards"])
    p = evaluate.predict(run["model"], run["shards"], "validation", keep_inputs=False)
    with open(run["csv"], newline="") as f:
        lines = {line: row for line, row in enumerate(csv.reader(f), start=1)}
    kinds = {c["column"]: c["kind"] for c in manifest["columns"].values()}
    rows = []
    for line in p["ids"]:  # a table's example id is its line in the file
        cells = dict(zip(TABLE_HEADER, lines[int(line)], strict=True))
        row: dict[str, Any] = {}
        for name, cell in cells.items():
            if kinds.get(name) == "numeric":
                row[name] = None if columns.number(cell) is None else float(cell)  # missing: NaN / absent
            elif kinds.get(name) == "categorical":
                row[name] = cell.encode()  # as in the file: "NA", " ? " are the graph's to recognise
        rows.append(row)
    assert any(r["Bill Length (mm)"] is None for r in rows)  # a missing number among the validation rows
    out = _client(_saved_model(run), rows, tmp_path)
    _check_equal(out, p["predictions"], manifest["class_names"])

    info = json.loads((_saved_model(run) / signatures.SERVING_INFO_DIR / signatures.SERVING_INFO).read_text())
    assert [(e["example_key"], e["raw_name"], e["kind"]) for e in info["inputs"]] == [
        ("Bill Length (mm)", "bill_length_mm", "numeric"),
        ("island", "island", "categorical"),
        ("depth", "depth", "numeric"),
    ]


def test_raw_names_keep_identifiers_and_sanitise_the_others_without_collisions() -> None:
    entries = [
        {"example_key": "a b", "feature": "a_b"},
        {"example_key": "a_b", "feature": "a_b_2"},
        {"example_key": "2nd", "feature": "c_2nd"},
        {"example_key": "Depth", "feature": "depth"},
    ]
    assert signatures.raw_names(entries) == ["a_b_2", "a_b", "c_2nd", "Depth"]


def test_the_missing_tokens_are_the_etls() -> None:
    assert set(signatures.MISSING_TOKENS) == columns.MISSING
