"""Serve the console's static files and Swagger UI from this package: no CDN, works offline.

Vendored assets (app/ui/static/vendor, licences beside them): Chart.js 4.6.1 (MIT) from npm
`chart.js`; Swagger UI 5.35.0 (Apache-2.0) from npm `swagger-ui-dist`. Swagger UI 5 because
FastAPI publishes OpenAPI 3.1, which Swagger UI 4 does not render.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.kit.headers import content_security_policy, inline_script_hashes

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_DIR = "/ui/vendor/swagger-ui"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def install_ui(app: FastAPI) -> None:
    """Mount /ui/ (the console) and /docs (Swagger UI from local assets) on `app`."""
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

    @app.get("/ui", include_in_schema=False)
    def ui_slash() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _allowing_its_scripts(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} API",
                swagger_js_url=f"{SWAGGER_DIR}/swagger-ui-bundle.js",
                swagger_css_url=f"{SWAGGER_DIR}/swagger-ui.css",
                swagger_favicon_url=f"{SWAGGER_DIR}/favicon-32x32.png",
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return _allowing_its_scripts(get_swagger_ui_oauth2_redirect_html())


def _allowing_its_scripts(page: HTMLResponse) -> HTMLResponse:
    """The page with a Content-Security-Policy that allows exactly its own inline scripts (by
    hash): FastAPI's Swagger UI pages start Swagger UI from one."""
    hashes = inline_script_hashes(bytes(page.body).decode())
    page.headers["content-security-policy"] = content_security_policy(hashes)
    return page
