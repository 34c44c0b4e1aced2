"""Shared fixtures: a fresh store per test on SQLite (a file in tmp_path) and on PostgreSQL.

PostgreSQL comes from $JOBD_TEST_POSTGRES_DSN (default: the local server). Each
test gets its own schema, dropped afterwards. With CI=true an unreachable server
fails the run; elsewhere the PostgreSQL cases are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import pytest_runtest_makereport, reliability

POSTGRES_DSN = os.environ.get("JOBD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["sqlite", "postgresql"]


def _postgres_admin() -> Any:
    import psycopg2

    conn = psycopg2.connect(POSTGRES_DSN, connect_timeout=5)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    try:
        conn = _postgres_admin()
    except Exception as exc:
        message = f"PostgreSQL at {POSTGRES_DSN} is unreachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    yield conn
    conn.close()


def dsn_with_password(password: str, dsn: str = POSTGRES_DSN) -> str:
    """$JOBD_TEST_POSTGRES_DSN with a password in it (the test server trusts any)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = (parts.username or "postgres") if "@" in parts.netloc else "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def schema_url(schema: str) -> str:
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return f"{POSTGRES_DSN}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url(postgres_admin: Any) -> Iterator[str]:
    schema = f"jobd_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    yield schema_url(schema)
    with postgres_admin.cursor() as cur:
        # Terminate leftover daemon connections so the drop cannot block.
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query ILIKE %s",
            (f"%{schema}%",),
        )
        cur.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobd.db'}"


URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url"}


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(URL_FIXTURES[request.param])


def open_store(url: str, **options: Any) -> Any:
    """A store as jobd's own processes open it: with this host's hooks, so its
    commits wake the daemons and it asks their liveness locks (jobd.system.hooks)."""
    from jobd.store import open_store as open_bare
    from jobd.system.hooks import HOST

    return open_bare(url, hooks=HOST, **options)


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


def finish_run(store: Any, run_id: int, instance: str, outcome: Any, follow_ups: Any = ()) -> bool:
    """End a running run as a daemon does, through the store's one end-run path;
    False when `instance` no longer runs it."""
    return bool(store.record_progress({}, {}, [(run_id, instance, outcome, follow_ups)])[0])


def write_output(store: Any, run_id: int, text: str, total: int | None = None) -> None:
    """Record a run's output tail as a daemon does (`total`: all bytes seen)."""
    seen = len(text.encode()) if total is None else total
    store.record_progress({}, {run_id: (text, seen)}, [])


def jobd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobd", *args]


def run_jobd(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("JOBD_CONFIG", None) if env is None or "JOBD_CONFIG" not in env else None
    return subprocess.run(
        jobd_cmd(*args), capture_output=True, text=True, env=full_env, timeout=60, **kwargs
    )


__all__ = ["pytest_runtest_makereport", "reliability"]  # the scoreboard, see tests.reliability
