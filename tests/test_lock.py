"""The lock files are what the venv runs, and make, the image and the lock agree on torch."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "lock.py"


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)$", path.read_text(), re.MULTILINE)
    return dict(found)


def test_the_lock_is_what_the_venv_gives() -> None:
    # Fails when pyproject.toml or the venv changed without `make lock`.
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_lock_pins_every_dependency_of_the_project() -> None:
    main, dev = _pins(ROOT / "requirements" / "main.txt"), _pins(ROOT / "requirements" / "dev.txt")
    assert not set(main) & set(dev)  # dev.txt adds to main.txt (`-r main.txt`)
    for name in ("torch", "transformers", "peft", "bitsandbytes", "fastapi", "celery"):
        assert name in main
    for name in ("pytest", "mypy", "ruff", "schemathesis"):
        assert name in dev and name not in main
    assert (ROOT / "requirements" / "dev.txt").read_text().count("-r main.txt\n") == 1


def test_make_the_image_and_the_lock_agree_on_torch() -> None:
    locked = _pins(ROOT / "requirements" / "main.txt")["torch"]
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    pin = re.search(r"^TORCH_PIN \?= torch==(\S+)$", makefile, re.MULTILINE)
    assert pin is not None and pin[1] == locked
    assert re.findall(r'pip install "torch==(\S+)"', dockerfile) == [locked]
    # Each installs from its lock file: the service's in the image, the developers' in make.
    assert "pip install -r requirements/main.txt" in dockerfile
    assert "-r requirements/dev.txt" in makefile


def test_a_missing_or_out_of_range_package_is_refused() -> None:
    lock = _lock_module()
    with pytest.raises(lock.LockError, match="not installed"):
        lock._closure([Requirement("no-such-package-tunecost-test")], lock.Lock())
    with pytest.raises(lock.LockError, match="wants"):
        lock._closure([Requirement("torch<1")], lock.Lock())


def test_extras_and_markers_decide_what_is_pinned() -> None:
    lock = _lock_module()
    plain, with_extra = lock.Lock(), lock.Lock()
    lock._closure([Requirement("celery")], plain)
    lock._closure([Requirement("celery[redis]")], with_extra)
    assert "redis" not in plain.versions and "redis" in with_extra.versions
    assert plain.via["amqp"] == {"kombu"}
    # A marker false on this interpreter pins nothing.
    assert lock._applies(Requirement('x; python_version < "3"'), set()) is False
    assert lock._applies(Requirement('x; extra == "dev"'), {"dev"}) is True
