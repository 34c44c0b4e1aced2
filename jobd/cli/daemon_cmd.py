"""`jobd run`: the daemon in the foreground."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import click

from jobd.cli.context import Context, pass_ctx
from jobd.errors import UsageError
from jobd.forkcall import call_in_child

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

    if (pidfile or log_file) and not detach:
        raise UsageError("--pidfile and --log-file go with --detach")
    if detach and not pidfile:
        raise UsageError("--detach needs --pidfile PATH")
    if once:
        setup_logging(log_format, log_level)
        _apply(ctx).log(mask_url)
        return

    def prepare() -> Applied:
        setup_logging(log_format, log_level)  # a migration's messages reach the terminal
        applied = _apply(ctx)
        ctx.close()
        return applied

    # Parsing and applying happen before detaching, so their errors reach the
    # terminal, and in a child process, so the daemon's memory never holds
    # 10,000 jobs' worth of parsed config (jobd.forkcall).
    applied = call_in_child(prepare)
    ctx._config = config = applied.config
    store_url = applied.store_url
    if detach:
        assert pidfile is not None
        from pathlib import Path

        from jobd.detach import detach as enter_background

        if config.path and Path(config.path).is_file():
            # The daemon runs in /, so a reload must find the same file by its full path.
            ctx.config_path = str(Path(config.path).absolute())
        target = log_file or str(Path(pidfile).absolute().with_name("jobd.log"))
        enter_background(pidfile, str(Path(target).absolute()))
    setup_logging(log_format, log_level)
    add_store_url(store_url)
    add_secrets(applied.secrets)
    applied.log(mask_url)
    store = ctx.store
    from jobd.daemon import serve
    from jobd.paths import load_config

    def reload_config() -> Config:
        fresh = load_config(ctx.config_path, store_override=ctx.store_override)
        add_secrets(value for spec in fresh.jobs.values() for value in spec.env.values())
        return fresh

    serve(
        config,
        store,
        reload_config=reload_config,
        applied_at=applied.applied_at,
        file_digests=applied.digests,
    )


@dataclasses.dataclass
class Applied:
    """What the daemon keeps of its config once the jobs are in the store."""

    config: Config  # without its jobs: the daemon reads those from the store
    digests: dict[str, str]  # ... and runs a config job only if it is still this
    store_url: str
    secrets: list[str]
    applied_at: datetime
    jobs: int
    added: int
    updated: int
    removed: int

    def log(self, mask_url: Callable[[str], str]) -> None:
        logging.getLogger("jobd").info(
            "config %s applied to store %s: %d jobs (%d added, %d updated, %d removed)",
            self.config.path,
            mask_url(self.store_url),
            self.jobs,
            self.added,
            self.updated,
            self.removed,
            extra={"action": "config.apply"},
        )


def _apply(ctx: Context) -> Applied:
    """Parse the config and write its jobs to the store."""
    from jobd.log import add_store_url

    config = ctx.config
    store_url = ctx.store_url
    add_store_url(store_url)
    store = ctx.store
    applied_at = store.now()
    report = store.apply_config(config, applied_at)
    if report.restored:
        logging.getLogger("jobd").warning(
            "config jobs changed in the store outside jobd, restored from the file: %s",
            ", ".join(report.restored),
            extra={"action": "config.restored"},
        )
    return Applied(
        config=dataclasses.replace(config, jobs={}),
        digests=config.digests(),
        store_url=store_url,
        secrets=[value for spec in config.jobs.values() for value in spec.env.values()],
        applied_at=applied_at,
        jobs=len(config.jobs),
        added=len(report.added),
        updated=len(report.updated),
        removed=len(report.removed),
    )


COMMANDS = [run]
