"""The central scheduler, client side: its address, and a fast check that it answers.

Luigi talks to `luigid` over HTTP and, when nobody answers, retries for about a
minute and a half (`[core] rpc_retry_attempts` x `rpc_retry_wait`) before it
gives up with a stack trace. `install_check()` (called when `pipeline` is
imported) makes Luigi ask once, with a short timeout, right where it builds its
remote scheduler, and exit at once with a hint when nobody answers. Importing
makes no network call, and `--local-scheduler` runs never reach the check.
Starting and stopping a `luigid` is `pipeline/luigid.py`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import luigi.interface
import luigi.rpc

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8082
# One question, one short wait: a refused connection answers at once, a
# silent host after this many seconds (well inside the 5 s a user waits).
PROBE_TIMEOUT = 3.0


class SchedulerUnavailableError(SystemExit):
    """No central scheduler answers: exit with a hint (as Luigi's own PidLockAlreadyTakenExit does)."""


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
            f"Start one with `{make}` (its web UI is then at that address), "
            "or run without one: add --local-scheduler to the luigi command."
        )


def install_check() -> None:
    """Make Luigi check the central scheduler once, quickly, before it schedules anything.

    Wraps the one place Luigi builds its remote scheduler (`luigi.build` and
    the `luigi` command both go through it). Idempotent.
    """
    factory = luigi.interface._WorkerSchedulerFactory
    original = factory.create_remote_scheduler
    if getattr(original, "checks_scheduler", False):
        return

    def create_remote_scheduler(self: Any, url: str) -> Any:
        require(url)
        return original(self, url)

    create_remote_scheduler.checks_scheduler = True  # type: ignore[attr-defined]
    factory.create_remote_scheduler = create_remote_scheduler  # type: ignore[method-assign]
