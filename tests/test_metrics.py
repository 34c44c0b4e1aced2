"""Prometheus metrics from a real daemon's /metrics and from `jobd metrics`, parsed
with prometheus_client's own parser, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

import jobd.observe.metrics
from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Trigger
from jobd.store import Store
from jobd.store.reader import Reader
from tests.conftest import open_store, run_jobd, wait_for
from tests.daemons import Daemons, config_text, toml_value
from tests.httpserver import Server, http_server_fixture  # noqa: F401
from tests.receivers import free_port

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()
    for daemon in started.started:
        print(f"--- {daemon.log_path.name} (exit {daemon.proc.returncode})\n{daemon.log()}")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(answer.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


TWO_JOBS = '[jobs.a]\ncommand = ["true"]\nschedule = "* * * * *"\n[jobs.b]\ncommand = ["true"]\n'
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "jobd.json"


def exported_names(text: str) -> set[str]:
    """Every series name a scrape declares, with or without samples yet."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def dashboard_metrics() -> set[str]:
    exprs = [
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    ]
    found = {name for expr in exprs for name in re.findall(r"\bjobd_[a-z_]+", expr)}
    assert len(found) >= 12
    return found


def write_config(daemons: Daemons, port: int, hook: str | None = None, **settings: Any) -> Path:
    jobs = {
        "ok": {"command": ["true"]},
        "bad": {"shell": "exit 3"},
        "yearly": {"command": ["true"], "schedule": "0 0 1 1 *"},
    }
    text = config_text(jobs, **settings) + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    if hook:
        text += f'\n[notify.ops]\ntype = "webhook"\nurl = {toml_value(hook)}\n'
        text = text.replace("[jobd]\n", '[jobd]\nnotify = ["ops"]\n', 1)
    daemons.config.write_text(text)
    daemons.config.chmod(0o644)
    return daemons.config


def trigger(store: Store, job: str) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


def test_a_daemon_serves_its_runs_and_the_stores_gauges(
    store_url: str, store: Store, daemons: Daemons, http_server: Server
) -> None:
    port = free_port()
    write_config(daemons, port, hook=f"{http_server.url}/hook")
    daemon = daemons.start(store_url)
    store.set_paused("yearly", True, store.now())
    for job in ("ok", "bad"):
        trigger(store, job)

    def settled() -> Samples | None:
        samples = scrape(port)
        delivered = value(samples, "jobd_notifications_total", channel="ops", result="delivered")
        ended = value(samples, "jobd_runs_total", job_name="bad", status="failed", trigger="manual")
        return samples if delivered and ended else None

    samples = wait_for(settled, timeout=20)
    assert (
        value(samples, "jobd_runs_total", job_name="ok", status="succeeded", trigger="manual") == 1
    )
    assert value(samples, "jobd_run_duration_seconds_count", job_name="ok") == 1
    assert value(samples, "jobd_fire_delay_seconds_count") == 2
    assert value(samples, "jobd_is_leader") == 1
    assert value(samples, "jobd_running") == 0
    assert value(samples, "jobd_queue_depth") == 0
    assert value(samples, "jobd_store_errors_total") == 0
    if store.backend == "postgresql":  # the table lease has an epoch; the file lock none
        assert (value(samples, "jobd_lease_epoch") or 0) >= 1
    yearly = datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC).timestamp()
    assert value(samples, "jobd_job_next_fire_timestamp_seconds", job_name="yearly") == yearly
    assert value(samples, "jobd_job_next_fire_timestamp_seconds", job_name="ok") is None
    assert value(samples, "jobd_job_paused", job_name="yearly") == 1
    assert value(samples, "jobd_job_paused", job_name="ok") == 0
    last_ok = value(samples, "jobd_job_last_success_timestamp_seconds", job_name="ok")
    assert last_ok is not None and abs(last_ok - datetime.now(UTC).timestamp()) < 60
    assert value(samples, "jobd_job_last_success_timestamp_seconds", job_name="bad") is None
    assert not any(name.endswith("_created") for name, _ in samples)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        exported = exported_names(answer.read().decode())
    missing = dashboard_metrics() - exported
    assert not missing, f"the dashboard names metrics no scrape has: {missing}"

    # `jobd metrics` prints the store's gauges, for a textfile collector.
    printed = run_jobd("--config", str(daemons.config), "--store", store_url, "metrics")
    assert printed.returncode == 0, printed.stderr
    text = parse(printed.stdout)
    assert value(text, "jobd_job_paused", job_name="yearly") == 1
    assert value(text, "jobd_job_next_fire_timestamp_seconds", job_name="yearly") == yearly
    assert value(text, "jobd_running") == 0
    daemon.stop()


