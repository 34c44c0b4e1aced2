"""`jobd serve`: the HTTP API alone, and the API thread of `jobd run`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from jobd.cli.context import pass_ctx
from jobd.errors import JobdError
from jobd.ops.context import Context

if TYPE_CHECKING:
    from jobd.core.model import ApiSettings

DEFAULT_LISTEN = "127.0.0.1:8089"


def _server_module() -> Any:
    try:
        from jobd.api import server
    except ModuleNotFoundError as exc:
        if exc.name not in ("cheroot", "jaraco", "more_itertools"):
            raise
        raise JobdError("the HTTP API needs cheroot: pip install 'jobd[api]'") from None
    return server


def start_api_thread(ctx: Context, store_url: str, settings: ApiSettings) -> Any:
    """The API on a background thread of `jobd run`: the tick loop never waits for it."""
    server = _server_module()
    return server.start_api(
        store_url, settings, ctx.config_path, ctx.store_override, str(ctx.config.path)
    )


@click.command()
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help=f"Address to serve on (default: [api] listen, else {DEFAULT_LISTEN}; port 0: any).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human")
@pass_ctx
def serve(ctx: Context, listen: str | None, log_level: str, log_format: str) -> None:
    """Serve the HTTP API alone: it acts on the store, and executes nothing.

    For a web tier kept apart from the workers: triggers go to the store and
    wake the daemons (`jobd run`) that execute them. Every request needs a
    bearer token (`jobd token create`), except /healthz and /readyz.
    SIGTERM or SIGINT stop it; SIGHUP loads a renewed [api] tls_cert and
    tls_key for new connections.

    \b
    Examples:
      jobd serve --listen 127.0.0.1:8089
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8089/v1/jobs
    """
    import logging
    import signal

    from jobd.system.log import add_store_url, setup_logging

    config = ctx.config
    settings = _settings(config.api, listen)
    server_module = _server_module()
    tls = server_module.tls_context(settings, str(config.path))  # before any log line
    setup_logging(log_format, log_level)
    store_url = ctx.store_url
    add_store_url(store_url)
    app = server_module.make_app(
        store_url, server_module.ConfigSource(ctx.config_path, ctx.store_override)
    )
    try:
        server = server_module.ApiServer(app, settings.host, settings.port, settings.threads, tls)
    except OSError as exc:
        app.store.close()
        raise JobdError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None

    previous = _handle_signals(server, ctx)
    try:
        server.serve_forever()
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logging.getLogger("jobd.api").info("API stopped", extra={"action": "api.stop"})


def _handle_signals(server: Any, ctx: Context) -> dict[int, Any]:
    """SIGTERM and SIGINT stop the server; SIGHUP reloads its TLS pair. Returns the
    handlers they replace."""
    import logging
    import signal
    import threading

    from jobd.system.paths import load_config

    def stop(signum: int, frame: Any) -> None:
        # Not here: stop() joins the server's threads, and this runs on the one
        # serving; a thread of its own lets serve() return.
        threading.Thread(target=server.close, name="jobd-api-stop").start()

    def reload(signum: int, frame: Any) -> None:
        threading.Thread(target=reload_tls, name="jobd-api-reload").start()

    def reload_tls() -> None:
        try:
            fresh = load_config(ctx.config_path, store_override=ctx.store_override)
        except JobdError as exc:
            logging.getLogger("jobd.api").error(
                "config not reloaded: %s", exc, extra={"action": "config.reload"}
            )
            return
        server.reload_tls(fresh.api, str(fresh.path))

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    return previous


def _settings(configured: ApiSettings | None, listen: str | None) -> ApiSettings:
    """[api] as configured, at the --listen address when given (else the default
    address when there is no [api] table); threads and TLS stay as configured."""
    from jobd.core.config.kinds import api_table

    if listen is None and configured is not None:
        return configured
    table: dict[str, Any] = {"listen": listen or DEFAULT_LISTEN}
    if configured is not None:
        table.update(threads=configured.threads)
        if configured.tls_cert:
            table.update(tls_cert=configured.tls_cert, tls_key=configured.tls_key)
    settings = api_table(table, "--listen")
    assert settings is not None
    return settings


COMMANDS = [serve]
