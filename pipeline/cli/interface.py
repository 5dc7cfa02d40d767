"""The command line's mistakes and help, for `luigi --module pipeline` and `python -m pipeline` alike.

Luigi parses a command line with argparse (luigi/cmdline_parser.py): an
unknown flag exits with argparse's usage and code 2, an unknown task family
with a traceback. `install()` (called when `pipeline` is imported, which is
before Luigi parses the task's flags) wraps the two places where Luigi builds
the parser for a task and prints a task's help, so that:

- an unknown task or flag is one line naming it and the closest known one
  (difflib), exit code 40 (a bad parameter, before any work), no traceback;
  a flag is never abbreviated (argparse's prefix matching is off), so a
  prefix of a parameter's flag is such an unknown flag;
- `--help` after a stage lists the parameters of every stage of its DAG
  (upstream first), with the value luigi.cfg gives and the description.

`python -m pipeline` builds its tasks through the same parser, so it gives
the same lines; `run_command` turns its other errors into the same one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register, TaskClassNotFoundException

from pipeline.errors import ParameterError, PipelineError

BAD_PARAMETER_EXIT = 40  # [retcode] unhandled_exception in luigi.cfg: what `luigi` exits with for a bad parameter
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, as a process the shell's pipe closed on


def error_line(error: BaseException) -> str:
    """The one line a user's mistake prints as, the same for `luigi` and `python -m pipeline`."""
    return f"ERROR: {type(error).__name__}: {error}"


def fail(error: PipelineError) -> NoReturn:
    """Print `error` as its one line and exit with the bad-parameter code."""
    print(error_line(error), file=sys.stderr, flush=True)
    raise SystemExit(BAD_PARAMETER_EXIT)


def closest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate `word` most likely meant: the same up to case, '_' and '-'; those ending in it (a flag
    without its task, `a or b` when several do); else difflib's closest; None when nothing is close."""

    def key(s: str) -> str:
        return s.lower().replace("_", "-")

    by_key = {key(c): c for c in candidates}
    if key(word) in by_key:
        return by_key[key(word)]
    suffix = [c for c in candidates if key(c).endswith("-" + key(word).lstrip("-"))]  # a flag without its task
    if suffix:
        return " or ".join(suffix[:3])
    stem = "-" + key(word).lstrip("-")
    started = [c for c in candidates if stem in key(c)]  # the start of a name, without its task: --max-step
    if 0 < len(started) <= 3 and len(stem) > 4:
        return " or ".join(started)
    import difflib  # only when something is mistyped

    match = difflib.get_close_matches(key(word), list(by_key), n=1, cutoff=0.6)
    return by_key[match[0]] if match else None


def known_flags() -> list[str]:
    """Every flag Luigi's parser accepts now: `--<Task>-<param>` for every registered task, Luigi's own."""
    flags = []
    for task_name, is_without_section, param_name, _param in Register.get_all_params():
        name = param_name if is_without_section else f"{task_name}_{param_name}"
        flags.append("--" + name.replace("_", "-"))
    return flags


def pipeline_tasks() -> list[str]:
    """The task families of the pipeline (what `luigi --module pipeline` runs)."""
    from pipeline.tasks import STAGES

    return [*STAGES, "Repro"]


def unknown_task(name: str) -> ParameterError:
    """The error for a task family Luigi does not know, with the closest one."""
    families = pipeline_tasks()
    guess = closest(name, families) or closest(name, Register.task_names())
    hint = f" Did you mean {guess}?" if guess else ""
    return ParameterError(f"Unknown task {name}.{hint} The pipeline's tasks: {', '.join(families)}.")


def argument_error(message: str) -> ParameterError:
    """argparse's complaint as one line, with the flag meant when it names an unknown one."""
    match = re.match(r"unrecognized arguments: (.*)", message)
    if not match:
        return ParameterError(f"Bad command line: {message}.")
    words = match[1].split()
    flags = [word for word in words if re.match(r"--?[A-Za-z]", word)] or words[:1]  # not values such as -0.1
    known = known_flags()
    parts = []
    for flag in flags:
        guess = closest(flag.split("=", 1)[0], known)
        parts.append(f"{flag} (did you mean {guess}?)" if guess else flag)
    return ParameterError(
        f"Unknown parameter {', '.join(parts)}. Parameters are spelled --<Task>-<name-with-dashes>; "
        "add --help after the task to list them."
    )


