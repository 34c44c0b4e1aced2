"""`jobd import crontab` and `jobd import pg-cron`: other schedulers' jobs as TOML.

The reading is here; the translation is jobd.core.importers, which is pure.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from jobd.errors import StoreUnavailable, UsageError, first_line

SYSTEM_CRONTABS = ("/etc/crontab", "/etc/cron.d/")


def host_timezone() -> str | None:
    """The zone cron on this host uses: $TZ, /etc/timezone, or /etc/localtime's link."""
    from zoneinfo import ZoneInfo

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except Exception:  # ZoneInfo raises several types for odd names
            continue
        return name
    return None


@click.group(name="import")
def import_group() -> None:
    """Print another scheduler's jobs as jobd.toml [jobs.*] tables, on stdout.

    Nothing is changed anywhere: review the output, then add it to the config.

    \b
    Examples:
      crontab -l | jobd import crontab - >> jobd.toml
      jobd import crontab /etc/cron.d/app
      PGPASSWORD=... jobd import pg-cron postgresql://admin@db/postgres
    """


@import_group.command(name="crontab")
@click.argument("file", default="-", metavar="[FILE|-]")
@click.option(
    "--system/--user",
    default=None,
    help="The /etc/crontab format, with a user column before the command "
    "(default: --system for /etc/crontab and /etc/cron.d/*, else --user).",
)
@click.option(
    "--timezone",
    "zone",
    metavar="ZONE",
    help="The time zone cron used (default: this host's); CRON_TZ= lines override it.",
)
def crontab(file: str, system: bool | None, zone: str | None) -> None:
    """Turn a crontab into jobs: `shell` jobs (cron runs lines through /bin/sh),
    names derived from the commands, VAR=value lines as env, CRON_TZ/TZ as
    timezone, % as stdin. What cannot be translated (@reboot, MAILTO, bad lines)
    is printed as a comment that says why.

    \b
    Examples:
      crontab -l | jobd import crontab -
      jobd import crontab /etc/crontab --timezone Europe/Berlin
    """
    from jobd.core.importers import crontab_to_toml

    if file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            text = Path(file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        source = file
    if system is None:
        absolute = os.path.abspath(file) if file != "-" else ""
        system = absolute == SYSTEM_CRONTABS[0] or absolute.startswith(SYSTEM_CRONTABS[1])
    if zone is not None:
        from jobd.core.config.parse import _check_timezone

        _check_timezone(zone, "command line", None, "--timezone")
    click.echo(crontab_to_toml(text, source, system, zone or host_timezone()), nl=False)


@import_group.command(name="pg-cron")
@click.argument("dsn")
@click.option(
    "--schema",
    default="cron",
    show_default=True,
    help="The schema of pg_cron's job table.",
)
def pg_cron(dsn: str, schema: str) -> None:
    """Turn pg_cron's cron.job table into `sql` jobs with the same names and
    schedules, in pg_cron's time zone (cron.timezone, UTC by default), and a
    [databases] table with each job's database (never a password).

    Connect to the database pg_cron lives in (cron.database_name, usually
    postgres). Give the password through PGPASSWORD or ~/.pgpass rather than
    in DSN, which other local users can see in the process list.

    \b
    Example:
      jobd import pg-cron postgresql://admin@db.internal/postgres > pgcron.toml
    """
    import psycopg2
    from psycopg2 import sql

    from jobd.core.importers import pg_cron_to_toml
    from jobd.core.masking import Masker
    from jobd.core.urls import is_postgres, mask_url, postgres_url_problem, url_passwords

    problem = postgres_url_problem(dsn) if is_postgres(dsn) else None
    if problem is not None:
        raise UsageError(f"invalid URL {mask_url(dsn)!r}: {problem}")
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="jobd import")
    except psycopg2.Error as exc:
        first = first_line(exc, "connection failed")
        masker = Masker(url_passwords(dsn), url_passwords=True)  # libpq may quote the DSN
        raise StoreUnavailable(f"cannot connect to {mask_url(dsn)}: {masker(first)}") from None
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(
                    sql.SQL("SELECT * FROM {}.job ORDER BY jobid").format(sql.Identifier(schema))
                )
            except psycopg2.errors.UndefinedTable:
                raise UsageError(
                    f"no table {schema}.job in {mask_url(dsn)}: connect to the database "
                    "pg_cron is installed in (cron.database_name, usually postgres)"
                ) from None
            columns = [d.name for d in cur.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
            conn.rollback()
            cur.execute("SELECT current_setting('cron.timezone', true)")
            zone = cur.fetchone()[0] or "UTC"
    finally:
        conn.close()
    click.echo(pg_cron_to_toml(rows, dsn, f"{schema}.job", zone), nl=False)


COMMANDS = [import_group]
