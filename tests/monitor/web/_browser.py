"""Real headless Chromium (Debian's), driven by Playwright, and a real ``stormproof serve``.

Playwright's own browser download is unreachable here; it drives ``/usr/bin/chromium``
instead (``--no-sandbox``: the tests run as root). Without Chromium or Playwright the tests
skip with the reason on a developer's machine and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ...cli.conftest import Cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def need(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright is not installed: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        need("Debian's chromium is not installed: apt-get install chromium (.ci/apt-packages)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serving(cli: Cli, *args: str) -> Iterator[str]:
    """``stormproof serve --port 0`` in ``cli``'s directory; yields its URL."""
    proc = cli.start("serve", "--port", "0", *args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"http://\S+/", line)
    if found is None:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"serve did not start: {line!r} {err}")
    try:
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


class Page:
    """A page that records dialogs, page errors and requests (to prove what did not happen)."""

    def __init__(self, browser: Any, shots: Path, width: int = 1280, height: int = 1000) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.shots = shots
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str) -> Any:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        return self.page

    def shot(self, name: str, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def wait(self, js: str, timeout_s: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.page.evaluate(js):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or js}")

    def bars(self) -> dict[str, int]:
        """Bars and marks Chart.js has drawn on the timeline, by dataset label."""
        counts: dict[str, int] = self.page.evaluate(
            """() => {
                 const c = Chart.getChart('timeline'), out = {};
                 c.data.datasets.forEach((d, i) => {
                   out[d.label] = c.getDatasetMeta(i).data.length;
                 });
                 return out;
               }"""
        )
        return counts
