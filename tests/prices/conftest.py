"""Fixtures of the price tests: an isolated database (its own catalog versions) with its keys."""

from __future__ import annotations

import pytest

from tests.conftest import key_per_scope


@pytest.fixture(scope="module")
def iso_keys(isolated_db: str) -> dict[str, str]:
    """One key per scope in the module's own database (team 'ml' for read and submit)."""
    return key_per_scope("prices")
