"""Serving the API with waitress: in the foreground (`jobd serve`) or on a
background thread beside the daemon's tick loop (`jobd run` with `[api]`).

waitress is a production WSGI server in pure Python with no dependencies: one
asyncore loop thread accepts and buffers connections, a fixed pool of worker
threads runs the application. Request bodies are bounded before they reach the
app, idle connections are closed, and a slow client is buffered by the loop,
never by a worker. The daemon's tick loop shares nothing with it but the GIL.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from jobd.api.app import MAX_BODY, Application, ConfigSource

__all__ = ["ApiServer", "ConfigSource", "make_app", "start_api"]
from jobd.api.views import Views

log = logging.getLogger("jobd.api")

IDLE_TIMEOUT_S = 30  # an idle keep-alive connection, or a client that stops sending


def make_app(store_url: str, configs: ConfigSource) -> Application:
    """The application over its own Store (never the daemon's connection)."""
    from jobd.store import open_store
    from jobd.system.hooks import HOST

    return Application(open_store(store_url, hooks=HOST), configs, Views())


class ApiServer:
    def __init__(self, app: Application, host: str, port: int, threads: int = 8) -> None:
        from waitress.server import create_server

        self.app = app
        app.limit_waiters(threads)
        self.server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            channel_timeout=IDLE_TIMEOUT_S,
            # waitress drops a body past this before buffering it; the app answers
            # a problem for any past MAX_BODY, which it never reads.
            max_request_body_size=16 * MAX_BODY,
            max_request_header_size=16 * 1024,
            ident="jobd",
            clear_untrusted_proxy_headers=True,
            expose_tracebacks=False,
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return str(self.server.effective_host), int(self.server.effective_port)

    def serve_forever(self) -> None:
        host, port = self.address
        log.info("serving the API on http://%s:%d/v1", host, port, extra={"action": "api.start"})
        try:
            self.server.run()
        except (OSError, ValueError):
            # close() from another thread ends the loop with a closed socket.
            if not self._closed:
                raise

    _closed = False

    def start(self) -> None:
        """Serve on a daemon thread and return at once."""
        self._thread = threading.Thread(target=self.serve_forever, name="jobd-api", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self.server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.app.store.close()


def start_api(
    store_url: str,
    settings: Any,
    config_path: str | None,
    store_override: str | None,
) -> ApiServer:
    """`jobd run` with an [api] table: the API on a background thread."""
    app = make_app(store_url, ConfigSource(config_path, store_override))
    server = ApiServer(app, settings.host, settings.port, settings.threads)
    server.start()
    return server
