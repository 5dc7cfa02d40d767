"""`python -m pipeline predict RUN FILES...`: a run's export applied to new files, as a serving client would.

The command is itself a client of the export: it loads `<model_dir>/saved_model` with
`tf.saved_model.load` and calls its raw-input signature `raw` (never `model.keras`), so
what it prints is what a server would answer. Inputs by problem (the run's manifest says
which, with the class names and the table's columns):

- images: the files' encoded bytes (`image_bytes`), decoded and resized in the graph;
  folders are expanded recursively to their .bmp .gif .jpeg .jpg .png files;
- a table: CSV rows, each signature input taken from the column of that name (exactly,
  else the header with every character outside [A-Za-z0-9_] replaced by `_`, else the
  column the export's `assets.extra/serving.json` or the manifest names for it); extra
  columns are ignored with a note, a missing one is an error naming it; missing cells
  (columns.MISSING: empty, NA, ?, null...) are sent as NaN (numeric) or "" (categorical);
- the sine: a CSV with an `x` column, or numbers given as arguments.

TensorFlow is imported only when the export is called.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import layout, paths, schema
from pipeline.cli import interface
from pipeline.core.listing import IMAGE_EXTENSIONS
from pipeline.errors import DataError, ParameterError

SIGNATURE = "raw"
SERVING_INFO = "assets.extra/serving.json"  # what the export says of its inputs (training/signatures.py)
BATCH = 256  # rows or files per call of the signature
# The first bytes of each image format the graph decodes (tf.io.decode_image).
MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")

DESCRIPTION = """\
A run's export (<model_dir>/saved_model, through its raw-input signature `raw`) applied to
new files: image files or folders of them for an image run, CSV files with the training's
columns for a table, a CSV with an `x` column or numbers for the sine. Prints one row per
file or CSV row: the predicted class and its probability, or the prediction."""

EPILOG = """\
examples:
  python -m pipeline predict shapes-cnn-0123456789ab photos/ new.png
  python -m pipeline predict wine-mlp-0123 new_rows.csv --csv --out predictions.csv
  python -m pipeline predict sine-mlp-0123 0.5 1.5 3.0 --json"""


def parser() -> interface.Arguments:
    """The command's options (its --help)."""
    arguments = interface.Arguments("python -m pipeline predict", DESCRIPTION, EPILOG)
    arguments.add_argument(
        "run", metavar="RUN", help="A model folder, its name, 4+ hex digits of its identity, or the run's --name."
    )
    arguments.add_argument("files", nargs="+", metavar="FILES", help="Image files or folders, CSV files, or numbers.")
    out = arguments.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON: one object per prediction.")
    out.add_argument("--csv", action="store_true", help="CSV with a header.")
    arguments.add_argument("--out", type=Path, metavar="FILE", help="Write the predictions to FILE instead.")
    return arguments


# --- the run and its export ----------------------------------------------------------


def find_model_dir(reference: str) -> Path:
    """The model folder of the run a user names: as `runs`/`report` take it, or by the name it was given."""
    from pipeline.experiments import runs

    found = runs.collect(paths.root())
    try:
        return runs.select(found, [reference])[0].model.folder
    except ParameterError:
        named = [run for run in found if run.label.get("name") == reference]
        if len(named) == 1:
            return named[0].model.folder
        if len(named) > 1:  # the newest run of that name, as `runs --where name=...` lists them last
            return named[-1].model.folder
        raise


