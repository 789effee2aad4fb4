"""The console and Swagger UI work under their Content-Security-Policy, and no other page can
frame them (finding 10 of issue 23): checked in headless Chromium, where the policy is enforced.
The `page` fixture fails a test on any CSP violation the browser reports."""

from __future__ import annotations

from typing import Any

from tests.live_api import LiveApi
from tests.ui.conftest import log_in


def test_the_console_runs_under_its_policy(page: Any, keys: dict[str, str]) -> None:
    response = page.goto("/ui/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    log_in(page, keys["read"])
    for view in ("plan", "jobs", "reports"):
        page.click(f"#tabs [data-view={view}]")
        page.wait_for_selector(f"#view-{view}:not([hidden])")
    page.wait_for_selector("#view-reports[data-ready=true]")
    assert page.inner_text("#reports-error") == ""


def test_swagger_ui_runs_and_calls_the_api_under_its_policy(page: Any) -> None:
    response = page.goto("/docs")
    assert response is not None
    assert "'sha256-" in response.headers["content-security-policy"]  # its start-up script only
    health = page.locator("#operations-health-health_v1_health_get")
    health.locator(".opblock-summary").click()
    health.locator("button.try-out__btn").click()
    health.locator("button.execute").click()
    status = health.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"


def test_no_other_page_can_frame_the_console(
    page: Any, live_api: LiveApi, csp_refused: list[str]
) -> None:
    page.set_content(f'<iframe src="{live_api.url}/ui/" width="400" height="300"></iframe>')
    page.wait_for_function("document.querySelector('iframe') && window.frames.length === 1")
    page.wait_for_timeout(500)  # the frame's answer arrives and is refused
    framed = page.frames[1]
    # Chromium replaces a frame refused by frame-ancestors with its own error page.
    assert framed.url.startswith("chrome-error://"), framed.url
    assert any("frame-ancestors" in text for text in csp_refused), csp_refused
    csp_refused.clear()  # expected here; the page fixture checks the list is empty