# --- help --------------------------------------------------------------------------


def _config_value(cls: type[luigi.Task], name: str, param: luigi.Parameter) -> str:
    """The value a parameter takes without a command line: luigi.cfg's, else its default."""
    try:
        return str(param.serialize(param.task_value(cls.get_task_family(), name)))
    except luigi.parameter.MissingParameterException:
        return "(required)"
    except (ValueError, TypeError) as error:
        return f"(not accepted: {error})"


def _description(param: luigi.Parameter) -> str:
    """A parameter's description, its choices (if any) in a stable order (Luigi lists a set's)."""
    text = param.description or ""
    if isinstance(param, luigi.BoolParameter):
        return f"{text} true or false; the flag alone means true."
    choices = getattr(param, "_choices", None)
    if choices is None:
        return text
    text = re.sub(r"\s*Choices: \{.*\}$", "", text)
    return f"{text} Choices: {', '.join(sorted(map(str, choices)))}."


def dag_help(task_family: str, stage_families: list[str]) -> str:
    """Help for a stage: the parameters of each stage of its DAG, upstream first, with value and description."""
    lines = [
        f"usage: luigi --module pipeline {task_family} [--local-scheduler] [--<Task>-<param> VALUE ...]",
        f"       python -m pipeline status {task_family} [--<Task>-<param> VALUE ...]",
        "",
        f"Parameters of {task_family} and the stages above it (value: what luigi.cfg sets; "
        "any --<Task>-<param> VALUE overrides it):",
    ]
    for family in stage_families:
        cls = Register.get_task_cls(family)
        lines += ["", f"{family}: {(cls.__doc__ or '').strip().splitlines()[0]}"]
        for name, param in cls.get_params():
            flag = f"--{family}-{name.replace('_', '-')}"
            extra = "" if param.significant else " Not significant: changing it reruns nothing."
            value = _config_value(cls, name, param)
            if isinstance(param, luigi.BoolParameter):  # one syntax: a value, or the flag alone for true
                value = f"[true|false] {value.lower()}"
            lines.append(f"  {flag} {value}")
            lines.append(f"      {_description(param)}{extra}")
    lines += [
        "",
        "Luigi's own options: --local-scheduler, --workers N, --scheduler-host HOST, --scheduler-port PORT, "
        "--log-level LEVEL (luigi --module pipeline --help-all lists every option).",
    ]
    return "\n".join(lines)


def _stage_families(task_family: str, known_args: argparse.Namespace) -> list[str]:
    """The families of a stage's DAG as this command line configures it (all stages if it cannot be built)."""
    from pipeline.core.stage import dag
    from pipeline.tasks import STAGES

    cls = Register.get_task_cls(task_family)
    # Build the task the way Luigi will, with the command line's values (Luigi's parameters
    # read them from the parser's global instance, which is not set while it parses).
    parser = CmdlineParser.__new__(CmdlineParser)
    parser.known_args = known_args
    saved, CmdlineParser._instance = CmdlineParser._instance, parser
    try:
        task = cls() if task_family != "Repro" else STAGES[cls().target]()
        return [stage.task_family for stage in dag(task)]
    except (PipelineError, ValueError, TypeError, luigi.parameter.MissingParameterException):
        return list(STAGES)
    finally:
        CmdlineParser._instance = saved


# --- the hooks into Luigi's parser ---------------------------------------------------


