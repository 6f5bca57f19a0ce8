"""Debian's Chromium driven by Playwright, for the tests that open pages: a fresh profile each
time, a phone's viewport, and the page's errors collected. Without Playwright or Chromium,
``SKIP`` says why (``./manage test`` installs Chromium).

Playwright's sync API runs in a thread (``deferToThread``) while the daemon runs in the test's
reactor; every wait in the browser is bounded, and the browser is closed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:
    sync_playwright = None

CHROMIUM = os.environ.get("LIVESTREAM_CHROMIUM") or shutil.which("chromium")
SKIP = (
    "Playwright is not installed (pip install -e '.[test]')" if sync_playwright is None
    else "no Chromium: install Debian's chromium package (./manage test does, as root)"
    if CHROMIUM is None else None
)  # fmt: skip
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip
# A phone's viewport: the page must read well there.
PHONE = {"width": 412, "height": 915}
WAIT_MS = 20_000


@contextmanager
def browser(viewport: dict = PHONE) -> Iterator[Page]:
    """A fresh Chromium profile and page; page errors fail the test that reads ``page.errors``."""
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS, viewport=viewport
        )
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            context.close()
