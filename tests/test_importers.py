"""`jobd import crontab` and `jobd import pg-cron`: realistic inputs round-trip into
TOML that jobd.core.config.parse parses, with what does not translate reported as comments."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.importers import (
    crontab_to_toml,
    database_url,
    job_names,
    name_from_command,
    pg_cron_schedule,
    pg_cron_to_toml,
    split_percent,
    toml_string,
)
from jobd.core.model import JobKind
from tests.conftest import POSTGRES_DSN, jobd_cmd, run_jobd

CRONTABS = Path(__file__).resolve().parent / "data" / "crontabs"
SYSTEM = {"etc-crontab", "cron.d-app"}


def parsed(text: str) -> Any:
    return parse_config(text, "imported.toml", {})


@pytest.mark.parametrize("path", sorted(CRONTABS.iterdir()), ids=lambda p: p.name)
def test_every_sample_crontab_round_trips(path: Path) -> None:
    text = crontab_to_toml(path.read_text(), path.name, system=path.name in SYSTEM)
    config = parsed(text)
    assert config.jobs, text
    for spec in config.jobs.values():
        assert spec.kind in (JobKind.SHELL, JobKind.COMMAND)
        assert spec.schedule


def test_user_crontab() -> None:
    path = CRONTABS / "web-user.crontab"
    text = crontab_to_toml(path.read_text(), "web-user.crontab", timezone="Europe/Berlin")
    jobs = parsed(text).jobs
    assert list(jobs) == [
        "artisan_schedule_run",
        "backup_incremental",
        "backup_full",
        "find_logs",
        "certbot",
        "mysqldump_app",
        "mail",
        "monthly_invoices",
    ]
    assert (
        jobs["artisan_schedule_run"].shell
        == "cd /srv/app && php artisan schedule:run >> /dev/null 2>&1"
    )
    assert jobs["backup_full"].schedule == "30 2 * * *"
    assert jobs["certbot"].schedule == "@daily"
    assert all(spec.timezone == "Europe/Berlin" for spec in jobs.values())
    assert jobs["find_logs"].env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "APP_ENV": "production",
    }
    # \% is a literal percent sign ...
    assert "$(date +%Y%m%d)" in jobs["mysqldump_app"].shell
    # ... and an unescaped one starts the command's stdin.
    assert jobs["mail"].shell == (
        "/usr/bin/mail -s \"Weekly report\" team@example.com <<'JOBD_STDIN'\n"
        "Hello team,\nthe report is attached.\nJOBD_STDIN"
    )
    assert "# line 13: @reboot is unsupported" in text
    assert "# line 3: MAILTO=ops@example.com: jobd keeps each run's output" in text
    assert "# web-user.crontab line 10: */15 * * * * /usr/local/bin/backup.sh" in text


def test_the_stdin_here_document_feeds_the_command_what_cron_would() -> None:
    command, stdin = split_percent("cat -A%line one%line two")
    assert stdin == "line one\nline two"
    from jobd.core.importers import with_stdin

    out = subprocess.run(
        ["/bin/sh", "-c", with_stdin(command, stdin)], capture_output=True, text=True, check=True
    )
    assert out.stdout == "line one$\nline two$\n"  # cron adds the final newline


def test_system_crontab_has_users_and_names_from_run_parts() -> None:
    path = CRONTABS / "etc-crontab"
    jobs = parsed(crontab_to_toml(path.read_text(), "/etc/crontab", system=True)).jobs
    assert list(jobs) == ["cron_hourly", "cron_daily", "cron_weekly", "cron_monthly"]
    assert {spec.user for spec in jobs.values()} == {"root"}
    assert jobs["cron_daily"].shell.startswith("test -x /usr/sbin/anacron || {")
    assert jobs["cron_hourly"].env["PATH"].startswith("/usr/local/sbin")


def test_cron_d_file_with_zones_shell_and_random_delay() -> None:
    path = CRONTABS / "cron.d-app"
    jobs = parsed(crontab_to_toml(path.read_text(), "/etc/cron.d/app", system=True)).jobs
    risk = jobs["recompute_risk"]
    assert risk.timezone == "Europe/Berlin" and risk.user == "app"
    assert risk.command == ("/bin/bash", "-c", "/opt/app/bin/recompute-risk")  # SHELL=/bin/bash
    assert risk.jitter == 300 and risk.env == {"PGHOST": "db.internal"}
    assert jobs["send_queued_mail"].user == "www-data"
    # TZ= changes the zone of the entries below it, and their environment.
    assert jobs["report_region"].timezone == jobs["report_region_2"].timezone == "America/New_York"
    assert jobs["report_region"].env["TZ"] == "America/New_York"


def test_odd_lines_are_reported_not_guessed() -> None:
    text = crontab_to_toml((CRONTABS / "odd.crontab").read_text(), "odd.crontab")
    assert "# line 2: unknown time zone 'Not/AZone' ignored" in text
    assert "# line 3: bad cron expression '61 * * * *'" in text
    assert "# line 4: not a cron entry, skipped: 0 0 * * *" in text
    assert "# line 5: unknown schedule '@fortnightly', skipped" in text
    jobs = parsed(text).jobs
    assert jobs["echo_100_done"].shell == 'echo "100% done" | logger -t jobd'
    assert jobs["printf_a_tb"].shell == "/usr/bin/printf 'a\\tb'"


def test_lines_that_share_a_program_are_told_apart_by_their_argument() -> None:
    commands = ["/bin/backup.sh --full", "/bin/backup.sh --incremental", "certbot renew"]
    assert job_names(commands) == ["backup_full", "backup_incremental", "certbot"]
    assert job_names(["sync.sh", "sync.sh"]) == ["sync", "sync_2"]
    text = crontab_to_toml("0 1 * * * echo a\n", "x")
    assert "rename a [jobs.NAME] table" in text


def test_unfriendly_text_stays_valid_toml() -> None:
    nasty = 'x"y\\z\x7f\x01 \u00e9 \U0001f600'
    assert tomllib.loads(f"k = {toml_string(nasty)}")["k"] == nasty
    text = crontab_to_toml(f"* * * * * echo '{nasty}'\n# ok\n", "x\ny")
    [spec] = parsed(text).jobs.values()
    assert spec.shell == f"echo '{nasty}'"


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("/usr/local/bin/backup.sh --full", "backup"),
        ("cd /srv/app && php artisan schedule:run", "artisan_schedule_run"),
        ("curl -fsS https://hc.example.com/ping/abc?x=1", "curl_hc_example_com_abc"),
        ("/usr/bin/mysqldump app > /backups/app.sql", "mysqldump_app"),
        ("nice -n 10 timeout 30 /usr/bin/backup.sh", "backup"),
        ("/usr/bin/python3 -m app.jobs.cleanup", "app_jobs_cleanup"),
        ("FOO=bar /usr/local/bin/do-thing.py", "do_thing"),
        (">/dev/null", "job"),
        ('"unbalanced', "unbalanced"),
    ],
)
def test_names_come_from_what_runs(command: str, name: str) -> None:
    assert name_from_command(command) == name


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("30 seconds", "@every 30s"),
        ("1 second", "@every 1s"),
        ("0 12 $ * *", "0 12 L * *"),
        ("@daily", "@daily"),
    ],
)
def test_pg_cron_schedules(schedule: str, expected: str) -> None:
    assert pg_cron_schedule(schedule) == expected


def test_database_urls_never_carry_a_password() -> None:
    dsn = "postgresql://admin:hunter2@db.internal:6432/postgres?sslmode=require&password=x"
    assert database_url(dsn, "app", "reporter", "localhost") == (
        "postgresql://reporter@db.internal:6432/app?sslmode=require"
    )
    assert database_url(dsn, "app", None, "10.0.0.5") == (
        "postgresql://admin@10.0.0.5:6432/app?sslmode=require"
    )


SEED_JOBS = [
    (1, "nightly_risk_recompute", "0 2 * * *", "SELECT fn_recompute_all_tenant_risk_scores()"),
    (2, "securatlas_nightly_integration_sync", "0 3 * * *", "SELECT fn_trigger_nightly_sync()"),
    (3, "token_refresh_cron", "0 */6 * * *", "SELECT fn_refresh_expiring_tokens()"),
    (4, "frequent_integration_sync", "0 */6 * * *", "SELECT fn_trigger_nightly_sync()"),
    (5, None, "30 seconds", "DELETE FROM sessions WHERE expires_at < now()"),
    (6, "month end.close", "0 23 $ * *", "CALL close_month(); VACUUM ANALYZE ledger"),
]


def test_pg_cron_rows_become_sql_jobs() -> None:
    rows = [
        {
            "jobid": jobid,
            "jobname": name,
            "schedule": schedule,
            "command": command,
            "database": "app" if jobid != 6 else "ledger",
            "username": "postgres",
            "nodename": "localhost",
            "active": jobid != 4,
        }
        for jobid, name, schedule, command in SEED_JOBS
    ]
    text = pg_cron_to_toml(rows, "postgresql://admin:pw@db.internal/postgres")
    config = parsed(text)
    names = [name for _, name, _, _ in SEED_JOBS[:4]]
    assert list(config.jobs) == [*names, "pg_cron_5", "month_end_close"]
    risk = config.jobs["nightly_risk_recompute"]
    assert risk.kind is JobKind.SQL and risk.sql == SEED_JOBS[0][3]
    assert risk.schedule == "0 2 * * *" and risk.timezone == "UTC"
    assert risk.database == "postgresql://postgres@db.internal/app"
    assert not config.jobs["frequent_integration_sync"].enabled
    assert config.jobs["pg_cron_5"].schedule == "@every 30s"
    assert config.jobs["month_end_close"].database == "postgresql://postgres@db.internal/ledger"
    assert "# pg_cron job 6 'month end.close'" in text
    assert "pw" not in text.replace("pwd", "")


# -- the commands, as a user runs them ------------------------------------------------------


def test_import_crontab_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    path = CRONTABS / "web-user.crontab"
    from_file = run_jobd("import", "crontab", str(path), "--timezone", "UTC")
    assert from_file.returncode == 0, from_file.stderr
    piped = subprocess.run(
        jobd_cmd("import", "crontab", "-", "--timezone", "UTC"),
        input=path.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0
    assert parsed(piped.stdout).jobs == parsed(from_file.stdout).jobs
    assert "# stdin line 9: * * * * * cd /srv/app" in piped.stdout
    out = tmp_path / "jobd.toml"
    out.write_text(from_file.stdout)
    check = run_jobd("validate", "--config", str(out))
    assert check.returncode == 0, check.stderr
    assert "8 jobs" in check.stderr


def test_import_crontab_usage_errors(tmp_path: Path) -> None:
    missing = run_jobd("import", "crontab", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    zone = run_jobd("import", "crontab", str(CRONTABS / "etc-crontab"), "--timezone", "Mars/Base")
    assert zone.returncode == 2 and "unknown time zone 'Mars/Base'" in zone.stderr


@pytest.fixture
def cron_schema(postgres_admin: Any, postgres_url: str) -> str:
    """A table shaped like pg_cron's cron.job (the extension is not installed here)."""
    schema = postgres_url.rsplit("%3D", 1)[1]
    with postgres_admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {schema}.job (jobid bigserial PRIMARY KEY, schedule text NOT NULL,"
            " command text NOT NULL, nodename text NOT NULL DEFAULT 'localhost',"
            " nodeport int NOT NULL DEFAULT 5432,"
            " database text NOT NULL DEFAULT current_database(),"
            " username text NOT NULL DEFAULT current_user, active boolean NOT NULL DEFAULT true,"
            " jobname text)"
        )
        for jobid, name, schedule, command in SEED_JOBS:
            cur.execute(
                f"INSERT INTO {schema}.job (jobid, jobname, schedule, command, active)"
                " VALUES (%s, %s, %s, %s, %s)",
                (jobid, name, schedule, command, jobid != 4),
            )
    return schema