def install() -> None:
    """Wrap Luigi's parser building and help so that mistakes and help read as above. Idempotent."""
    build_parser: Callable[..., argparse.ArgumentParser] = CmdlineParser._build_parser
    if getattr(build_parser, "names_mistakes", False):
        return
    exit_with_help: Callable[..., None] = CmdlineParser._possibly_exit_with_help

    built: dict[tuple[str | None, bool, int], argparse.ArgumentParser] = {}

    def _build_parser(root_task: str | None = None, help_all: bool = False) -> argparse.ArgumentParser:
        if root_task is not None:
            try:
                Register.get_task_cls(root_task)
            except TaskClassNotFoundException:
                fail(unknown_task(root_task))
        # Luigi builds this parser, one argument per parameter of every task, nine times per
        # command; it only changes when tasks are registered (--module loads them).
        key = (root_task, help_all, len(Register._reg))
        if key not in built:
            parser = build_parser(root_task=root_task, help_all=help_all)
            # No prefixes: argparse would take --TrainEstimator-max-step for --TrainEstimator-max-steps
            # without a word. A prefix is an unknown parameter, with the one meant (argument_error).
            parser.allow_abbrev = False

            def error(message: str) -> NoReturn:
                fail(argument_error(message))

            parser.error = error  # type: ignore[method-assign]
            built[key] = parser
        return built[key]

    def _possibly_exit_with_help(parser: argparse.ArgumentParser, known_args: argparse.Namespace) -> None:
        family = known_args.root_task
        if known_args.core_help and not known_args.core_help_all and family in pipeline_tasks():
            text = dag_help(family, _stage_families(family, known_args))
            raise SystemExit(run_command(lambda: print(text, flush=True) or 0))
        exit_with_help(parser, known_args)

    _build_parser.names_mistakes = True  # type: ignore[attr-defined]
    CmdlineParser._build_parser = staticmethod(_build_parser)  # type: ignore[method-assign]
    CmdlineParser._possibly_exit_with_help = staticmethod(_possibly_exit_with_help)  # type: ignore[method-assign]


def run_command(command: Callable[[], int]) -> int:
    """Run a `python -m pipeline` command: a user's mistake is one line and exit 40, a closed pipe ends quietly."""
    try:
        return command()
    except PipelineError as error:
        print(error_line(error), file=sys.stderr, flush=True)
        return BAD_PARAMETER_EXIT
    except BrokenPipeError:
        # `status | head`: the reader has gone. Point stdout at /dev/null so that the
        # interpreter's last flush at exit does not raise again, and stop.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:
        return 130


def usage_error(message: str, command: str | None, commands: Sequence[str]) -> int:
    """A bad `python -m pipeline` command: one line with the command meant, exit 40."""
    guess = closest(command, commands) if command else None
    hint = f" Did you mean {guess}?" if guess and guess != command else ""
    print(error_line(ParameterError(f"{message}{hint} Commands: {', '.join(commands)}.")), file=sys.stderr)
    return BAD_PARAMETER_EXIT


class Arguments(argparse.ArgumentParser):
    """argparse whose mistakes are one line (raised as ParameterError, exit code 40), not usage and exit 2.

    A `python -m pipeline` command's own options; `--help` is answered by `__main__` (format_help),
    and no option is abbreviated (`--sort` is not `--sort-by`).
    """

    def __init__(self, prog: str, description: str = "", epilog: str = "", usage: str | None = None) -> None:
        super().__init__(
            prog=prog,
            usage=usage,
            description=description,
            epilog=epilog,
            add_help=False,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.add_argument("-h", "--help", action="store_true", help="Show this help and exit.")

    def error(self, message: str) -> NoReturn:
        raise ParameterError(f"{self.prog}: {message}. Usage: {' '.join(self.format_usage().split()[1:])}")


class QuietPipelineErrors(logging.Filter):
    """Turn a logged PipelineError's traceback into its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, PipelineError):
            context = record.getMessage()
            context = "" if context == "Uncaught exception in luigi" else context + "\n\n  "
            record.msg = f"{context}{type(error).__name__}: {error}\n"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def install_filter() -> None:
    """Attach the filter to Luigi's logger (idempotent)."""
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, QuietPipelineErrors) for f in logger.filters):
        logger.addFilter(QuietPipelineErrors())
