"""Real Chromium for the console's browser tests (`devtools.browser`). Locally without it the
tests skip with the reason; under CI they fail, since a skipped browser test proves nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devtools import browser


def expect(locator: Any) -> Any:
    """Playwright's assertions, which retry until their timeout. They read the page without
    evaluating script strings, which the console's Content-Security-Policy forbids."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@contextmanager
def chromium() -> Iterator[Any]:
    reason = browser.missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; the README's test command installs it")
        pytest.skip(reason)
    with browser.chromium() as started:
        yield started
