"""Webhook tests: the API and a control worker allowed to reach a receiver on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServiceEnv, WorkerProcess, pointed_at, start_control_worker

# A receiver in the test listens on 127.0.0.1 over plain http; retries wait 1 s, then 2 s...
DEV_TARGETS = {
    "TUNECOST_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
    "TUNECOST_WEBHOOK_ALLOW_HTTP": "true",
    "TUNECOST_WEBHOOK_RETRY_BASE_S": "1",
    "TUNECOST_WEBHOOK_MAX_ATTEMPTS": "3",
}


@pytest.fixture
def dev_targets(service_env: ServiceEnv) -> Iterator[None]:
    """The in-process API allows the local receiver, for one test."""
    with pointed_at(DEV_TARGETS):
        yield


@pytest.fixture(scope="module")
def control_worker(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real `celery worker -Q tunecost.control` that delivers webhooks."""
    log: Path = tmp_path_factory.mktemp("control") / "worker.log"
    with start_control_worker(service_env, log=log, extra_env=DEV_TARGETS) as worker:
        yield worker
