"""Debian's Chromium, driven by Playwright for the web front end's tests (never a browser of Playwright's own)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Playwright, sync_playwright

#: Headless, as root in a sandbox, with no calls out (the machine's network is closed).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

_playwright: Playwright | None = None
_browser: Browser | None = None


def _shared_browser() -> Browser:
    global _playwright, _browser
    if _browser is not None and _browser.is_connected():
        return _browser
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (make system)"
    if _playwright is None:
        _playwright = sync_playwright().start()
    _browser = _playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    return _browser


@contextmanager
def chromium() -> Iterator[Browser]:
    """Chromium from PATH (the Debian package the Makefile installs).

    One browser serves every caller of this test process: launching it costs a second or two, and each test
    opens browser contexts of its own anyway (separate cookies, storage and pages). The contexts a caller
    opened are closed when its ``with`` block ends; :func:`close_shared` ends the browser."""
    browser = _shared_browser()
    before = set(browser.contexts)
    try:
        yield browser
    finally:
        if browser.is_connected():
            for ctx in browser.contexts:
                if ctx not in before:
                    ctx.close()


def close_shared() -> None:
    """Close the shared browser and Playwright, if they were started (at the end of the test session)."""
    global _playwright, _browser
    if _browser is not None:
        if _browser.is_connected():
            _browser.close()
        _browser = None
    if _playwright is not None:
        _playwright.stop()
        _playwright = None
