"""Webhook signing secrets: made here, shown to the client once, kept encrypted at rest.

A secret cannot be stored as a digest, as API keys are: every delivery is signed with it
(HMAC-SHA256), so the worker needs it in clear at signing time. It is stored encrypted with
Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key the database never holds:
TUNECOST_WEBHOOK_KEYS (one key or several, comma-separated: the first encrypts, any decrypts, so
keys rotate by putting a new one first and re-sealing), which the API and every worker must
share. Unset, the embedded default keeps one key in `var/webhook.key` (created owner-only on
first use), which serves one machine only. A database copy alone then reveals no secret.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import VAR_DIR, Settings, get_settings

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # 256 bits, the HMAC-SHA256 key length
HINT_CHARS = 10  # "whsec_" and four characters: enough to tell two secrets apart, not to guess
KEY_FILE = VAR_DIR / "webhook.key"


class SecretsUnavailable(RuntimeError):
    """The encryption key cannot be read or made."""


def new_secret() -> str:
    """A fresh signing secret, `whsec_...`."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hint(secret: str) -> str:
    """The first characters of a secret, shown in place of it."""
    return secret[:HINT_CHARS]


def _file_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
    return path.read_bytes().strip()


def _cipher(settings: Settings) -> MultiFernet:
    keys = [k.encode() for k in settings.webhook_keys]
    try:
        if not keys:
            keys = [_file_key(KEY_FILE)]
        return MultiFernet([Fernet(k) for k in keys])
    except (OSError, ValueError) as exc:
        raise SecretsUnavailable(
            f"webhook secrets cannot be encrypted: {exc}; set TUNECOST_WEBHOOK_KEYS"
        ) from None


def seal(secret: str, settings: Settings | None = None) -> str:
    """`secret` encrypted for storage."""
    return _cipher(settings or get_settings()).encrypt(secret.encode()).decode()


def unseal(sealed: str, settings: Settings | None = None) -> str:
    """A stored secret in clear; SecretsUnavailable if no configured key opens it."""
    try:
        return _cipher(settings or get_settings()).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise SecretsUnavailable(
            "no key in TUNECOST_WEBHOOK_KEYS decrypts this secret (a key was removed, or the "
            "API and the worker use different keys)"
        ) from None
