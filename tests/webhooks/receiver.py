"""A real HTTP receiver for webhook tests: records every request, answers as scripted."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    at: float  # time.monotonic() when it arrived
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What arrived, per path, and the statuses still to answer per path (then 200)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    script: dict[str, deque[int]] = field(default_factory=lambda: defaultdict(deque))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, *statuses: int) -> None:
        """Answer the next requests to `path` with these statuses, in order."""
        with self.lock:
            self.script[path].extend(statuses)

    def at(self, path: str) -> list[Received]:
        """The requests to `path` so far, in order."""
        with self.lock:
            return [r for r in self.requests if r.path == path]


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) in a thread, for the block."""
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            recv = box[0]
            with recv.lock:
                recv.requests.append(
                    Received(self.path, time.monotonic(), dict(self.headers.items()), body)
                )
                pending = recv.script[self.path]
                status = pending.popleft() if pending else 200
            payload = b"ok" if status < 300 else b"receiver says no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
