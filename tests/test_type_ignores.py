"""Every `type: ignore` names its error code and says why on the same line (CONTRIBUTING.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("app", "worker", "devtools", "tests", "scripts", "bench")
IGNORE = re.compile(r"#\s*type:\s*ignore")
# The code in brackets, then at least one word of reason in a comment of its own.
EXPLAINED = re.compile(r"#\s*type:\s*ignore\[[a-z-]+(?:,\s*[a-z-]+)*\]  # \S.*$")


def _unexplained() -> list[str]:
    found = []
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if IGNORE.search(line) and not EXPLAINED.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    assert _unexplained() == []


def test_the_rule_tells_a_bare_ignore_from_an_explained_one() -> None:
    bare = "x = f()  # type: " + "ignore"
    coded = "x = f()  # type: " + "ignore[arg-type]"
    explained = coded + "  # the stub says int; it takes float"
    assert IGNORE.search(bare) and not EXPLAINED.search(bare)
    assert not EXPLAINED.search(coded)
    assert EXPLAINED.search(explained)
