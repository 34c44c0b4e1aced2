"""The HTTP API against a real daemon serving [api] on a loopback port, both backends:
every endpoint and status, tokens and tenancy, quotas, long polls and log follows."""

from __future__ import annotations

import threading
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

from tests.apihelp import Api, api, go_file, http, served
from tests.clihelp import postgresql_url
from tests.conftest import wait_for

__all__ = ["api", "postgresql_url", "served"]  # fixtures


def problem(reply: Any, status: int) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.content_type == "application/problem+json"
    body = reply.json()
    assert body["status"] == status and body["type"].startswith("urn:jobd:problem:")
    return body


def audit_rows(api: Api) -> list[dict[str, Any]]:
    from tests.conftest import open_store

    store = open_store(api.store_url)
    try:
        return store.audit_events(50)
    finally:
        store.close()


def test_probes_and_authentication(api: Api) -> None:
    assert api.call("GET", "/healthz").json() == {"status": "ok"}
    ready = api.call("GET", "/readyz")
    assert ready.status == 200 and ready.json()["live_instances"] == 1
    missing = api.call("GET", "/v1/jobs")
    assert problem(missing, 401)["detail"].startswith("a bearer token is required")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="jobd"'
    problem(api.call("GET", "/v1/jobs", "jobd_000000000000_" + "x" * 43), 401)
    reader = api.token("dashboard", read_only=True)
    listed = api.call("GET", "/v1/jobs", reader)
    assert listed.status == 200
    assert [j["name"] for j in listed.json()] == ["held", "quick", "scan_a", "scan_b"]
    refused = problem(api.call("POST", "/v1/jobs/quick/trigger", reader), 403)
    assert refused["detail"] == "token 'dashboard' is read-only"
    problem(api.call("GET", "/v1/nothing", reader), 404)
    problem(api.call("DELETE", "/v1/jobs", reader), 405)
    # A token stops working once revoked.
    from jobd.core.model import Config, Settings
    from jobd.ops.scope import Scope
    from jobd.ops.tokens import revoke_token
    from tests.conftest import open_store

    store = open_store(api.store_url)
    revoke_token(Scope(store, Config(settings=Settings(), jobs={})), "tester", "dashboard")
    store.close()
    problem(api.call("GET", "/v1/jobs", reader), 401)


def test_trigger_long_poll_location_and_audit(api: Api) -> None:
    token = api.token("ci")
    job = api.call("GET", "/v1/jobs/quick", token).json()
    assert job["name"] == "quick" and job["source"] == "file" and job["next_fires"] == []
    done = api.call("POST", "/v1/jobs/quick/trigger?wait=60", token)
    assert done.status == 201, done.body
    run = done.json()
    assert run["status"] == "succeeded" and run["triggered_by"] == "ci"
    assert done.headers["Location"] == f"/v1/executions/{run['id']}"
    again = api.call("GET", done.headers["Location"], token).json()
    assert again["id"] == run["id"] and again["exit_code"] == 0
    log = api.call("GET", f"/v1/executions/{run['id']}/log", token).json()
    assert log["log"] == "hello\nworld\n"
    trigger = next(e for e in audit_rows(api) if e["action"] == "trigger")
    assert (trigger["actor"], trigger["target"]) == ("ci", "quick")
    unknown = problem(api.call("POST", "/v1/jobs/quik/trigger", token), 404)
    assert unknown["detail"] == "unknown job 'quik' (did you mean 'quick'?)"
    assert unknown["exit_code"] == 2
    events = api.call("GET", "/v1/audit?limit=5", token).json()
    assert events[0]["action"] == "trigger" and events[0]["actor"] == "ci"
    problem(api.call("GET", "/v1/executions/999999", token), 404)


