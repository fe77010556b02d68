"""BodyTransfer: large bodies over one kept-alive http.client connection (loopback only)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fedlake.backends.remote.transfer import BodyTransfer, TransferError

BODY = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    received: list[bytes] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/missing":
            doc = b'{"error": "no such task"}'
            self.send_response(404)
            self.send_header("content-length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)
            return
        if self.path == "/short":
            self.send_response(200)
            self.send_header("content-length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
        if self.path == "/then-close":  # an idle keep-alive the server drops
            self.close_connection = True

    def do_PUT(self) -> None:
        size = int(self.headers["content-length"])
        _Handler.received.append(self.rfile.read(size))
        doc = b'{"status": "accepted"}'
        self.send_response(200)
        self.send_header("content-length", str(len(doc)))
        self.end_headers()
        self.wfile.write(doc)


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def connect() -> Iterator[Callable[..., BodyTransfer]]:
    made: list[BodyTransfer] = []

    def make(server: str, headers: dict[str, str] | None = None) -> BodyTransfer:
        made.append(BodyTransfer(server, None, headers or {}, timeout_s=10))
        return made[-1]

    yield make
    for bodies in made:
        bodies.close()


def _buffer(size: int) -> memoryview:
    return np.empty(size, np.uint8).data


def test_download_fills_the_callers_buffer(
    server: str, connect: Callable[..., BodyTransfer]
) -> None:
    bodies = connect(server)
    status, body = bodies.download("/model", {"x-test": "1"}, _buffer)
    assert status == 200 and isinstance(body, memoryview) and bytes(body) == BODY
    status, body = bodies.download("/model", {}, _buffer)  # the same connection again
    assert status == 200 and bytes(body) == BODY


def test_an_error_status_comes_back_with_its_body(
    server: str, connect: Callable[..., BodyTransfer]
) -> None:
    bodies = connect(server)
    status, body = bodies.download("/missing", {}, _buffer)
    assert status == 404 and b"no such task" in bytes(body)


def test_a_body_cut_short_is_a_transfer_error(
    server: str, connect: Callable[..., BodyTransfer]
) -> None:
    bodies = connect(server)
    with pytest.raises(TransferError):
        bodies.download("/short", {}, _buffer)
    status, body = bodies.download("/model", {}, _buffer)  # a new connection works
    assert status == 200 and bytes(body) == BODY


def test_a_connection_the_server_dropped_is_reopened_at_once(
    server: str, connect: Callable[..., BodyTransfer]
) -> None:
    bodies = connect(server)
    assert bodies.download("/then-close", {}, _buffer)[0] == 200
    status, body = bodies.download("/model", {}, _buffer)  # no error reaches the caller
    assert status == 200 and bytes(body) == BODY


def test_upload_sends_the_pieces_as_one_body(
    server: str, connect: Callable[..., BodyTransfer]
) -> None:
    _Handler.received.clear()
    bodies = connect(server, {"authorization": "Bearer t"})
    pieces: list[bytes | memoryview] = [
        b"head",
        memoryview(BODY)[:2_000_000],
        memoryview(BODY)[2_000_000:],
    ]
    answer = bodies.upload("PUT", "/reply", {"x-sig": "s"}, pieces)
    assert answer.status_code == 200 and answer.json() == {"status": "accepted"}
    assert _Handler.received == [b"head" + BODY]


def test_no_server_is_a_transfer_error() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bodies = BodyTransfer(f"http://127.0.0.1:{port}", None, {}, timeout_s=2)
    with pytest.raises(TransferError):
        bodies.download("/model", {}, _buffer)
    bodies.close()


def test_a_url_that_is_no_http_server_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        BodyTransfer("ftp://example", None, {}, timeout_s=1)
