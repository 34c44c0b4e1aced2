"""Fault: requests to the HTTP API that must change nothing. Forged, revoked and
expired tokens, read-only tokens writing, and a tenant's token reaching for
another group's jobs and runs: each is refused (401, 403, 404), no run is queued
or cancelled by it, and no token appears in the daemon's log or the audit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobd.core.model import Config, Settings
from jobd.ops.scope import Scope
from jobd.ops.tokens import create_token, revoke_token
from tests.apihelp import Api, api, go_file
from tests.clihelp import postgresql_url
from tests.conftest import open_store, wait_for
from tests.reliability import Recorder, sized

__all__ = ["api", "postgresql_url"]  # fixtures

pytestmark = [pytest.mark.slow, pytest.mark.fault]


def runs_by_job(api: Api) -> dict[str, list[tuple[int, str]]]:
    store = open_store(api.store_url)
    try:
        found: dict[str, list[tuple[int, str]]] = {}
        for run in store.executions(limit=None):
            found.setdefault(run.job, []).append((run.id, run.status.value))
        return found
    finally:
        store.close()


def test_refused_tokens_change_nothing(api: Api, store_url: str, reliability: Recorder) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    admin = api.token("admin")
    victim_run = api.call("POST", "/v1/jobs/scan_b/trigger?wait=30", admin).json()
    tenant = api.token("tenant-a-web", group="tenant-a")
    reader = api.token("dashboard", read_only=True)
    store = open_store(api.store_url)
    scope = Scope(store, Config(settings=Settings(), jobs={}))
    revoked = create_token(scope, "tester", "gone").secret
    revoke_token(scope, "tester", "gone")
    expired = create_token(scope, "tester", "short", expires_in=0.05).secret
    store.close()
    wait_for(lambda: api.call("GET", "/v1/jobs", expired).status == 401)
    before = runs_by_job(api)

    forged = [admin[:-4] + "AAAA", admin.replace("jobd_", "jobd_0", 1), "Basic " + admin, "", "x"]
    attempts: list[tuple[str, str, str | None, int]] = []
    for _ in range(sized(3, 30)):
        for token in [*forged, revoked, expired]:
            attempts.append(("POST", "/v1/jobs/quick/trigger", token, 401))
            attempts.append(("POST", f"/v1/executions/{victim_run['id']}/cancel", token, 401))
        attempts.append(("POST", "/v1/jobs/quick/trigger", reader, 403))
        attempts.append(("PUT", "/v1/schedules/intruder", reader, 403))
        attempts.append(("POST", "/v1/jobs/scan_b/trigger", tenant, 404))
        attempts.append(("POST", "/v1/jobs/scan_b/pause", tenant, 404))
        attempts.append(("POST", f"/v1/executions/{victim_run['id']}/cancel", tenant, 404))
        attempts.append(("GET", f"/v1/executions/{victim_run['id']}/log", tenant, 404))
        attempts.append(("DELETE", "/v1/schedules/scan_b", tenant, 404))
    wrong: list[Any] = []
    for method, path, token, expected in attempts:
        body = {"schedule": "@daily", "command": ["true"]} if method == "PUT" else None
        reply = api.call(method, path, token, body=body)
        if reply.status != expected:
            wrong.append((method, path, reply.status, reply.body[:200]))
    after = runs_by_job(api)
    changed = {job: runs for job, runs in after.items() if before.get(job) != runs}
    store = open_store(api.store_url)
    try:
        audit = json.dumps(store.audit_events(1000), default=str)
        paused = store.job("scan_b").paused  # type: ignore[union-attr]
        intruder = store.job("intruder")
    finally:
        store.close()
    log = api.daemon.log()
    leaked = [t for t in (admin, tenant, reader, revoked, expired) if t in log or t in audit]
    reliability.observe(
        "api-abuse",
        backend,
        runs=len(attempts),
        duplicates=sum(len(r) for r in changed.values()),
        detail=f"{len(attempts)} refused requests; {len(wrong)} answered otherwise; "
        f"{len(leaked)} tokens leaked",
    )
    assert wrong == []
    assert changed == {} and not paused and intruder is None
    assert leaked == []
    go_file(api.tmp_path, "held").touch()
