"""The click application: the `jobd` group, its commands, and the one place where
errors become exit codes (JobdGroup).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import click

from jobd import __version__
from jobd.errors import ExitCode, JobdError, store_failure
from jobd.ops.context import STORE_CREATORS, Context


def _one_line(exc: click.UsageError) -> click.UsageError:
    """Make click's usage error print one line (SPEC section 5) instead of usage + hint + error."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # bare `jobd`: the help is the answer
    path = exc.ctx.command_path if exc.ctx is not None else "jobd"
    message = exc.format_message().replace("\n", " ").rstrip(".")
    hint = getattr(exc.ctx.command if exc.ctx else None, "usage_hint", None)
    if hint and isinstance(exc, click.NoSuchOption):
        message += f"; {hint}"

    def show(file: Any = None) -> None:
        click.echo(f"{path}: {message} (see '{path} --help')", err=True)

    exc.show = show  # type: ignore[method-assign]
    return exc


class JobdGroup(click.Group):
    """Maps every JobdError to its exit code with one line on stderr, never a traceback."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    # Click's way to load subcommands lazily: a command's module is imported when
    # its name is looked up, so `jobd executions` imports none of the others.
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMAND_MODULES and cmd_name not in self.commands:
            _load(COMMAND_MODULES[cmd_name])
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Click suggests a name from the commands loaded so far: offer them all.
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            name = getattr(exc, "command_name", None)
            if name is None:
                raise
            raise type(exc)(name, possibilities=COMMAND_MODULES, ctx=ctx) from None  # type: ignore[call-arg]

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except JobdError as exc:
            click.echo(f"jobd: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except Exception as exc:
            failure = store_failure(exc)
            if failure is None:
                raise
            click.echo(f"jobd: {failure}", err=True)
            ctx.exit(int(failure.exit_code))
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
    ctx.obj = Context(
        config_path=config_path,
        store_override=store_url,
        create_store=ctx.invoked_subcommand in STORE_CREATORS,
    )


def _override(attribute: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        obj = ctx.find_object(Context)
        if value is not None and obj is not None:  # None while completing
            setattr(obj, attribute, value)

    return callback


def _common_params() -> list[click.Parameter]:
    """--config and --store are accepted after the command name too."""
    return [
        click.Option(
            [f"--{name}"],
            metavar=metavar,
            expose_value=False,
            callback=_override(attribute),
            help=help_text,
        )
        for name, metavar, attribute, help_text in (
            ("config", "PATH", "config_path", "Config file."),
            ("store", "URL", "store_override", "Store URL."),
        )
    ]


# Where each command lives. A command imports only its own module, so it pays
# for its own imports and click objects, not every command's (see
# bench/cli_latency.py); tests check this table against each module's COMMANDS.
COMMAND_MODULES = {
    "validate": "jobs",
    "list": "jobs",
    "next": "jobs",
    "trigger": "runs",
    "executions": "runs",
    "show": "runs",
    "logs": "runs",
    "cancel": "runs",
    "pause": "manage",
    "resume": "manage",
    "schedule": "manage",
    "unschedule": "manage",
    "status": "admin",
    "check": "admin",
    "prune": "admin",
    "audit": "admin",
    "run": "daemon_cmd",
    "import": "imports",
    "token": "tokens",
    "serve": "serve_cmd",
    "metrics": "observe",
    "top": "observe",
}


def _load(module_name: str) -> None:
    module = importlib.import_module(f"jobd.cli.{module_name}")
    for command in module.COMMANDS:
        if command.name not in cli.commands:
            command.params.extend(_common_params())
            cli.add_command(command)


def all_commands() -> dict[str, click.Command]:
    """Every command, their modules imported (help, docs and tests list them all)."""
    for module_name in dict.fromkeys(COMMAND_MODULES.values()):
        _load(module_name)
    return cli.commands
