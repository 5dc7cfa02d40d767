"""Every parameter of every stage, fuzzed: boundary and garbage values each get one line naming the flag.

The parameters come from the task classes' `get_params()`, so a parameter added
later is fuzzed too, with the garbage of its type (empty, negative, NaN, huge,
the wrong type, unicode, a path that does not exist). Boundary values and
combinations (a batch larger than the training split) are listed by name.
Most cases are checked in-process: building the task raises `ParameterError`,
which the `luigi` command turns into exit code 40; a sample goes through the
real command.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from pipeline import layout
from pipeline.core.parameters import INT64_MAX, flag
from pipeline.errors import ParameterError
from pipeline.tasks import STAGES, MakeShapes, PlotInference, Repro
from tests.conftest import Config, run_cli

TASKS: dict[str, type[luigi.Task]] = {**STAGES, "Repro": Repro}
HUGE_INT = str(INT64_MAX + 1)


def _is_flag(param: luigi.Parameter) -> bool:
    """A BoolParameter given as a bare flag (`--CreateShards-force`), without a value."""
    return isinstance(param, luigi.BoolParameter) and param.parsing != luigi.BoolParameter.EXPLICIT_PARSING


# Lists of names, where an empty list is a choice (no metrics beside the problem's own): their garbage.
NAME_LISTS = {"metrics": ["", '["no-such-metric"]', "[1]", "五", '["mse", 2]']}


def _garbage(param: luigi.Parameter, name: str = "") -> list[str]:
    """Values no parameter of this type accepts, whatever it means (`name`: the parameter's, for NAME_LISTS)."""
    if name in NAME_LISTS:
        return NAME_LISTS[name]
    if isinstance(param, luigi.BoolParameter):
        return ["", "maybe", "2", "五"]
    if isinstance(param, luigi.ChoiceListParameter):
        return ["", "no-such-choice", f"{next(iter(param._choices))},no-such-choice"]
    if isinstance(param, luigi.ChoiceParameter):
        first = str(next(iter(param._choices)))
        return ["", "no-such-choice", "".join(chr(ord(c) + 0xFEE0) for c in first), first.upper() + "x"]
    if isinstance(param, luigi.ListParameter):
        return ["", "[]", "[-1]", "[0]", "[1.5]", '["a"]', "{}", "[[1]]", "null", "五", "[true]", f"[{HUGE_INT}]",
                "[1000000000000]"]  # fmt: skip
    if isinstance(param, luigi.IntParameter):
        return ["", "-1", "1.5", "abc", "五", "nan", "1e3", HUGE_INT, "9" * 30]
    if isinstance(param, luigi.FloatParameter):
        return ["", "nan", "inf", "-inf", "1e400", "1e39", "abc", "五", "-1"]
    if isinstance(param, luigi.DictParameter):
        return ["", "[1]", "{", "null", "五", "1"]
    value_type = getattr(param, "value_type", None)  # one value or one per network
    if value_type is not None:
        common = ["", "nan", "-1", "abc", "五", "{}", '{"mlp": "x"}', '{"no-such-network": 1}', "[1]", "1e400"]
        return common + (["1.5", HUGE_INT] if value_type is int else ["inf", "1e39"])
    return ["a\x00b"]  # a string: what it may hold depends on what it names (BOUNDARIES); never a NUL


# Paths that do not exist, or are not what they should be, or cannot be one.
BAD_PATHS = ["/no/such/folder", "ñandú/日本/missing", "x" * 5000, "/etc/passwd", "/dev/null"]


# Boundary values that are wrong for one parameter (and right for others of its type).
BOUNDARIES: dict[str, list[str]] = {
    "MakeShapes-classes": ["circle", "circle,circle"],
    "CreateShards-image-dir": BAD_PATHS,
    "MakeShapes-images-per-class": ["0", "1"],
    "MakeShapes-image-size": ["0", "7"],
    "CreateShards-image-size": ["0", "7"],
    "CreateShards-num-examples": ["0", "1"],
    "CreateShards-noise-stddev": ["-1e-9"],
    "CreateShards-validation-fraction": ["0", "1", "1.0000001", "1e-300"],
    "CreateShards-num-train-shards": ["0", "5000"],
    "CreateShards-num-validation-shards": ["0", "5000"],
    "CreateShards-writer-processes": ["0", "100000"],
    "TrainEstimator-network": ["cnn", "", "no-such-network", "ＭＬＰ", "no_such_module:build", "pipeline.tasks:nope"],
    "TrainEstimator-network-params": ['{"width": 64}'],  # the built-in mlp takes no such argument
    "TrainEstimator-augment": ["", "no-such", '["no-such"]', "[1]", "{}", "五"],
    "TrainEstimator-max-epochs": ["-1"],
    "TrainEstimator-patience": ["-1"],
    "TrainEstimator-hidden-units": ["[100, 0]", "[100, -100]"],
    "TrainEstimator-conv-filters": ["[16, 0]"],
    "TrainEstimator-dense-units": ["0"],
    "TrainEstimator-learning-rate": ["0", "-1e-9", '{"cnn": 0.003}'],
    "TrainEstimator-batch-size": ["0", "684", "100000"],  # 683 examples in the default training split
    "TrainEstimator-max-steps": ["0"],
    "TrainEstimator-checkpoint-steps": ["0"],
    "TrainEstimator-shuffle-buffer": ["0"],
    "TrainEstimator-keep-checkpoints": ["0"],
    "TrainEstimator-steps-per-execution": ["0"],
    "Repro-target": ["Repro", "pipeline.tasks.PlotInference"],
    "TrainEstimator-variant": ['{"NoSuchStage": {"seed": 1}}', '{"CreateShards": {"no_such": 1}}'],
}
# Combinations of values each fine alone: (arguments, the flag the error must name).
COMBINATIONS = [
    (["--CreateShards-num-examples", "100", "--TrainEstimator-batch-size", "128"], "--TrainEstimator-batch-size"),
    (["--CreateShards-validation-fraction", "0.9", "--TrainEstimator-batch-size", "200"],
     "--TrainEstimator-batch-size"),
    (["--CreateShards-num-examples", "100", "--CreateShards-validation-fraction", "0.005"],
     "--CreateShards-validation-fraction"),
    (["--CreateShards-num-examples", "10", "--CreateShards-num-train-shards", "8"], "--CreateShards-num-train-shards"),
    (["--TrainEstimator-network", "mlp", "--TrainEstimator-learning-rate", '{"cnn": 0.003}'],
     "--TrainEstimator-learning-rate"),
]  # fmt: skip


def cases(root: Path) -> Iterator[tuple[list[str], str]]:
    """(command-line arguments, the flag the error must name) for every parameter of every task."""
    demo = ["--CreateShards-image-dir", str(root / "data" / "raw" / MakeShapes.folder)]
    table = root.parent / f"{root.name}-table.csv"  # beside the artifact root, which stays empty
    table.write_text("a,b,y\n" + "".join(f"{i},{i * i},{i % 3}\n" for i in range(30)))
    for path in BAD_PATHS:
        # A text file that is no table of ours (/etc/passwd) has no column y: that flag is named.
        named = "--CreateShards-label-column" if path == "/etc/passwd" else "--CreateShards-csv"
        yield ["PlotInference", "--CreateShards-csv", path, "--CreateShards-label-column", "y"], named
    yield ["PlotInference", "--CreateShards-csv", str(table)], "--CreateShards-label-column"
    yield ["PlotInference", "--CreateShards-csv", str(table), "--CreateShards-label-column", "nope"], "nope"
    both = ["--CreateShards-image-dir", str(root), "--CreateShards-csv", str(table)]
    yield ["PlotInference", *both, "--CreateShards-label-column", "y"], "--CreateShards-csv"
    for family, cls in TASKS.items():
        for name, param in cls.get_params():
            if _is_flag(param):  # no value on the command line: fuzzed through luigi.cfg
                continue
            option = flag(family, name)
            in_plots_dag = family in {"PlotInference", *PlotInference.families_above()}
            head = ["PlotInference", *(demo if family == "MakeShapes" else [])] if in_plots_dag else [family]
            for value in _garbage(param, name) + BOUNDARIES.get(option[2:], []):
                # `--flag=-inf`: argparse takes a separate "-inf" for another flag (its own error, exit 2).
                yield [*head, f"{option}={value}"] if value.startswith("-") else [*head, option, value], option
    for args, option in COMBINATIONS:
        yield ["PlotInference", *args], option
    # The task named on the command line parses its own flags (Luigi does that outside the task).
    for value in ("abc", "", "-3", HUGE_INT):
        yield ["TrainEstimator", f"--batch-size={value}"], "batch-size"


@pytest.fixture
def empty_root(config: Config, tmp_path: Path) -> Iterator[Path]:
    config.set("paths", "root", tmp_path)
    Register.clear_instance_cache()
    yield tmp_path
    Register.clear_instance_cache()


def _refusal(argv: list[str]) -> str:
    """The ParameterError building the task of `argv` raises (fails the test if none)."""
    Register.clear_instance_cache()
    with pytest.raises(ParameterError) as raised, CmdlineParser.global_instance(argv) as parser:
        parser.get_task_obj()
    return str(raised.value)


def test_every_parameter_fuzzed_is_refused_naming_its_flag(empty_root: Path) -> None:
    tried = 0
    for argv, option in cases(empty_root):
        message = _refusal(argv)
        assert option in message, (argv, message)
        assert "\n" not in message and "Traceback" not in message, (argv, message)
        tried += 1
    assert list(empty_root.iterdir()) == []  # nothing written, not even a lock folder
    families = {family for family, cls in TASKS.items() if any(n != "force" for n, _ in cls.get_params())}
    assert families == set(TASKS)  # every task has parameters besides force (a stage: its variant)
    print(f"{tried} fuzzed command lines refused, each naming its flag")


def test_every_parameter_fuzzed_in_luigi_cfg_is_refused_naming_it(empty_root: Path, config: Config) -> None:
    tried = 0
    for family, cls in TASKS.items():
        for name, param in cls.get_params():
            for value in ("五", "maybe") if _is_flag(param) else _garbage(param, name)[1:3]:
                config.set(family, name, value)
                Register.clear_instance_cache()
                with pytest.raises(ParameterError) as raised:
                    cls()
                config.restore()
                config.saved.clear()
                config.set("paths", "root", empty_root)
                assert flag(family, name) in str(raised.value), (family, name, value, str(raised.value))
                tried += 1
    assert list(empty_root.iterdir()) == []
    print(f"{tried} fuzzed luigi.cfg values refused, each naming its flag")


SAMPLE = [
    (["PlotInference", "--TrainEstimator-batch-size", "五"], "--TrainEstimator-batch-size"),
    (["PlotInference", "--TrainEstimator-batch-size", "684"], "--TrainEstimator-batch-size"),
    (["PlotInference", "--CreateShards-noise-stddev", "nan"], "--CreateShards-noise-stddev"),
    (["PlotInference", "--CreateShards-image-dir", "/no/such/folder"], "--CreateShards-image-dir"),
    (["PlotInference", "--TrainEstimator-hidden-units", "[1000000000000]"], "--TrainEstimator-hidden-units"),
    (["PlotInference", "--CreateShards-seed", HUGE_INT], "--CreateShards-seed"),
    (["TrainEstimator", "--batch-size", ""], "--TrainEstimator-batch-size"),
    (["Repro", "--target", "Nothing"], "--target"),
]


@pytest.mark.parametrize(("argv", "option"), SAMPLE, ids=[" ".join(a)[:60] for a, _ in SAMPLE])
def test_the_luigi_command_exits_40_with_one_line(tmp_path: Path, argv: list[str], option: str) -> None:
    out = run_cli(["luigi", "--module", "pipeline", *argv, "--local-scheduler"], cwd=tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 40, out.stderr
    assert len(lines) == 1 and option in lines[0] and "ParameterError" in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert not (tmp_path / layout.CHECKPOINTS).exists()