def manifest_of(model_dir: Path) -> dict[str, Any]:
    """The manifest of the shards the run trained on, as the training recorded it (train_config.json)."""
    try:
        manifest: dict[str, Any] = json.loads((model_dir / layout.TRAIN_CONFIG).read_text())["manifest"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(
            f"{model_dir} has no readable {layout.TRAIN_CONFIG}: not a finished training ({error})."
        ) from error
    return manifest


def export_dir(model_dir: Path) -> Path:
    """The run's SavedModel, checked to exist."""
    saved = model_dir / layout.SAVED_MODEL
    if not (saved / "saved_model.pb").is_file():
        raise DataError(
            f"{model_dir.name} has no export ({saved} holds no saved_model.pb): retrain it with this version "
            "(luigi --module pipeline TrainEstimator)."
        )
    return saved


def serving_names(saved_model: Path) -> dict[str, str]:
    """The raw signature's input names -> the CSV columns they stand for, as the export records them
    (`assets.extra/serving.json`, `inputs`: `raw_name`, `example_key`); {} when it has no such file."""
    try:
        info = json.loads((saved_model / SERVING_INFO).read_text())
        return {str(entry["raw_name"]): str(entry["example_key"]) for entry in info["inputs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def sanitised(name: str) -> str:
    """A column's name as a signature input may spell it: every character outside [A-Za-z0-9_] as `_`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


# --- inputs --------------------------------------------------------------------------


def image_files(arguments: Sequence[str]) -> list[Path]:
    """The image files named, folders expanded recursively (sorted); anything else is an error naming it."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{argument}: no such file or folder. Give image files or folders of them.")
    if not found:
        raise DataError(f"No image file ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(arguments)}.")
    return found


def image_bytes(path: Path) -> bytes:
    """The encoded bytes of one image file; a file that is no image is an error naming it."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise DataError(f"{path} is not an image (JPEG, PNG, BMP or GIF): leave it out or convert it.")
    return data


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV file's header and rows."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} cannot be read as CSV ({error}).") from error
    if not rows:
        raise DataError(f"{path} is empty: give a CSV file whose first line names the columns.")
    return [name.strip() for name in rows[0]], [row for row in rows[1:] if row]


def match_columns(
    path: Path, header: Sequence[str], inputs: Iterable[str], aliases: Mapping[str, str] | None = None
) -> dict[str, int]:
    """For each signature input, the index of its column in `header`: the same name, else its sanitised form,
    else the column the training's manifest gives that feature name (`aliases`: feature -> column).

    Raises DataError naming the first input the header lacks; prints a note naming the columns ignored.
    """
    exact = {name: k for k, name in enumerate(header)}
    loose = {sanitised(name): k for k, name in reversed(list(enumerate(header)))}
    index = {}
    for name in inputs:
        k = exact.get(name, loose.get(name, exact.get((aliases or {}).get(name, ""))))
        if k is None:
            raise DataError(
                f"{path} has no column {name!r}, which the model takes. Its columns: {', '.join(header)}. "
                "Add it (empty cells are sent as missing)."
            )
        index[name] = k
    extra = [header[k] for k in range(len(header)) if k not in index.values()]
    if extra:
        print(f"Note: {path}: columns not used by the model, ignored: {', '.join(extra)}.", file=sys.stderr)
    return index


def table_inputs(
    files: Sequence[str], kinds: dict[str, str], aliases: Mapping[str, str]
) -> tuple[list[str], dict[str, list[Any]]]:
    """The rows of the CSV files as signature inputs (`kinds`: input name -> "float32" or "string")."""
    from pipeline.etl import columns

    labels: list[str] = []
    values: dict[str, list[Any]] = {name: [] for name in kinds}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise DataError(f"{file}: no such file. Give CSV files with the training's columns.")
        header, rows = read_csv(path)
        index = match_columns(path, header, kinds, aliases)
        for line, row in enumerate(rows, start=2):
            labels.append(f"{path.name}:{line}" if len(files) > 1 else str(line))
            for name, k in index.items():
                cell = row[k] if k < len(row) else ""
                if kinds[name] == "string":
                    values[name].append("" if columns.is_missing(cell) else cell.strip())
                else:
                    number = columns.number(cell)
                    values[name].append(math.nan if number is None else number)
    return labels, values


def sine_inputs(arguments: Sequence[str], name: str = "x") -> tuple[list[str], dict[str, list[Any]]]:
    """The sine's `x` (the signature's one input, `name`): numbers given as arguments, or that column of CSV files."""
    from pipeline.etl import columns

    labels: list[str] = []
    xs: list[float] = []
    for argument in arguments:
        number = columns.number(argument)
        if number is not None:
            labels.append(argument)
            xs.append(number)
            continue
        path = Path(argument)
        if not path.is_file():
            raise DataError(f"{argument}: neither a number nor a file. Give numbers or CSV files with an `x` column.")
        header, rows = read_csv(path)
        k = match_columns(path, header, [name])[name]
        for line, row in enumerate(rows, start=2):
            labels.append(f"{path.name}:{line}")
            value = columns.number(row[k]) if k < len(row) else None
            xs.append(math.nan if value is None else value)
    return labels, {name: xs}


# --- calling the export --------------------------------------------------------------


def predict(saved_model: Path, manifest: dict[str, Any], arguments: Sequence[str]) -> list[dict[str, Any]]:
    """One record per input: its `input` (file, row or number) and the signature's answer for it."""
    from pipeline.runtime import quiet_tensorflow

    quiet_tensorflow.load()
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    if SIGNATURE not in loaded.signatures:
        raise DataError(
            f"{saved_model} has no {SIGNATURE!r} signature (it has: {', '.join(loaded.signatures) or 'none'}): "
            "retrain the run with this version (luigi --module pipeline TrainEstimator)."
        )
    function = loaded.signatures[SIGNATURE]
    specs = function.structured_input_signature[1]
    kinds = {name: spec.dtype.name for name, spec in specs.items()}
    if "image_bytes" in kinds:
        files = image_files(arguments)
        labels = [str(path) for path in files]
        values: dict[str, list[Any]] = {"image_bytes": files}  # read batch by batch
    elif schema.named_inputs(manifest):
        aliases = {feature: str(column["column"]) for feature, column in manifest.get("columns", {}).items()}
        aliases.update(serving_names(saved_model))
        labels, values = table_inputs(arguments, kinds, aliases)
    else:
        labels, values = sine_inputs(arguments, next(iter(kinds)))
    classes = list(manifest.get("class_names", []))
    records: list[dict[str, Any]] = []
    for start in range(0, len(labels), BATCH):
        batch = {name: column[start : start + BATCH] for name, column in values.items()}
        if "image_bytes" in batch:
            batch["image_bytes"] = [image_bytes(path) for path in batch["image_bytes"]]
        tensors = {name: tf.constant(column, dtype=specs[name].dtype) for name, column in batch.items()}
        outputs = {name: tensor.numpy() for name, tensor in function(**tensors).items()}
        if "predictions" in outputs:  # [batch] (or [batch, 1])
            outputs["predictions"] = outputs["predictions"].reshape(len(tensors[next(iter(tensors))]), -1)[:, 0]
        for i, label in enumerate(labels[start : start + BATCH]):
            if "probabilities" in outputs:
                class_id = int(outputs["class_ids"][i])
                name = outputs["classes"][i].decode() if "classes" in outputs else classes[class_id]
                probability = float(outputs["probabilities"][i][class_id])
                records.append({"input": label, "class": name, "probability": probability})
            else:
                records.append({"input": label, "prediction": float(outputs["predictions"][i])})
        if len(labels) > BATCH:
            done = min(start + BATCH, len(labels))
            print(f"predicted {done}/{len(labels)}", file=sys.stderr, flush=True)
    return records


# --- output --------------------------------------------------------------------------


def as_csv(records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def as_table(records: Sequence[dict[str, Any]]) -> str:
    """Aligned columns: input, class and probability (4 decimals), or input and prediction."""
    keys = list(records[0])
    cells = [keys] + [[f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in records]
    widths = [max(len(row[j]) for row in cells) for j in range(len(keys))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells)


def main(argv: list[str]) -> int:
    """Print (or write) the predictions of a run's export for the files given."""
    args = parser().parse_args(argv)
    model_dir = find_model_dir(args.run)
    manifest = manifest_of(model_dir)
    records = predict(export_dir(model_dir), manifest, args.files)
    if not records:
        raise DataError(f"No rows in {', '.join(args.files)}: nothing to predict.")
    if args.json:
        text = json.dumps(records, indent=1) + "\n"
    elif args.csv:
        text = as_csv(records)
    else:
        text = as_table(records)
    if args.out is None:
        print(text, end="", flush=True)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"{len(records)} predictions written to {args.out.resolve()}", flush=True)
    return 0
