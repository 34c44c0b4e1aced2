"""Receivers of notifications for tests: a local SMTP server that speaks
STARTTLS with a certificate made for the test, and an HTTP server that can be
started late on a port chosen early (a receiver that is down, then comes back)."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.httpserver import Server, _Handler

SMTP_USER = "jobd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Mailbox:
    port: int
    cert: Path  # trust it with SSL_CERT_FILE
    password: str
    messages: list[Message] = field(default_factory=list)
    tls_used: list[bool] = field(default_factory=list)


class _MailHandler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.box.tls_used.append(session.ssl is not None)
        self.box.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


@pytest.fixture(name="smtp_server")
def smtp_server_fixture(tmp_path: Path) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1 requiring STARTTLS and a login (user `jobd`)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    box = Mailbox(free_port(), cert, "smtp-pass-8f3a1c")

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == SMTP_USER
            and data.password.decode() == box.password
        )
        return AuthResult(success=ok)

    controller = Controller(
        _MailHandler(box),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
        ready_timeout=10,
    )
    controller.start()
    yield box
    controller.stop()


class LateServer:
    """An HTTP receiver whose port is known before it listens."""

    def __init__(self) -> None:
        self.port = free_port()
        self.state = Server(f"http://127.0.0.1:{self.port}")
        self._httpd: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.daemon_threads = True
        httpd.state = self.state  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self._httpd = httpd

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
