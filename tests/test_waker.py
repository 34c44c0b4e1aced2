"""Waking a sleeping daemon with PostgreSQL NOTIFY, also after its LISTEN
connection broke and was made again."""

from __future__ import annotations

import time
from typing import Any

from jobd.system.waker import Waker
from tests.conftest import open_store


def woken_within(waker: Waker, seconds: float) -> bool:
    started = time.monotonic()
    return waker.sleep(seconds) and time.monotonic() - started < seconds


def test_notify_wakes_a_sleeping_waker(postgres_url: str) -> None:
    store, waker = open_store(postgres_url), Waker()
    try:
        waker.listen_postgres(postgres_url)
        store.wake_daemons()
        assert woken_within(waker, 5)
    finally:
        waker.close()
        store.close()


def test_listen_again_after_the_connection_broke(postgres_url: str, postgres_admin: Any) -> None:
    store, waker = open_store(postgres_url), Waker()
    try:
        waker.listen_postgres(postgres_url)
        backend = waker._listen_conn.get_backend_pid()
        with postgres_admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (backend,))
        deadline = time.monotonic() + 5
        while waker.listening and time.monotonic() < deadline:
            assert woken_within(waker, 5)  # the broken connection ends the sleep
        assert not waker.listening
        waker.listen_postgres(postgres_url)  # what the daemon does once the store is back
        assert waker.listening
        while waker.sleep(0):
            pass
        store.wake_daemons()
        assert woken_within(waker, 5)
    finally:
        waker.close()
        store.close()


def _listening(store_url: str) -> Waker:
    """A waker woken as a daemon on this store is: its socket (SQLite) or LISTEN."""
    from jobd.store.connect import sqlite_path

    waker = Waker()
    if store_url.startswith("sqlite"):
        waker.bind_socket(sqlite_path(store_url) + ".wake")
    else:
        waker.listen_postgres(store_url)
    return waker


def test_every_write_that_moves_a_next_fire_wakes_the_daemons(store_url: str) -> None:
    from datetime import timedelta

    from jobd.core.model import Config, GroupQuota, JobKind, JobSpec, Settings, Source
    from jobd.store.groups import upsert_within_quota

    store = open_store(store_url)
    waker = _listening(store_url)
    spec = JobSpec(name="tick", schedule="* * * * * *", kind=JobKind.COMMAND, command=("true",))
    cli = JobSpec(
        name="cli", schedule="@hourly", kind=JobKind.COMMAND, command=("true",), source=Source.CLI
    )
    grouped = JobSpec(
        name="grouped",
        schedule="@daily",
        kind=JobKind.COMMAND,
        command=("true",),
        source=Source.CLI,
        group="g",
    )
    try:
        changes = {
            "apply a config": lambda: store.apply_config(
                Config(Settings(), {"tick": spec}), store.now()
            ),
            "pause": lambda: store.set_paused("tick", True, store.now()),
            "resume": lambda: store.set_paused("tick", False, store.now()),
            "schedule": lambda: store.upsert_cli_job(cli, store.now()),
            "schedule in a group": lambda: upsert_within_quota(
                store, grouped, GroupQuota(name="g", max_jobs=5)
            ),
            "unschedule": lambda: store.remove_job("cli", store.now()),
        }
        for what, change in changes.items():
            while waker.sleep(0):
                pass
            change()
            assert woken_within(waker, 5), f"{what} did not wake the daemons"
        # Nothing changed, nothing to wake for.
        store.apply_config(Config(Settings(), {"tick": spec}), store.now() + timedelta(seconds=1))
        assert not waker.sleep(0.3)
    finally:
        waker.close()
        store.close()


def test_a_wake_waits_for_the_enclosing_transaction_to_commit(store_url: str) -> None:
    from jobd.core.model import Config, JobKind, JobSpec, Settings

    store = open_store(store_url)
    spec = JobSpec(name="tick", schedule="* * * * * *", kind=JobKind.COMMAND, command=("true",))
    store.apply_config(Config(Settings(), {"tick": spec}), store.now())
    store.set_paused("tick", True, store.now())
    waker = _listening(store_url)
    try:
        with store.atomic():
            store.set_paused("tick", False, store.now())
            # Woken now, a daemon would read the job still paused and sleep on.
            assert not waker.sleep(0.3)
        assert woken_within(waker, 5)
    finally:
        waker.close()
        store.close()


def test_a_listen_that_fails_waits_for_its_back_off_and_then_holds(
    postgres_url: str, caplog: Any
) -> None:
    """The daemon asks keep_listening() every tick: a LISTEN that cannot be had is
    tried again when its back-off ends, said once, and the sleep is capped by it."""
    import logging
    from types import SimpleNamespace

    from tests.receivers import free_port

    nowhere = SimpleNamespace(
        backend="postgresql", url=f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    )
    waker = Waker.for_store(nowhere, max_backoff=8.0)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO, logger="jobd"):
            assert waker.keep_listening() is False
            retry_in = waker.listen_retry_in()
            assert retry_in is not None and 0 < retry_in <= 1.0
            assert waker.keep_listening() is False  # not tried again before its time
        said = [r.getMessage() for r in caplog.records if "LISTEN" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("cannot LISTEN for wake-ups")
    finally:
        waker.close()
    store = open_store(postgres_url)
    waker = Waker.for_store(store, max_backoff=8.0)
    try:
        assert waker.keep_listening() is True and waker.listening
        assert waker.listen_retry_in() is None and waker.keep_listening() is False
        assert waker.store_file is None
    finally:
        waker.close()
        store.close()


def test_a_sqlite_waker_watches_the_store_file_and_never_listens(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    waker = Waker.for_store(store, max_backoff=8.0)
    try:
        assert waker.store_file is not None
        assert waker.keep_listening() is False and waker.listen_retry_in() is None
    finally:
        waker.close()
        store.close()
