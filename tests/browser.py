"""Real Chromium for the console's browser tests: Debian's `chromium` package, driven by
Playwright for Python (which launches it by path; no browser download). Locally without it the
tests skip with the reason; under CI they fail, since a skipped browser test proves nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Chromium's own background traffic is refused on a closed network; these keep it quiet.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def expect(locator: Any) -> Any:
    """Playwright's assertions, which retry until their timeout. They read the page without
    evaluating script strings, which the console's Content-Security-Policy forbids."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (the README's test command installs it)")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed afterwards."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
