"""`python -m pipeline predict RUN FILES...` (pipeline/cli/predict.py): a run's export called through its raw
signature on new files.

Two kinds of test: against hand-made SavedModels that follow the export's contract (signature `raw`, its
inputs and outputs), put where a real run's export sits, with answers known in advance; and against the real
exports of tiny trainings (sine, a table, the image demo)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from luigi.task_register import Register
from PIL import Image

import pipeline
from pipeline import __main__ as commands
from pipeline import layout
from pipeline.etl import shapes
from tests.conftest import Config, build, make_root, run_cli

TINY = {"batch_size": "32", "max_steps": "40", "checkpoint_steps": "40", "steps_per_execution": "20"}


def _train(folder: Path, **sections: Mapping[str, object]) -> Path:
    """Train the tiny DAG down to TrainEstimator in the artifact root `folder`; its model_dir."""
    config = Config()
    config.set("paths", "root", folder)
    for option, setting in TINY.items():
        config.set("TrainEstimator", option, setting)
    for section, values in sections.items():
        for option, value in values.items():
            config.set(section, option, value)
    Register.clear_instance_cache()
    try:
        build(pipeline.TrainEstimator())
        return pipeline.TrainEstimator().output_dir()
    finally:
        config.restore()
        Register.clear_instance_cache()


@pytest.fixture(scope="module")
def sine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact root with one sine model."""
    folder = make_root(tmp_path_factory.mktemp("predict-sine"))
    _train(folder)
    return folder


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact root with one regression model on a table: a numeric column with a space, a categorical one."""
    folder = make_root(tmp_path_factory.mktemp("predict-table"))
    rng = np.random.default_rng(0)
    lines = ["size cm,colour,y"]
    for i in range(60):
        size, colour = float(rng.uniform(0, 10)), ("red", "blue", "green")[i % 3]
        lines.append(f"{size:.3f},{colour},{size + (3 if colour == 'red' else 0):.3f}")
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    _train(folder, CreateShards={"csv": folder / "t.csv", "label_column": "y"})
    return folder


def _model_dir(root: Path) -> Path:
    (model_dir,) = (root / "models").iterdir()
    return model_dir


def _has_raw(root: Path) -> bool:
    return "raw" in tf.saved_model.load(str(_model_dir(root) / layout.SAVED_MODEL)).signatures


@pytest.fixture
def copy_of(tmp_path: Path, config: Config) -> Iterator[object]:
    """A copy of an artifact root, made the root of the commands run in-process, whose export can be replaced."""

    def copy(root: Path) -> Path:
        target = tmp_path / "root"
        shutil.copytree(root, target, symlinks=True)
        config.set("paths", "root", target)
        Register.clear_instance_cache()
        return target

    yield copy
    Register.clear_instance_cache()


def _replace_export(root: Path, module: tf.Module, signature: str = "raw") -> None:
    """Put `module` where the run's export sits, with one signature: its method of that name."""
    saved = _model_dir(root) / layout.SAVED_MODEL
    shutil.rmtree(saved)
    tf.saved_model.save(module, str(saved), signatures={signature: getattr(module, signature).get_concrete_function()})


class Line(tf.Module):
    """The sine's contract: x -> predictions = 2x + 1."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def raw(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"predictions": 2.0 * x + 1.0}


class BySize(tf.Module):
    """The images' contract: a file of more than 200 bytes is `big` (probability 0.9), else `small` (0.8)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def raw(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        big = tf.strings.length(image_bytes) > 200
        class_ids = tf.cast(big, tf.int64)
        probabilities = tf.where(big[:, None], [[0.1, 0.9]], [[0.8, 0.2]])
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "classes": tf.gather(["small", "big"], class_ids),
        }


