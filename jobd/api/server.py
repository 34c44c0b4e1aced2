"""Serving the API with cheroot: in the foreground (`jobd serve`) or on a
background thread beside the daemon's tick loop (`jobd run` with `[api]`).

cheroot (CherryPy's server, pure Python) is a production WSGI server that speaks
TLS with the standard library's ssl module: one thread accepts connections and
watches idle keep-alive ones in a selector, a fixed pool of worker threads reads
requests and runs the application. It replaced waitress, which has no TLS.

Three things are adjusted here, each so that a client cannot hold the server:

- cheroot gives every new connection to a worker at once; one that has sent
  nothing yet goes back to the selector (_Connection), so silent connections
  hold no worker until their first byte, and are closed after IDLE_TIMEOUT_S;
- the TLS handshake, which waits on the client, runs on that worker, never on
  the thread that accepts every connection (_TlsAdapter);
- a request may ask whether its client hung up (CLIENT_GONE), so a log follow
  ends when nobody reads it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import ssl
import threading
from typing import Any

from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection
from cheroot.ssl import Adapter
from cheroot.wsgi import Gateway_10, Server

from jobd.api.app import CLIENT_GONE, MAX_BODY, Application, ConfigSource
from jobd.api.views import Views
from jobd.errors import ConfigError
from jobd.store import open_store
from jobd.system.hooks import HOST
from jobd.system.tls import server_context

__all__ = ["ApiServer", "ConfigSource", "make_app", "start_api"]

log = logging.getLogger("jobd.api")

# An idle keep-alive connection, a silent new one, or one read or write that
# makes no progress, is closed after this long.
IDLE_TIMEOUT_S = 10
# The longest wait for one answer of a PostgreSQL store: a frozen store answers
# 503 within about this, instead of holding a worker thread for ever.
STORE_WAIT_S = 5.0
# Linux's "peer closed its end", which poll() reports without reading the socket.
POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)
PLAIN_TO_TLS = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 47\r\n\r\nThis port speaks HTTPS only: use https:// URLs.\n"
)


def make_app(store_url: str, configs: ConfigSource) -> Application:
    """The application over its own Store (never the daemon's connection)."""
    store = open_store(store_url, hooks=HOST)
    app = Application(store, configs, Views())
    # In `jobd run` the daemon sets the process's bound after this (its own, as
    # short); the API's connections keep their statement timeout and keepalives.
    store.limit_waits(STORE_WAIT_S, app.closing.is_set)
    return app


def _hung_up(fd: int) -> bool:
    """Whether the peer of `fd` closed its end or reset it (nothing is read)."""
    poller = select.poll()
    poller.register(fd, POLLRDHUP | select.POLLHUP | select.POLLERR)
    try:
        return bool(poller.poll(0))
    except OSError:
        return True


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # let the read find out what is wrong


class _Connection(HTTPConnection):  # type: ignore[misc]
    """A connection that holds a worker only once its client has said something."""

    _greeted = False

    def communicate(self) -> bool:
        if not self._greeted:
            if not _readable(self.socket):
                return True  # back to the selector until its first byte, or expiry
            if isinstance(self.socket, ssl.SSLSocket) and not self._handshake():
                return False
            self._greeted = True
        return bool(super().communicate())

    def _handshake(self) -> bool:
        try:
            self.socket.do_handshake()
            return True
        except ssl.SSLError as exc:
            if exc.reason == "HTTP_REQUEST":
                # Say so in plain HTTP, bypassing TLS, then close: curl and browsers
                # show the reason instead of a bare reset.
                with contextlib.suppress(OSError):
                    socket.socket.sendall(self.socket, PLAIN_TO_TLS)
                # Debug only, as the failed handshakes below: anyone who can reach
                # the port could otherwise fill the log.
                log.debug(
                    "a plain HTTP request to the HTTPS port, from %s",
                    self.remote_addr,
                    extra={"action": "api.tls"},
                )
            else:
                log.debug(
                    "TLS handshake with %s failed: %s",
                    self.remote_addr,
                    exc.reason or type(exc).__name__,
                    extra={"action": "api.tls"},
                )
            return False
        except OSError:
            return False  # gone, or silent past the timeout


class _TlsAdapter(Adapter):  # type: ignore[misc]
    """cheroot's TLS over a context jobd built and checked (jobd.system.tls), with
    the handshake left to the worker (see _Connection)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(None, None)
        self.context = context

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, self.get_environ()

    def get_environ(self, sock: Any = None) -> dict[str, str]:
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def makefile(self, sock: Any, mode: str = "r", bufsize: int = -1) -> Any:
        size = bufsize if bufsize > 0 else 8192
        return (StreamReader if "r" in mode else StreamWriter)(sock, mode, size)


class _Gateway(Gateway_10):  # type: ignore[misc]
    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        fd = self.req.conn.socket.fileno()
        environ[CLIENT_GONE] = lambda: _hung_up(fd)
        return environ


class _Server(Server):  # type: ignore[misc]
    ConnectionClass = _Connection

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        # cheroot writes to stderr; jobd's log has one format. No traceback: it
        # could quote a request's bytes, bearer tokens included.
        log.log(level, "%s", msg.strip(), extra={"action": "api.server"})


class ApiServer:
    def __init__(
        self,
        app: Application,
        host: str,
        port: int,
        threads: int = 8,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        app.limit_waiters(threads)
        self.server = _Server(
            (host, port),
            app,
            numthreads=threads,
            server_name="jobd",
            timeout=IDLE_TIMEOUT_S,
            shutdown_timeout=5,
        )
        self.server.gateway = _Gateway
        # cheroot answers 413 past these before the app reads anything; the app
        # answers a problem for any body past MAX_BODY, which it never reads.
        self.server.max_request_body_size = 16 * MAX_BODY
        self.server.max_request_header_size = 16 * 1024
        self.adapter = _TlsAdapter(tls) if tls is not None else None
        self.server.ssl_adapter = self.adapter
        try:
            self.server.prepare()  # binds now, so that a taken port is said at start
        except OSError as exc:
            # cheroot's message lists every address it tried; keep the reason.
            reasons = re.findall(r"\[Errno \d+\] ([^)]*)\)", str(exc))
            raise OSError(reasons[-1] if reasons else str(exc)) from None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.bind_addr[:2]
        return str(host), int(port)

    @property
    def scheme(self) -> str:
        return "https" if self.adapter is not None else "http"

    def serve_forever(self) -> None:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "serving the API on %s://%s:%d/v1",
            self.scheme,
            shown,
            port,
            extra={"action": "api.start"},
        )
        self.server.serve()

    def start(self) -> None:
        """Serve on a daemon thread and return at once."""
        self._thread = threading.Thread(target=self.serve_forever, name="jobd-api", daemon=True)
        self._thread.start()

    def reload_tls(self, settings: Any, config_file: str) -> None:
        """SIGHUP: a renewed certificate and key (same paths or new ones) serve new
        connections; a pair that does not load is logged and the old one kept."""

        if self.adapter is None or settings is None or not settings.tls_cert:
            return
        try:
            self.adapter.context = server_context(settings.tls_cert, settings.tls_key, config_file)
        except ConfigError as exc:
            log.error(
                "TLS certificate not reloaded, the previous one still serves: %s",
                exc,
                extra={"action": "api.tls"},
            )
            return
        log.info("TLS certificate reloaded", extra={"action": "api.tls"})

    def close(self) -> None:
        self.app.closing.set()  # long polls and follows end at their next look
        self.server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.app.store.close()


def tls_context(settings: Any, config_file: str) -> ssl.SSLContext | None:
    """The server's TLS context when `[api]` has tls_cert and tls_key."""
    if settings is None or not settings.tls_cert:
        return None

    return server_context(settings.tls_cert, settings.tls_key, config_file)


def start_api(
    store_url: str,
    settings: Any,
    config_path: str | None,
    store_override: str | None,
    config_file: str,
) -> ApiServer:
    """`jobd run` with an [api] table: the API on a background thread."""
    tls = tls_context(settings, config_file)
    app = make_app(store_url, ConfigSource(config_path, store_override))
    try:
        server = ApiServer(app, settings.host, settings.port, settings.threads, tls)
    except BaseException:
        app.store.close()
        raise
    server.start()
    return server
