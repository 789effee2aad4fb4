"""README documents every setting, and its security section every limit a setting changes."""

from __future__ import annotations

import re

from app.config import Settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
# Settings that bound what one request, job or delivery may make the service hold or do.
LIMIT_SUFFIXES = ("_slots", "_queue", "_wait_s", "_timeout_s", "_attempts", "_retry_max_s")
NOT_REQUEST_LIMITS = {"worker_ping_timeout_s", "visibility_timeout_s"}


def _section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _variables(text: str) -> set[str]:
    """TUNECOST_* names in `text`, with table shorthand expanded: `TUNECOST_A_B` / `_C` names
    TUNECOST_A_C (the shorthand replaces a tail of the full name before it)."""
    found: set[str] = set()
    for line in text.splitlines():
        names = re.findall(r"`(TUNECOST_[A-Z0-9_]+|_[A-Z0-9_]+)`", line)
        full = ""
        for name in names:
            if name.startswith("TUNECOST_"):
                full = name
                found.add(name)
            elif full:
                found |= {full[:i] + name for i, c in enumerate(full) if c == "_"}
    return found


def _setting(field: str) -> str:
    return "TUNECOST_" + field.upper()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = _variables(_section("Configuration"))
    missing = sorted(_setting(f) for f in Settings.model_fields if _setting(f) not in documented)
    assert not missing, f"settings not in README's Configuration table: {missing}"


def test_every_limit_setting_is_in_the_security_section() -> None:
    limits = [
        f
        for f in Settings.model_fields
        if (f.startswith("max_") or f.endswith(LIMIT_SUFFIXES)) and f not in NOT_REQUEST_LIMITS
    ]
    assert len(limits) >= 10  # the rule above still finds the limits
    documented = _variables(_section("Security: every limit and where it applies"))
    missing = sorted(_setting(f) for f in limits if _setting(f) not in documented)
    assert not missing, f"limits not in README's security section: {missing}"


def test_the_security_tables_have_headers() -> None:
    # A row after a blank line is no table row: it renders as a paragraph of pipes.
    lines = _section("Security: every limit and where it applies").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and not lines[i - 1].startswith("|"):
            assert lines[i + 1].startswith("| ---"), f"a table without a header at: {line}"
