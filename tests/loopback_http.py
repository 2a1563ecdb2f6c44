"""A local HTTP server on loopback that serves in-memory files and fails the ways real mirrors do."""
from __future__ import annotations

import http.server
import re
import threading
import time
from dataclasses import dataclass

import pytest

BODY = bytes(range(256)) * 40  # 10240 bytes
HALF = len(BODY) // 2


@dataclass
class Route:
    """One served file and how the server misbehaves for it."""

    body: bytes = BODY
    status: int = 200  # any other value is sent as an error for every request
    corrupt: bool = False  # flip one byte in the middle of the served file
    cut_after: int | None = None  # send the full Content-Length, then only this many bytes...
    cut_requests: int = 1  # ...on this many first served requests, then close the connection
    stall_s: float = 0.0  # wait this long before closing a cut connection
    ignore_range: bool = False  # always answer 200 with the whole file
    wrong_range_start: bool = False  # answer a Range with 206 but a body from byte 0
    fail_first: int = 0  # answer the first requests with 503
    hits: int = 0
    served: int = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        self.server.log.append((self.path, rng))
        route = self.server.routes.get(self.path)
        if route is None:
            return self.send_error(404)
        route.hits += 1
        if route.status != 200:
            return self.send_error(route.status)
        if route.hits <= route.fail_first:
            return self.send_error(503)
        body = route.body
        if route.corrupt:
            body = body[:HALF] + bytes([body[HALF] ^ 0xFF]) + body[HALF + 1:]
        start = 0
        if rng and not route.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.wrong_range_start:
                start = 0
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        route.served += 1
        if route.cut_after is not None and route.served <= route.cut_requests:
            self.wfile.write(payload[:route.cut_after])
            time.sleep(route.stall_s)
            self.close_connection = True
            return
        self.wfile.write(payload)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str | None]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def handle_error(self, request, client_address):
        pass  # a client that timed out leaves a broken pipe behind; not a test failure


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
