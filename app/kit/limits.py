"""ASGI middleware that bounds request headers and bodies before any handler reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_BASE, PROBLEM_JSON

# Total request header bytes we accept: browsers and proxies cap near 8-16 KiB per header and
# 64 KiB in all (nginx large_client_header_buffers 4x8k; Apache LimitRequestFieldSize 8190).
# uvicorn's httptools parser takes 200 KB headers as they are, so we bound them here.
MAX_HEADER_BYTES = 32 * 1024


class BodyTooLarge(Exception):
    """Raised inside receive() when a streamed body passes its limit."""


class BodyLimitMiddleware:
    """413 problem+json for bodies over the limit: multipart uploads get the upload limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        if sum(len(k) + len(v) for k, v in raw_headers) > MAX_HEADER_BYTES:
            await _send_problem(
                send,
                431,
                "Request header fields too large",
                f"the request headers exceed {MAX_HEADER_BYTES} bytes in all; send smaller ones",
            )
            return
        headers = dict(raw_headers)
        is_upload = headers.get(b"content-type", b"").startswith(b"multipart/")
        # Multipart framing adds a little around the file itself.
        limit = self.max_upload + 64 * 1024 if is_upload else self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, limit, is_upload)
            return

        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reject(send, limit, is_upload)


async def _reject(send: Send, limit: int, is_upload: bool) -> None:
    what = "upload" if is_upload else "request body"
    setting = "TUNECOST_MAX_UPLOAD_BYTES" if is_upload else "TUNECOST_MAX_BODY_BYTES"
    detail = f"the {what} exceeds {limit} bytes (set by {setting}); send less"
    await _send_problem(send, 413, "Payload too large", detail)


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    slug = title.lower().replace(" ", "-")
    body = json.dumps(
        {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
