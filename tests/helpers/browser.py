"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
JSON messages separated by NUL on file descriptors 3 and 4), so no port and no websocket library
are needed. Outside hosts do not resolve and no proxy leads anywhere: only 127.0.0.1 is
reachable. Pages are used as a person would: typed text and mouse clicks, no script of ours
runs in them (their own Content Security Policy stays in force).
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

# Chromium's own background services (updates, time) are not a page's requests.
BROWSER_OWN = ("google.com/", "googleapis.com/", "gvt1.com/")


def chromium_argv(binary: str, profile: Path, *extra: str) -> list[str]:
    """The flags of a headless Chromium cut off from every host but 127.0.0.1."""
    return [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", f"--user-data-dir={profile}", "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9", *extra,
    ]  # fmt: skip


class DevToolsError(Exception):
    """Chromium answered a command with an error."""


class Browser:
    """One Chromium process and one tab; `problems` collects every failed load or error."""

    def __init__(self, binary: str, profile: Path, *, timeout: float = 60) -> None:
        self.timeout = timeout
        commands_read, self._write = os.pipe()
        self._read, results_write = os.pipe()

        def as_fds_3_and_4() -> None:  # in the child, before exec
            os.dup2(commands_read, 3)
            os.dup2(results_write, 4)

        self.process = subprocess.Popen(
            chromium_argv(binary, profile, "--remote-debugging-pipe"),
            pass_fds=(3, 4),
            preexec_fn=as_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(results_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Log", "Runtime", "DOM"):
            self.call(f"{domain}.enable")

    # --- protocol -----------------------------------------------------------------------------

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Run one command (browser-wide, or in `session`) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A command in the tab."""
        return self.send(method, self.session, **params)

    def wait_event(self, method: str, since: int) -> dict[str, Any]:
        """The first `method` event of the tab after event number `since`."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[since:]:
                if event.get("method") == method and event.get("sessionId") == self.session:
                    return event
            since = len(self.events)
            self.events.append(self._message(deadline))

    # --- what a person does -------------------------------------------------------------------

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=mobile,
        )  # fmt: skip

    def _until_loaded(self, mark: int) -> None:
        self.wait_event("Page.loadEventFired", mark)

    def open(self, url: str) -> None:
        """Go to `url` and wait until it and everything it loads are in."""
        mark = len(self.events)
        self.call("Page.navigate", url=url)
        self._until_loaded(mark)

    def _node(self, selector: str) -> int:
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise LookupError(f"nothing matches {selector!r} on {self.url()}")
        return node

    def type_into(self, selector: str, text: str) -> None:
        self.call("DOM.focus", nodeId=self._node(selector))
        self.call("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """Click the middle of an element, then wait for the page it leads to."""
        node = self._node(selector)
        self.call("DOM.scrollIntoViewIfNeeded", nodeId=node)  # box coordinates are the viewport's
        quad = self.call("DOM.getBoxModel", nodeId=node)["model"]["border"]
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        mark = len(self.events)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        self._until_loaded(mark)

    def html(self) -> str:
        """The rendered document."""
        root = self.call("DOM.getDocument", depth=-1)["root"]["nodeId"]
        return self.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]

    def url(self) -> str:
        history = self.call("Page.getNavigationHistory")
        return history["entries"][history["currentIndex"]]["url"]

    def count(self, selector: str) -> int:
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        return len(self.call("DOM.querySelectorAll", nodeId=root, selector=selector)["nodeIds"])

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    # --- what went wrong ----------------------------------------------------------------------

    def requested(self) -> list[str]:
        """Every URL the tab asked for."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == self.session
        ]

    def problems(self) -> list[str]:
        """Failed loads, error answers to sub-resources, console errors (CSP refusals among
        them) and exceptions, since the tab opened."""
        found = []
        for event in self.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')} ({params.get('type')})")
            elif method == "Network.responseReceived" and params.get("type") != "Document":
                status = params["response"]["status"]
                if status >= 400:
                    found.append(f"{status} for {params['response']['url']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"console: {params['entry'].get('text')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
        return found

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (DevToolsError, ConnectionError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._write)
        os.close(self._read)