def test_long_poll_202_log_follow_and_cancel(api: Api) -> None:
    token = api.token("ci")
    pending = api.call("POST", "/v1/jobs/held/trigger?wait=0.2", token)
    assert pending.status == 202 and pending.json()["status"] in ("queued", "running")
    run_id = pending.json()["id"]
    parts = urlsplit(api.base)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request(
        "GET",
        f"/v1/executions/{run_id}/log?follow=true",
        headers={"Authorization": f"Bearer {token}"},
    )
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain")
    assert response.readline() == b"first\n"  # streamed while the run goes on
    go_file(api.tmp_path, "held").touch()
    assert response.read() == b"second\n"  # and the stream ends with the run
    conn.close()
    assert api.call("GET", f"/v1/executions/{run_id}", token).json()["status"] == "succeeded"
    # Cancel: a running run is asked to stop (202); a finished one is 409.
    go_file(api.tmp_path, "held").unlink()
    running = api.call("POST", "/v1/jobs/held/trigger", token).json()
    wait_for(
        lambda: (
            api.call("GET", f"/v1/executions/{running['id']}", token).json()["status"] == "running"
        )
    )
    cancelled = api.call("POST", f"/v1/executions/{running['id']}/cancel", token)
    assert cancelled.status == 202 and cancelled.json()["was"] == "running"
    ended = api.call("POST", "/v1/jobs/held/trigger?wait=0", token)  # no wait: 201
    assert ended.status == 201
    wait_for(
        lambda: (
            api.call("GET", f"/v1/executions/{running['id']}", token).json()["status"]
            == "cancelled"
        )
    )
    again = problem(api.call("POST", f"/v1/executions/{running['id']}/cancel", token), 409)
    assert again["detail"] == f"run {running['id']} (held) already ended: cancelled"
    go_file(api.tmp_path, "held").touch()


def test_group_tokens_see_only_their_group_and_quota_refusals_are_429(api: Api) -> None:
    tenant = api.token("tenant-a-web", group="tenant-a")
    admin = api.token("admin")
    other_run = api.call("POST", "/v1/jobs/scan_b/trigger?wait=30", admin).json()
    assert [j["name"] for j in api.call("GET", "/v1/jobs", tenant).json()] == ["scan_a"]
    for method, path in [
        ("GET", "/v1/jobs/scan_b"),
        ("POST", "/v1/jobs/scan_b/trigger"),
        ("POST", "/v1/jobs/scan_b/pause"),
        ("DELETE", "/v1/schedules/scan_b"),
    ]:
        hidden = problem(api.call(method, path, tenant), 404)
        assert hidden["detail"] == "unknown job 'scan_b'"  # no did-you-mean across tenants
    for path in (f"/v1/executions/{other_run['id']}", f"/v1/executions/{other_run['id']}/log"):
        problem(api.call("GET", path, tenant), 404)
    problem(api.call("POST", f"/v1/executions/{other_run['id']}/cancel", tenant), 404)
    problem(api.call("GET", "/v1/executions?job=scan_b", tenant), 404)
    # max_active = 1: the second trigger is refused with 429, Retry-After, and an audit row.
    first = api.call("POST", "/v1/jobs/scan_a/trigger", tenant)
    assert first.status == 201
    refused = api.call("POST", "/v1/jobs/scan_a/trigger", tenant)
    body = problem(refused, 429)
    assert body["detail"].startswith("scan_a: refused: ") and body["exit_code"] == 75
    assert int(refused.headers["Retry-After"]) > 0
    row = next(e for e in audit_rows(api) if e["action"] == "quota.refused")
    assert (row["actor"], row["target"], row["detail"]["group"]) == (
        "tenant-a-web",
        "scan_a",
        "tenant-a",
    )
    page = api.call("GET", "/v1/executions", tenant).json()
    assert [r["job"] for r in page["items"]] == ["scan_a"]
    assert {e["target"] for e in api.call("GET", "/v1/audit", tenant).json()} == {"scan_a"}
    go_file(api.tmp_path, "scan_a").touch()
    # A group token schedules in its own group only.
    made = api.call(
        "PUT",
        "/v1/schedules/tenant_nightly",
        tenant,
        body={"schedule": "@daily", "command": ["true"]},
    )
    assert made.status == 201, made.body
    assert api.call("GET", "/v1/jobs/tenant_nightly", tenant).json()["group"] == "tenant-a"
    wrong = api.call(
        "PUT",
        "/v1/schedules/x",
        tenant,
        body={"schedule": "@daily", "command": ["true"], "group": "tenant-b"},
    )
    problem(wrong, 400)


