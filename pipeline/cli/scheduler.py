"""The central scheduler, client side: its address, and a fast check that it answers.

Luigi talks to `luigid` over HTTP and, when nobody answers, retries for about a
minute and a half (`[core] rpc_retry_attempts` x `rpc_retry_wait`) before it
gives up with a stack trace. `install_check()` (called when `pipeline` is
imported) makes Luigi ask once, with a short timeout, right where it builds its
remote scheduler, and exit at once with a hint when nobody answers. Importing
makes no network call, and `--local-scheduler` runs never reach the check.
Starting and stopping a `luigid` is `pipeline/cli/luigid.py`.

`ReconnectingScheduler` is the client every run uses (also made there). When
`luigid` stops answering in the middle of a run (killed, restarted), the
running stage goes on: its progress reports are sent once, without waiting,
and dropped while nobody answers. Other calls are retried as Luigi does
(`[core] rpc_retry_attempts` x `rpc_retry_wait`), with one warning line
instead of a traceback per retry. Once the scheduler answers again, the run
registers its tasks again (a restarted luigid knows none of them) and carries
on. A scheduler that stays away longer ends the run with one message: what
was finished is published, and the same command run again goes on from there.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import luigi.interface
import luigi.rpc

from pipeline.errors import PipelineError

logger = logging.getLogger("luigi-interface")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8082
# One question, one short wait: a refused connection answers at once, a
# silent host after this many seconds (well inside the 5 s a user waits).
PROBE_TIMEOUT = 3.0


class SchedulerUnavailableError(SystemExit):
    """No central scheduler answers: exit with a hint (as Luigi's own PidLockAlreadyTakenExit does)."""


class SchedulerLostError(PipelineError, luigi.rpc.RPCError):
    """The central scheduler stopped answering in the middle of a run and did not come back in time."""


# [core] options Luigi's RPC client reads (luigi/rpc.py).
RPC_OPTIONS = ("rpc_retry_attempts", "rpc_retry_wait", "rpc_log_retries", "rpc_connect_timeout")

# Reports that only inform the web UI: sent once, never waited for.
BEST_EFFORT = frozenset({"/api/set_task_status_message", "/api/set_task_progress_percentage", "/api/ping"})


class ReconnectingScheduler(luigi.rpc.RemoteScheduler):
    """Luigi's scheduler client, made to outlive a restart of `luigid` (see the module's docstring)."""

    def __init__(self, url: str, connect_timeout: float | None = None) -> None:
        super().__init__(url, connect_timeout)
        self._registered: dict[str, dict[str, Any]] = {}  # task id -> what this run told the scheduler last
        self._unanswered = False  # a call failed since the tasks were last registered

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        """Luigi's add_task, remembered (merged by task id) to be replayed after a restart."""
        if not args and "task_id" in kwargs:
            known = self._registered.get(kwargs["task_id"], {})
            self._registered[kwargs["task_id"]] = {**known, **{k: v for k, v in kwargs.items() if v is not None}}
        return super().add_task(*args, **kwargs)  # type: ignore[misc]

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        """Luigi's get_work; after the scheduler did not answer, this run's tasks are registered again first.

        Also when it stopped answering during this very call: a restarted luigid
        would answer that there is nothing left to do, and the run would end.
        """
        while True:
            if self._unanswered:
                self._unanswered = False
                logger.warning(
                    "The scheduler at %s answers again; registering this run's %d tasks with it again "
                    "(a restarted luigid knows none of them).",
                    self._url,
                    len(self._registered),
                )
                for task in list(self._registered.values()):
                    super().add_task(**task)  # type: ignore[misc]
            response = super().get_work(*args, **kwargs)  # type: ignore[misc]
            if not self._unanswered:
                return response

    def call_once(self, method: str, arguments: dict[str, Any]) -> Any:
        """One RPC call, one attempt with a short timeout: for a run that is ending (no retries to wait for)."""
        url = luigi.rpc._urljoin(self._url, f"/api/{method}")
        page = self._fetcher.fetch(url, {"data": json.dumps(arguments)}, min(self._connect_timeout, PROBE_TIMEOUT))
        return json.loads(page)["response"]

    def _fetch(self, url_suffix: str, body: Any) -> Any:
        full_url = luigi.rpc._urljoin(self._url, url_suffix)
        if url_suffix in BEST_EFFORT:
            try:
                return self._fetcher.fetch(full_url, body, self._connect_timeout)
            except self._fetcher.raises:
                self._note_unanswered(url_suffix)
                return json.dumps({"response": None})
        for attempt in range(1, self._rpc_retry_attempts + 1):
            try:
                return self._fetcher.fetch(full_url, body, self._connect_timeout)
            except self._fetcher.raises as error:
                self._note_unanswered(url_suffix, error)
                if attempt == self._rpc_retry_attempts:
                    waited = (self._rpc_retry_attempts - 1) * self._rpc_retry_wait
                    raise SchedulerLostError(
                        f"The Luigi scheduler at {self._url} stopped answering ({error}) and did not come back "
                        f"within {waited} s ([core] rpc_retry_attempts x rpc_retry_wait). Stages that finished are "
                        "published, nothing is published partially: start it again (make scheduler) and run the "
                        "same command."
                    ) from None
                time.sleep(self._rpc_retry_wait)
        raise AssertionError("unreachable")

    def _note_unanswered(self, url_suffix: str, error: BaseException | None = None) -> None:
        if not self._unanswered:
            logger.warning(
                "The scheduler at %s does not answer (%s); the run goes on and waits for it "
                "(up to [core] rpc_retry_attempts x rpc_retry_wait = %d x %d s).",
                self._url,
                error or f"on {url_suffix}",
                self._rpc_retry_attempts,
                self._rpc_retry_wait,
            )
        self._unanswered = True


def scheduler_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """The scheduler's address, which is also its web UI's."""
    return f"http://{host}:{port}/"


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if a Luigi scheduler answers at `url`, else why not (one request, no retries)."""
    if urlparse(url).scheme not in ("http", "https"):
        return None  # e.g. http+unix://: left to Luigi's own client
    try:
        # A read-only RPC every scheduler answers cheaply. Luigi's fetcher also
        # handles user:password@ in the URL.
        page = luigi.rpc.URLLibFetcher().fetch(url.rstrip("/") + "/api/is_paused", None, timeout)
        json.loads(page)["response"]
    except HTTPError as error:
        return f"HTTP {error.code} from {url}: not a Luigi scheduler"
    except URLError as error:
        reason = error.reason
        return getattr(reason, "strerror", None) or str(reason)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        return error.strerror or str(error)
    except (ValueError, KeyError, TypeError):
        return f"{url} answered, but not as a Luigi scheduler"
    return None


def require(url: str) -> None:
    """Raise SchedulerUnavailableError, naming both ways out, unless a scheduler answers at `url`."""
    reason = probe(url)
    if reason is not None:
        port = urlparse(url).port
        make = "make scheduler" if port in (None, DEFAULT_PORT) else f"make scheduler SCHEDULER_PORT={port}"
        raise SchedulerUnavailableError(
            f"No Luigi scheduler answers at {url} ({reason}).\n"
            f"Start one with `{make}` (its web UI is then at that address), point at the one that runs with "
            "--scheduler-host HOST --scheduler-port PORT ([core] in luigi.cfg), "
            "or run without one: add --local-scheduler to the luigi command."
        )


def install_check() -> None:
    """Make Luigi check the central scheduler once, quickly, before it schedules anything.

    Wraps the one place Luigi builds its remote scheduler (`luigi.build` and
    the `luigi` command both go through it). Idempotent.
    """
    # Luigi's RPC client reads these from [core] itself; its `core` config class does not
    # declare them, so it would warn "not consumed" about each on every run.
    core = luigi.interface.core
    core.ignore_unconsumed = {*getattr(core, "ignore_unconsumed", ()), *RPC_OPTIONS}
    factory = luigi.interface._WorkerSchedulerFactory
    if getattr(factory.create_remote_scheduler, "checks_scheduler", False):
        return

    def create_remote_scheduler(self: Any, url: str) -> Any:
        require(url)
        return ReconnectingScheduler(url)

    create_remote_scheduler.checks_scheduler = True  # type: ignore[attr-defined]
    factory.create_remote_scheduler = create_remote_scheduler  # type: ignore[method-assign]
