"""TFRecord files of `tf.train.Example` the user has already: `--CreateShards-tfrecords 'path/*.tfrecord'`.

The records are read and decoded here in plain Python (the TFRecord framing and
the Example protocol buffer are small fixed formats, as `shards.py` writes
them), so no TensorFlow is imported, on the scheduling path or in the build.
The feature spec (each feature's kind: bytes, float or int64, and its length)
is inferred from the first records and every record is checked against it;
the label is the feature named by `--CreateShards-label-column`. The split is
given (`--CreateShards-tfrecords-validation`, a second glob) or made here,
deterministically: a permutation of the records by `seed`. The files' listing
(path, size, mtime) joins CreateShards' identity, their sha256 the manifest.
"""

from __future__ import annotations

import glob
import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import invocation
from pipeline.errors import DataError
from pipeline.schema import Schema

KINDS = {1: "bytes", 2: "float", 3: "int64"}  # tf.train.Feature's oneof field numbers
DTYPES = {"bytes": "string", "float": "float32", "int64": "int64"}
LABEL = "label"  # the label's feature in our shards (the user's name is recorded beside it)
SPEC_RECORDS = 100  # records the spec is inferred from


# --- the Example protocol buffer, decoded -----------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: varints as ints, length-delimited fields as bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        value: Any
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire}")
        out.append((number, wire, value))
    return out


def decode_example(record: bytes) -> dict[str, tuple[str, list[Any]]]:
    """A serialised tf.train.Example as {name: (kind, values)}; raise ValueError for bytes that are not one."""
    features: dict[str, tuple[str, list[Any]]] = {}
    for number, _, payload in _fields(record):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(payload):  # Features.feature: map<string, Feature>
            if entry_number != 1:
                continue
            name, feature = "", b""
            for field_number, _, value in _fields(entry):
                if field_number == 1:
                    name = value.decode()
                elif field_number == 2:
                    feature = value
            for kind_number, _, lists in _fields(feature) or [(3, 2, b"")]:
                kind = KINDS[kind_number]
                features[name] = (kind, _values(kind, lists))
    return features


def _values(kind: str, data: bytes) -> list[Any]:
    values: list[Any] = []
    for _, wire, value in _fields(data):
        if kind == "bytes":
            values.append(bytes(value))
        elif kind == "float":  # packed (wire type 2) or one float (wire type 5): little-endian float32s
            values += [v for (v,) in struct.iter_unpack("<f", value)]
        elif wire == 2:  # packed int64s
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                values.append(v - (1 << 64) if v >= 1 << 63 else v)
        else:
            values.append(value - (1 << 64) if value >= 1 << 63 else value)
    return values


def count_records(path: Path) -> int:
    """Records in a TFRecord file, from its length headers (the CRCs are checked when it is read whole)."""
    count, size = 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise DataError(f"Corrupt TFRecord file {path}: it ends inside a record. Replace it, then rerun.")
            (length,) = struct.unpack("<Q", header[:8])
            f.seek(length + 4, os.SEEK_CUR)
            if f.tell() > size:
                raise DataError(f"Corrupt TFRecord file {path}: it ends inside a record. Replace it, then rerun.")
            count += 1
    return count


