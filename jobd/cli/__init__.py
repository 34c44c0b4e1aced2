"""The `jobd` command line. Thin: parse arguments, call the store or daemon, render.

Nothing imports this package; errors become exit codes in one place (JobdGroup).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from jobd import __version__
from jobd.cli.context import Context
from jobd.errors import ExitCode, JobdError


class JobdGroup(click.Group):
    """Maps every JobdError to its exit code with one line on stderr, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JobdError as exc:
            click.echo(f"jobd: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("jobd: interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        finally:
            obj = ctx.find_object(Context)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()


@click.group(cls=JobdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="JOBD_CONFIG",
    metavar="PATH",
    help="Config file (default: ./jobd.toml, then the user config dir, then /etc/jobd/jobd.toml).",
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Store URL, overriding the config and $JOBD_STORE.",
)
@click.version_option(__version__, "-V", "--version", prog_name="jobd")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, store_url: str | None) -> None:
    """jobd: cron-style jobs, every run recorded.

    \b
    Examples:
      jobd validate --config contrib/examples/jobd.toml
      jobd run
      jobd trigger backup --wait
      jobd executions --job backup --limit 10
    """
    ctx.obj = Context(config_path=config_path, store_override=store_url)


def _override(attribute: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            setattr(ctx.find_object(Context), attribute, value)

    return callback


def _common_params() -> list[click.Parameter]:
    """--config and --store are accepted after the command name too."""
    return [
        click.Option(
            ["--config"],
            metavar="PATH",
            expose_value=False,
            callback=_override("config_path"),
            help="Config file.",
        ),
        click.Option(
            ["--store"],
            metavar="URL",
            expose_value=False,
            callback=_override("store_override"),
            help="Store URL.",
        ),
    ]


def _register() -> None:
    from jobd.cli import daemon_cmd, imports, jobs

    for module in (jobs, daemon_cmd, imports):
        for command in module.COMMANDS:
            command.params.extend(_common_params())
            cli.add_command(command)


_register()


def main() -> None:
    try:
        cli.main(prog_name="jobd")
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(int(ExitCode.INTERRUPTED))
