"""Notifications and check-in pings from a real daemon to real local receivers:
an HTTP server (webhooks and healthchecks.io-style pings) and an SMTP server
that requires STARTTLS and a login, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Trigger
from jobd.store import Store
from tests.conftest import run_jobd, wait_for
from tests.daemons import Daemons, config_text, toml_value
from tests.httpserver import Server, http_server_fixture  # noqa: F401
from tests.receivers import SMTP_USER, Mailbox, smtp_server_fixture  # noqa: F401

pytestmark = pytest.mark.slow

TOKEN = "tok-5e3cr3t-9d1f"
HOOK_KEY = "hook-key-77a2b0"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()
    for daemon in started.started:  # shown by pytest when the test failed
        print(f"--- {daemon.log_path.name} (exit {daemon.proc.returncode})\n{daemon.log()}")


def write_config(
    daemons: Daemons,
    jobs: dict[str, dict[str, Any]],
    channels: dict[str, dict[str, Any]],
    **settings: Any,
) -> Path:
    text = config_text(jobs, **settings)
    for name, table in channels.items():
        text += f"\n[notify.{name}]\n"
        text += "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items())
    daemons.config.write_text(text)
    daemons.config.chmod(0o644)
    return daemons.config


def trigger(store: Store, job: str) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


def flaky_job(flag: Path, ping_url: str) -> dict[str, Any]:
    """Prints a secret; fails while `flag` exists."""
    return {
        "shell": f'echo "token=$TOKEN"; if [ -e {flag} ]; then echo boom; exit 3; fi; echo fine',
        "secret_env": ["TOKEN"],
        "ping_url": ping_url,
    }


def requests_to(server: Server, path: str) -> list[Any]:
    return [r for r in server.requests if r.path == path]


def test_failure_then_recovery_reach_webhook_mail_and_check_in_url(
    store_url: str,
    store: Store,
    daemons: Daemons,
    http_server: Server,
    smtp_server: Mailbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN", TOKEN)
    monkeypatch.setenv("HOOK_KEY", HOOK_KEY)
    monkeypatch.setenv("SMTP_PASSWORD", smtp_server.password)
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_server.cert))  # trust the test's certificate
    flag = tmp_path / "failing"
    flag.touch()
    write_config(
        daemons,
        {"flaky": flaky_job(flag, f"{http_server.url}/ping/3f0c")},
        {
            "ops": {"type": "webhook", "url": f"{http_server.url}/hook", "secret_env": "HOOK_KEY"},
            "mail": {
                "type": "email",
                "host": "127.0.0.1",
                "port": smtp_server.port,
                "username": SMTP_USER,
                "password_env": "SMTP_PASSWORD",
                "from": "jobd@example.org",
                "to": ["ops@example.org", "oncall@example.org"],
            },
            "broken": {
                "type": "webhook",
                "url": f"{http_server.url}/status/500",
                "retries": 1,
                "retry_delay": "0.1s",
            },
        },
        notify=["ops", "mail", "broken"],
    )
    daemon = daemons.start(store_url)
    # A secret in a free-text field of the run is masked as well as the output.
    failed_run = store.enqueue(
        NewRun("flaky", Trigger.MANUAL, not_before=store.now(), triggered_by=f"ci {TOKEN}")
    )

    hook = wait_for(lambda: requests_to(http_server, "/hook"), timeout=20)[0]
    expected = "sha256=" + hmac.new(HOOK_KEY.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Jobd-Signature-256"] == expected
    payload = hook.json
    assert payload["event"] == "failed"
    assert payload["job"] == "flaky"
    assert payload["host"] == socket.gethostname()
    assert payload["run"]["id"] == failed_run
    assert payload["run"]["status"] == "failed"
    assert payload["run"]["exit_code"] == 3
    assert "boom" in payload["output_tail"]
    assert "token=***" in payload["output_tail"]
    assert payload["run"]["triggered_by"] == "ci ***"
    assert TOKEN.encode() not in hook.body

    mail = wait_for(lambda: smtp_server.messages, timeout=20)[0]
    assert smtp_server.tls_used == [True]
    assert mail["Subject"] == f"jobd: flaky failed (exit 3) on {socket.gethostname()}"
    assert mail["To"] == "ops@example.org, oncall@example.org"
    body = mail.get_payload()
    assert "boom" in body and "token=***" in body

    wait_for(lambda: requests_to(http_server, "/ping/3f0c/fail"), timeout=20)
    start = requests_to(http_server, "/ping/3f0c/start")
    fail = requests_to(http_server, "/ping/3f0c/fail")
    assert len(start) == 1 and len(fail) == 1
    assert http_server.requests.index(start[0]) < http_server.requests.index(fail[0])
    assert b"boom" in fail[0].body and TOKEN.encode() not in fail[0].body

    # The broken channel is tried twice, then given up, logged and shown.
    daemon.wait_log(
        "'failed' notice to broken not delivered after 2 attempt(s): HTTP 500", timeout=20
    )
    assert len(requests_to(http_server, "/status/500")) == 2
    wait_for(
        lambda: (
            "mail"
            in run_jobd(
                "--config", str(daemons.config), "--store", store_url, "show", str(failed_run)
            ).stdout
        )
    )
    shown = run_jobd(
        "--config", str(daemons.config), "--store", store_url, "show", str(failed_run)
    ).stdout
    assert "ops: failed delivered" in shown
    assert "mail: failed delivered" in shown
    assert "broken: failed NOT delivered after 2 attempts: HTTP 500" in shown

    flag.unlink()
    recovered_run = trigger(store, "flaky")
    wait_for(lambda: len(requests_to(http_server, "/hook")) == 2, timeout=20)
    assert requests_to(http_server, "/hook")[1].json["event"] == "recovered"
    assert requests_to(http_server, "/hook")[1].json["run"]["id"] == recovered_run
    wait_for(lambda: len(smtp_server.messages) == 2, timeout=20)
    assert smtp_server.messages[1]["Subject"] == f"jobd: flaky recovered on {socket.gethostname()}"
    wait_for(lambda: requests_to(http_server, "/ping/3f0c"), timeout=20)
    assert len(requests_to(http_server, "/ping/3f0c/start")) == 2

    # A third run that succeeds again tells nobody (recovered is told once), but pings.
    third = trigger(store, "flaky")
    wait_for(lambda: len(requests_to(http_server, "/ping/3f0c")) == 2, timeout=20)
    daemon.stop()
    assert len(requests_to(http_server, "/hook")) == 2
    assert len(smtp_server.messages) == 2
    assert third > recovered_run
    log = daemon.log()
    for secret in (TOKEN, HOOK_KEY, smtp_server.password, "/ping/3f0c"):
        assert secret not in log
