"""Signatures of webhook deliveries, in the manner of Stripe's and GitHub's.

Each request carries `Tunecost-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256 under the subscription's secret of `<t>.<raw body>`. Signing the timestamp with the
body lets a receiver refuse a replayed request (an old `t`), and a receiver must compare in
constant time. `verify` is what a receiver does (README "Webhooks" has the same in a few lines).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Tunecost-Signature"
SCHEME = "v1"
TOLERANCE_S = 300  # five minutes, as Stripe's libraries default to: clock skew plus transit


class BadSignature(ValueError):
    """The signature is missing, malformed, stale or does not match."""


def digest(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The Tunecost-Signature header value for `body` signed now (or at `timestamp`)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},{SCHEME}={digest(secret, at, body)}"


def verify(
    secret: str,
    value: str | None,
    body: bytes,
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a Tunecost-Signature header against `body`; its timestamp, or BadSignature."""
    if not value:
        raise BadSignature(f"no {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in value.split(","):
        name, _, text = item.strip().partition("=")
        parts.setdefault(name, []).append(text)
    try:
        at = int(parts["t"][0])
    except (KeyError, ValueError):
        raise BadSignature("the header has no t=<unix seconds>") from None
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        raise BadSignature(f"the timestamp is more than {tolerance_s} s from now (a replay?)")
    expected = digest(secret, at, body)
    # Any v1 entry may match: during a secret rotation a sender could sign with both.
    if not any(hmac.compare_digest(expected, given) for given in parts.get(SCHEME, [])):
        raise BadSignature("no v1 signature matches the body")
    return at
