"""Examples of the user's own: `--CreateShards-source module:function` (the Estimator's `input_fn`).

The function lives in the user's module (the working directory or
PYTHONPATH, as a network of their own does) and is called with the keyword
arguments of `--CreateShards-source-params`. It returns (or yields) examples:
dicts from a feature name to a value (a number, a string, a NumPy array of
fixed shape, or image bytes), the label under `--CreateShards-label-column`.
A user who has a split already returns `{"train": examples, "validation":
examples}` instead. Standard library only at import: this module runs on the
scheduling path, where the function is run once per version of its code and
parameters in a child process (etl/source_check.py, outside the shards' code
identity) that infers the schema and checks every example against it.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import modules
from pipeline.errors import DataError
from pipeline.schema import Schema

TRACEBACK_FRAMES = 4  # the last frames of a source function's traceback shown in its error


class SourceError(Exception):
    """The user's function raised: its message holds the example's index and the last frames."""


class SchemaError(ValueError):
    """An example that does not fit the schema, or a source that yields none."""


def locate(source: str) -> tuple[str, str, Path]:
    """The module, function and file `module:function` names (from the source, without importing it)."""
    module, _, function = source.partition(":")
    if not module or not function or not all(part.isidentifier() for part in [*module.split("."), function]):
        raise ValueError(
            f"--CreateShards-source must look like module:function, e.g. my_data:examples. Received: {source!r}"
        )
    located = modules.find_module(module, modules.user_roots())
    if located is None:
        where = ", ".join(modules.user_roots())
        raise ValueError(
            f"--CreateShards-source {source}: no module {module!r} in the working directory or on PYTHONPATH "
            f"({where}). Put {module.replace('.', '/')}.py there (or add its folder to PYTHONPATH)."
        )
    path = located[0]
    tree = ast.parse(path.read_bytes())
    names = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    if function not in names:
        raise ValueError(
            f"--CreateShards-source {source}: {path} defines no function {function!r}"
            f"{' (it defines: ' + ', '.join(sorted(names)) + ')' if names else ''}."
        )
    return module, function, path


# --- examples and their schema (NumPy and Pillow: the child process and the build only) ----------

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP")  # what tf.io.decode_image reads back
GRAY_MODES = ("1", "L", "I", "I;16", "F")  # Pillow modes of one channel (decoded with channels=1)


def spec_of(value: Any) -> dict[str, Any]:
    """The schema entry of one value: {"dtype": float32 | int64 | string | image, "shape": [...]}.

    Raises SchemaError for a value of another type.
    """
    import numpy as np

    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return {"dtype": "int64", "shape": []}
    if isinstance(value, (float, np.floating)):
        return {"dtype": "float32", "shape": []}
    if isinstance(value, str):
        return {"dtype": "string", "shape": []}
    if isinstance(value, (bytes, bytearray)):
        return {"dtype": "image", "shape": list(_image_shape(bytes(value)))}
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        dtype = "float32" if kind == "f" else "int64" if kind in "iub" else "string" if kind in "USO" else None
        if dtype is None:
            raise SchemaError(f"a NumPy array of dtype {value.dtype}: expected numbers or strings")
        return {"dtype": dtype, "shape": list(value.shape)}
    raise SchemaError(f"a {type(value).__name__}: expected a number, a string, a NumPy array or image bytes")


def _image_shape(data: bytes) -> tuple[int, int, int]:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise SchemaError(f"bytes of a {image.format} image: expected {', '.join(IMAGE_FORMATS)}")
            return image.height, image.width, 1 if image.mode in GRAY_MODES else 3  # decoded as gray or RGB
    except SchemaError:
        raise
    except Exception:  # Pillow raises many types for data that is no image
        raise SchemaError("bytes that are not an image (expected the bytes of a PNG, JPEG, GIF or BMP file)") from None


def to_feature(value: Any, spec: Mapping[str, Any]) -> list[Any]:
    """The value as a tf.train.Feature list: floats, ints or bytes."""
    import numpy as np

    if spec["dtype"] == "image":
        return [bytes(value)]
    if spec["dtype"] == "string":
        array = np.asarray(value).ravel()
        return [v.encode() if isinstance(v, str) else bytes(v) for v in array.tolist()]
    array = np.asarray(value, dtype=np.float32 if spec["dtype"] == "float32" else np.int64).ravel()
    return array.tolist()


def check_example(index: int, example: Any, schema: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise SchemaError naming the example's index and the feature when `example` does not fit `schema`."""
    if not isinstance(example, Mapping):
        raise SchemaError(f"example {index} is a {type(example).__name__}: expected a dict of feature name -> value")
    if set(example) != set(schema):
        missing, extra = sorted(set(schema) - set(example)), sorted(set(example) - set(schema))
        said = "; ".join(
            part for part in (f"lacks {', '.join(map(repr, missing))}" if missing else "",
                              f"has {', '.join(map(repr, extra))} too" if extra else "") if part
        )  # fmt: skip
        raise SchemaError(f"example {index} {said}: every example has the features {', '.join(map(repr, schema))}")
    for name, expected in schema.items():
        try:
            received = spec_of(example[name])
        except SchemaError as error:
            raise SchemaError(f"example {index}, feature {name!r}: {error}") from None
        widened = expected["dtype"] == "float32" and received["dtype"] == "int64"  # an int where floats are: fine
        if received["dtype"] != expected["dtype"] and not widened:
            raise SchemaError(
                f"example {index}, feature {name!r}: expected dtype {expected['dtype']}, received {received['dtype']}"
            )
        if expected["dtype"] == "image":  # decoded to the schema's shape inside the model, resized if need be
            continue
        if list(received["shape"]) != list(expected["shape"]):
            raise SchemaError(
                f"example {index}, feature {name!r}: expected shape {list(expected['shape'])}, "
                f"received {received['shape']}"
            )


