"""The headless Chromium of the browser tests: Debian's chromium (/usr/bin/chromium, or $CNNLAB_CHROMIUM) driven by
the playwright package. Where either is missing a test skips and says which, except in CI (CI set), where .ci/run
installs both and the browser tests must run."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def need_chromium() -> None:
    """Skip the test (fail it in CI), naming what is missing, unless Chromium and playwright are both here."""
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install playwright)"
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}: the browser tests must run in CI (.ci/run installs it)")
    pytest.skip(missing)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (playwright's Browser) for the block, closed after it."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
