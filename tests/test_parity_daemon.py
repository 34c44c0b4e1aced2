"""Real `jobd run` processes executing sql jobs (against PostgreSQL and a SQLite
file) and http jobs (against a local server), and skipping fires over a group's
quota. Each reads the outcome from the store, as an operator would."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Outcome, Run, Status, Trigger
from jobd.store import Store
from tests.conftest import finish_run, open_store, run_jobd, wait_for
from tests.daemons import jobd_daemon
from tests.httpserver import Server, http_server_fixture  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

FAST = '[jobd]\nlease_ttl = "3s"\nkill_grace = "1s"\nshutdown_grace = "2s"\n'
SECRET = "sk_live_9d8e7f6a5b4c"


@pytest.fixture
def opened(request: pytest.FixtureRequest) -> Any:
    stores: list[Store] = []

    def open_one(url: str) -> Store:
        stores.append(open_store(url))
        return stores[-1]

    yield open_one
    for store in stores:
        store.close()


def finished(store: Store, job: str, count: int = 1) -> list[Run]:
    """Wait for `count` runs of `job` that ran to an end; oldest first, with their logs.

    Fires the overlap policy skipped do not count: on a loaded machine a run can
    outlast the one-second schedules these tests use."""

    def done() -> list[Run] | None:
        runs = [
            r
            for r in store.executions(job=job, limit=None, with_log=True)
            if r.status.final and r.status is not Status.SKIPPED
        ]
        return runs[::-1] if len(runs) >= count else None

    return wait_for(done, timeout=30)


def test_sql_jobs_on_the_postgresql_store(
    tmp_path: Path, postgres_url: str, postgres_admin: Any, opened: Any
) -> None:
    schema = postgres_url.rsplit("%3D", 1)[1]
    with postgres_admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {schema}.risk_snapshots (at timestamptz DEFAULT now(), score int);"
            f"CREATE FUNCTION {schema}.fn_recompute_all_tenant_risk_scores() RETURNS int"
            f" LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'scored % tenants', 2;"
            f" INSERT INTO {schema}.risk_snapshots (score) VALUES (10), (20); RETURN 2; END $$"
        )
    config = tmp_path / "jobd.toml"
    config.write_text(
        FAST + f'store = "{postgres_url}"\n'
        "[jobs.risk]\n"
        'schedule = "* * * * * *"\n'
        'sql = "SELECT fn_recompute_all_tenant_risk_scores() AS tenants"\n'
        'database = "store"\n'
        'timeout = "10s"\n'
        "[jobs.broken]\n"
        'schedule = "* * * * * *"\n'
        'sql = "SELECT fn_does_not_exist()"\n'
        'database = "store"\n'
    )
    with jobd_daemon(config, postgres_url):
        store = opened(postgres_url)
        risk = finished(store, "risk")[0]
        broken = finished(store, "broken")[0]
    assert risk.status is Status.SUCCEEDED, risk.log
    assert "NOTICE:  scored 2 tenants" in risk.log
    assert "tenants\n-------\n2\n(1 row)\nSELECT 1\n" in risk.log
    assert broken.status is Status.FAILED and broken.exit_code == 1
    assert broken.error == "SQLSTATE 42883: function fn_does_not_exist() does not exist"
    with postgres_admin.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {schema}.risk_snapshots")
        assert cur.fetchone()[0] >= 2


def test_sql_job_on_a_sqlite_file(tmp_path: Path, opened: Any) -> None:
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at INTEGER)")
        conn.executemany(
            "INSERT INTO sessions (expires_at) VALUES (?)", [(0,), (0,), (0,), (4102444800,)]
        )
    config = tmp_path / "jobd.toml"
    config.write_text(
        FAST + f'[databases]\napp = "sqlite:///{app}"\n'
        "[jobs.expire_sessions]\n"
        'schedule = "* * * * * *"\n'
        "sql = \"DELETE FROM sessions WHERE expires_at < strftime('%s', 'now')\"\n"
        'database = "app"\n'
    )
    store_url = f"sqlite:///{tmp_path / 'jobd.db'}"
    with jobd_daemon(config, store_url):
        run = finished(opened(store_url), "expire_sessions")[0]
    assert run.status is Status.SUCCEEDED and run.log == "(3 rows changed)\n"
    with sqlite3.connect(app) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1


def test_http_jobs_with_a_secret_that_never_reaches_the_store(
    tmp_path: Path, http_server: Server, opened: Any
) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text(
        FAST
        + "[jobs.trigger_sync]\n"
        + 'schedule = "* * * * * *"\n'
        + 'secret_env = ["SERVICE_KEY"]\n'
        + 'env = { TENANT = "tenant-a" }\n'
        + f'http = {{ method = "POST", url = "{http_server.url}/echo", '
        + 'headers = { Authorization = "Bearer ${SERVICE_KEY}", X-Tenant = "${TENANT}" }, '
        + "json = { connection_id = 42, full = true }, expect = [200, 202] }\n"
        + "[jobs.flaky]\n"
        + f'http = {{ url = "{http_server.url}/status/500", expect = [200] }}\n'
        + 'retries = 1\nretry_delay = "0s"\n'
    )
    store_url = f"sqlite:///{tmp_path / 'jobd.db'}"
    with jobd_daemon(config, store_url, env={"SERVICE_KEY": SECRET}):
        store = opened(store_url)
        wait_for(lambda: store.job("flaky"))  # the daemon has applied the config
        store.enqueue(NewRun("flaky", Trigger.MANUAL, store.now()))
        sync = finished(store, "trigger_sync")[0]
        flaky = finished(store, "flaky", count=2)
    assert sync.status is Status.SUCCEEDED, sync.log
    seen = next(r for r in http_server.requests if r.path == "/echo")
    assert seen.method == "POST"
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.headers["X-Tenant"] == "tenant-a"
    assert seen.json == {"connection_id": 42, "full": True}
    assert sync.log.startswith(f"POST {http_server.url}/echo\nHTTP 200 OK in ")
    assert "Bearer ***" in sync.log  # the server echoed it; the log masks it
    assert [r.attempt for r in flaky] == [1, 2]  # retries apply
    assert {r.error for r in flaky} == {"HTTP 500 Internal Server Error (expected 200)"}
    # Nowhere in the store: not the jobs table, not the runs, not the audit trail.
    db = sqlite3.connect(tmp_path / "jobd.db")
    for table in ("jobs", "executions", "audit_events", "instances"):
        for row in db.execute(f"SELECT * FROM {table}"):
            assert SECRET not in repr(row), table
    db.close()
    assert SECRET not in (tmp_path / "jobd.log").read_text()


def test_scheduled_fires_over_the_group_quota_are_skipped(tmp_path: Path, opened: Any) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text(
        FAST + "[groups.tenant-a]\nmax_active = 1\n"
        "[jobs.scan_1]\n"
        'schedule = "* * * * * *"\ncommand = ["sleep", "3"]\ngroup = "tenant-a"\n'
        "[jobs.scan_2]\n"
        'schedule = "* * * * * *"\ncommand = ["sleep", "3"]\ngroup = "tenant-a"\n'
    )
    store_url = f"sqlite:///{tmp_path / 'jobd.db'}"
    reason = "group 'tenant-a' is at its quota: 1 of max_active = 1 runs queued or running"
    with jobd_daemon(config, store_url):
        store = opened(store_url)

        def skipped_for_quota() -> list[Run]:
            runs = store.executions(limit=None)
            return [r for r in runs if r.status is Status.SKIPPED and r.error == reason]

        wait_for(skipped_for_quota, timeout=20)
        active = [r for r in store.executions(limit=None) if not r.status.final]
    assert len(active) <= 1
    assert "fire skipped: group 'tenant-a' is at its quota" in (tmp_path / "jobd.log").read_text()


def test_the_daemon_keeps_each_group_to_max_retained(tmp_path: Path, opened: Any) -> None:
    text = (
        FAST + "[groups.tenant-a]\nmax_retained = 3\n"
        '[jobs.a1]\ncommand = ["true"]\ngroup = "tenant-a"\n'
        '[jobs.a2]\ncommand = ["true"]\ngroup = "tenant-a"\n'
        '[jobs.other]\ncommand = ["true"]\n'
    )
    config = tmp_path / "jobd.toml"
    config.write_text(text)
    store_url = f"sqlite:///{tmp_path / 'jobd.db'}"
    store = opened(store_url)
    store.apply_config(parse_config(text), store.now())
    for job in ["a1", "a2", "other"] * 3:
        run_id = store.enqueue(NewRun(job, Trigger.MANUAL, store.now()))
        store.claim_run(run_id, "old", "h")
        finish_run(store, run_id, "old", Outcome(Status.SUCCEEDED, 0))
    with jobd_daemon(config, store_url):
        # The daemon prunes at start: the group's newest 3 of 6 stay, `other` keeps all.
        wait_for(lambda: len(store.executions(limit=None)) == 6, timeout=20)
    kept = store.executions(limit=None)
    assert sorted(r.id for r in kept if r.job != "other") == [5, 7, 8]
    assert len([r for r in kept if r.job == "other"]) == 3


def test_a_manual_trigger_over_quota_is_refused_while_a_daemon_runs(
    tmp_path: Path, opened: Any
) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text(
        FAST + "[groups.tenant-a]\nmax_active = 1\n"
        '[jobs.scan]\ncommand = ["sleep", "30"]\ngroup = "tenant-a"\n'
        '[jobs.report]\ncommand = ["true"]\ngroup = "tenant-a"\n'
    )
    store_url = f"sqlite:///{tmp_path / 'jobd.db'}"
    args = ("--config", str(config), "--store", store_url)
    with jobd_daemon(config, store_url):
        store = opened(store_url)
        wait_for(lambda: store.job("scan"))
        first = run_jobd(*args, "trigger", "scan")
        assert first.returncode == 0, first.stderr
        wait_for(lambda: store.execution(int(first.stdout)).status is Status.RUNNING)
        refused = run_jobd(*args, "trigger", "report", "--wait")
        assert refused.returncode == 75, refused.stderr
        assert "is at its quota: 1 of max_active = 1" in refused.stderr
        assert run_jobd(*args, "cancel", first.stdout.strip()).returncode == 0
        wait_for(lambda: store.execution(int(first.stdout)).status.final)
        # Room again: the same trigger is now accepted, and runs.
        again = run_jobd(*args, "trigger", "report", "--wait")
        assert again.returncode == 0, again.stderr
    actions = [e["action"] for e in store.audit_events(10)]
    assert actions.count("quota.refused") == 1