class Sum(tf.Module):
    """The table's contract: `size cm` (sanitised) + 3 for red; NaN (missing) counts as -100."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="size_cm"),
            tf.TensorSpec([None], tf.string, name="colour"),
        ]
    )
    def raw(self, size_cm: tf.Tensor, colour: tf.Tensor) -> dict[str, tf.Tensor]:
        size = tf.where(tf.math.is_nan(size_cm), -100.0, size_cm)
        return {"predictions": size + tf.where(colour == "red", 3.0, 0.0) + tf.where(colour == "", 1000.0, 0.0)}


class Renamed(Sum):
    """Sum, its numeric input named `c_1`."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="c_1"),
            tf.TensorSpec([None], tf.string, name="colour"),
        ]
    )
    def raw(self, c_1: tf.Tensor, colour: tf.Tensor) -> dict[str, tf.Tensor]:
        return Sum.raw.python_function(self, c_1, colour)


def _predict(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = commands.main(["predict", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- the contract, with hand-made exports ----------------------------------------------------------


def test_the_sine_contract_numbers_and_a_csv_as_table_json_and_csv(
    sine: Path, copy_of: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = copy_of(sine)  # type: ignore[operator]
    _replace_export(root, Line())
    name = _model_dir(root).name
    code, out, err = _predict(capsys, name, "0.5", "-1", "--json")
    assert code == 0, err
    assert json.loads(out) == [{"input": "0.5", "prediction": 2.0}, {"input": "-1", "prediction": -1.0}]
    (tmp_path / "xs.csv").write_text("x,other\n3\n1.5,7\n")
    code, out, err = _predict(capsys, name[-12:-6], str(tmp_path / "xs.csv"), "--csv")  # an identity prefix
    assert code == 0, err
    assert out == "input,prediction\nxs.csv:2,7.0\nxs.csv:3,4.0\n"
    assert "ignored: other" in err
    code, out, _ = _predict(capsys, str(_model_dir(root)), "2", "--out", str(tmp_path / "p.txt"))
    assert code == 0 and "1 predictions written to" in out
    assert (tmp_path / "p.txt").read_text().split() == ["input", "prediction", "2", "5.0000"]


def test_the_image_contract_files_and_folders_with_class_names(
    sine: Path, copy_of: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = copy_of(sine)  # type: ignore[operator]
    _replace_export(root, BySize())
    photos = tmp_path / "photos" / "deep"
    photos.mkdir(parents=True)
    Image.fromarray(shapes.draw_shape("star", 64, 7, 1)).save(photos / "big.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "photos" / "small.gif")
    (tmp_path / "photos" / "notes.txt").write_text("not an image, and not listed: wrong suffix")
    code, out, err = _predict(capsys, _model_dir(root).name, str(tmp_path / "photos"), "--json")
    assert code == 0, err
    found = {Path(r["input"]).name: (r["class"], round(r["probability"], 4)) for r in json.loads(out)}
    assert found == {"big.png": ("big", 0.9), "small.gif": ("small", 0.8)}

    (tmp_path / "fake.png").write_text("hello")
    code, _, err = _predict(capsys, _model_dir(root).name, str(tmp_path / "fake.png"))
    assert code == 40 and err.strip().endswith(f"{tmp_path / 'fake.png'} is not an image (JPEG, PNG, BMP or GIF): "
                                               "leave it out or convert it.")  # fmt: skip


def test_the_table_contract_columns_by_name_missing_cells_and_a_missing_column(
    table: Path, copy_of: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = copy_of(table)  # type: ignore[operator]
    _replace_export(root, Sum())
    rows = tmp_path / "new.csv"
    rows.write_text("id,colour,size cm\n1,red,2\n2,blue,NA\n3,?,1.5\n")  # another order, an extra column
    code, out, err = _predict(capsys, _model_dir(root).name, str(rows), "--csv")
    assert code == 0, err
    assert out == "input,prediction\n2,5.0\n3,-100.0\n4,1001.5\n"
    assert "columns not used by the model, ignored: id" in err
    rows.write_text("colour\nred\n")
    code, _, err = _predict(capsys, _model_dir(root).name, str(rows))
    assert code == 40 and "has no column 'size_cm', which the model takes. Its columns: colour." in err

    # An input name the export maps to its column in assets.extra/serving.json (training/signatures.py).
    _replace_export(root, Renamed())
    info = {"inputs": [{"raw_name": "c_1", "example_key": "size cm"}, {"raw_name": "colour", "example_key": "colour"}]}
    (_model_dir(root) / layout.SAVED_MODEL / "assets.extra").mkdir()
    (_model_dir(root) / layout.SAVED_MODEL / "assets.extra" / "serving.json").write_text(json.dumps(info))
    rows.write_text("size cm,colour\n2,red\n")
    code, out, err = _predict(capsys, _model_dir(root).name, str(rows), "--csv")
    assert (code, out) == (0, "input,prediction\n2,5.0\n"), err


def test_bad_runs_are_one_line_and_exit_40(sine: Path, copy_of: object) -> None:
    root = copy_of(sine)  # type: ignore[operator]
    out = run_cli(["python", "-m", "pipeline", "predict", "nosuchrun", "1.0"], cwd=root)
    assert out.returncode == 40 and out.stderr.startswith("ERROR: ParameterError: RUN names no trained model")
    assert len(out.stderr.strip().splitlines()) == 1
    shutil.rmtree(_model_dir(root) / layout.SAVED_MODEL)
    out = run_cli(["python", "-m", "pipeline", "predict", _model_dir(root).name, "1.0"], cwd=root)
    assert out.returncode == 40 and f"{_model_dir(root).name} has no export" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# --- the real exports ----------------------------------------------------------------------------


class ExamplesOnly(tf.Module):
    """An export with `serving_default` and no `raw`: an older training's, or another tool's."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"predictions": tf.zeros_like(tf.strings.length(examples), tf.float32)}


def test_an_export_without_the_raw_signature_is_one_line_and_exit_40(sine: Path, copy_of: object) -> None:
    assert _has_raw(sine)  # every training writes it (pipeline/training/signatures.py)
    root = copy_of(sine)  # type: ignore[operator]
    _replace_export(root, ExamplesOnly(), "serving_default")
    out = run_cli(["python", "-m", "pipeline", "predict", _model_dir(root).name, "1.0"], cwd=root)
    assert out.returncode == 40 and "has no 'raw' signature (it has: serving_default)" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "retrain" in out.stderr


def test_a_real_sine_export_predicts_as_its_keras_model(sine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _has_raw(sine)
    model = tf.keras.models.load_model(_model_dir(sine) / layout.KERAS_MODEL)
    config = Config()
    config.set("paths", "root", sine)
    try:
        code, out, err = _predict(capsys, _model_dir(sine).name, "0.5", "2.0", "--json")
    finally:
        config.restore()
    assert code == 0, err
    expected = model.predict(np.array([[0.5], [2.0]], np.float32), verbose=0)[:, 0]
    np.testing.assert_allclose([r["prediction"] for r in json.loads(out)], expected, rtol=1e-4, atol=1e-5)


def test_a_real_table_export_takes_the_csv_columns(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _has_raw(table)
    config = Config()
    config.set("paths", "root", table)
    try:
        code, out, err = _predict(capsys, _model_dir(table).name, str(table / "t.csv"), "--json")
    finally:
        config.restore()
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 60 and all(np.isfinite(r["prediction"]) for r in records)
    assert "ignored: y" in err  # the label column


def test_a_real_image_export_names_classes(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = make_root(tmp_path_factory.mktemp("predict-images"))
    demo = {"images_per_class": 4, "image_size": 16}
    sources = {"image_dir": root / "data/raw/shapes", "image_size": 16}
    model_dir = _train(root, MakeShapes=demo, CreateShards=sources, TrainEstimator={"batch_size": 8})
    assert _has_raw(root)
    out = run_cli(["python", "-m", "pipeline", "predict", model_dir.name, "data/raw/shapes", "--json"], cwd=root)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert len(records) == 20 and {r["class"] for r in records} <= set(shapes.OUTLINES)
    assert all(0.0 < r["probability"] <= 1.0 for r in records)