def test_a_standby_exports_no_store_gauges_so_sums_are_not_doubled(
    postgres_url: str, store: Any, daemons: Daemons, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    write_config(daemons, ports[0])
    first = daemons.start(postgres_url, name="a")
    assert first.leading
    write_config(daemons, ports[1])
    second = daemons.start(postgres_url, name="b")
    assert not second.leading
    leader, standby = scrape(ports[0]), wait_for(lambda: scrape(ports[1]))
    assert value(leader, "jobd_is_leader") == 1 and value(standby, "jobd_is_leader") == 0
    assert value(leader, "jobd_queue_depth") == 0
    assert value(standby, "jobd_queue_depth") is None
    assert not [n for n, _ in standby if n.startswith("jobd_job_")]
    assert value(standby, "jobd_running") == 0  # its own runs: summed, counted once


def test_a_scrape_reads_the_store_with_two_indexed_statements_on_sqlite(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobd.observe.metrics, "_instance", None)  # no daemon in this process
    store = open_store(sqlite_url)
    store.apply_config(parse_config(TWO_JOBS), store.now())
    trigger(store, "a")
    store.close()
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    samples = parse(jobd.observe.metrics.render(Reader(conn, "sqlite")).decode())
    assert value(samples, "jobd_queue_depth") == 1
    assert value(samples, "jobd_job_paused", job_name="b") == 0
    assert len(statements) == 2
    conn.set_trace_callback(None)
    plans = [
        " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + statement))
        for statement in statements
    ]
    # Each job's last success from job_successes by its key: the history is not read.
    assert "executions" not in plans[0], plans[0]
    assert "SEARCH s USING PRIMARY KEY (job=?)" in plans[0], plans[0]
    assert "INDEX executions_status" in plans[1], plans[1]
    conn.close()


def test_a_scrape_shows_what_changed_since_the_last_one(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unchanged jobs' lines are reused between scrapes: a changed row is written anew."""
    monkeypatch.setattr(jobd.observe.metrics, "_instance", None)
    store = open_store(sqlite_url)
    store.apply_config(parse_config(TWO_JOBS), store.now())
    before = parse(jobd.observe.metrics.render(store).decode())
    assert value(before, "jobd_job_paused", job_name="a") == 0
    store.set_paused("a", True, store.now())
    store.apply_config(parse_config('[jobs.a]\ncommand = ["true"]\n'), store.now())
    after = parse(jobd.observe.metrics.render(store).decode())
    store.close()
    assert value(after, "jobd_job_paused", job_name="a") == 1
    assert value(after, "jobd_job_paused", job_name="b") is None  # removed from the config
    assert value(before, "jobd_job_next_fire_timestamp_seconds", job_name="a") is not None
    assert value(after, "jobd_job_next_fire_timestamp_seconds", job_name="a") is None


class CountingCursor(psycopg2.extensions.cursor):
    statements: list[str] = []

    def execute(self, query: Any, vars: Any = None) -> Any:
        self.statements.append(query)
        return super().execute(query, vars)


def test_a_scrape_reads_the_store_with_two_indexed_statements_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted on the connection, and each plan read: neither statement reads
    the history beyond the (status, not_before) index."""
    monkeypatch.setattr(jobd.observe.metrics, "_instance", None)
    store = open_store(postgres_url)
    store.apply_config(parse_config(TWO_JOBS), store.now())
    trigger(store, "a")
    store.close()
    conn = psycopg2.connect(postgres_url, cursor_factory=CountingCursor)
    conn.autocommit = True
    CountingCursor.statements = []
    samples = parse(jobd.observe.metrics.render(Reader(conn, "postgresql")).decode())
    statements = list(CountingCursor.statements)
    assert value(samples, "jobd_queue_depth") == 1
    assert value(samples, "jobd_job_paused", job_name="b") == 0
    assert len(statements) == 2
    cursor = conn.cursor()
    cursor.execute("SET enable_seqscan = off")  # tiny tables: the plan with real sizes
    plans = []
    for statement, params in zip(statements, ((False,), ("queued", "running")), strict=True):
        cursor.execute("EXPLAIN " + statement, params)
        plans.append("\n".join(row[0] for row in cursor.fetchall()))
    conn.close()
    assert "executions" not in plans[0], plans[0]
    assert "job_successes" in plans[0], plans[0]
    assert "executions_status" in plans[1], plans[1]
