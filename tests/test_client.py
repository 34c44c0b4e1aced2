"""The Python client, directly on the store and over HTTP, in the same scenarios
against one real daemon: the same results and the same error types."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from jobd import Client
from jobd.errors import ConfigError, InvalidState, NoDaemon, NotFound, QuotaRefused
from tests.apihelp import Api, api, go_file, served
from tests.clihelp import postgresql_url
from tests.conftest import wait_for

__all__ = ["api", "postgresql_url", "served"]  # fixtures


def client_for(api: Api, mode: str) -> Client:
    if mode == "direct":
        return Client(store=api.store_url, config=str(api.tmp_path / "jobd.toml"), actor="app")
    return Client(url=api.base, token=api.token("app"))


@pytest.fixture(params=["direct", "http"])
def client(request: pytest.FixtureRequest, api: Api) -> Iterator[Client]:
    made = client_for(api, request.param)
    yield made
    made.close()


def test_trigger_wait_logs_and_history(client: Client, api: Api) -> None:
    run = client.trigger("quick")
    assert run.job == "quick" and run.triggered_by == "app"
    done = run.wait(timeout=60)
    assert done.id == run.id and done.succeeded and done.exit_code == 0
    assert client.logs(run.id) == "hello\nworld\n"
    listed = client.executions(job="quick", limit=10)
    assert [r.id for r in listed] == [run.id] and listed[0].status == "succeeded"
    assert client.execution(run.id).finished_at is not None
    event = client.audit(5)[0]
    assert (event.action, event.actor, event.target) == ("trigger", "app", "quick")
    with pytest.raises(NotFound, match=r"unknown job 'quik' \(did you mean 'quick'\?\)"):
        client.trigger("quik")
    with pytest.raises(NotFound):
        client.executions(job="nope")
    with pytest.raises(InvalidState, match="already ended: succeeded"):
        client.cancel(run.id)


def test_follow_streams_until_the_run_ends(client: Client, api: Api) -> None:
    run = client.trigger("held")
    with pytest.raises(TimeoutError):
        run.wait(timeout=0.2)
    chunks: list[str] = []
    follower = threading.Thread(target=lambda: chunks.extend(client.logs(run.id, follow=True)))
    follower.start()
    wait_for(lambda: "".join(chunks) == "first\n")
    go_file(api.tmp_path, "held").touch()
    follower.join(30)
    assert not follower.is_alive() and "".join(chunks) == "first\nsecond\n"
    assert client.execution(run.id).status == "succeeded"


def test_jobs_pause_schedule_and_quota(client: Client, api: Api) -> None:
    assert [j.name for j in client.jobs()] == ["held", "quick", "scan_a", "scan_b"]
    assert client.pause("quick") is True and client.pause("quick") is False
    assert client.job("quick").paused is True
    assert client.resume("quick") is True
    made = client.schedule("nightly", "0 2 * * *", ["true"], timezone="Europe/Berlin")
    assert made.created is True and made.next_fire is not None
    assert client.schedule("nightly", "@hourly", ["true"]).created is False
    job = client.job("nightly")
    assert job.schedule == "@hourly" and job.source == "cli" and len(job.next_fires) == 5
    with pytest.raises(ConfigError, match="key 'schedule'"):
        client.schedule("nightly", "not a schedule", ["true"])
    client.unschedule("nightly")
    with pytest.raises(NotFound):
        client.job("nightly")
    first = client.trigger("scan_a")  # [groups.tenant-a] max_active = 1
    with pytest.raises(QuotaRefused, match="scan_a: refused: "):
        client.trigger("scan_a")
    assert client.cancel(first.id) in ("queued", "running")
    go_file(api.tmp_path, "scan_a").touch()


@pytest.mark.parametrize("mode", ["direct", "http"])
def test_no_live_daemon_is_no_daemon(served: Api, mode: str) -> None:
    with client_for(served, mode) as client:
        with pytest.raises(NoDaemon, match="Nothing was queued"):
            client.trigger("quick")
        assert client.executions() == []


def test_the_http_mode_never_loads_the_store() -> None:
    """A web app that drives jobd over HTTP does not pay for the store's ORM."""
    code = (
        "import sys; from jobd import Client; Client(url='http://127.0.0.1:9'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('peewee', 'psycopg2') "
        "or m.startswith(('jobd.store', 'jobd.ops'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
