"""`jobd run`: the daemon in the foreground."""

from __future__ import annotations

import dataclasses
import logging

import click

from jobd.cli.context import Context, pass_ctx
from jobd.model import Config
from jobd.store import mask_url


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
@pass_ctx
def run(ctx: Context, once: bool, log_level: str, log_format: str) -> None:
    """Run the daemon in the foreground (under systemd, launchd or a terminal).

    \b
    Example:
      jobd run --config contrib/examples/jobd.toml
    """
    from jobd.log import add_secrets, add_store_url, setup_logging

    setup_logging(log_format, log_level)
    config = ctx.config
    add_store_url(ctx.store_url)
    add_secrets(value for spec in config.jobs.values() for value in spec.env.values())
    store = ctx.store
    report = store.apply_config(config, store.now())
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
    # The jobs are in the store now, where the daemon reads them; dropping the
    # parsed config here keeps 10,000 jobs' worth of objects out of its memory.
    ctx._config = config = dataclasses.replace(config, jobs={})
    from jobd.daemon import serve
    from jobd.paths import load_config

    def reload_config() -> Config:
        fresh = load_config(ctx.config_path)
        add_secrets(value for spec in fresh.jobs.values() for value in spec.env.values())
        return fresh

    serve(config, store, reload_config=reload_config)


COMMANDS = [run]
