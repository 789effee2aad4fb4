"""`make demo` keeps one key: made on the first run, reused while it is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.auth import service
from app.db import session_scope
from devtools import demo
from tests.support import ServiceEnv


def test_the_demo_reuses_its_key_until_it_is_revoked(
    service_env: ServiceEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNECOST_API_KEY", raising=False)
    first = demo._key()
    assert demo._key() == first
    stored = tmp_path / demo.DEMO_KEY_FILE
    assert stored.read_text().strip() == first and stored.stat().st_mode & 0o777 == 0o600
    with session_scope() as session:
        key = service.authenticate(session, secret=first)
        assert key is not None and key.team == "demo"
        service.revoke(session, key_id=key.id)
    again = demo._key()
    assert again != first and stored.read_text().strip() == again
