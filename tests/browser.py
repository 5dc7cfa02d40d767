"""Headless Debian Chromium driven over the DevTools protocol on a pipe (no network port, no
WebSocket library): open a page, wait for it to load, and say what its console and its
network saw, evaluate JavaScript in it, take a screenshot."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


@dataclass
class PageVisit:
    """What happened while a page was open: console messages, errors and every request."""

    console: list[dict[str, Any]] = field(default_factory=list)  # Runtime.consoleAPICalled
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # Runtime.exceptionThrown
    log: list[dict[str, Any]] = field(default_factory=list)  # Log.entryAdded (CSP, failed loads...)
    requests: list[str] = field(default_factory=list)  # every URL requested
    failed: list[dict[str, Any]] = field(default_factory=list)  # Network.loadingFailed

    def errors(self) -> list[str]:
        """Everything an open console would show as an error."""
        found = [json.dumps(e["exceptionDetails"])[:500] for e in self.exceptions]
        found += [json.dumps(c["args"])[:500] for c in self.console if c["type"] in ("error", "assert")]
        found += [e["entry"]["text"] for e in self.log if e["entry"]["level"] == "error"]
        return found


class Chromium:
    """One headless Chromium; `with Chromium() as browser: browser.open(path)`."""

    def __init__(self) -> None:
        assert Path(CHROMIUM).exists(), "Chromium is missing: `make browser` installs it"
        self._profile = tempfile.TemporaryDirectory()
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def on_fds_3_and_4() -> None:  # the protocol's pipe: Chromium reads fd 3, writes fd 4
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self._process = subprocess.Popen(
            [
                CHROMIUM,
                *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe"),
                *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
                f"--user-data-dir={self._profile.name}",
            ],
            pass_fds=(3, 4),
            preexec_fn=on_fds_3_and_4,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes form one group: closed together
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # The whole group: a renderer or utility process outliving the browser would still
        # write into the profile folder while it is removed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(30)
        os.close(self._commands)
        os.close(self._replies)
        for _ in range(50):
            try:
                self._profile.cleanup()
                return
            except OSError:  # a helper process of the group not yet gone
                time.sleep(0.1)
        self._profile.cleanup()

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its result (events meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])
            self._events.append(reply)

    def _receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed its pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def open(self, path: Path, settle_seconds: float = 1.0) -> tuple[str, PageVisit]:
        """Open a local file in a new tab, wait for its load event (and `settle_seconds` more);
        return the tab's session id and what was seen."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", session)
        self._events.clear()
        self.call("Page.navigate", session, url=path.resolve().as_uri())
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._receive(max(0.1, deadline - time.monotonic())))
        settled = time.monotonic() + settle_seconds
        while time.monotonic() < settled:
            try:
                self._events.append(self._receive(settled - time.monotonic()))
            except TimeoutError:
                break
        visit = PageVisit()
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                visit.console.append(params)
            elif method == "Runtime.exceptionThrown":
                visit.exceptions.append(params)
            elif method == "Log.entryAdded":
                visit.log.append(params)
            elif method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                visit.failed.append(params)
        return session, visit

    def evaluate(self, session: str, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the tab."""
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, session: str, path: Path, width: int = 1400, height: int = 2000) -> None:
        """A PNG of the tab's viewport at `width` x `height` CSS pixels."""
        self.call(
            "Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        data = self.call("Page.captureScreenshot", session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
