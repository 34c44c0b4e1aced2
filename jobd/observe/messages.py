"""What a notification or a check-in ping says. Pure: no I/O, no clock reads.

The output tail is masked by the caller's masker before it gets here; nothing in
this module adds a secret (signatures are computed over the finished body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from jobd.core.model import NOTIFY_TAIL_BYTES, NOTIFY_TAIL_LINES, Run, Status, Trigger
from jobd.core.records import RUN_KEYS

FAILURES = (Status.FAILED, Status.TIMED_OUT, Status.ABANDONED)
# A check-in monitor hears /fail for every run that started and did not succeed.
PING_FAILURES = (*FAILURES, Status.CANCELLED)


@dataclass(frozen=True)
class RunEnd:
    """A recorded run end, as the notifier needs it."""

    run: Run
    will_retry: bool  # a retry is queued: its outcome, not this one, is told
    previous_failed: bool  # the job's run before this one ended in a failure


def events_for(end: RunEnd) -> tuple[str, ...]:
    """The notify_on names this end matches: its status, and `recovered` for the
    first success after a failure. A failure that will be retried matches none:
    the last attempt's outcome is the one operators want to hear about."""
    status = end.run.status
    if status in FAILURES and end.will_retry:
        return ()
    events = [status.value]
    if status is Status.SUCCEEDED and end.previous_failed and end.run.trigger is not Trigger.RETRY:
        events.append("recovered")
    return tuple(events)


def chosen_event(events: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The event to tell, when any of `events` is in the job's notify_on;
    `recovered` wins over `succeeded` (it says more)."""
    for event in sorted(events, key=lambda e: e != "recovered"):
        if event in wanted:
            return event
    return None


def output_tail(log: str, lines: int = NOTIFY_TAIL_LINES, limit: int = NOTIFY_TAIL_BYTES) -> str:
    """The last `lines` lines of a run's kept output, at most `limit` bytes."""
    kept = log.splitlines()[-lines:] if lines else []
    text = "\n".join(kept)
    data = text.encode()
    if len(data) > limit:
        text = data[-limit:].decode("utf-8", errors="ignore")
    return text


def run_fields(run: Run) -> dict[str, Any]:
    """The run as `jobd show --json` gives it: RUN_KEYS, times in ISO 8601."""
    fields: dict[str, Any] = {}
    for key in RUN_KEYS:
        value = getattr(run, key)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif hasattr(value, "value"):
            value = value.value
        fields[key] = value
    return fields


def summary(run: Run, event: str, host: str) -> str:
    """One line, like a cron mail's subject: job, outcome, host."""
    what = "recovered" if event == "recovered" else run.status.value.replace("_", " ")
    detail = ""
    if run.status is not Status.SUCCEEDED:
        if run.exit_code is not None:
            detail = f" (exit {run.exit_code})"
        elif run.signal is not None:
            detail = f" (signal {run.signal})"
    return f"jobd: {run.job} {what}{detail} on {host}"


def webhook_body(run: Run, event: str, host: str, tail: str, sent_at: datetime) -> bytes:
    """The JSON a webhook receives. `text` is the summary line, which chat
    webhooks (Slack, Mattermost) show as is."""
    payload = {
        "event": event,
        "job": run.job,
        "host": host,
        "text": summary(run, event, host),
        "sent_at": sent_at.isoformat(),  # under the signature: a replay shows its age
        "run": run_fields(run),
        "output_tail": tail,
        "output_bytes": run.log_bytes,
    }
    return json.dumps(payload, sort_keys=True).encode()


def signature(body: bytes, secret: str) -> str:
    """The HMAC-SHA256 signature header's value, as GitHub's webhooks write it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def email_message(
    run: Run, event: str, host: str, tail: str, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    """A message like cron's mail: the outcome in the subject, the output in the body."""
    message = EmailMessage()
    message["Subject"] = summary(run, event, host)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["X-Jobd-Job"] = run.job
    message["X-Jobd-Run"] = str(run.id)
    message["X-Jobd-Event"] = event
    lines = [
        f"job:       {run.job}",
        f"run:       {run.id} ({run.trigger.value}, attempt {run.attempt})",
        f"status:    {run.status.value}",
        f"host:      {run.host or host}",
        f"started:   {run.started_at.isoformat() if run.started_at else '-'}",
        f"finished:  {run.finished_at.isoformat() if run.finished_at else '-'}",
        f"exit code: {run.exit_code if run.exit_code is not None else '-'}",
    ]
    if run.error:
        lines.append(f"error:     {run.error}")
    lines += ["", f"jobd show {run.id}; jobd logs {run.id}", ""]
    lines += ["output (last lines):", "", tail] if tail else ["no output"]
    message.set_content("\n".join(lines) + "\n")
    return message


def ping_target(url: str, phase: str) -> str:
    """healthchecks.io's protocol: URL/start, URL (success), URL/fail."""
    base = url.rstrip("/")
    return {"start": base + "/start", "success": base, "fail": base + "/fail"}[phase]


def ping_phase(status: Status) -> str | None:
    if status is Status.SUCCEEDED:
        return "success"
    if status in PING_FAILURES:
        return "fail"
    return None