def test_import_pg_cron_from_a_real_table(cron_schema: str, tmp_path: Path) -> None:
    dsn = POSTGRES_DSN
    result = run_jobd("import", "pg-cron", dsn, "--schema", cron_schema)
    assert result.returncode == 0, result.stderr
    config = parsed(result.stdout)
    assert "nightly_risk_recompute" in config.jobs and len(config.jobs) == 6
    # The jobs' database is the DSN's server and database, named after the database.
    server = urlsplit(dsn)
    [(name, url)] = config.databases.items()
    assert name == server.path.lstrip("/") and urlsplit(url).hostname == server.hostname
    assert (
        config.jobs["securatlas_nightly_integration_sync"].sql == "SELECT fn_trigger_nightly_sync()"
    )
    assert all(spec.timezone == "UTC" for spec in config.jobs.values())
    out = tmp_path / "pgcron.toml"
    out.write_text(result.stdout)
    assert run_jobd("validate", "--config", str(out)).returncode == 0


def test_import_pg_cron_without_the_table_or_the_server(cron_schema: str) -> None:
    dsn = POSTGRES_DSN
    wrong = run_jobd("import", "pg-cron", dsn, "--schema", cron_schema + "_nope")
    assert wrong.returncode == 2 and "no table" in wrong.stderr
    down = run_jobd("import", "pg-cron", "postgresql://u:hunter2@127.0.0.1:9/x")
    assert down.returncode == 69 and "hunter2" not in down.stderr
