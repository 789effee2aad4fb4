"""Security headers on every response; a Content-Security-Policy on every HTML page.

The console (/ui/) and Swagger UI (/docs) load only their own files, so the policy allows only
this origin: no inline script but the ones a page names by hash (Swagger UI's start-up script),
no framing by any other page (clickjacking), no plugins. `nosniff` stops a browser from running
an upload or a JSON answer as script or HTML, and no Referer leaves the console for elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What the console and the vendored Swagger UI need, and no more: their scripts, styles, fonts
# and images from this origin (Swagger UI draws some icons as data: URIs), fetches to the API.
CSP_BASE = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(script_hashes: Iterable[str] = ()) -> str:
    """The policy, allowing also the inline scripts whose CSP hashes (`'sha256-...'`) are given."""
    policy = dict(CSP_BASE)
    hashes = " ".join(script_hashes)
    if hashes:
        policy["script-src"] += " " + hashes
    return "; ".join(f"{name} {value}" for name, value in policy.items())


def inline_script_hashes(html: str) -> list[str]:
    """The CSP hash source of each inline `<script>` of a page, as the browser computes it."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


class SecurityHeadersMiddleware:
    """Add ALWAYS to every response, and CSP_BASE to HTML that sets no policy of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.policy = content_security_policy().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in ALWAYS if name not in names]
                content_type = dict(headers).get(b"content-type", b"")
                if (
                    content_type.startswith(b"text/html")
                    and b"content-security-policy" not in names
                ):
                    headers.append((b"content-security-policy", self.policy))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
