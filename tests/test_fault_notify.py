"""Notifications under faults, on SQLite and PostgreSQL: a receiver that is down
then comes back hears once; a receiver that hangs never delays a fire; a run
abandoned by a killed daemon is told by the daemon that finds it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from jobd.store import Store
from tests.conftest import wait_for
from tests.daemons import Daemons, config_text, toml_value
from tests.httpserver import Server, http_server_fixture  # noqa: F401
from tests.receivers import LateServer

pytestmark = [pytest.mark.slow, pytest.mark.fault]


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()
    for daemon in started.started:  # shown by pytest when the test failed
        print(f"--- {daemon.log_path.name} (exit {daemon.proc.returncode})\n{daemon.log()}")


def write_config(
    daemons: Daemons, jobs: dict[str, dict[str, Any]], hook: str, **channel: Any
) -> Path:
    text = config_text(jobs)
    text += f'\n[notify.ops]\ntype = "webhook"\nurl = {toml_value(hook)}\n'
    text += "".join(f"{key} = {toml_value(value)}\n" for key, value in channel.items())
    daemons.config.write_text(text)
    daemons.config.chmod(0o644)
    return daemons.config


def trigger(store: Store, job: str) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


def hooks(server: Server) -> list[Any]:
    return [r for r in server.requests if r.path == "/hook"]


def test_a_receiver_down_then_back_gets_the_notification_once(
    store_url: str, store: Store, daemons: Daemons, reliability: Any
) -> None:
    late = LateServer()
    write_config(
        daemons,
        {"broken": {"shell": "echo boom; exit 3", "notify": ["ops"]}},
        f"{late.state.url}/hook",
        retry_delay="0.3s",
    )
    daemon = daemons.start(store_url)
    try:
        run_id = trigger(store, "broken")
        daemon.wait_log("'failed' notice to ops failed (connection refused); retrying in", 20)
        late.start()
        daemon.wait_log("'failed' notice sent to ops (attempt", timeout=30)
        events = wait_for(
            lambda: [e for e in store.audit_events(50) if e["action"] == "notify.delivered"]
        )
        assert daemon.stop() == 0
    finally:
        late.stop()
    received = hooks(late.state)
    reliability.observe(
        "notify",
        store.backend,
        runs=1,
        duplicates=max(0, len(received) - 1),
        lost=1 - min(1, len(received)),
        detail=f"webhook receiver down, back after a failed attempt: delivered on attempt "
        f"{events[0]['detail']['attempts']}, {len(received)} time(s)",
    )
    assert len(received) == 1 and received[0].json["run"]["id"] == run_id
    assert len(events) == 1 and events[0]["detail"]["attempts"] >= 2


def test_a_hanging_receiver_never_delays_a_fire(
    store_url: str, store: Store, daemons: Daemons, http_server: Server, reliability: Any
) -> None:
    # Every run is told to a receiver that takes 3 s to answer, every second.
    write_config(
        daemons,
        {
            "tick": {
                "command": ["true"],
                "schedule": "* * * * * *",
                "notify": ["ops"],
                "notify_on": ["succeeded"],
            }
        },
        f"{http_server.url}/sleep/3",
        timeout="10s",
    )
    daemon = daemons.start(store_url)
    wait_for(lambda: len([r for r in store.executions(job="tick", limit=None)]) >= 8, 30)
    assert daemon.stop() == 0
    ticks = sorted(
        (r for r in store.executions(job="tick", limit=None) if r.scheduled_for),
        key=lambda r: r.scheduled_for,  # type: ignore[arg-type, return-value]
    )
    slots = [r.scheduled_for for r in ticks]
    missing = sum(
        round((b - a) / timedelta(seconds=1)) - 1
        for a, b in pairwise(slots)  # type: ignore[operator]
    )
    done = [r for r in ticks if r.status is Status.SUCCEEDED]
    reliability.observe(
        "notify",
        store.backend,
        runs=len(ticks),
        duplicates=len(slots) - len(set(slots)),
        lost=missing,
        stuck=len([r for r in ticks if not r.status.final]),
        detail="every-second job told to a receiver that answers after 3 s: "
        f"{len(done)} runs, every slot fired",
    )
    assert missing == 0 and len(slots) == len(set(slots))
    assert len(done) >= 7
    assert len([r for r in http_server.requests if r.path == "/sleep/3"]) >= 1


def test_a_run_abandoned_by_a_killed_daemon_is_told_by_its_successor(
    store_url: str, store: Store, daemons: Daemons, http_server: Server, reliability: Any
) -> None:
    write_config(
        daemons,
        {"long": {"command": ["sleep", "300"], "notify": ["ops"]}},
        f"{http_server.url}/hook",
    )
    first = daemons.start(store_url, name="first")
    run_id = trigger(store, "long")
    wait_for(lambda: (run := store.execution(run_id)) and run.pid is not None, timeout=20)
    first.kill()
    second = daemons.start(store_url, name="second")
    told = wait_for(lambda: hooks(http_server), timeout=30)
    assert second.stop() == 0
    reliability.observe(
        "notify",
        store.backend,
        runs=1,
        duplicates=max(0, len(hooks(http_server)) - 1),
        lost=1 - min(1, len(told)),
        orphans=len(daemons.leftovers()),
        detail="daemon SIGKILLed mid-run: its successor marked the run abandoned and told ops",
    )
    assert told[0].json["event"] == "abandoned"
    assert told[0].json["run"]["id"] == run_id
    assert told[0].json["run"]["status"] == "abandoned"
    assert len(hooks(http_server)) == 1


def test_a_notification_pending_at_stop_is_logged_and_shown_not_lost_silently(
    store_url: str, store: Store, daemons: Daemons, reliability: Any
) -> None:
    late = LateServer()  # never started: every attempt is refused
    write_config(
        daemons,
        {"broken": {"shell": "exit 3", "notify": ["ops"]}},
        f"{late.state.url}/hook",
        retry_delay="60s",
    )
    daemon = daemons.start(store_url)
    run_id = trigger(store, "broken")
    daemon.wait_log("'failed' notice to ops failed (connection refused); retrying in", 20)
    assert daemon.stop() == 0
    said = "'failed' notice to ops not delivered after 1 attempt(s): jobd stopped before it"
    failed = [e for e in store.audit_events(50) if e["action"] == "notify.failed"]
    reliability.observe(
        "notify",
        store.backend,
        runs=1,
        lost=0 if failed and said in daemon.log() else 1,
        detail="daemon stopped while a delivery waited for its retry: logged and audited",
    )
    assert said in daemon.log()
    assert len(failed) == 1 and failed[0]["detail"]["run"] == run_id
