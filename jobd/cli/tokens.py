"""`jobd token`: the bearer tokens of the HTTP API."""

from __future__ import annotations

import click

from jobd.cli import render
from jobd.cli.context import json_option, pass_ctx
from jobd.ops.context import Context, actor


@click.group()
def token() -> None:
    """Manage the bearer tokens of the HTTP API (`jobd serve`, [api] listen).

    A token is printed once, when it is made; the store keeps only a hash.

    \b
    Examples:
      jobd token create ci
      jobd token create tenant-a-web --group tenant-a --expires 90d
      jobd token create dashboard --read-only
      jobd token list
      jobd token revoke ci
    """


@token.command("create")
@click.argument("name")
@click.option("--group", metavar="GROUP", help="See and act on this group's jobs only.")
@click.option("--read-only", is_flag=True, help="Allow reads only: every write answers 403.")
@click.option("--expires", metavar="DURATION", help="Refuse it after this long, e.g. 90d.")
@pass_ctx
def create(
    ctx: Context, name: str, group: str | None, read_only: bool, expires: str | None
) -> None:
    """Make a token NAME and print it (only this once).

    \b
    Example:
      TOKEN=$(jobd token create ci --expires 90d)
    """
    from jobd.core.durations import DurationError, parse_duration
    from jobd.errors import UsageError
    from jobd.ops.tokens import create_token

    try:
        expires_in = parse_duration(expires) if expires is not None else None
    except DurationError as exc:
        raise UsageError(f"--expires: {exc}") from None
    if expires_in is not None and expires_in <= 0:
        raise UsageError("--expires: must be longer than 0s")
    made = create_token(ctx.scope(), actor(), name, group, read_only, expires_in)
    click.echo(made.secret)
    if render.interactive(err=True):
        click.echo("jobd: store this token now; it cannot be shown again", err=True)


@token.command("list")
@json_option
@pass_ctx
def list_(ctx: Context, as_json: bool) -> None:
    """List the tokens: name, group, access, expiry (never the secret).

    \b
    Example:
      jobd token list --json
    """
    from jobd.ops.tokens import list_tokens

    tokens = list_tokens(ctx.scope())
    if as_json:
        render.print_json(
            [
                {
                    "name": t.name,
                    "group": t.group,
                    "read_only": t.read_only,
                    "created_at": t.created_at,
                    "created_by": t.created_by,
                    "expires_at": t.expires_at,
                    "expired": t.expired,
                }
                for t in tokens
            ]
        )
        return
    if not tokens:
        click.echo("no tokens yet (jobd token create NAME)", err=True)
        return
    rows = [
        [
            t.name,
            t.group or "*",
            "read" if t.read_only else "read-write",
            render.when(t.created_at),
            ("expired " if t.expired else "")
            + (render.when(t.expires_at) if t.expires_at else "never"),
        ]
        for t in tokens
    ]
    render.table(["NAME", "GROUP", "ACCESS", "CREATED", "EXPIRES"], rows)


@token.command("revoke")
@click.argument("name")
@pass_ctx
def revoke(ctx: Context, name: str) -> None:
    """Delete token NAME: requests that bear it answer 401 from now on.

    \b
    Example:
      jobd token revoke ci
    """
    from jobd.ops.tokens import revoke_token

    revoke_token(ctx.scope(), actor(), name)
    click.echo(f"revoked {name}")


def _common_options() -> None:
    """--config and --store after the subcommand too, as after any other command."""
    from jobd.cli.app import _common_params

    for command in token.commands.values():
        command.params.extend(_common_params())


_common_options()

COMMANDS = [token]
