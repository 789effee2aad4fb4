"""Signatures a receiver can check (and tell from forgeries), and targets refused as SSRF."""

from __future__ import annotations

import time

import pytest

from app.config import Settings
from app.webhooks import secrets, signing, targets

BODY = b'{"id":"evt_1","type":"webhook.ping","data":{}}'


def test_a_signature_verifies_and_any_change_is_detected() -> None:
    secret = secrets.new_secret()
    value = signing.header(secret, BODY)
    assert value.startswith("t=") and ",v1=" in value
    assert abs(signing.verify(secret, value, BODY) - time.time()) < 5
    with pytest.raises(signing.BadSignature, match="no v1 signature matches"):
        signing.verify(secrets.new_secret(), value, BODY)  # another secret
    with pytest.raises(signing.BadSignature, match="no v1 signature matches"):
        signing.verify(secret, value, BODY.replace(b"ping", b"pong"))  # another body
    at = int(value.split(",")[0].removeprefix("t="))
    moved = value.replace(f"t={at}", f"t={at + 1}")
    with pytest.raises(signing.BadSignature, match="no v1 signature matches"):
        signing.verify(secret, moved, BODY)  # the timestamp is signed too
    with pytest.raises(signing.BadSignature, match="a replay"):
        signing.verify(secret, value, BODY, now=time.time() + signing.TOLERANCE_S + 1)
    with pytest.raises(signing.BadSignature, match="no Tunecost-Signature"):
        signing.verify(secret, None, BODY)


def test_secrets_are_sealed_with_the_configured_key_and_rotate() -> None:
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secret = secrets.new_secret()
    sealed = secrets.seal(secret, Settings(webhook_keys=[old]))
    assert secret not in sealed and secrets.hint(secret) not in sealed
    # The new key first, the old one still listed: old secrets open, new ones use the new key.
    both = Settings(webhook_keys=[new, old])
    assert secrets.unseal(sealed, both) == secret
    with pytest.raises(secrets.SecretsUnavailable, match="no key"):
        secrets.unseal(sealed, Settings(webhook_keys=[new]))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1/hook", "not a public address"),
        ("https://localhost:8443/hook", "resolves to 127.0.0.1"),  # a name, resolved
        ("https://2130706433/hook", "resolves to 127.0.0.1"),  # 127.0.0.1 written as a number
        ("https://10.1.2.3/hook", "not a public address"),
        ("https://192.168.0.10/hook", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://100.64.0.1/hook", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("https://[fd00::1]/hook", "not a public address"),
        ("https://[::ffff:10.0.0.1]/hook", "not a public address"),
        ("https://0.0.0.0/hook", "not a public address"),
        ("http://93.184.215.14/hook", "must start with https://"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
        ("ftp://93.184.215.14/hook", "must start with https://"),
        ("https:///hook", "no host"),
    ],
)
def test_private_loopback_and_odd_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(targets.TargetRefused, match=why):
        targets.check(url, Settings())


def test_a_public_address_is_accepted_and_connected_to_as_checked() -> None:
    target, addresses = targets.check("https://93.184.215.14:8443/hook?x=1", Settings())
    assert [str(a) for a in addresses] == ["93.184.215.14"]
    assert target.url_at(addresses[0]) == "https://93.184.215.14:8443/hook?x=1"
    assert target.netloc == "93.184.215.14:8443"


def test_the_settings_open_private_targets_and_http_for_development() -> None:
    dev = Settings(webhook_allow_private_targets=True, webhook_allow_http=True)
    target, addresses = targets.check("http://localhost:9000/hook", dev)
    assert target.scheme == "http" and any(a.is_loopback for a in addresses)
