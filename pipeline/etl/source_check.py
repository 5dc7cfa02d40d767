"""Does a source function of the user's yield examples that fit their schema? Checked once per version.

On the scheduling path nothing of the user's is imported: the function runs in a
child process (`python -m pipeline.etl.source_check`), which infers the schema
from its examples and checks every one (etl/user_source.py). The answer, the
schema, problem, classes and counts or the error, is remembered in
`<root>/.cache/source_checks.json` under a digest of the request, the code of
the user's modules and the files the parameters name, so an up-to-date run
runs nothing. Like the builder check, it cannot change the shards' bytes: it
is in no stage's code identity.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from pipeline.core import child_check, identity, modules
from pipeline.etl import user_source

CHECKS_FILE = "source_checks.json"


def code(source: user_source.FunctionSource) -> dict[str, str]:
    """Code digests of the function's module and the modules of the user's it imports."""
    module, _, _ = source.located()
    closure = identity.code_closure([module], modules.user_roots())
    return {label: identity.file_code_digest(path) for label, path in closure.items()}


def check(source: user_source.FunctionSource) -> dict[str, Any]:
    """The child process's answer for `source`: {"schema", "problem", "class_names", "counts"} or {"error", "kind"}
    ("schema": an example that does not fit, exit 40; "raised": the function raised, the build says so)."""
    request = source.request()
    files = {name: identity.file_stat(path) for name, path in source.data_files().items() if path.is_file()}
    found: dict[str, Any] = child_check.verdict(
        CHECKS_FILE,
        "pipeline.etl.source_check",
        request,
        {"request": request, "code": code(source), "files": files},
        f"--CreateShards-source {source.source}: checking it failed",
    )
    return found


def raise_for_schema(verdict: Mapping[str, Any]) -> None:
    """Raise ValueError for examples that do not fit (a function that raised is the build's to report)."""
    if verdict.get("kind") == "schema":
        raise ValueError(verdict["error"])


if __name__ == "__main__":
    print(json.dumps(user_source.check_in_child(json.loads(sys.argv[1]))))