# --- the source ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TFRecordSource:
    """Examples from the user's TFRecord files: every feature but the label an input."""

    kind = "tfrecords"

    tfrecords: str  # a glob of the files (all examples, or the train split when validation is given)
    tfrecords_validation: str  # a glob of the validation split's files, or "" (the pipeline splits)
    label_column: str
    problem: str
    validation_fraction: float
    seed: int

    def files(self) -> dict[str, list[Path]]:
        """The files of each glob, sorted ({"all": ...} or {"train": ..., "validation": ...})."""
        found = {"all" if not self.tfrecords_validation else "train": self.tfrecords}
        if self.tfrecords_validation:
            found["validation"] = self.tfrecords_validation
        return {
            part: sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern))) for part, pattern in found.items()
        }

    def data_files(self) -> dict[str, Path]:
        """Every file, by name for the identity's listing."""
        return {f"tfrecords.{part}.{i}": path for part, paths in self.files().items() for i, path in enumerate(paths)}

    def validate(self) -> None:
        """Raise ValueError for a glob that matches nothing, a missing label, or records the spec does not fit."""
        if not self.label_column:
            raise ValueError("TFRecords need the name of their label feature: --CreateShards-label-column NAME.")
        for part, paths in self.files().items():
            if not paths:
                flag = "--CreateShards-tfrecords-validation" if part == "validation" else "--CreateShards-tfrecords"
                pattern = self.tfrecords_validation if part == "validation" else self.tfrecords
                raise ValueError(f"{flag}: no file matches {pattern!r}.")
        self.spec()

    def spec(self) -> dict[str, dict[str, Any]]:
        """Each feature's {"kind", "length"} from the first records (once per invocation and listing)."""
        files = self.files()
        key = (
            "tfrecord spec",
            tuple((str(p), os.stat(p).st_size) for paths in files.values() for p in paths),
            self.label_column,
        )

        def infer() -> dict[str, dict[str, Any]]:
            records = _first_records([p for paths in files.values() for p in paths], SPEC_RECORDS)
            if not records:
                raise ValueError(f"--CreateShards-tfrecords {self.tfrecords}: the files hold no record.")
            spec: dict[str, dict[str, Any]] = {}

            def decoded(records: list[tuple[Path, bytes]]) -> list[tuple[Path, dict[str, Any]]]:
                return [(path, _decoded(path, record, index)) for index, (path, record) in enumerate(records)]

            for _, example in decoded(records):
                for name, (kind, values) in example.items():
                    spec.setdefault(name, {"kind": kind, "length": len(values)})
            if self.label_column not in spec:
                raise ValueError(
                    f"--CreateShards-label-column {self.label_column}: the records have no such feature. Their "
                    f"features: {', '.join(sorted(spec))}."
                )
            for name, entry in spec.items():  # bytes that decode as images: the cnn's input (decoded in the model)
                if name != self.label_column and entry["kind"] == "bytes" and entry["length"] == 1:
                    shape = _image_shape([example[name][1][0] for _, example in decoded(records)][:IMAGE_PROBES])
                    if shape:
                        entry.update(encoding="image", image_shape=list(shape))
            if spec[self.label_column]["length"] != 1:
                raise ValueError(
                    f"The label {self.label_column!r} holds {spec[self.label_column]['length']} values per record: "
                    "expected one."
                )
            return spec

        found: dict[str, dict[str, Any]] = invocation.cached(key, infer)
        return found

    def counts(self) -> dict[str, int]:
        files = self.files()
        numbers = {part: sum(count_records(p) for p in paths) for part, paths in files.items()}
        if "all" not in numbers:
            return numbers
        from pipeline.etl.tables import split_counts

        return split_counts(numbers["all"], self.validation_fraction)

    def class_names(self) -> tuple[str, ...]:
        """The classes of the labels of every record (a scan of the files, once per invocation and listing)."""
        files = [p for paths in self.files().values() for p in paths]
        key = ("tfrecord classes", tuple((str(p), os.stat(p).st_size) for p in files), self.label_column)

        def scan() -> tuple[str, ...]:
            names = set()
            for path in files:
                for index, (_, record) in enumerate(_first_records([path], 1 << 62)):
                    value = _decoded(path, record, index).get(self.label_column, ("", [b""]))[1]
                    if value:
                        names.add(_class_name(value[0]))
            return tuple(sorted(names, key=_class_order))

        found: tuple[str, ...] = invocation.cached(key, scan)
        return found

    def schema(self) -> Schema:
        spec = self.spec()
        inputs = {name: _feature(s) for name, s in spec.items() if name != self.label_column}
        images = [s["image_shape"] for s in inputs.values() if s.get("encoding") == "image"]
        width = sum(s["shape"][0] for s in inputs.values() if s["dtype"] != "string") or 1
        problem = (
            "regression"
            if spec[self.label_column]["kind"] == "float" and self.problem != "classification"
            else "classification"
        )
        classes = self.class_names() if problem == "classification" else ()
        shape = tuple(images[0]) if images else (width,)  # an image: the cnn, the numbers beside it
        return Schema(problem, shape, classes, self.counts(), self.kind, inputs)

    def check(self) -> None:
        self.validate()

    @property
    def to_features(self) -> Any:
        return record_features

    def _examples(self) -> dict[str, list[tuple[str, dict[str, tuple[str, list[Any]]]]]]:
        """Every record decoded and checked, by part, with its file's name; raise DataError naming a corrupt file."""
        from pipeline.etl import shards

        spec = self.spec()
        out: dict[str, list[tuple[str, dict[str, tuple[str, list[Any]]]]]] = {}
        index = 0
        for part, paths in self.files().items():
            out[part] = []
            for path in paths:
                try:
                    records = shards.read_records(path)
                except ValueError as error:
                    raise DataError(f"{error} Replace the file, then rerun.") from None
                for record in records:
                    example = _decoded(path, record, index)
                    _check(example, spec, index, path)
                    out[part].append((path.name, example))
                    index += 1
        return out

    def rows(self) -> dict[str, list[Any]]:
        import numpy as np

        examples = self._examples()
        spec = self.spec()
        labels = [example[self.label_column][1][0] for part in examples.values() for _, example in part]
        classification = self.schema().problem == "classification"
        names = sorted({_class_name(v) for v in labels}, key=_class_order) if classification else []
        object.__setattr__(self, "_class_names", names)
        index = {name: k for k, name in enumerate(names)}

        def row(example: dict[str, tuple[str, list[Any]]]) -> tuple[Any, ...]:
            value = example[self.label_column][1][0]
            if classification:
                label: float | int = index[_class_name(value)]
            else:
                label = float(value)
            inputs = {name: values for name, (_, values) in example.items() if name != self.label_column}
            return inputs, label, {name: s["kind"] for name, s in spec.items()}

        if "all" in examples:
            every = [row(example) for _, example in examples["all"]]
            order = np.random.RandomState(self.seed).permutation(len(every))
            n_val = self.counts()["validation"]
            split = {"validation": [every[i] for i in order[:n_val]], "train": [every[i] for i in order[n_val:]]}
        else:
            split = {part: [row(example) for _, example in rows] for part, rows in examples.items()}
        object.__setattr__(self, "_statistics", _statistics([inputs for inputs, _, _ in split["train"]], spec))
        return split

    def manifest(self) -> dict[str, Any]:
        spec = self.spec()
        schema = self.schema()
        statistics: dict[str, Any] = getattr(self, "_statistics")  # noqa: B009 (set by rows())
        features: dict[str, Any] = {name: dict(s) for name, s in schema.inputs.items()}
        classification = schema.problem == "classification"
        features[LABEL] = {"dtype": "int64", "shape": []} if classification else {"dtype": "float32", "shape": [1]}
        manifest: dict[str, Any] = {
            "source": self.kind,
            "tfrecords": {part: [str(p) for p in paths] for part, paths in self.files().items()},
            "problem": schema.problem,
            "label_column": self.label_column,
            "features": features,
            "inputs": sorted(schema.inputs),
            "input_shape": list(schema.input_shape),
            "label": LABEL,
            "feature_spec": spec,
            "columns": {name: {"kind": _column_kind(s), "missing": 0, **statistics.get(name, {})}
                        for name, s in schema.inputs.items()},
            "source_sha256": {p.name: _sha256(p) for paths in self.files().values() for p in paths},
        }  # fmt: skip
        if classification:
            manifest["class_names"] = list(getattr(self, "_class_names"))  # noqa: B009 (set by rows())
        return manifest


