"""Image classification from a folder of images: demo data, source, shards, input pipeline,
CNN, evaluation, plots and the whole DAG (pipeline/etl/shapes.py, image_folder.py, sources.py,
inputs.py, networks.py, metrics.py, figures.py, tasks.py)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from luigi.task_register import Register
from PIL import Image

from pipeline import builders, layout, problems, schema  # fmt: skip
from pipeline.cli.status import explain
from pipeline.core import listing, markers
from pipeline.etl import image_folder, shapes, shards, sources
from pipeline.evaluation import evaluate, figures, metrics
from pipeline.tasks import SHAPE_NAMES, CreateShards, MakeShapes, PerNetworkParameter, PlotInference, TrainEstimator
from pipeline.training import estimator, inputs
from tests.conftest import Config, build, make_root, run_cli
from tests.test_estimator import small_config

DAG = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}
AUGMENT = problems.get("classification").default_augment((16, 16, 3))
# A CNN small enough to train in a second or two on 16x16 images.
TINY_TRAINING = {
    "conv_filters": "[4, 8]", "dense_units": "8", "batch_size": "8", "max_steps": "20",
    "checkpoint_steps": "10", "steps_per_execution": "10", "shuffle_buffer": "64",
}  # fmt: skip


def make_folder(root: Path, counts: dict[str, int], size: int = 16) -> Path:
    """A class-per-subfolder image folder of shapes: `counts` images of each class, as PNGs."""
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(shapes.draw_shape(name, size, seed=7, index=i)).save(root / name / f"{i:03d}.png")
    return root


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- demo data ---------------------------------------------------------------------------


def test_shapes_same_parameters_same_bytes(tmp_path: Path) -> None:
    assert set(SHAPE_NAMES) == set(shapes.OUTLINES)  # the task's choices are the drawable shapes
    counts = shapes.write_shapes(tmp_path / "a", ["circle", "star"], 4, 24, seed=1)
    shapes.write_shapes(tmp_path / "b", ["circle", "star"], 4, 24, seed=1)
    shapes.write_shapes(tmp_path / "c", ["circle", "star"], 6, 24, seed=1)
    shapes.write_shapes(tmp_path / "d", ["circle", "star"], 4, 24, seed=2)
    a = _tree_digest(tmp_path / "a")
    assert counts == {"circle": 4, "star": 4} and len(a) == 8
    assert a == _tree_digest(tmp_path / "b")
    assert a.items() <= _tree_digest(tmp_path / "c").items()  # more images keep the first ones
    assert a.keys() == _tree_digest(tmp_path / "d").keys() and a != _tree_digest(tmp_path / "d")
    with Image.open(tmp_path / "a" / "star" / "star_0003.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (24, 24))
        pixels = np.asarray(image)
    assert pixels.std() > 10  # a shape on a background, not a flat colour


def test_shapes_differ_between_classes() -> None:
    """The same index in two classes: same colours and noise draw differ, and so do the masks."""
    circle = shapes.draw_shape("circle", 32, seed=0, index=0).astype(float)
    square = shapes.draw_shape("square", 32, seed=0, index=0).astype(float)
    assert np.abs(circle - square).mean() > 5
    with pytest.raises(ValueError, match="Unknown shape"):
        shapes.draw_shape("blob", 32, seed=0, index=0)


# --- the folder, the source and the shards --------------------------------------------------


def test_layout_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        image_folder.check_layout(tmp_path / "missing", 1 / 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"holds no class subfolder with images \(1 file\(s\) .*: notes.txt\)"):
        image_folder.check_layout(tmp_path / "empty", 1 / 3)
    single = make_folder(tmp_path / "single", {"circle": 5})
    with pytest.raises(ValueError, match=r"holds a single class \('circle'\)"):
        image_folder.check_layout(single, 1 / 3)
    few = make_folder(tmp_path / "few", {"circle": 5, "star": 1, "cross": 2})
    assert image_folder.min_images_per_class(1 / 3) == 2
    with pytest.raises(ValueError, match=r"at least 2 images .* Too few images in: 'star' \(1\)\.$"):
        image_folder.check_layout(few, 1 / 3)
    assert image_folder.min_images_per_class(0.1) == 5  # 5 * 0.1 rounds up to one validation image
    with pytest.raises(ValueError, match=r"at least 5 images .* 'cross' \(2\), 'star' \(1\)"):
        image_folder.check_layout(few, 0.1)


def test_scan_ignores_other_files_and_hidden_entries(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", {"circle": 3, "star": 2})
    (folder / "README.txt").write_text("top-level files are not images of a class")
    (folder / "star" / "notes.txt").write_text("not an image")
    (folder / "star" / ".hidden.png").write_bytes(b"ignored")
    (folder / ".cache").mkdir()
    make_folder(folder / ".cache", {"square": 2})
    nested = folder / "star" / "more"
    nested.mkdir()
    (folder / "star" / "000.png").rename(nested / "x.JPG")  # any case, nested: Keras reads these too
    found = listing.scan(folder)
    assert found.classes == {
        "circle": ["circle/000.png", "circle/001.png", "circle/002.png"],
        "star": ["star/001.png", "star/more/x.JPG"],
    }
    assert (found.num_ignored, found.ignored) == (2, ("README.txt", "star/notes.txt"))  # ignored, but not silently


def test_split_is_stratified_deterministic_and_shuffled(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {"circle": 12, "cross": 7, "star": 4})
    source = sources.ImageFolderSource(folder, 16, 1 / 3, seed=3)
    split = source.split_files()
    assert split == sources.ImageFolderSource(folder, 16, 1 / 3, seed=3).split_files()
    assert split != sources.ImageFolderSource(folder, 16, 1 / 3, seed=4).split_files()
    # round(n / 3) of every class for validation: 4, 2, 1.
    for name, n_val in (("circle", 4), ("cross", 2), ("star", 1)):
        label = ["circle", "cross", "star"].index(name)
        assert sum(1 for _, k in split["validation"] if k == label) == n_val
        assert all(f.startswith(f"{name}/") for f, k in split["train"] + split["validation"] if k == label)
    files = [f for f, _ in split["train"] + split["validation"]]
    assert sorted(files) == sorted(f for fs in listing.scan(folder).classes.values() for f in fs)  # each once
    train_labels = [k for _, k in split["train"]]
    assert train_labels != sorted(train_labels)  # globally shuffled, classes mixed
    manifest = source.manifest()
    assert manifest["class_names"] == ["circle", "cross", "star"]
    assert manifest["class_counts"] == {
        "train": {"circle": 8, "cross": 5, "star": 3},
        "validation": {"circle": 4, "cross": 2, "star": 1},
    }


def _parse_all(folder: Path, split: str) -> list[dict[str, Any]]:
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
        "path": tf.io.FixedLenFeature([], tf.string),
    }
    files = [str(p) for p in layout.shard_files(folder, split)]
    return [
        {k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()} for r in tf.data.TFRecordDataset(files)
    ]


def test_image_shards_round_trip(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images", {"circle": 6, "square": 6, "star": 6}, size=20)
    # Any size, mode and format is read upright as RGB and resized: a JPEG, grey, RGBA and palette PNGs.
    Image.fromarray(shapes.draw_shape("star", 40, 7, 50)).save(folder / "star" / "big.jpg", quality=90)
    Image.fromarray(shapes.draw_shape("circle", 12, 7, 51)).convert("L").save(folder / "circle" / "grey.png")
    Image.fromarray(shapes.draw_shape("square", 16, 7, 52)).convert("RGBA").save(folder / "square" / "rgba.png")
    Image.fromarray(shapes.draw_shape("square", 16, 7, 53)).convert("P").save(folder / "square" / "palette.png")
    source = sources.ImageFolderSource(folder, 16, 1 / 3, seed=1)
    manifest = shards.create_shards(tmp_path / "a", source, {"train": 3, "validation": 2}, processes=2)
    shards.create_shards(tmp_path / "b", source, {"train": 3, "validation": 2}, processes=1)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")  # same bytes, however many writers

    assert manifest["problem"] == "classification" and manifest["image_shape"] == [16, 16, 3]
    # round(n / 3) of each class: circle 7 -> 2, square 8 -> 3, star 7 -> 2.
    assert manifest["class_counts"]["validation"] == {"circle": 2, "square": 3, "star": 2}
    assert manifest["splits"]["validation"]["num_examples"] == 7
    assert sum(manifest["class_counts"]["validation"].values()) == manifest["splits"]["validation"]["num_examples"]
    assert (
        shards.read_source_sha256(tmp_path / "a")["star/big.jpg"]
        == hashlib.sha256((folder / "star/big.jpg").read_bytes()).hexdigest()
    )
    expected = dict(source.split_files())
    hashed = shards.read_source_sha256(tmp_path / "a")
    assert sorted(hashed) == sorted(rel for files in expected.values() for rel, _ in files)  # each image once
    for split in layout.SPLITS:
        examples = _parse_all(tmp_path / "a", split)
        assert [(e["path"].decode(), int(e["label"])) for e in examples] == expected[split]  # order kept
        for e in examples:
            assert list(e["shape"]) == [16, 16, 3]
            decoded = np.asarray(Image.open(io.BytesIO(e["image"])))
            with open(folder / e["path"].decode(), "rb") as f:
                original = np.asarray(sources.load_image(f.read(), 16))
            np.testing.assert_array_equal(decoded, original)  # lossless PNG of the resized RGB image
            assert e["path"].decode().split("/")[0] == manifest["class_names"][e["label"]]


def test_unreadable_files_are_all_named_and_no_shard_is_left(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images", {"circle": 4, "star": 4})
    (folder / "circle" / "notes.png").write_text("this is not an image")
    good = (folder / "star" / "000.png").read_bytes()
    (folder / "star" / "truncated.png").write_bytes(good[: len(good) // 2])
    source = sources.ImageFolderSource(folder, 16, 1 / 3, seed=1)
    out = tmp_path / "shards"
    out.mkdir()
    with pytest.raises(ValueError) as error:
        shards.create_shards(out, source, {"train": 2, "validation": 1}, processes=2)
    message = str(error.value)
    assert message.startswith("2 of the 10 image files in ")
    assert str(folder / "circle" / "notes.png") in message and str(folder / "star" / "truncated.png") in message
    assert "BytesIO" not in message and "(not an image file that Pillow recognises)" in message
    assert "000.png" not in message and "Fix or remove them" in message
    assert not any(out.iterdir())


def test_bad_folders_fail_at_task_construction(workspace: Path, config: Config) -> None:
    folder = make_folder(workspace / "few", {"circle": 4, "star": 1})
    config.set("CreateShards", "image_dir", folder)
    with pytest.raises(ValueError, match=r"--CreateShards-image-dir .*Too few images in: 'star' \(1\)"):
        CreateShards()
    config.set("CreateShards", "image_dir", workspace / "nowhere")
    with pytest.raises(ValueError, match=r"--CreateShards-image-dir .*nowhere is not a folder"):
        CreateShards()
    make_folder(workspace / "ok", {"circle": 3, "star": 3})
    config.set("CreateShards", "image_dir", workspace / "ok")
    config.set("CreateShards", "num_validation_shards", 3)
    with pytest.raises(ValueError, match="num-validation-shards must be between 1 and the 2 validation examples"):
        CreateShards()


# --- the input pipeline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image_shards")
    folder = make_folder(root / "images", {"circle": 9, "square": 9, "star": 9})
    source = sources.ImageFolderSource(folder, 16, 1 / 3, seed=1)
    shards.create_shards(root / "shards", source, {"train": 1, "validation": 2})
    return root / "shards"


def _raw_images(folder: Path, split: str) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(e["image"]))) for e in _parse_all(folder, split)]) / 255.0


def test_eval_dataset_is_the_images_unaugmented_in_shard_order(image_shards: Path) -> None:
    manifest = schema.read_manifest(image_shards)
    batches = list(inputs.eval_dataset(image_shards, manifest, "validation", batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 1]
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert images.dtype == np.float32 and images.shape == (9, 16, 16, 3)
    np.testing.assert_allclose(images, _raw_images(image_shards, "validation"), atol=1e-6)
    assert labels.tolist() == [int(e["label"]) for e in _parse_all(image_shards, "validation")]
    again = np.concatenate([x.numpy() for x, _ in inputs.eval_dataset(image_shards, manifest, "validation", 4)])
    np.testing.assert_array_equal(images, again)


def test_train_dataset_augments_deterministically_and_resumes(
    image_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = schema.read_manifest(image_shards)
    # Streamed, with one shard and a shuffle buffer of 1: the stream is the shard in
    # order, so each training image can be set beside its unaugmented original.
    monkeypatch.setattr(inputs, "IN_MEMORY_BYTES", 0)
    stream = inputs.train_dataset(image_shards, manifest, batch_size=6, seed=5, shuffle_buffer=1, augment=AUGMENT)
    first = [(x.numpy(), y.numpy()) for x, y in stream.take(6)]
    raw = _raw_images(image_shards, "train")
    assert raw.shape[0] == 18
    x0, y0 = first[0]
    assert x0.shape == (6, 16, 16, 3) and x0.dtype == np.float32
    assert x0.min() >= 0.0 and x0.max() <= 1.0
    changed = [np.abs(x0[i] - raw[i]).mean() for i in range(6)]
    assert sum(c > 0.005 for c in changed) >= 5  # training images are augmented...
    labels = [int(e["label"]) for e in _parse_all(image_shards, "train")]
    assert y0.tolist() == labels[:6]  # ...and keeps its label
    # Epochs 1 and 2 (batches 0-2 and 3-5) augment the same images differently.
    assert np.abs(first[0][0] - first[3][0]).mean() > 0.005
    # Same seed, same stream; a run resumed at step 2 sees what an unbroken run saw from step 2 on.
    again = [x.numpy() for x, _ in inputs.train_dataset(image_shards, manifest, 6, 5, 1, augment=AUGMENT).take(6)]
    for (a, _), b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    resumed = [
        x.numpy()
        for x, _ in inputs.train_dataset(image_shards, manifest, 6, 5, 1, skip_batches=2, augment=AUGMENT).take(4)
    ]
    for (a, _), b in zip(first[2:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_small_train_split_is_kept_in_memory_and_reshuffled_every_epoch(image_shards: Path) -> None:
    manifest = schema.read_manifest(image_shards)
    assert inputs.parsed_bytes(manifest, "train") == 18 * (16 * 16 * 3 + 8) <= inputs.IN_MEMORY_BYTES
    stream = [
        (x.numpy(), y.numpy())
        for x, y in inputs.train_dataset(image_shards, manifest, 6, 5, 1, augment=AUGMENT).take(9)
    ]
    labels = sorted(int(e["label"]) for e in _parse_all(image_shards, "train"))
    epochs = [np.concatenate([y for _, y in stream[i : i + 3]]) for i in (0, 3, 6)]  # 18 images: 3 batches each
    assert all(sorted(e.tolist()) == labels for e in epochs)  # every image once an epoch...
    assert epochs[0].tolist() != epochs[1].tolist()  # ...in a new order
    assert all(x.shape == (6, 16, 16, 3) and x.dtype == np.float32 for x, _ in stream)
    originals = {tuple(np.round(image * 255).astype(int).ravel()) for image in _raw_images(image_shards, "train")}
    assert (
        sum(tuple(np.round(image * 255).astype(int).ravel()) in originals for image in stream[0][0]) <= 1
    )  # augmented
    again = [x.numpy() for x, _ in inputs.train_dataset(image_shards, manifest, 6, 5, 1, augment=AUGMENT).take(9)]
    resumed = [
        x.numpy()
        for x, _ in inputs.train_dataset(image_shards, manifest, 6, 5, 1, skip_batches=4, augment=AUGMENT).take(5)
    ]
    for (a, _), b in zip(stream, again, strict=True):
        np.testing.assert_array_equal(a, b)
    for (a, _), b in zip(stream[4:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_augment_flips_shifts_and_brightens() -> None:
    # One bright pixel at row 5, column 3 of a black 16x16 image: where it lands tells
    # the flip (column 12 - shift) and the shift (up to 16/8 = 2 pixels each way).
    pixel = np.zeros((16, 16, 3), np.float32)
    pixel[5, 3] = 1.0

    def augmented(image: tf.Tensor, i: int) -> np.ndarray:  # the classification default (AUGMENT), seed [1, i]
        return inputs.apply_augmentations(image, tf.constant([1, i], tf.int64), AUGMENT).numpy()

    outputs = [augmented(tf.constant(pixel), i) for i in range(40)]
    np.testing.assert_array_equal(outputs[3], augmented(tf.constant(pixel), 3))
    as_uint8 = tf.constant((pixel * 255).astype(np.uint8))  # what training passes: converted after the gathers
    np.testing.assert_array_equal(outputs[3], augmented(as_uint8, 3))
    places = [np.unravel_index(np.argmax(o[..., 0]), (16, 16)) for o in outputs]
    rows, columns = {int(r) for r, _ in places}, [int(c) for _, c in places]
    assert rows <= {3, 4, 5, 6, 7} and len(rows) >= 3  # shifted up and down
    assert all(1 <= c <= 5 or 10 <= c <= 14 for c in columns)
    assert any(c <= 5 for c in columns) and any(c >= 10 for c in columns)  # some flipped, some not
    backgrounds = [float(o[0, 15, 0]) for o in outputs]  # a black pixel: 0 + delta, clipped at 0
    assert max(backgrounds) > 0.05 and max(backgrounds) <= inputs.MAX_BRIGHTNESS_DELTA + 1e-6
    assert min(backgrounds) == 0.0  # darkened, clipped


# --- network, metrics, plots -----------------------------------------------------------------


def test_cnn_by_name() -> None:
    problem = problems.get("classification")
    model = builders.load("cnn")((16, 16, 3), 3, "classification", conv_filters=(4, 8), dense_units=8)
    model.compile(loss=problem.loss(), metrics=problem.metrics())
    assert [layer.filters for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)] == [4, 8]
    assert model.output_shape == (None, 3)
    x = np.random.default_rng(0).uniform(size=(5, 16, 16, 3)).astype(np.float32)
    probabilities = model.predict(x, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    y = np.array([0, 1, 2, 1, 0])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    expected_loss = float(np.mean(-np.log(probabilities[np.arange(5), y])))
    assert logs["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert logs["accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(1) == y)))
    assert problem.check_outputs(probabilities, 3) is None
    assert "shape (3,)" in (problem.check_outputs(probabilities, 4) or "")
    assert "not class probabilities" in (problem.check_outputs(probabilities * 2, 3) or "")


def _tiny_cnn(**overrides: Any) -> Any:
    values: dict[str, Any] = dict(
        network="cnn", problem="classification", learning_rate=0.003, lr_decay=False, batch_size=6, max_steps=12,
        checkpoint_steps=6, keep_checkpoints=3, shuffle_buffer=32, seed=3, steps_per_execution=3,
        network_args={"conv_filters": (4, 8), "dense_units": 8}, augment=("flip_horizontal", "shift", "brightness"),
        loss=problems.get("classification").default_loss,  # small_config is the sine's: its loss is the mse
    )  # fmt: skip
    return small_config(**{**values, **overrides})


def test_cnn_training_is_deterministic_and_resumes_exactly(image_shards: Path, tmp_path: Path) -> None:
    """Same seed, same weights (augmentation included); a run resumed at step 6 ends as an unbroken one."""
    estimator.train(_tiny_cnn(), image_shards, tmp_path / "a")
    estimator.train(_tiny_cnn(), image_shards, tmp_path / "b")
    estimator.train(_tiny_cnn(max_steps=6), image_shards, tmp_path / "resumed")
    result = estimator.train(_tiny_cnn(), image_shards, tmp_path / "resumed")
    assert result["resumed_from_step"] == 6
    a, b, resumed = (evaluate.load_model(tmp_path / d).get_weights() for d in ("a", "b", "resumed"))
    for wa, wb, wr in zip(a, b, resumed, strict=True):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(wa, wr)
    estimator.train(_tiny_cnn(seed=4), image_shards, tmp_path / "other-seed")
    assert not np.array_equal(evaluate.load_model(tmp_path / "other-seed").get_weights()[0], a[0])


def _plain_report(labels: list[int], predicted: list[int], num_classes: int) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and the confusion matrix, by counting (no NumPy)."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(labels, predicted, strict=True):
        matrix[t][p] += 1
    per_class = []
    for k in range(num_classes):
        tp = matrix[k][k]
        predicted_k = sum(matrix[r][k] for r in range(num_classes))
        actual_k = sum(matrix[k])
        precision = tp / predicted_k if predicted_k else 0.0
        recall = tp / actual_k if actual_k else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append((precision, recall, f1, actual_k))
    accuracy = sum(matrix[k][k] for k in range(num_classes)) / len(labels)
    return {"matrix": matrix, "per_class": per_class, "accuracy": accuracy}


def _assert_report_matches(report: dict[str, Any], labels: list[int], predicted: list[int], names: list[str]) -> None:
    plain = _plain_report(labels, predicted, len(names))
    assert report["confusion_matrix"] == plain["matrix"]
    assert report["accuracy"] == pytest.approx(plain["accuracy"])
    assert report["num_examples"] == len(labels)
    for name, (precision, recall, f1, support) in zip(names, plain["per_class"], strict=True):
        got = report["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((precision, recall, f1))
        assert got["support"] == support
    assert report["macro_avg"]["f1"] == pytest.approx(sum(c[2] for c in plain["per_class"]) / len(names))


def test_classification_report_counts() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    predicted = [0, 1, 0, 1, 0, 2, 2, 1, 2, 2]  # class 3 is never predicted: its precision is 0
    names = ["a", "b", "c", "d"]
    report = metrics.classification_report(np.array(labels), np.array(predicted), names)
    _assert_report_matches(report, labels, predicted, names)
    assert report["accuracy"] == 0.6
    assert report["per_class"]["a"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3), "support": 3}
    assert report["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    json.dumps(report)  # JSON-ready
    with pytest.raises(ValueError, match="must lie in"):
        metrics.classification_report(np.array([0, 4]), np.array([0, 1]), names)


def test_plots_are_written(tmp_path: Path) -> None:
    names = ["circle", "square", "star"]
    report = metrics.classification_report(np.array([0, 1, 2, 2, 1]), np.array([0, 1, 2, 1, 1]), names)
    figures.write_confusion(tmp_path / "confusion.png", "run-x", report, names)
    images = [shapes.draw_shape(n, 16, 0, 0) / 255.0 for n in ("circle", "square", "star", "star")]
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.2, 0.7, 0.1]])
    figures.write_image_grid(tmp_path / "grid.png", "run-x", images, np.array([0, 1, 2, 2]), probabilities, names)
    history = [
        {"step": s, "train": {"loss": 1 / s, "accuracy": 1 - 1 / s}, "eval": {"loss": 2 / s, "accuracy": 1 - 2 / s}}
        for s in (10, 20, 30)
    ]
    classification = figures.SHOWN_BY["classification"]
    figures.write_curves(
        tmp_path / "curves.png",
        "run-x",
        history,
        metrics=[classification.curve_metric or ""],
        loss_name=classification.loss_name,
        augmented=True,
    )
    for name, min_width in (("confusion.png", 400), ("grid.png", 600), ("curves.png", 1000)):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[1] >= min_width, name
        assert image[..., :3].std() > 0.05, name
    labels, predicted = np.array([0, 1, 1, 2, 0, 2]), np.array([0, 2, 1, 2, 1, 2])
    assert figures.grid_indices(labels, predicted, count=4) == [1, 4, 0, 2]  # mistakes first, up to half


# --- parameters that follow the source -----------------------------------------------------------


def test_per_network_parameter_parses_one_value_or_one_per_network() -> None:
    param = PerNetworkParameter(value_type=int)
    assert param.parse("6000") == 6000
    assert dict(param.parse('{"mlp": 6000, "cnn": 1500}')) == {"cnn": 1500, "mlp": 6000}
    assert param.serialize(param.parse('{"mlp": 6000, "cnn": 1500}')) == '{"cnn": 1500, "mlp": 6000}'
    for bad in ("1.5", "many", '"many"', '{"mlp": "x"}', '{"mlp": 1.5}', "true"):
        with pytest.raises(ValueError, match="Expected an integer, or a JSON object of integers by network"):
            param.parse(bad)
    as_float = PerNetworkParameter(value_type=float)
    assert as_float.parse("3") == 3.0 and as_float.parse("1e-2") == 0.01
    assert math.isnan(as_float.parse("nan"))  # a number: TrainEstimator.validate() then says it must be positive


def test_training_settings_follow_the_source_and_parameters_stay_as_parsed(workspace: Path, config: Config) -> None:
    sine = TrainEstimator()
    resolved = sine.settings()
    assert (resolved.network, resolved.learning_rate, resolved.max_steps) == ("mlp", 0.01, 200)  # 200: test settings
    # The cnn's sizes do not count for the mlp; its dropout is `auto`: off but for a table.
    assert dict(resolved.network_args) == {"dropout": 0.0, "hidden_units": (100, 100)}
    assert sine.network == "auto" and dict(sine.learning_rate) == {"cnn": 0.003, "mlp": 0.01}  # as parsed
    assert sine.identity().params["network"] == "mlp" and "conv_filters" not in sine.identity().params
    config.set("TrainEstimator", "conv_filters", "[8, 8]")
    Register.clear_instance_cache()
    assert TrainEstimator().identity() == sine.identity()

    make_folder(workspace / "pics", {"circle": 3, "star": 3})
    config.set("CreateShards", "image_dir", workspace / "pics")
    config.set("TrainEstimator", "max_steps", '{"mlp": 100, "cnn": 30}')
    config.set("TrainEstimator", "batch_size", 4)  # the 4 training images (a larger batch is refused)
    Register.clear_instance_cache()
    cnn = TrainEstimator()
    resolved = cnn.settings()
    assert (resolved.network, resolved.learning_rate, resolved.max_steps) == ("cnn", 0.003, 30)
    assert dict(resolved.network_args) == {"conv_filters": (8, 8), "dense_units": 64}
    assert resolved.augment == ("flip_horizontal", "shift", "brightness") and resolved.problem == "classification"
    assert cnn.network == "auto"
    assert cnn.folder_prefix() == "pics-cnn"
    assert cnn.output_dir().parent == workspace / "models"
    config.set("TrainEstimator", "network", "mlp")  # an MLP of the flattened pixels: allowed
    Register.clear_instance_cache()
    assert TrainEstimator().settings().network_args == {"dropout": 0.0, "hidden_units": (100, 100)}
    config.set("TrainEstimator", "network", "cnn")
    config.set("TrainEstimator", "conv_filters", "[4, 4, 4, 4, 4, 4]")
    Register.clear_instance_cache()
    with pytest.raises(ValueError, match="6 blocks, each halving the image: too many for --CreateShards-image-size 32"):
        TrainEstimator()
    config.set("CreateShards", "image_dir", "")
    config.set("TrainEstimator", "conv_filters", "[4]")
    Register.clear_instance_cache()
    with pytest.raises(ValueError, match="--TrainEstimator-network cnn takes images"):
        TrainEstimator()


# --- the whole DAG ------------------------------------------------------------------------------


def _configure_tiny_images(config: Config, folder: Path) -> None:
    config.set("CreateShards", "image_dir", folder)
    config.set("CreateShards", "image_size", 16)
    for option, value in TINY_TRAINING.items():
        config.set("TrainEstimator", option, value)
    Register.clear_instance_cache()


def test_image_dag_runs_reruns_on_new_images_and_reports(workspace: Path, config: Config) -> None:
    folder = make_folder(workspace / "my pictures", {"circle": 9, "square": 9, "star": 9})
    _configure_tiny_images(config, folder)
    assert build(PlotInference()) == DAG
    assert build(PlotInference()) == set()

    shards_dir, model_dir = CreateShards().output_dir(), TrainEstimator().output_dir()
    assert shards_dir.name.startswith("my-pictures-") and model_dir.name.startswith("my-pictures-cnn-")
    manifest = schema.read_manifest(shards_dir)
    assert manifest["class_counts"]["validation"] == {"circle": 3, "square": 3, "star": 3}
    history = json.loads((model_dir / layout.HISTORY).read_text())
    assert [h["step"] for h in history] == [10, 20] and "accuracy" in history[-1]["eval"]

    # The evaluation JSON is what counting the model's predictions over each whole split gives.
    (eval_dir,) = (workspace / "reports").glob("my-pictures-cnn-eval-*")
    report = json.loads((eval_dir / layout.METRICS).read_text())
    assert report["class_names"] == ["circle", "square", "star"]
    for split, count in (("validation", 9), ("train", 18)):
        p = evaluate.predict(model_dir, shards_dir, split, keep_inputs=False)
        labels, predicted = p["labels"].tolist(), p["predictions"].argmax(axis=1).tolist()
        assert len(labels) == count
        _assert_report_matches(report[split], labels, predicted, report["class_names"])
        # Every misclassified file is named with its true and predicted class, in shard order.
        paths_in_order = [e["path"].decode() for e in _parse_all(shards_dir, split)]
        names = report["class_names"]
        assert [(m["example"], m["true"], m["predicted"]) for m in report[split]["misclassified"]] == [
            (paths_in_order[i], names[labels[i]], names[predicted[i]])
            for i in range(count)
            if labels[i] != predicted[i]
        ]
    # The exported model is the last evaluation's (the best one's with early stopping): its accuracy is the report's.
    best = markers.read_marker(model_dir)["info"].get("best_step") or history[-1]["step"]  # type: ignore[index]
    exported = next(h for h in history if h["step"] == best)
    assert exported["eval"]["accuracy"] == pytest.approx(report["validation"]["accuracy"], abs=1e-6)

    (plots_dir,) = (workspace / "reports").glob("my-pictures-cnn-plots-*")
    assert sorted(p.name for p in plots_dir.glob("*.png")) == sorted(
        [figures.CONFUSION_PNG, figures.IMAGES_PNG, figures.CURVES_PNG]
    )
    for png in plots_dir.glob("*.png"):
        assert matplotlib.image.imread(png)[..., :3].std() > 0.05, png.name

    # A new image makes the shards stale, and everything below them.
    Image.fromarray(shapes.draw_shape("star", 16, 7, 99)).save(folder / "star" / "new.png")
    Register.clear_instance_cache()
    assert "source folder image_dir changed (files added, removed or modified)" in explain(CreateShards())
    assert build(PlotInference()) == DAG
    assert schema.read_manifest(CreateShards().output_dir())["class_counts"]["train"]["star"] == 7


def test_demo_folder_is_made_first_and_never_overwritten(workspace: Path, config: Config) -> None:
    config.set("CreateShards", "image_dir", workspace / "data" / "raw" / "shapes")
    config.set("MakeShapes", "images_per_class", 4)
    config.set("MakeShapes", "image_size", 16)
    config.set("CreateShards", "image_size", 16)
    Register.clear_instance_cache()
    assert build(CreateShards()) == {"MakeShapes", "CreateShards"}
    demo = workspace / "data" / "raw" / "shapes"
    assert sorted(p.name for p in demo.iterdir()) == ["_SUCCESS.json", "circle", "cross", "square", "star", "triangle"]
    assert len(list(demo.glob("*/*.png"))) == 20
    assert markers.read_marker(demo) is not None
    assert build(CreateShards()) == set()

    config.set("MakeShapes", "images_per_class", 5)
    Register.clear_instance_cache()
    with pytest.raises(ValueError, match=r"shapes already holds images .*images_per_class changed from 4 to 5"):
        MakeShapes()
    assert len(list(demo.glob("*/*.png"))) == 20


@pytest.mark.slow
def test_default_image_configuration_on_the_demo_data(tmp_path: Path) -> None:
    """The README's demo command on a fresh folder: ≥ 95 % validation accuracy in a few minutes."""
    make_root(tmp_path)
    started = time.monotonic()
    run = run_cli(
        ["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", "--CreateShards-image-dir",
         "data/raw/shapes"],
        cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    assert "5 ran successfully" in run.stderr
    (metrics_dir,) = (tmp_path / "reports").glob("shapes-cnn-eval-*")
    report = json.loads((metrics_dir / layout.METRICS).read_text())
    assert report["validation"]["num_examples"] == 500
    assert report["validation"]["accuracy"] >= 0.95
    (model_dir,) = (tmp_path / "models").glob("shapes-cnn-*")
    marker = markers.read_marker(model_dir)
    assert marker is not None
    train_seconds = marker["info"]["elapsed_seconds"]
    accuracy = report["validation"]["accuracy"]
    print(f"validation accuracy {accuracy:.4f}, training {train_seconds:.0f} s, whole DAG {elapsed:.0f} s")
    assert train_seconds < 600


def test_augmentation_is_a_parameter_of_the_identity(workspace: Path, config: Config) -> None:
    make_folder(workspace / "pics", {"circle": 3, "star": 3})
    config.set("CreateShards", "image_dir", workspace / "pics")
    config.set("TrainEstimator", "batch_size", 4)  # the 4 training images (a larger batch is refused)
    Register.clear_instance_cache()
    default = TrainEstimator()
    assert default.settings().augment == ("flip_horizontal", "shift", "brightness")  # auto, for classification
    identities = {default.identity().digest}
    for value, expected in (('["shift", "brightness"]', ("shift", "brightness")), ("[]", ())):
        config.set("TrainEstimator", "augment", value)
        Register.clear_instance_cache()
        task = TrainEstimator()
        assert task.settings().augment == expected and task.identity().params["augment"] == expected
        identities.add(task.identity().digest)
    assert len(identities) == 3
    config.set("TrainEstimator", "augment", '["flip_horizontal", "rotate"]')
    Register.clear_instance_cache()
    with pytest.raises(ValueError, match="--TrainEstimator-augment: unknown augmentation 'rotate'"):
        TrainEstimator()
    config.set("TrainEstimator", "augment", '["shift"]')
    config.set("CreateShards", "image_dir", "")  # the sine: numbers, nothing to shift
    Register.clear_instance_cache()
    with pytest.raises(ValueError, match="augmentations apply to images, and these inputs are 1 numbers"):
        TrainEstimator()


def test_each_augmentation_alone_moves_what_it_names() -> None:
    pixel = np.zeros((16, 16, 3), np.uint8)
    pixel[5, 3] = 255
    seeds = [tf.constant([1, i], tf.int64) for i in range(24)]

    def places(names: tuple[str, ...]) -> set[tuple[int, int]]:
        outputs = [inputs.apply_augmentations(tf.constant(pixel), seed, names).numpy() for seed in seeds]
        found = [np.unravel_index(np.argmax(o[..., 0]), (16, 16)) for o in outputs]
        return {(int(row), int(column)) for row, column in found}

    assert places(()) == {(5, 3)}
    assert places(("flip_horizontal",)) == {(5, 3), (5, 12)}
    assert places(("flip_vertical",)) == {(5, 3), (10, 3)}
    assert {(r, c) for r, c in places(("shift",))} <= {(r, c) for r in range(3, 8) for c in range(1, 6)}
    assert len(places(("shift",))) > 3
    bright = [inputs.apply_augmentations(tf.constant(pixel), seed, ("brightness",)).numpy() for seed in seeds]
    assert all(float(np.argmax(b[..., 0])) == 5 * 16 + 3 for b in bright)  # nothing moves
    assert max(float(b[0, 0, 0]) for b in bright) > 0.05  # the black background brightens
