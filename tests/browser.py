"""Headless Chromium for the browser tests: Debian's (``make browser`` installs it when
missing), driven by Playwright, which downloads nothing. A test is skipped only when that
Chromium is absent or cannot start."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module's tests."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `make browser` installs it (apt-get, as root)")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except PlaywrightError as e:
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {e.message.splitlines()[0]}")
        yield chromium
        chromium.close()
