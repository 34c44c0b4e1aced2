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
        if not dict.__contains__(cli.commands, command.name):
            command.params.extend(_common_params())
            cli.add_command(command)


class _Commands(dict):  # type: ignore[type-arg]
    """`cli.commands`, filled on first use: looking a name up imports that
    command's module; listing them (help, completion, docs) imports them all."""

    def get(self, name: Any, default: Any = None) -> Any:
        if not dict.__contains__(self, name) and name in COMMAND_MODULES:
            _load(COMMAND_MODULES[name])
        return dict.get(self, name, default)

    def __getitem__(self, name: Any) -> Any:
        command = self.get(name)
        if command is None:
            raise KeyError(name)
        return command

    def __contains__(self, name: object) -> bool:
        return name in COMMAND_MODULES or dict.__contains__(self, name)

    def _all(self) -> None:
        for module_name in dict.fromkeys(COMMAND_MODULES.values()):
            _load(module_name)

    def __iter__(self) -> Any:
        self._all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._all()
        return dict.__len__(self)

    def keys(self) -> Any:
        self._all()
        return dict.keys(self)

    def values(self) -> Any:
        self._all()
        return dict.values(self)

    def items(self) -> Any:
        self._all()
        return dict.items(self)


cli.commands = _Commands()
