"""Debian's Chromium, driven by Playwright for the web front end's tests (never a browser of Playwright's own)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

#: Headless, as root in a sandbox, with no calls out (the machine's network is closed).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Chromium from PATH (the Debian package the Makefile installs), closed afterwards."""
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (make system)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
