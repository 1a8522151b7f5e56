"""Debian's Chromium driven by Playwright for Python, launched by path (no browser download),
for the console's browser tests, the screenshot script and the bench."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Chromium's own background traffic is refused on a closed network; these keep it quiet.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


class BrowserUnavailable(RuntimeError):
    """Playwright or Chromium is not installed; the message says how to install it."""


def missing() -> str | None:
    """Why no browser can be started here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium, or bash devtools/setup.sh)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed afterwards; `BrowserUnavailable` when there is none."""
    reason = missing()
    if reason is not None:
        raise BrowserUnavailable(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