def infer_schema(first: Any) -> dict[str, dict[str, Any]]:
    """The schema of the first example (numbers as float32, but the label's)."""
    if not isinstance(first, Mapping) or not first:
        raise SchemaError(f"example 0 is a {type(first).__name__}: expected a dict of feature name -> value")
    schema = {}
    for name, value in first.items():
        if not isinstance(name, str):
            raise SchemaError(f"example 0 has the key {name!r}: feature names are strings")
        try:
            schema[name] = spec_of(value)
        except SchemaError as error:
            raise SchemaError(f"example 0, feature {name!r}: {error}") from None
    return schema


# --- calling the function --------------------------------------------------------------------------


def load(module: str, function: str) -> Any:
    """The user's function, imported with the working directory and PYTHONPATH first on the path."""
    for root in reversed(modules.user_roots()):
        if root not in sys.path:
            sys.path.insert(0, root)
    return getattr(importlib.import_module(module), function)


def _frames(error: BaseException) -> str:
    """The last frames of an exception's traceback (the user's code, not this module), innermost first."""
    frames = [
        f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() != Path(__file__).resolve()
    ]
    shown = " <- ".join(
        f"{Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
        for f in reversed(frames[-TRACEBACK_FRAMES:])
    )
    return f"{type(error).__name__}: {error} (at {shown})"


def _examples(iterable: Any, what: str, offset: int) -> Iterable[tuple[int, Any]]:
    """(index, example) of an iterable of the user's, each failure of it a SourceError naming the index."""
    try:
        iterator = iter(iterable)
    except TypeError:
        raise SchemaError(
            f"the source returned a {type(iterable).__name__}{what}: expected an iterable of dicts"
        ) from None
    index = offset
    while True:
        try:
            example = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # the user's code: whatever it raises is theirs to see
            raise SourceError(f"raised while making example {index}{what}: {_frames(error)}") from None
        yield index, example
        index += 1


