"""Bad settings fail at start-up with the variable named."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from app.config import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TUNECOST_DATABASE_URL", "mysql://x"),
        ("TUNECOST_BROKER_URL", "kafka://x"),
        ("TUNECOST_MAX_UPLOAD_BYTES", "-5"),
        ("TUNECOST_MAX_UPLOAD_BYTES", "lots"),
        ("TUNECOST_STORAGE_ROOT", "  "),
        ("TUNECOST_WEBHOOK_KEYS", "not-a-key"),
        ("TUNECOST_WEBHOOK_KEYS", Fernet.generate_key().decode() + ",short"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_model_roots_are_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNECOST_MODEL_ROOTS", "/models/a, /models/b")
    assert [str(p) for p in load_settings().model_roots] == ["/models/a", "/models/b"]


def test_postgres_scheme_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNECOST_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().database_url == "postgresql+psycopg://u@h/db"


def test_webhook_keys_are_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [Fernet.generate_key().decode() for _ in range(2)]
    monkeypatch.setenv("TUNECOST_WEBHOOK_KEYS", f" {keys[0]} ,{keys[1]},")
    assert load_settings().webhook_keys == keys
