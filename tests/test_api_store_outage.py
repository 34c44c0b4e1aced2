"""The API over a PostgreSQL store that freezes (a hung server, a stalled network:
connections stay open and no byte comes back): requests answer 503 with a problem
document within the API's bound on a store wait, instead of holding their worker
threads for ever; /healthz still answers; once the store thaws, so does the API."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.apihelp import http, serving
from tests.conftest import wait_for
from tests.test_fault_store_outage import store_proxy

pytestmark = pytest.mark.slow


def test_a_frozen_store_answers_503_and_never_holds_the_workers(
    postgres_url: str, tmp_path: Path
) -> None:
    with store_proxy(postgres_url) as proxy, serving(proxy.url_for(postgres_url), tmp_path) as api:
        token = api.token("ci")
        assert api.call("GET", "/v1/jobs", token).status == 200
        proxy.freeze()
        # More requests than the server has threads ([api] threads = 8), at once.
        replies: list[tuple[int, dict]] = []

        def ask() -> None:
            # Two rounds of bounded waits (5 s each), far within this deadline.
            reply = http("GET", api.base + "/v1/executions?limit=10", token, timeout=30)
            replies.append((reply.status, reply.json()))

        askers = [threading.Thread(target=ask) for _ in range(12)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(90)
        assert len(replies) == 12
        for status, body in replies:
            assert status == 503, body
            assert body["type"] == "urn:jobd:problem:store-unavailable"
            assert body["detail"].startswith("store error: ")
            assert "s3cret" not in body["detail"]  # the proxy URL's password
        assert api.call("GET", "/healthz", timeout=30).status == 200
        proxy.thaw()
        wait_for(lambda: api.call("GET", "/v1/jobs", token).status == 200, timeout=30)