def test_pause_resume_schedule_and_unschedule(api: Api) -> None:
    token = api.token("ops")
    paused = api.call("POST", "/v1/jobs/quick/pause", token)
    assert paused.json() == {"job": "quick", "paused": True, "changed": True}
    assert api.call("POST", "/v1/jobs/quick/pause", token).json()["changed"] is False
    assert api.call("GET", "/v1/jobs/quick", token).json()["paused"] is True
    assert api.call("POST", "/v1/jobs/quick/resume", token).json()["paused"] is False
    table = {"schedule": "0 3 * * *", "command": ["true"], "timezone": "Europe/Berlin"}
    created = api.call("PUT", "/v1/schedules/vacuum", token, body=table)
    assert created.status == 201 and created.json()["created"] is True
    assert created.headers["Location"] == "/v1/jobs/vacuum"
    updated = api.call("PUT", "/v1/schedules/vacuum", token, body={**table, "schedule": "@hourly"})
    assert updated.status == 200 and updated.json()["created"] is False
    job = api.call("GET", "/v1/jobs/vacuum", token).json()
    assert job["schedule"] == "@hourly" and job["source"] == "cli" and len(job["next_fires"]) == 5
    bad = problem(
        api.call("PUT", "/v1/schedules/vacuum", token, body={**table, "schedule": "nope"}), 422
    )
    assert bad["detail"].startswith("request body: job 'vacuum': key 'schedule': ")
    problem(api.call("PUT", "/v1/schedules/vacuum", token, raw=b"{nope"), 400)
    problem(api.call("PUT", "/v1/schedules/vacuum", token, body=["a"]), 400)
    problem(api.call("PUT", "/v1/schedules/vacuum", token, raw=b" " * (100 * 1024)), 413)
    in_file = problem(api.call("PUT", "/v1/schedules/quick", token, body=table), 400)
    assert "is defined in the config file" in in_file["detail"]
    assert api.call("DELETE", "/v1/schedules/vacuum", token).status == 204
    problem(api.call("DELETE", "/v1/schedules/vacuum", token), 404)
    actions = [(e["action"], e["actor"]) for e in audit_rows(api)][:5]
    assert actions == [
        ("unschedule", "ops"),
        ("schedule", "ops"),
        ("schedule", "ops"),
        ("resume", "ops"),
        ("pause", "ops"),
    ]


def test_executions_pages_stay_correct_while_runs_arrive(api: Api) -> None:
    from jobd.core.model import NewRun, Status, Trigger
    from tests.conftest import open_store

    token = api.token("reader", read_only=True)
    store = open_store(api.store_url)
    try:
        ids = [
            store.enqueue(NewRun("scan_b", Trigger.MANUAL, store.now(), status=Status.SUCCEEDED))
            for _ in range(5)
        ]
        first = api.call("GET", "/v1/executions?limit=2", token).json()
        assert [r["id"] for r in first["items"]] == ids[:2:-1][:2] == [ids[4], ids[3]]
        store.enqueue(NewRun("scan_b", Trigger.MANUAL, store.now(), status=Status.FAILED))
        second = api.call("GET", f"/v1/executions?limit=2&cursor={first['next_cursor']}", token)
        assert [r["id"] for r in second.json()["items"]] == [ids[2], ids[1]]
        last = api.call("GET", f"/v1/executions?limit=2&cursor={ids[1]}", token).json()
        assert [r["id"] for r in last["items"]] == [ids[0]] and last["next_cursor"] is None
    finally:
        store.close()
    failed = api.call("GET", "/v1/executions?status=failed&job=scan_b&since=1h", token).json()
    assert [r["status"] for r in failed["items"]] == ["failed"]
    problem(api.call("GET", "/v1/executions?limit=0", token), 400)
    problem(api.call("GET", "/v1/executions?status=weird", token), 400)
    problem(api.call("GET", "/v1/executions?since=yesterday-ish", token), 400)
    unknown = problem(api.call("GET", "/v1/executions?job=scan_c", token), 404)
    assert unknown["detail"].startswith("unknown job 'scan_c'")


