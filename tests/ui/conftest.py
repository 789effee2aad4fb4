"""A live API (uvicorn on a free port) with a real worker, and headless Chromium cut off the net.

Chromium is Debian's (`scripts/test-deps.sh` installs it); playwright drives it. Every request the
page makes to anything but the live API is aborted and recorded, so a test can assert that the
console and /docs load nothing from a CDN.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.tinymodel import make_tiny_model
from tests.live_api import LiveApi
from tests.support import ServiceEnv

CHROMIUM = os.environ.get("TUNECOST_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY_NAME = "tiny-llama-ui"


@dataclass
class Offline:
    """Requests the browser tried outside the live API (all aborted)."""

    base: str
    blocked: list[str] = field(default_factory=list)

    @property
    def elsewhere(self) -> re.Pattern[str]:
        """Any URL outside the live API. A pattern (not a callable) is matched in playwright's
        driver, so the API's own requests never wait for this Python process to serve them."""
        return re.compile(rf"^(?!{re.escape(self.base)}/)")

    def abort(self, route: Any) -> None:
        """Record the request and fail it, as an air-gapped network would."""
        self.blocked.append(route.request.url)
        route.abort()


@pytest.fixture(scope="session")
def tiny_ui_model(service_env: ServiceEnv) -> str:
    """A tiny Llama under the model root; its folder name is what the page types in."""
    dest = service_env.model_root / TINY_NAME
    if not (dest / "config.json").exists():
        make_tiny_model(dest, vocab_size=384, hidden_size=64, layers=2, heads=4, kv_heads=2)
    return TINY_NAME


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by playwright."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required at {CHROMIUM}: run scripts/test-deps.sh (apt chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def offline(live_api: LiveApi) -> Offline:
    """Where the page's requests outside the live API are recorded."""
    return Offline(base=live_api.url)


@pytest.fixture
def csp_refused() -> list[str]:
    """What the page's Content-Security-Policy blocked, as Chromium reported it (the `page`
    fixture fails a test that leaves anything here)."""
    return []


@pytest.fixture
def page(
    browser: Any, live_api: LiveApi, offline: Offline, csp_refused: list[str]
) -> Iterator[Any]:
    """A fresh browser context (empty session storage) whose only reachable host is the API."""
    context = browser.new_context(base_url=live_api.url, accept_downloads=True)
    context.route(offline.elsewhere, offline.abort)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium reports what the Content-Security-Policy blocked as a console error.
    tab.on(
        "console",
        lambda msg: csp_refused.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    tab.set_default_timeout(30_000)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not csp_refused, f"the Content-Security-Policy blocked: {csp_refused}"
    assert not offline.blocked, f"the page reached outside the API: {offline.blocked}"


def log_in(page: Any, secret: str) -> None:
    """Open the console and enter the key once."""
    page.goto("/ui/")
    page.fill("#key-input", secret)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#tabs:not([hidden])")
