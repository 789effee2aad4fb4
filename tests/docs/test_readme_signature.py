"""The README's webhook signature check, run as printed, against signatures the service makes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from app.webhooks import secrets, signing
from tests.support import ROOT

MARKER = "<!-- webhook-signature-snippet"
BODY = b'{"id":"evt_1","type":"job.succeeded","data":{"job":{"id":"job_1"}}}'


def _snippet() -> Callable[..., bool]:
    text = (ROOT / "README.md").read_text()
    found = re.search(re.escape(MARKER) + r"[^\n]*\n```python\n(?P<code>.*?)```", text, re.S)
    assert found, "the README's signature snippet is gone"
    namespace: dict[str, object] = {}
    exec(compile(found["code"], "README.md", "exec"), namespace)
    check = namespace["verify_tunecost_signature"]
    assert callable(check)
    return check


def test_the_readme_snippet_accepts_our_signatures_and_refuses_forgeries() -> None:
    verify = _snippet()
    secret = secrets.new_secret()
    header = signing.header(secret, BODY)
    assert verify(secret, header, BODY) is True
    assert verify(secrets.new_secret(), header, BODY) is False  # another secret
    assert verify(secret, header, BODY.replace(b"job_1", b"job_2")) is False  # another body
    old = signing.header(secret, BODY, timestamp=int(time.time()) - 3600)
    assert verify(secret, old, BODY) is False  # a replay an hour later
    assert verify(secret, "garbage", BODY) is False
