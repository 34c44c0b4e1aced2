"""The pure side of notifications: which outcomes are told, what a message says,
how it is signed; and the config keys, refused with file, job and key."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import JobSpec, Run, Status, Trigger
from jobd.errors import ConfigError
from jobd.observe import messages
from jobd.observe.messages import RunEnd
from tests.conftest import run_jobd

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def run(status: Status = Status.FAILED, trigger: Trigger = Trigger.SCHEDULE, **kw: object) -> Run:
    values = {"id": 7, "job": "backup", "trigger": trigger, "status": status, "queued_at": T0}
    values.update(not_before=T0, started_at=T0, finished_at=T0, exit_code=3, log="a\nb\n")
    values.update(kw)
    return Run(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "trigger", "will_retry", "previous_failed", "events"),
    [
        (Status.FAILED, Trigger.SCHEDULE, False, False, ("failed",)),
        (Status.FAILED, Trigger.SCHEDULE, True, False, ()),  # its retry's outcome is told
        (Status.TIMED_OUT, Trigger.RETRY, False, True, ("timed_out",)),
        (Status.SUCCEEDED, Trigger.SCHEDULE, False, True, ("succeeded", "recovered")),
        (Status.SUCCEEDED, Trigger.SCHEDULE, False, False, ("succeeded",)),
        (Status.SUCCEEDED, Trigger.RETRY, False, True, ("succeeded",)),  # failure never told
        (Status.ABANDONED, Trigger.MANUAL, False, False, ("abandoned",)),
    ],
)
def test_events_of_an_end(
    status: Status, trigger: Trigger, will_retry: bool, previous_failed: bool, events: tuple
) -> None:
    end = RunEnd(run(status, trigger), will_retry, previous_failed)
    assert messages.events_for(end) == events


def test_recovered_wins_over_succeeded_and_unwanted_events_are_not_told() -> None:
    both = ("succeeded", "recovered")
    assert messages.chosen_event(both, ("succeeded", "recovered")) == "recovered"
    assert messages.chosen_event(both, ("succeeded",)) == "succeeded"
    assert messages.chosen_event(("failed",), ("recovered",)) is None


def test_output_tail_keeps_the_last_lines_within_the_byte_limit() -> None:
    log = "".join(f"line {i}\n" for i in range(100))
    assert messages.output_tail(log, lines=2) == "line 98\nline 99"
    assert messages.output_tail(log, lines=100, limit=7) == "line 99"
    assert messages.output_tail("é" * 10, lines=1, limit=3) == "é"  # never half a character


def test_webhook_body_and_its_signature() -> None:
    body = messages.webhook_body(run(), "failed", "host1", "b", T0)
    data = json.loads(body)
    assert data["text"] == "jobd: backup failed (exit 3) on host1"
    assert data["run"]["status"] == "failed" and data["run"]["scheduled_for"] is None
    assert data["run"]["started_at"] == "2026-03-01T12:00:00+00:00"
    assert data["output_tail"] == "b" and data["sent_at"] == "2026-03-01T12:00:00+00:00"
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert messages.signature(body, "key") == f"sha256={expected}"


def test_email_reads_like_crons_mail() -> None:
    message = messages.email_message(
        run(Status.TIMED_OUT, exit_code=None, signal=9), "timed_out", "h", "out", "a@x", ["b@y"]
    )
    assert message["Subject"] == "jobd: backup timed out (signal 9) on h"
    assert message["To"] == "b@y" and message["X-Jobd-Run"] == "7"
    assert "out" in message.get_content() and "jobd logs 7" in message.get_content()


def test_ping_targets_follow_healthchecks() -> None:
    url = "https://hc-ping.com/5f2b/"
    assert messages.ping_target(url, "start") == "https://hc-ping.com/5f2b/start"
    assert messages.ping_target(url, "success") == "https://hc-ping.com/5f2b"
    assert messages.ping_target(url, "fail") == "https://hc-ping.com/5f2b/fail"
    assert messages.ping_phase(Status.CANCELLED) == "fail"
    assert messages.ping_phase(Status.SKIPPED) is None


CHANNELS = """
[notify.ops]
type = "webhook"
url = "https://hooks.example.org/jobd"
secret_env = "HOOK_KEY"

