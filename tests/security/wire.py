"""Raw HTTP/1.1 over a socket: send a request's head and part of its body, then read the answer.

httpx sends a whole body before it reads the response; these tests need to see that the server
answers *before* the body is sent (nothing of it was read or held), so they speak HTTP by hand.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 64 * 1024


@dataclass
class EarlyAnswer:
    """The server's status and answer (head and body), how much body had gone out, and when."""

    status: int
    text: str
    body_sent: int
    seconds: float


@contextmanager
def _connect(url: str) -> Iterator[socket.socket]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)
    try:
        yield sock
    finally:
        sock.close()


def _read_answer(sock: socket.socket) -> str:
    """The response's head and its body (as far as Content-Length says)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        while len(body) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
            data += piece
    except OSError:  # reset after the answer: what arrived before it is the answer
        pass
    return data.decode("latin-1")


def send_body(
    url: str,
    path: str,
    *,
    headers: dict[str, str],
    body_bytes: int,
    declare_length: bool,
    method: str = "POST",
    prefix: bytes = b"",
) -> EarlyAnswer:
    """Send up to `body_bytes` of body (`prefix`, then filler; its length declared, or chunked
    when not), stopping as soon as the server answers or closes; return its answer."""
    start = time.monotonic()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(
        f"Content-Length: {body_bytes}" if declare_length else "Transfer-Encoding: chunked"
    )
    sent = 0
    piece = b"x" * CHUNK if declare_length else f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
    with _connect(url) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if prefix:
            framed = f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n"
            sock.sendall(prefix if declare_length else framed)
            sent += len(prefix)
        sock.settimeout(5)  # a server that stopped reading makes sendall time out
        while sent < body_bytes:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered (or closed)
            try:
                sock.sendall(piece)
            except OSError:  # timed out or reset: the server is not taking the body
                break
            sent += CHUNK
        else:
            if not declare_length:
                sock.sendall(b"0\r\n\r\n")
        sock.settimeout(30)
        text = _read_answer(sock)
    status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/") else 0
    return EarlyAnswer(status=status, text=text, body_sent=sent, seconds=time.monotonic() - start)
