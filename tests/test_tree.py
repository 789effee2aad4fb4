"""The test tree: every folder holding tests is a package, so two test modules with the same
name in different folders (tests/estimator/test_engine.py, tests/calibration/test_engine.py)
are two modules, never one shadowing the other."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_folder_of_tests_is_a_package() -> None:
    folders = {p.parent for p in TESTS.rglob("test_*.py")}
    assert len(folders) > 10
    assert (
        sorted(str(f.relative_to(TESTS)) for f in folders if not (f / "__init__.py").is_file())
        == []
    )