[notify.mail]
type = "email"
host = "smtp.example.org"
from = "jobd@example.org"
to = ["ops@example.org"]
"""


def test_channels_and_job_keys_parse() -> None:
    config = parse_config(
        '[jobd]\nnotify = ["ops"]\nnotify_on = ["failed"]\n'
        + CHANNELS
        + '[jobs.a]\ncommand = ["true"]\nnotify = ["mail"]\nping_url = "https://hc/x"\n'
        + '[jobs.b]\ncommand = ["true"]\n[metrics]\nlisten = "127.0.0.1:9464"\n'
    )
    assert config.settings.notify == ("ops",) and config.settings.notify_on == ("failed",)
    assert config.channels["mail"].port == 587 and config.channels["mail"].starttls
    assert config.channels["ops"].secret_env == "HOOK_KEY"
    assert config.jobs["a"].notify == ("mail",) and config.jobs["a"].ping_url == "https://hc/x"
    assert config.jobs["b"].notify is None and config.metrics_listen == "127.0.0.1:9464"
    # Unset, the new keys leave a job's stored spec (and its digest) as it was.
    assert "notify" not in config.jobs["b"].to_json()
    assert JobSpec.from_json(config.jobs["a"].to_json()) == config.jobs["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[jobs.a]\ncommand = ["t"]\nnotify = ["opz"]\n', "job 'a': key 'notify': unknown"),
        ('[jobs.a]\ncommand = ["t"]\nnotify_on = ["fail"]\n', "key 'notify_on': unknown outcome"),
        ('[jobs.a]\ncommand = ["t"]\nping_url = "ftp://x"\n', "key 'ping_url': expected an http"),
        ('[jobd]\nnotify = ["nope"]\n', "key 'jobd.notify': unknown notification channel"),
        ('[notify.x]\ntype = "sms"\n', "key 'notify.x.type': expected one of webhook | email"),
        ('[notify.x]\ntype = "webhook"\n', "key 'notify.x.url': required"),
        ('[notify.x]\ntype = "webhook"\nurl = "http://h"\nto = ["a@b"]\n', "'notify.x.to'"),
        ('[notify.x]\ntype = "email"\nhost = "h"\nfrom = "a@b"\n', "'notify.x.to': required"),
        (
            '[notify.x]\ntype = "email"\nhost = "h"\nfrom = "a@b"\nto = ["a@b"]\nport = 0\n',
            "'notify.x.port': must be at least 1",
        ),
        ('[notify.x]\ntype = "webhook"\nurl = "http://h"\nsecret_env = "a-b"\n', "secret_env"),
        ('[metrics]\nlisten = "9464"\n', "key 'metrics.listen': expected HOST:PORT"),
    ],
)
def test_bad_notify_keys_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CHANNELS + text, file="jobd.toml")
    assert message in str(caught.value)


def test_validate_says_it_in_one_line_and_exits_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "jobd.toml"
    config.write_text(
        CHANNELS + '[jobs.a]\ncommand = ["t"]\nping_url = "hc-ping.com/abc-secret-uuid"\n'
    )
    done = run_jobd("--config", str(config), "validate")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "job 'a': key 'ping_url'" in done.stderr
    assert "abc-secret-uuid" not in done.stderr and "Traceback" not in done.stderr


def test_a_channel_secret_missing_from_the_environment_is_said_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jobd.observe.dispatcher import Notifications

    config = parse_config(CHANNELS)
    with caplog.at_level("WARNING", logger="jobd"):
        notifications = Notifications(None, config, "host1", environ={})
        notifications.close(0)
    said = [r.getMessage() for r in caplog.records]
    assert any("[notify.ops] names HOOK_KEY" in line for line in said), said
    caplog.clear()
    with caplog.at_level("WARNING", logger="jobd"):
        Notifications(None, config, "host1", environ={"HOOK_KEY": "k"}).close(0)
    assert not caplog.records
