"""A NOTIFY wakes only the daemons of its own schema: jobd stores in other schemas
of the same database (NOTIFY is database-wide) sleep on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobd.system.waker import Waker
from tests.conftest import open_store, schema_url


@pytest.fixture
def two_schemas(postgres_admin: Any) -> Iterator[tuple[str, str]]:
    names = [f"jobd_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with postgres_admin.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE SCHEMA {name}")
    yield schema_url(names[0]), schema_url(names[1])
    with postgres_admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP SCHEMA {name} CASCADE")


def test_only_our_schemas_notify_wakes_us(
    two_schemas: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A channel of our own: other jobd processes on this server must not wake us.
    channel = f"jobd_wake_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr("jobd.system.waker.WAKE_CHANNEL", channel)
    monkeypatch.setattr("jobd.store.queries.WAKE_CHANNEL", channel)
    ours_url, theirs_url = two_schemas
    ours, theirs = open_store(ours_url), open_store(theirs_url)
    waker = Waker()
    try:
        waker.listen_postgres(ours_url)
        theirs.wake_daemons()
        started = time.monotonic()
        assert waker.sleep(0.5) is False
        assert time.monotonic() - started >= 0.45  # slept on through their NOTIFY
        ours.wake_daemons()
        started = time.monotonic()
        assert waker.sleep(5) is True
        assert time.monotonic() - started < 2
    finally:
        waker.close()
        ours.close()
        theirs.close()
