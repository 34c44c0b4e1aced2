"""`sql` and `http` jobs through RunProcess, against the real PostgreSQL, a real
SQLite file and a real local HTTP server: output, errors, timeouts, secrets."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import JobKind, JobSpec, Settings, Status
from jobd.runs.process import RunProcess
from tests.conftest import wait_for
from tests.httpserver import Server, http_server_fixture  # noqa: F401 - a fixture
from tests.test_runner import SETTINGS, Execution, a_run

SECRET = "s3cr3t-Token-4711"


def sql_job(statement: str, **changes: object) -> JobSpec:
    spec = JobSpec(name="sqljob", schedule=None, kind=JobKind.SQL, sql=statement)
    return replace(spec, **changes)


def http_job(request: dict[str, Any], **changes: object) -> JobSpec:
    full = {"method": "GET", "headers": {}, "expect": [], **request}
    spec = JobSpec(name="httpjob", schedule=None, kind=JobKind.HTTP, http=full)
    return replace(spec, **changes)


class StoreExecution(Execution):
    """An Execution whose RunProcess knows the store URL (the default database)."""

    def __init__(
        self,
        spec: JobSpec,
        store_url: str | None = None,
        base_env: dict[str, str] | None = None,
        settings: Settings = SETTINGS,
    ) -> None:
        self.events = []
        self.process = RunProcess(
            a_run(), spec, settings, self.events.append, base_env or {}, store_url=store_url
        )
        self.started_at = time.monotonic()
        self.process.start()


def run(spec: JobSpec, store_url: str | None = None, **kwargs: Any) -> Any:
    done = StoreExecution(spec, store_url, **kwargs).finish()
    return done.outcome, done.log


# -- sql on PostgreSQL ---------------------------------------------------------------


@pytest.fixture
def pg(postgres_url: str, postgres_admin: Any) -> str:
    schema = postgres_url.rsplit("%3D", 1)[1]
    with postgres_admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {schema}.tenant_risk (tenant int, score int);"
            f"CREATE FUNCTION {schema}.fn_recompute() RETURNS int LANGUAGE plpgsql AS $$"
            f" BEGIN RAISE NOTICE 'recomputing % tenants', 3;"
            f" INSERT INTO {schema}.tenant_risk SELECT g, g * 10 FROM generate_series(1, 3) g;"
            f" RETURN 3; END $$"
        )
    return postgres_url


def test_sql_runs_against_the_store_when_it_names_it(pg: str, postgres_admin: Any) -> None:
    spec = sql_job("SELECT fn_recompute() AS recomputed", database="store")
    outcome, log = run(spec, store_url=pg)
    assert outcome.status is Status.SUCCEEDED, log
    assert "NOTICE:  recomputing 3 tenants" in log
    assert log.endswith("recomputed\n----------\n3\n(1 row)\nSELECT 1\n")
    schema = pg.rsplit("%3D", 1)[1]
    with postgres_admin.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {schema}.tenant_risk")
        assert cur.fetchone()[0] == 3  # autocommit: the work stays


def test_sql_shows_the_first_20_rows_and_the_count(pg: str) -> None:
    spec = sql_job("SELECT g FROM generate_series(1, 30) g", database="store")
    outcome, log = run(spec, store_url=pg)
    assert outcome.status is Status.SUCCEEDED
    lines = log.splitlines()
    assert lines[2:22] == [str(n) for n in range(1, 21)]
    assert "… 10 more rows not shown" in lines and "(30 rows)" in lines and "SELECT 30" in lines


def test_sql_error_carries_sqlstate_and_message(pg: str) -> None:
    outcome, log = run(sql_job("SELECT fn_missing()", database=pg))
    assert outcome.status is Status.FAILED and outcome.exit_code == 1
    assert outcome.error == "SQLSTATE 42883: function fn_missing() does not exist"
    assert "HINT:" in log  # the server's detail lines stay in the log


def test_sql_timeout_stops_the_statement_on_the_server(pg: str, postgres_admin: Any) -> None:
    marker = f"pg_sleep(30.{int(time.time() * 1000) % 1000:03d})"
    spec = sql_job(f"SELECT {marker}", database=pg, timeout=1.0)
    outcome, log = run(spec)
    assert outcome.status is Status.TIMED_OUT
    assert "SQLSTATE 57014" in log  # statement_timeout or the cancel, whichever came first

    def statement_gone() -> bool:
        with postgres_admin.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'"
                " AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            )
            return cur.fetchone()[0] == 0

    wait_for(statement_gone, timeout=5)


def test_sql_password_stays_out_of_argv_and_output(pg: str, postgres_admin: Any) -> None:
    """The URL goes to the child through its environment; ${PW} is filled in there."""
    role = f"jobd_pw_{int(time.time() * 1000) % 10**9}"
    with postgres_admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (SECRET,))
    try:
        # 127.0.0.1 trusts every role, so any password works; a wrong database name
        # makes the server's error name the database, never the password.
        url = pg.replace("postgresql://postgres@", f"postgresql://{role}:${{PW}}@")
        execution = StoreExecution(
            sql_job("SELECT pg_sleep(1)", database=url), base_env={"PW": SECRET}
        )
        pid = execution.wait_started()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline and b"postgresql" not in cmdline
        done = execution.finish()
        assert done.outcome.status is Status.SUCCEEDED, done.log
        assert SECRET not in done.log
    finally:
        with postgres_admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            cur.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("database", [None, "store"])
def test_sql_without_a_database_on_a_sqlite_store_fails_clearly(
    tmp_path: Path, database: str | None
) -> None:
    spec = sql_job("SELECT 1", database=database)
    outcome, _log = run(spec, store_url=f"sqlite:///{tmp_path}/jobd.db")
    assert outcome.status is Status.FAILED
    assert outcome.error is not None and outcome.error.startswith("no database")


def test_sql_without_a_database_never_gets_the_store(pg: str) -> None:
    # Stored by an older jobd, when the store was the default: no longer.
    outcome, _log = run(sql_job("SELECT 1"), store_url=pg)
    assert outcome.status is Status.FAILED
    assert outcome.error is not None and outcome.error.startswith("no database")


def test_sql_unset_placeholder_fails_without_connecting() -> None:
    outcome, _log = run(sql_job("SELECT 1", database="postgresql://u:${NOPE}@h/d"))
    assert outcome.error == "database: ${NOPE} is not set in the job's environment"


# -- sql on SQLite ---------------------------------------------------------------------


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, expired INTEGER)")
        conn.executemany("INSERT INTO sessions (expired) VALUES (?)", [(i % 2,) for i in range(8)])
    return path


def test_sql_on_a_sqlite_file(app_db: Path) -> None:
    url = f"sqlite:///{app_db}"
    outcome, log = run(sql_job("DELETE FROM sessions WHERE expired = 1", database=url))
    assert outcome.status is Status.SUCCEEDED and "(4 rows changed)" in log
    outcome, log = run(sql_job("SELECT count(*) AS n FROM sessions", database=url))
    assert log == "n\n-\n4\n(1 row)\n"


def test_sql_script_on_sqlite_runs_every_statement(app_db: Path) -> None:
    url = f"sqlite:///{app_db}"
    script = "DELETE FROM sessions WHERE id > 6; UPDATE sessions SET expired = 0"
    outcome, log = run(sql_job(script, database=url))
    assert outcome.status is Status.SUCCEEDED and "script executed" in log
    with sqlite3.connect(app_db) as conn:
        assert conn.execute("SELECT count(*), sum(expired) FROM sessions").fetchone() == (6, 0)


def test_sql_error_on_sqlite(app_db: Path) -> None:
    outcome, _log = run(sql_job("SELECT * FROM nope", database=f"sqlite:///{app_db}"))
    assert outcome.status is Status.FAILED
    assert outcome.error == "SQLITE_ERROR: no such table: nope"


def test_sql_never_creates_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    outcome, _log = run(sql_job("SELECT 1", database=f"sqlite:///{missing}"))
    assert outcome.status is Status.FAILED and not missing.exists()


# -- http ------------------------------------------------------------------------------


def test_http_sends_method_headers_and_json(http_server: Server) -> None:
    spec = http_job(
        {
            "method": "POST",
            "url": http_server.url + "/echo",
            "headers": {"Authorization": "Bearer ${SERVICE_KEY}", "X-Tenant": "${TENANT}"},
            "json": {"connection_id": 7, "token": "${SERVICE_KEY}"},
            "expect": [200, 202],
        },
        env={"TENANT": "tenant-a"},
    )
    outcome, log = run(spec, base_env={"SERVICE_KEY": SECRET})
    assert outcome.status is Status.SUCCEEDED, log
    seen = http_server.requests[-1]
    assert seen.method == "POST" and seen.path == "/echo"
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.headers["X-Tenant"] == "tenant-a"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json == {"connection_id": 7, "token": SECRET}
    # The server echoed the secret back; the log shows *** instead.
    assert SECRET not in log and "Bearer ***" in log
    assert f"POST {http_server.url}/echo" in log
    assert any(
        line.startswith("HTTP 200 OK in ") and line.endswith(" ms") for line in log.splitlines()
    )


def test_http_status_outside_expect_fails_the_run(http_server: Server) -> None:
    spec = http_job({"url": http_server.url + "/status/503", "expect": [200, 202]})
    outcome, _log = run(spec)
    assert outcome.status is Status.FAILED and outcome.exit_code == 1
    assert outcome.error == "HTTP 503 Service Unavailable (expected 200, 202)"


def test_http_default_expect_is_any_2xx(http_server: Server) -> None:
    assert run(http_job({"url": http_server.url + "/status/204"}))[0].status is Status.SUCCEEDED
    outcome, _ = run(http_job({"url": http_server.url + "/status/404"}))
    assert outcome.error == "HTTP 404 Not Found (expected 2xx)"


def test_http_timeout_applies(http_server: Server) -> None:
    outcome, _ = run(http_job({"url": http_server.url + "/sleep/5"}, timeout=0.5))
    assert outcome.status is Status.TIMED_OUT


def test_http_no_answer_fails_with_the_reason() -> None:
    outcome, _ = run(http_job({"url": "http://127.0.0.1:9/"}))
    assert outcome.status is Status.FAILED
    assert outcome.error is not None and outcome.error.startswith("no answer after")


def test_http_unset_variable_fails_before_any_request(http_server: Server) -> None:
    spec = http_job({"url": http_server.url + "/echo", "headers": {"A": "${MISSING}"}})
    outcome, _ = run(spec)
    assert outcome.error == "${MISSING} is not set in the job's environment"
    assert http_server.requests == []


def test_secret_env_from_the_daemon_environment_is_masked() -> None:
    """A secret kept out of the config (and so the store) is still masked in output."""
    spec = JobSpec(
        name="job",
        schedule=None,
        kind=JobKind.SHELL,
        shell='echo "token=$API_TOKEN"',
        secret_env=("API_TOKEN",),
    )
    outcome, log = run(spec, base_env={"API_TOKEN": SECRET, "PATH": "/usr/bin:/bin"})
    assert outcome.status is Status.SUCCEEDED and log == "token=***\n"


def test_sql_database_malformed_once_filled_in_fails_without_its_password() -> None:
    # A password with an '@' and a '[' in it, not percent-encoded: libpq would
    # quote the whole URL in its error.
    spec = sql_job("SELECT 1", database="postgresql://u:${PW}@127.0.0.1:1/d")
    outcome, log = run(spec, base_env={"PW": "S3c@[ret-91"})
    assert outcome.status is Status.FAILED
    assert outcome.error is not None and outcome.error.startswith("database: ")
    assert "S3c" not in log + outcome.error and "ret-91" not in log + outcome.error
