"""`jobd run`: the daemon in the foreground."""

from __future__ import annotations

import click

from jobd.cli.context import Context, pass_ctx
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
    from jobd.log import setup_logging

    setup_logging(log_format, log_level)
    config = ctx.config
    store = ctx.store
    report = store.apply_config(config, store.now())
    click.echo(
        f"jobd: store {mask_url(ctx.store_url)}: {len(config.jobs)} jobs "
        f"({len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.removed)} removed)",
        err=True,
    )
    if once:
        return
    from jobd.daemon import serve
    from jobd.paths import load_config

    serve(config, store, reload_config=lambda: load_config(ctx.config_path))


COMMANDS = [run]
