"""`jobd run`: the daemon in the foreground."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from jobd.cli.context import Context, pass_ctx
from jobd.errors import UsageError

if TYPE_CHECKING:
    from jobd.model import Config


@click.command()
@click.option("--once", is_flag=True, help="Apply the config to the store and exit.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True
)
@click.option(
    "--detach",
    is_flag=True,
    help="Fork into the background (not under systemd or launchd). Needs --pidfile.",
)
@click.option("--pidfile", metavar="PATH", help="With --detach: the locked pid file.")
@click.option(
    "--log-file",
    metavar="PATH",
    help="With --detach: where logs go (default: jobd.log beside the pid file).",
)
@pass_ctx
def run(
    ctx: Context,
    once: bool,
    log_level: str,
    log_format: str,
    detach: bool,
    pidfile: str | None,
    log_file: str | None,
) -> None:
    """Run the daemon in the foreground (under systemd, launchd or a terminal).

    SIGTERM or SIGINT stop it gracefully; SIGHUP reloads the config.

    \b
    Examples:
      jobd run --config contrib/examples/jobd.toml
      jobd run --detach --pidfile /run/jobd.pid --log-file /var/log/jobd.log
    """
    from jobd.log import add_secrets, add_store_url, setup_logging
    from jobd.store import mask_url

    config = ctx.config  # validate before detaching, so errors reach the terminal
    store_url = ctx.store_url
    if detach:
        if not pidfile:
            raise UsageError("--detach needs --pidfile PATH")
        from pathlib import Path

        from jobd.detach import detach as enter_background

        if config.path and Path(config.path).is_file():
            # The daemon runs in /, so a reload must find the same file by its full path.
            ctx.config_path = str(Path(config.path).absolute())
        target = log_file or str(Path(pidfile).absolute().with_name("jobd.log"))
        enter_background(pidfile, str(Path(target).absolute()))
    elif pidfile or log_file:
        raise UsageError("--pidfile and --log-file go with --detach")
    setup_logging(log_format, log_level)
    add_store_url(store_url)
    add_secrets(value for spec in config.jobs.values() for value in spec.env.values())
    store = ctx.store
    applied_at = store.now()
    report = store.apply_config(config, applied_at)
    logging.getLogger("jobd").info(
        "config %s applied to store %s: %d jobs (%d added, %d updated, %d removed)",
        config.path,
        mask_url(ctx.store_url),
        len(config.jobs),
        len(report.added),
        len(report.updated),
        len(report.removed),
        extra={"action": "config.apply"},
    )
    if once:
        return
    from jobd.daemon import serve
    from jobd.paths import load_config

    def reload_config() -> Config:
        fresh = load_config(ctx.config_path)
        add_secrets(value for spec in fresh.jobs.values() for value in spec.env.values())
        return fresh

    serve(config, store, reload_config=reload_config, applied_at=applied_at)


COMMANDS = [run]
