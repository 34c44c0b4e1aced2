"""A real HTTP server on 127.0.0.1 (random port) in a thread, recording every request.

Paths choose the answer: /status/NNN answers NNN, /sleep/S waits S seconds
first, /echo answers with the request's headers and body (so a test can check
that a secret the server saw never reaches the log).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    url: str
    requests: list[Seen] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, dict(self.headers.items()), body)
        self.server.state.requests.append(seen)  # type: ignore[attr-defined]
        status, out = 200, b'{"ok": true}'
        parts = self.path.strip("/").split("/")
        if parts[0] == "status":
            status = int(parts[1])
        elif parts[0] == "sleep":
            time.sleep(float(parts[1]))
        elif parts[0] == "echo":
            out = json.dumps({"headers": seen.headers, "body": body.decode()}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(name="http_server")
def http_server_fixture() -> Iterator[Server]:
    """Import it as `from tests.httpserver import http_server_fixture` to use it."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