def collect(source: str, params: Mapping[str, Any], label: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Every example of the source, checked: ({"all": [...]} or {"train": [...], "validation": [...]}, schema).

    Raises SourceError when the function raises (the example's index and the
    last frames of its traceback), SchemaError when an example does not fit
    the schema (declared, or inferred from the first example) or there is none.
    """
    module, function, _ = locate(source)
    try:
        result = load(module, function)(**params)
    except Exception as error:  # the user's code
        raise SourceError(f"raised when called: {_frames(error)}") from None
    declared = None
    if isinstance(result, Mapping) and {"train", "validation"} <= set(result):
        declared = result.get("schema")
        parts = {"train": result["train"], "validation": result["validation"]}
    elif isinstance(result, Mapping) and "examples" in result:
        declared, parts = result.get("schema"), {"all": result["examples"]}
    else:
        parts = {"all": result}
    schema = {name: declared_spec(s) for name, s in (declared or {}).items()}
    collected: dict[str, list[Any]] = {}
    offset = 0
    for part, iterable in parts.items():
        what = "" if part == "all" else f" of the {part} split"
        examples = []
        for index, example in _examples(iterable, what, offset):
            if not schema:
                schema = infer_schema(example)
                if label not in schema:
                    raise SchemaError(
                        f"example 0 has no label {label!r} (--CreateShards-label-column); its features: "
                        f"{', '.join(map(repr, schema))}"
                    )
            check_example(index, example, schema)
            examples.append(example)
        if not examples:
            raise SchemaError(f"the source yielded no example{what}")
        collected[part] = examples
        offset += len(examples)
    return collected, schema


def declared_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A feature's entry of a declared schema: {"dtype", "shape"}; image bytes are dtype "image" (or a string
    with "encoding": "image") of shape [height, width, channels]."""
    dtype = "image" if spec.get("encoding") == "image" else spec["dtype"]
    shape = list(spec.get("image_shape", spec.get("shape", [])))
    if dtype == "image" and (len(shape) != 3 or shape[2] not in (1, 3)):
        raise SchemaError(f"an image is declared of shape {shape}: expected [height, width, 1 or 3]")
    return {"dtype": dtype, "shape": shape}


def feature_entry(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's entry of a feature: image bytes are a string of their own shape (decoded in the model)."""
    if spec["dtype"] == "image":
        return {"dtype": "string", "shape": [], "encoding": "image", "image_shape": list(spec["shape"])}
    return {"dtype": spec["dtype"], "shape": list(spec["shape"])}


def statistics(rows: list[Any], specs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each numeric feature's train mean and variance (per element of an array), for ImputeAndScale."""
    import numpy as np

    stats = {}
    for name, spec in specs.items():
        if spec["dtype"] in ("float32", "int64"):
            values = np.asarray([np.asarray(row[name], dtype=np.float64).ravel() for row in rows])
            mean, variance = values.mean(axis=0), values.var(axis=0)
            scalar = not spec["shape"]
            stats[name] = {
                "mean": float(mean[0]) if scalar else mean.tolist(),
                "variance": float(variance[0]) if scalar else variance.tolist(),
            }
    return stats


def columns(specs: Mapping[str, Mapping[str, Any]], stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest's columns of named inputs: numbers with their train statistics, images, texts."""
    kinds = {"string": "text", "image": "image"}
    return {
        name: {"kind": kinds.get(spec["dtype"], "numeric"), "missing": 0, **stats.get(name, {})}
        for name, spec in specs.items()
    }


def label_problem(spec: Mapping[str, Any], values: list[Any], problem: str, label: str) -> tuple[str, list[str]]:
    """The problem the label poses and its class names (sorted; numerically for whole numbers)."""
    if spec["shape"]:
        raise SchemaError(f"the label {label!r} has shape {spec['shape']}: expected one value per example")
    if spec["dtype"] == "image":
        raise SchemaError(f"the label {label!r} holds image bytes: expected a number or a class name")
    numeric = spec["dtype"] != "string"
    if problem == "regression" or (problem == "auto" and spec["dtype"] == "float32"):
        if not numeric:
            raise SchemaError(f"the label {label!r} holds strings, and regression needs numbers")
        return "regression", []
    if spec["dtype"] == "float32" and any(float(v) != int(v) for v in values):
        raise SchemaError(f"the label {label!r} holds fractions, so they cannot name classes")
    if numeric:
        names = sorted({int(v) for v in values})
        class_names = [str(v) for v in names]
    else:
        class_names = sorted({str(v) for v in values})
    if len(class_names) < 2:
        raise SchemaError(f"the label {label!r} holds a single class ({class_names[0]!r}): classification needs two")
    return "classification", class_names


def split(
    collected: dict[str, list[Any]], labels: list[Any] | None, validation_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Indices of each split into the examples (train first, then validation, as collected).

    A split the function gave is kept as it is. Otherwise each class (or, for
    regression, the whole set) is shuffled with `seed` and its first share
    goes to validation, as for a table; each split is then shuffled again.
    """
    import numpy as np

    from pipeline.etl.tables import split_counts

    if "all" not in collected:
        count = len(collected["train"])
        return {"train": list(range(count)), "validation": list(range(count, count + len(collected["validation"])))}
    total = len(collected["all"])
    groups: dict[Any, list[int]] = {}
    for i in range(total):
        groups.setdefault(labels[i] if labels is not None else None, []).append(i)
    rs = np.random.RandomState(seed)
    splits: dict[str, list[int]] = {"train": [], "validation": []}
    for key in sorted(groups, key=str):
        indices = groups[key]
        order = rs.permutation(len(indices))
        n_val = split_counts(len(indices), validation_fraction)["validation"]
        splits["validation"] += [indices[i] for i in order[:n_val]]
        splits["train"] += [indices[i] for i in order[n_val:]]
    return {name: [rows[i] for i in rs.permutation(len(rows))] for name, rows in splits.items()}


def check_in_child(request: Mapping[str, Any]) -> dict[str, Any]:
    """Run the source (`python -m pipeline.etl.user_source`): its schema, problem, classes and counts, or the error."""
    try:
        collected, schema = collect(request["source"], request["params"], request["label"])
        labels = [example[request["label"]] for examples in collected.values() for example in examples]
        problem, class_names = label_problem(schema[request["label"]], labels, request["problem"], request["label"])
    except SourceError as error:
        return {"error": f"--CreateShards-source {request['source']} {error}", "kind": "raised"}
    except (SchemaError, ValueError) as error:
        return {"error": f"--CreateShards-source {request['source']}: {error}", "kind": "schema"}
    stratify = labels if problem == "classification" else None
    indices = split(collected, stratify, request["validation_fraction"], request["seed"])
    counts = {name: len(rows) for name, rows in indices.items()}
    return {"schema": schema, "problem": problem, "class_names": class_names, "counts": counts}


# --- the source CreateShards reads --------------------------------------------------------------

UNKNOWN_COUNT = 1 << 40  # examples per split of a function that raised, until the build says why
LABEL = "label"  # the label's feature in the shards (the user's label name is recorded beside it)


@dataclass(frozen=True)
class FunctionSource:
    """The examples a function of the user's returns; the schema inferred from them or declared.

    `check_schema()` runs the function in a child process once per version
    of its code and parameters (the verdict under `.cache/`): on the
    scheduling path nothing of the user's is imported. The build calls it in
    this process, checks every example again and writes them.
    """

    kind = "function"

    source: str  # module:function
    source_params: Mapping[str, Any]
    label_column: str
    problem: str
    validation_fraction: float
    seed: int

    def located(self) -> tuple[str, str, Path]:
        return locate(self.source)

    def data_files(self) -> dict[str, Path]:
        """Files or folders the parameters name (an .npz, a database): their listing joins the identity."""
        return {
            f"source_params.{name}": Path(value)
            for name, value in sorted(self.source_params.items())
            if isinstance(value, str) and value and os.path.exists(value)
        }

    def request(self) -> dict[str, Any]:
        """What the child process that checks the function is asked (etl/source_check.py)."""
        return {
            "source": self.source, "params": plain(self.source_params), "label": self.label_column,
            "problem": self.problem, "validation_fraction": self.validation_fraction, "seed": self.seed,
        }  # fmt: skip

    def validate(self) -> None:
        """Raise ValueError when the function cannot be found or no label is named (its examples are
        checked by etl/source_check.py, outside the shards' code identity, as a network's are)."""
        if not self.label_column:
            raise ValueError("A source function needs the name of its label: --CreateShards-label-column NAME.")
        self.located()

    def schema(self, verdict: Mapping[str, Any]) -> Schema:
        """The schema the check found (`verdict`: source_check.check's answer)."""
        if "error" in verdict:  # the function raised: the build runs it again and says so (exit 30)
            unknown = {"train": UNKNOWN_COUNT, "validation": UNKNOWN_COUNT}  # no check of counts fails on it
            return Schema("regression", (1,), (), unknown, self.kind)
        inputs = {name: spec for name, spec in verdict["schema"].items() if name != self.label_column}
        return Schema(
            verdict["problem"], input_shape(inputs), tuple(verdict["class_names"]), verdict["counts"], self.kind,
            {name: feature_entry(spec) for name, spec in inputs.items()},
        )  # fmt: skip

    def check(self) -> None:
        self.validate()  # the examples themselves are checked as rows() makes them

    @property
    def to_features(self) -> Any:
        return example_features

    def _collected(self) -> tuple[dict[str, list[Any]], list[Any], dict[str, Any]]:
        """The examples (train then validation), their labels and the run's schema, made in this process."""
        try:
            collected, schema = collect(self.source, plain(self.source_params), self.label_column)
            labels = [example[self.label_column] for part in collected.values() for example in part]
            problem, class_names = label_problem(schema[self.label_column], labels, self.problem, self.label_column)
        except SourceError as error:
            raise DataError(f"--CreateShards-source {self.source} {error}") from None
        except (SchemaError, ValueError) as error:
            raise DataError(f"--CreateShards-source {self.source}: {error}") from None
        examples = [example for part in collected.values() for example in part]
        parts = {name: len(part) for name, part in collected.items()}
        meta = {"schema": schema, "problem": problem, "class_names": class_names, "parts": parts}
        return {"all": examples} if "all" in collected else collected, labels, meta

    def rows(self) -> dict[str, list[Any]]:
        """Each split's examples as (features spec, example, label value) rows, in shuffled order."""
        collected, labels, meta = self._collected()
        object.__setattr__(self, "_meta", meta)  # the manifest's schema: from this very run of the function
        examples = [example for part in collected.values() for example in part]
        classification = meta["problem"] == "classification"
        index = {name: k for k, name in enumerate(meta["class_names"])}
        indices = split(collected, labels if classification else None, self.validation_fraction, self.seed)
        specs = {name: spec for name, spec in meta["schema"].items() if name != self.label_column}

        def label(value: Any) -> float | int:
            return index[str(int(value)) if not isinstance(value, str) else value] if classification else float(value)

        object.__setattr__(self, "_statistics", statistics([examples[i] for i in indices["train"]], specs))
        return {name: [(specs, examples[i], label(labels[i])) for i in rows] for name, rows in indices.items()}

    def manifest(self) -> dict[str, Any]:
        meta: dict[str, Any] = getattr(self, "_meta")  # noqa: B009 (set by rows(), which create_shards calls first)
        specs = {name: spec for name, spec in meta["schema"].items() if name != self.label_column}
        classification = meta["problem"] == "classification"
        features = {name: feature_entry(spec) for name, spec in specs.items()}
        features[LABEL] = {"dtype": "int64", "shape": []} if classification else {"dtype": "float32", "shape": [1]}
        manifest: dict[str, Any] = {
            "source": self.kind,
            "function": self.source,
            "problem": meta["problem"],
            "label_column": self.label_column,
            "features": features,
            "inputs": sorted(specs),
            "input_shape": list(input_shape(specs)),
            "label": LABEL,
            "columns": columns(specs, getattr(self, "_statistics")),  # noqa: B009 (set by rows())
        }
        if classification:
            manifest["class_names"] = list(meta["class_names"])
        return manifest


def plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Luigi's frozen parameters as plain JSON data (the function's keyword arguments)."""
    data: dict[str, Any] = json.loads(json.dumps(params, default=dict))
    return data


def input_width(specs: Mapping[str, Mapping[str, Any]]) -> int:
    """Numbers the built-in mlp takes of the numeric inputs, flattened (strings are for a network of your own)."""
    import math

    return sum(math.prod(spec["shape"]) for spec in specs.values() if spec["dtype"] in ("float32", "int64")) or 1


def input_shape(specs: Mapping[str, Mapping[str, Any]]) -> tuple[int, ...]:
    """What the built-in network takes: the image's shape when there is one (the cnn, the numbers beside it),
    else the numbers' width (the mlp)."""
    images = [spec["shape"] for spec in specs.values() if spec["dtype"] == "image"]
    return tuple(images[0]) if images else (input_width(specs),)


def example_features(
    row: tuple[Mapping[str, Any], Mapping[str, Any], float | int],
) -> tuple[dict[str, Any], dict[str, str]]:
    """The Example features of one of the user's examples (in a writer process)."""
    specs, example, label = row
    features = {name: to_feature(example[name], spec) for name, spec in specs.items()}
    return {**features, LABEL: [label]}, {}