def test_serve_alone_executes_nothing_and_says_so(served: Api) -> None:
    token = served.token("ci")
    refused = problem(served.call("POST", "/v1/jobs/quick/trigger", token), 503)
    assert refused["detail"].startswith("no live jobd daemon on this store") and refused[
        "detail"
    ].endswith("Nothing was queued.")
    assert refused["exit_code"] == 69
    problem(served.call("GET", "/readyz"), 503)
    assert served.call("GET", "/healthz").status == 200
    # The API reads the store nonetheless.
    assert [j["name"] for j in served.call("GET", "/v1/jobs", token).json()] == [
        "held",
        "quick",
        "scan_a",
        "scan_b",
    ]


def test_a_slow_client_does_not_hold_the_server(api: Api) -> None:
    """A client that opens connections and never sends a request holds no worker:
    they wait in the server's selector; requests are still served."""
    import socket

    parts = urlsplit(api.base)
    idle = [socket.create_connection((parts.hostname, parts.port)) for _ in range(20)]
    try:
        replies: list[int] = []
        worker = threading.Thread(
            target=lambda: replies.append(http("GET", api.base + "/healthz").status)
        )
        worker.start()
        worker.join(30)
        assert replies == [200]
    finally:
        for sock in idle:
            sock.close()


def test_a_process_that_does_not_serve_never_imports_the_web_stack() -> None:
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; from jobd.cli.app import all_commands; all_commands();"
        "import jobd.daemon.loop, jobd.cli.daemon_cmd, jobd.client;"
        "print(json.dumps([m for m in sys.modules if m.split('.')[0] == 'cheroot'"
        " or m.startswith('jobd.api')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def test_the_api_table_is_checked_like_the_rest_of_the_config() -> None:
    import pytest

    from jobd.core.config.parse import parse_config
    from jobd.errors import ConfigError

    api_settings = parse_config('[api]\nlisten = "[::1]:8089"\nthreads = 4\n').api
    assert api_settings is not None
    assert (api_settings.host, api_settings.port, api_settings.threads) == ("::1", 8089, 4)
    assert parse_config("").api is None
    for text, message in [
        ('[api]\nlisten = "8089"\n', "jobd.toml: key 'api.listen': expected HOST:PORT"),
        ('[api]\nlisten = "localhost:99999"\n', "jobd.toml: key 'api.listen': expected HOST:PORT"),
        ('[api]\nlisen = "127.0.0.1:1"\n', "jobd.toml: key 'api.lisen': unknown key"),
        ('[api]\nlisten = "127.0.0.1:1"\nthreads = 0\n', "jobd.toml: key 'api.threads'"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_config(text)
        assert str(caught.value).startswith(message)


def test_serving_adds_little_memory(sqlite_url: str, tmp_path: Any) -> None:
    """A daemon serving the API, after some hundred requests, holds at most 15 MiB
    more than one that serves nothing."""
    import uuid

    from tests.apihelp import API_TABLES, api_jobs, serving_url
    from tests.daemons import Daemons, config_text

    def rss(pid: int) -> int:
        with open(f"/proc/{pid}/status") as status:
            line = next(x for x in status if x.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    rss_of: dict[str, int] = {}
    for kind in ("plain", "api"):
        folder = tmp_path / kind
        folder.mkdir()
        daemons = Daemons(folder, uuid.uuid4().hex)
        text = config_text(api_jobs(folder))
        daemons.config.write_text(
            text + (API_TABLES if kind == "api" else API_TABLES.split("[api]")[0])
        )
        daemons.config.chmod(0o644)
        url = f"sqlite:///{folder / 'jobd.db'}"
        try:
            daemon = daemons.start(url)
            if kind == "api":
                served = Api(wait_for(lambda d=daemon: serving_url(d.log())), url, folder, daemon)
                token = served.token("load")
                for _ in range(100):
                    assert served.call("GET", "/v1/jobs", token).status == 200
                    assert served.call("GET", "/v1/executions?limit=10", token).status == 200
                for _ in range(10):
                    assert served.call("POST", "/v1/jobs/quick/trigger", token).status == 201
            rss_of[kind] = rss(daemon.pid)
        finally:
            daemons.cleanup()
    assert rss_of["api"] - rss_of["plain"] <= 15 * 1024 * 1024, rss_of


def test_waiting_requests_never_take_every_worker(api: Api) -> None:
    """Log follows and long polls hold a worker each; past threads - 2 of them the
    next is refused at once (503, Retry-After) and other requests still answer."""
    token = api.token("ci")
    run_id = api.call("POST", "/v1/jobs/held/trigger", token).json()["id"]
    parts = urlsplit(api.base)
    followers = []
    try:
        for _ in range(6):  # [api] threads = 8 (the default)
            conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
            conn.request(
                "GET",
                f"/v1/executions/{run_id}/log?follow=true",
                headers={"Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            assert response.status == 200
            followers.append((conn, response))
        busy = problem(api.call("GET", f"/v1/executions/{run_id}/log?follow=true", token), 503)
        assert busy["detail"].startswith("too many requests are waiting")
        assert api.call("GET", "/v1/jobs", token).status == 200
        # A long poll past the cap answers at once, without waiting: 202.
        assert api.call("POST", "/v1/jobs/quick/trigger?wait=60", token, timeout=10).status in (
            201,
            202,
        )
    finally:
        go_file(api.tmp_path, "held").touch()
        for conn, response in followers:
            response.read()
            conn.close()


def test_serve_refuses_a_bad_address_in_one_line(tmp_path: Any, sqlite_url: str) -> None:
    import socket

    from tests.clihelp import jobd

    bad = jobd(sqlite_url, tmp_path, "serve", "--listen", "localhost")
    assert bad.returncode == 2
    assert bad.stderr == (
        "jobd: --listen: key 'api.listen': expected HOST:PORT, e.g. 127.0.0.1:8089, "
        "got 'localhost'\n"
    )
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        busy = jobd(sqlite_url, tmp_path, "serve", "--listen", f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert busy.returncode == 1 and busy.stderr.count("\n") == 1
    assert busy.stderr.startswith(f"jobd: cannot listen on 127.0.0.1:{port}: ")


def test_a_log_follow_ends_when_its_client_hangs_up(api: Api) -> None:
    """Followers of a run that prints nothing more stop polling once their clients
    go: the places they held among the waiters come back while the run goes on."""
    token = api.token("ci")
    run_id = api.call("POST", "/v1/jobs/held/trigger", token).json()["id"]
    parts = urlsplit(api.base)
    try:
        for _ in range(6):  # every waiter's place ([api] threads = 8, the default)
            conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
            conn.request(
                "GET",
                f"/v1/executions/{run_id}/log?follow=true",
                headers={"Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            assert response.status == 200 and response.readline() == b"first\n"
            conn.close()  # hangs up while the run goes on, silent

        # A follow that is served now streams until the run ends: the test reads
        # only its status, with a short timeout, and lets it go.
        conn = HTTPConnection(parts.hostname, parts.port, timeout=30)

        def followed() -> bool:
            conn.request(
                "GET",
                f"/v1/executions/{run_id}/log?follow=true",
                headers={"Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            if response.status == 200:
                return True
            response.read()
            return False

        assert wait_for(followed, timeout=20)
        conn.close()
        assert api.call("GET", f"/v1/executions/{run_id}", token).json()["status"] == "running"
    finally:
        go_file(api.tmp_path, "held").touch()


def test_metrics_on_the_api_listener(api: Api) -> None:
    """With [api], Prometheus scrapes the API's port: the daemon's own metrics and,
    from the leader, the store's gauges, parsed with the client library's parser;
    a group's token may not read them, since they name every job."""
    from prometheus_client.parser import text_string_to_metric_families

    token = api.token("prometheus", read_only=True)
    wait_for(lambda: api.call("GET", "/metrics", token).status == 200, timeout=20)
    reply = api.call("GET", "/metrics", token)
    assert reply.content_type.startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(reply.body.decode())}
    assert {"jobd_is_leader", "jobd_queue_depth", "jobd_job_next_fire_timestamp_seconds"} <= names
    problem(api.call("GET", "/metrics"), 401)
    tenant = api.token("tenant-a-prom", group="tenant-a", read_only=True)
    assert (
        "bound to group 'tenant-a'" in problem(api.call("GET", "/metrics", tenant), 403)["detail"]
    )