def record_features(
    row: tuple[Mapping[str, list[Any]], float | int, Mapping[str, str]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Our Example of one of the user's records: its inputs as they were, the label as a number or class index."""
    inputs, label, kinds = row
    features: dict[str, Any] = {}
    for name, values in inputs.items():
        if kinds[name] == "float":
            features[name] = [float(v) for v in values]
        else:
            features[name] = list(values)
    return {**features, LABEL: [label]}, {}


IMAGE_PROBES = 5  # first records whose bytes must all decode as images of one shape for a feature to be images
GRAY_MODES = ("1", "L", "I", "I;16", "F")  # Pillow modes of one channel


def _image_shape(values: list[bytes]) -> tuple[int, int, int] | None:
    """[height, width, channels] when every value is the bytes of a PNG, JPEG, GIF or BMP of that shape."""
    import io

    from PIL import Image

    shapes = set()
    for value in values:
        try:
            with Image.open(io.BytesIO(value)) as image:
                if image.format not in ("PNG", "JPEG", "GIF", "BMP"):
                    return None
                shapes.add((image.height, image.width, 1 if image.mode in GRAY_MODES else 3))
        except Exception:  # Pillow raises many types for bytes that are no image: then it is text
            return None
    return shapes.pop() if len(shapes) == 1 else None


def _feature(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's entry of a feature: image bytes one string (decoded in the model), else a list."""
    if spec.get("encoding") == "image":
        return {"dtype": "string", "shape": [], "encoding": "image", "image_shape": list(spec["image_shape"])}
    return {"dtype": DTYPES[spec["kind"]], "shape": [spec["length"]]}


def _column_kind(feature: Mapping[str, Any]) -> str:
    return "image" if feature.get("encoding") == "image" else "text" if feature["dtype"] == "string" else "numeric"


def _statistics(rows: list[Mapping[str, list[Any]]], spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each numeric feature's train mean and variance per value, for ImputeAndScale inside the model."""
    import numpy as np

    stats = {}
    for name, entry in spec.items():
        if entry["kind"] != "bytes" and rows and name in rows[0]:
            values = np.asarray([row[name] for row in rows], dtype=np.float64)
            stats[name] = {"mean": values.mean(axis=0).tolist(), "variance": values.var(axis=0).tolist()}
    return stats


def _class_name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(int(value))


def _class_order(name: str) -> tuple[int, Any]:
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


def _decoded(path: Path, record: bytes, index: int) -> dict[str, tuple[str, list[Any]]]:
    try:
        return decode_example(record)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, struct.error) as error:
        raise DataError(f"Record {index} of {path} is not a tf.train.Example ({error}). Replace the file.") from None


def _check(
    example: Mapping[str, tuple[str, list[Any]]], spec: Mapping[str, Mapping[str, Any]], index: int, path: Path
) -> None:
    """Raise DataError naming the record, the feature, and the expected and received kind or length."""
    if set(example) != set(spec):
        missing, extra = sorted(set(spec) - set(example)), sorted(set(example) - set(spec))
        raise DataError(
            f"Record {index} ({path.name}) {'lacks ' + ', '.join(map(repr, missing)) if missing else ''}"
            f"{'; ' if missing and extra else ''}{'has ' + ', '.join(map(repr, extra)) + ' too' if extra else ''}: "
            f"every record has the features {', '.join(map(repr, sorted(spec)))}."
        )
    for name, (kind, values) in example.items():
        expected = spec[name]
        if kind != expected["kind"] or len(values) != expected["length"]:
            raise DataError(
                f"Record {index} ({path.name}), feature {name!r}: expected {expected['length']} {expected['kind']} "
                f"value(s), received {len(values)} {kind}."
            )


def _first_records(paths: list[Path], count: int) -> list[tuple[Path, bytes]]:
    out: list[tuple[Path, bytes]] = []
    for path in paths:
        with open(path, "rb") as f:
            while len(out) < count and (header := f.read(12)):
                if len(header) < 12:
                    raise DataError(f"Corrupt TFRecord file {path}: it ends inside a record. Replace it, then rerun.")
                (length,) = struct.unpack("<Q", header[:8])
                data = f.read(length)
                if len(data) != length or len(f.read(4)) != 4:
                    raise DataError(f"Corrupt TFRecord file {path}: it ends inside a record. Replace it, then rerun.")
                out.append((path, data))
        if len(out) >= count:
            break
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
