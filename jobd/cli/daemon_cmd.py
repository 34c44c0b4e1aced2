"""`jobd run`: the daemon in the foreground."""

from __future__ import annotations

import click

from jobd.cli.context import Context, pass_ctx


@click.command()
@click.option("--once", is_flag=True, help="Apply the config to the store and exit.")
@pass_ctx
def run(ctx: Context, once: bool) -> None:
    """Run the daemon in the foreground (under systemd, launchd or a terminal).

    \b
    Example:
      jobd run --config contrib/examples/jobd.toml
    """
    from jobd.store import mask_url

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

    serve(config, store)


COMMANDS = [run]
