"""Waking a sleeping daemon with PostgreSQL NOTIFY, also after its LISTEN
connection broke and was made again."""

from __future__ import annotations

import time
from typing import Any

from jobd.store import open_store
from jobd.waker import Waker


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
