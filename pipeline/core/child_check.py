"""Run a check of the user's code in a child process, once per version: the verdict is cached.

The scheduling path imports nothing of the user's and no Keras: what only
running their code can tell (a source's schema, a network's output shape, a
loss's per-example values) is found out by `python -m <module> <request>`,
whose last line of output is the verdict as JSON. Verdicts are remembered in
`<root>/.cache/<checks_file>` under a digest of the request and of whatever
else decides the answer (the user's code, the files it reads, the
framework's versions), so an up-to-date run starts no child. In no stage's
code identity: a verdict cannot change an output's bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from pipeline import paths
from pipeline.core import modules, values


def verdict(checks_file: str, module: str, request: Mapping[str, Any], key: Mapping[str, Any], failed: str) -> Any:
    """The verdict of `python -m module json(request)` for `key` (cached in `.cache/checks_file`).

    A child that prints no JSON (it crashed) is a ValueError: `failed`, then
    the end of its stderr. The cache is written atomically and best-effort:
    a read-only root only costs a child process per run.
    """
    digest = values.digest(dict(key))
    cache_path = paths.cache_dir() / checks_file
    try:
        verdicts = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if digest not in verdicts:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(modules.user_roots()))
        out = subprocess.run(
            [sys.executable, "-m", module, json.dumps(request)], capture_output=True, text=True, env=env
        )
        try:
            verdicts[digest] = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ValueError(f"{failed}:\n{out.stderr[-2000:]}") from None
        with contextlib.suppress(OSError):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f"{checks_file}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(verdicts, indent=1))
            os.replace(tmp, cache_path)
    return verdicts[digest]
